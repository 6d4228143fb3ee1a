"""Differential fuzzing of the compiler: random diagrams, random relabelings, mutated IR.

The `fuzz` layer sits above the emulator and below `cli` (test/python/test_layers.py):

* `spec`, `generator`: random diagrams as data (`generate(seed) -> Spec`) and as napkin IR;
* `pipelines`: random legal relabeling pipelines around the derived one;
* `differential`: one diagram checked pass by pass against its interpretation and on the
  CPU against the correctness rule (runs in the worker);
* `mutate`, `commands`: token, structure and byte mutations of valid programs, the commands
  that read a file, and the rule their answers follow (exit 0 or `error:`, no traceback);
* `worker`: the subprocess that runs every input (the MLIR bindings can abort a process)
  and its supervisor;
* `minimize`: shrinking a failing diagram, pipeline or input;
* `campaign`: the whole run, its counts and its reproducers; `python -m napkin_mlir.fuzz`
  (`make fuzz`) is its command line.
"""
