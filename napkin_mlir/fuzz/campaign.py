"""A fuzzing campaign: random diagrams through the differential checks, mutated programs
through the commands, counts, and a minimized reproducer per distinct failure.

`run_campaign(Settings(...))` alternates one diagram (generated from its own seed, checked
by the worker: derived, re-tiled and random pipelines, the interpretation after every pass,
the CPU backend) with mutated inputs (programs of the stages the diagrams went through and
the examples, cut up by `mutate`, run by the worker through `napkin-opt` and `napkin`) until
the time is up or both counts are reached; mutations get `mutation_share` of the time.
Failures are deduplicated by signature (category and normalized message); the first of each
is shrunk (`minimize`) and written to `out/failures/` as `NNN-<category>.mlir` and a `.json`
that `python -m napkin_mlir.fuzz --replay FILE.json` re-runs.

Everything here is plain Python: MLIR and JAX live in the worker process only.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import shlex
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napkin_mlir.fuzz import commands, minimize
from napkin_mlir.fuzz import pipelines as pl
from napkin_mlir.fuzz.generator import generate, generate_variant
from napkin_mlir.fuzz.mutate import mutate
from napkin_mlir.fuzz.signature import normalize
from napkin_mlir.fuzz.spec import Spec
from napkin_mlir.fuzz.worker import Worker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Seconds a worker may spend on one job before it counts as hung.
DIAGRAM_TIMEOUT = 300.0
CLI_TIMEOUT = 90.0
#: Programs of each stage kept to mutate.
CORPUS_SIZE = 300


@dataclass
class Settings:
    seconds: float = 180.0
    seed: int = 0
    out: Path = Path("fuzz-out")
    diagrams: int | None = None  # stop generating after this many (None: until the time is up)
    mutations: int | None = None
    mutation_share: float = 0.2
    minimize: bool = True
    minimize_seconds: float = 120.0
    max_minimized: int = 8
    random_pipelines: int = 2
    cpu: float = 0.5
    emulate: float = 0.1  # chance a small diagram also runs as a SIMT kernel on the emulator
    variants: float = 0.2  # share of diagrams that are attention variants for the tensor-core rules
    grad: float = 0.5  # share of the variants whose forward with residuals, dQ and dK/dV also run on the emulator
    known: dict[str, str] = field(default_factory=dict)  # signature -> reproducer of an open bug


@dataclass
class FailureRecord:
    kind: str  # "diagram" or "cli"
    category: str
    message: str
    signature: str
    count: int = 1
    seed: int = 0
    spec: dict[str, Any] | None = None
    pipeline: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""
    entry: str = ""
    args: list[str] = field(default_factory=list)
    input: str = ""  # base64
    description: str = ""
    detail: str = ""
    files: list[str] = field(default_factory=list)
    minimized: bool = False


@dataclass
class Counts:
    diagrams: int = 0
    pipelines: int = 0
    passes: int = 0
    comparisons: int = 0
    cpu_runs: int = 0
    judged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    mutations: int = 0
    mutation_outcomes: Counter[str] = field(default_factory=Counter)
    mutation_families: Counter[str] = field(default_factory=Counter)
    emulated: Counter[str] = field(default_factory=Counter)  # emulator outcome -> count
    failures: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)  # reproducer -> failures matching it
    seconds_diagrams: float = 0.0
    seconds_mutations: float = 0.0
    seconds_minimizing: float = 0.0
    worker_restarts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: (dict(v.most_common()) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}


def _step_kind(steps: list[dict[str, Any]], index: int) -> str:
    if 0 <= index < len(steps):
        return steps[index]["pass"]
    return "lowering/cpu" if index >= len(steps) else "diagram"


def small(spec: Spec, limit: int = 4096) -> bool:
    """Every input of at most `limit` elements (what the emulator runs in seconds)."""
    return all(math.prod(spec.sizes[a] for a in x.axes) <= limit for x in spec.inputs)


def diagram_key(f: dict[str, Any]) -> str:
    """What a shrunk diagram must keep failing with: the category and the pass."""
    if f["category"] == "crash":
        m = re.search(r": (\w+(?:Error|Exception)\w*):", f["message"])
        return f"crash {_step_kind(f['pipeline'], f['step'])} {m.group(1) if m else ''}"
    return f"{f['category']} {_step_kind(f['pipeline'], f['step'])}"


def diagram_signature(f: dict[str, Any]) -> str:
    """What makes two diagram failures the same bug (and what a shrunk one must keep)."""
    return f"{diagram_key(f)}: {normalize(f['message'])}"


#: The figures of an emulator FAIL line: the failing output's max error, then JAX's in the
#: diagram's declared dtypes.
FAIL_FIGURES = re.compile(r"^FAIL max \|error\| (\S+) \(JAX in the same dtype: ([^)\s]+)\)", re.M)
BADLY_CONDITIONED = "not judged: badly conditioned in f32 (JAX in the declared dtypes breaks the rule)"


def badly_conditioned(stdout: str) -> bool:
    """An emulator FAIL whose failing output is off by no more than the 16-bit rule allows
    against JAX in the declared dtypes (max |err| <= 2 x JAX's + 1e-6): an f32 output fed by
    bf16 roundings, which JAX itself computes as far off. The CPU check counts such outputs
    as not judged (`differential.judge_output`); so does the emulator check. A 16-bit output
    that fails has broken that very rule, so this never excuses one."""
    m = FAIL_FIGURES.search(stdout)
    if m is None:
        return False
    try:
        err, jax_err = float(m.group(1)), float(m.group(2))
    except ValueError:
        return False
    return err <= 2.0 * jax_err + 1e-6


#: `napkin emulate` arguments that run a variant's forward with residuals (O and the row
#: log-sum-exp) and its backward's dQ and dK/dV through the tensor-core rule, each against its
#: own diagram.
GRAD_KERNELS = ("--grad", "--rowsums", "output", "--grad-kernels", "forward,dQ,dK_dV")


def emulator_verdict(args: list[str], answer: dict[str, Any]) -> tuple[str, str] | None:
    """The command rule, and one more: a backend that builds IR MLIR's verifier rejects
    ('see current operation' in the diagnostic) has failed, however cleanly it says so. A
    FAIL of a badly conditioned f32 output (`badly_conditioned`) is not a failure."""
    verdict = commands.judge("napkin", args, answer)
    if verdict is not None and verdict[0] == "wrong-result" and badly_conditioned(answer.get("stdout", "")):
        return None
    if verdict is None and answer.get("rc") and "see current operation" in answer.get("stderr", ""):
        first = next((ln for ln in answer["stderr"].splitlines() if ln.startswith("error:")), "")
        return "invalid-ir", first[:400]
    return verdict


def emulator_category(category: str) -> str:
    return "emulator-wrong-result" if category == "wrong-result" else f"emulator-{category}"


def cli_signature(entry: str, args: list[str], category: str, message: str, emulator: bool = False) -> str:
    """What makes two command failures the same bug."""
    label = "napkin-opt" if entry == "napkin-opt" else f"napkin {args[0]}"
    if emulator:
        category = emulator_category(category)
    return f"cli {category} {label}: {normalize(message)}"


def died_key(answer: dict[str, Any]) -> str:
    lines = [ln for ln in answer.get("stderr", "").splitlines() if ln.strip()]
    marker = next(
        (ln for ln in lines if "Assertion" in ln or "LLVM ERROR" in ln or "Error" in ln), lines[-1] if lines else ""
    )
    return f"{answer['died']} {normalize(marker)}"


class Campaign:
    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.s = settings
        self.log = log
        self.rng = random.Random(settings.seed)
        self.out = Path(settings.out)
        self.worker = Worker(self.out / "work")
        self.counts = Counts()
        self.unique: dict[str, FailureRecord] = {}
        self.corpus: dict[str, list[str]] = {"diagram": [], "partitioned": [], "loops": []}
        for path in sorted(EXAMPLES.glob("*.mlir")):
            self.corpus["diagram"].append(path.read_text())

    # --- recording ---------------------------------------------------------------------------

    def record(self, rec: FailureRecord) -> None:
        if rec.signature in self.s.known:  # an open bug with a reproducer already
            self.counts.known[self.s.known[rec.signature]] += 1
            return
        self.counts.failures[rec.category] += 1
        if rec.signature in self.unique:
            self.unique[rec.signature].count += 1
            return
        self.unique[rec.signature] = rec
        self.log(f"  FAILURE [{rec.category}] {rec.message[:300]}")

    # --- diagrams ------------------------------------------------------------------------------

    def diagram_seed(self, index: int) -> int:
        return self.s.seed * 1_000_003 + index

    def is_variant(self, seed: int) -> bool:
        """Whether diagram `seed` is an attention variant (`generator.generate_variant`): a
        share `Settings.variants` of the seeds, decided by the seed alone."""
        return random.Random(seed ^ 0x5A17).random() < self.s.variants

    def run_diagram(self, index: int) -> None:
        seed = self.diagram_seed(index)
        self.counts.diagrams += 1
        variant = self.is_variant(seed)
        try:
            spec = generate_variant(seed) if variant else generate(seed)
        except Exception as err:  # a generator bug
            self.record(
                FailureRecord(
                    "diagram",
                    "generator",
                    f"generate({seed}): {type(err).__name__}: {err}",
                    f"generator: {normalize(str(err))}",
                    seed=seed,
                )
            )
            return
        job = {
            "kind": "diagram",
            "spec": spec.to_json(),
            "seed": seed,
            "filename": f"fuzz{seed}.mlir",
            "random_pipelines": self.s.random_pipelines,
            "cpu": self.s.cpu,
            "keep_stages": True,
        }
        answer = self.worker.call(job, DIAGRAM_TIMEOUT)
        if "died" in answer:
            self.counts.worker_restarts += 1
            key = died_key(answer)
            self.record(
                FailureRecord(
                    "diagram",
                    answer["died"],
                    f"{key} (diagram {seed})",
                    key,
                    seed=seed,
                    spec=spec.to_json(),
                    pipeline=answer.get("pipeline", []),
                    text=answer.get("text", ""),
                    detail=answer.get("stderr", "")[-3000:],
                )
            )
            return
        rep = answer["report"]
        c = self.counts
        c.pipelines += rep["pipelines"]
        c.passes += rep["passes"]
        c.comparisons += rep["comparisons"]
        c.cpu_runs += rep["cpu_runs"]
        c.judged += rep["judged"]
        c.skipped.update(rep["skipped"])
        c.refusals.update(rep["refusals"])
        for stage, text in rep["stages"].items():
            pool = self.corpus[stage]
            pool.append(text)
            if len(pool) > CORPUS_SIZE:
                pool.pop(self.rng.randrange(len(pool) - 20))  # keep the examples (first) mostly
        for f in rep["failures"]:
            sig = diagram_signature(f)
            self.record(
                FailureRecord(
                    "diagram",
                    f["category"],
                    f["message"],
                    sig,
                    seed=seed,
                    spec=spec.to_json(),
                    pipeline=f["pipeline"],
                    text=answer["text"],
                    detail=f.get("detail", ""),
                )
            )
        if variant and answer["text"]:  # the tensor-core rules, on the emulator
            self.run_emulator(seed, spec, answer["text"], "tensorcore", "sm_80")
            if random.Random(seed ^ 0x6AD).random() < self.s.grad:  # its backward: forward with L, dQ, dK/dV
                self.run_emulator(seed, spec, answer["text"], "tensorcore", "sm_80", GRAD_KERNELS)
            if spec.sizes.get("d") in (64, 128):
                self.run_emulator(seed, spec, answer["text"], "wgmma", "sm_90a")
        elif answer["text"] and self.rng.random() < self.s.emulate and small(spec):
            self.run_emulator(seed, spec, answer["text"])

    def run_emulator(
        self, seed: int, spec: Spec, text: str, kernel: str = "simt", target: str = "sm_80", extra: tuple[str, ...] = ()
    ) -> None:
        """The diagram as a `kernel` (simt, tensorcore, wgmma) on the emulator (`napkin emulate
        FILE --kernel K`, and `extra` arguments: `GRAD_KERNELS` for kernels of its backward),
        judged there against the diagram's interpretation; a refusal is counted by reason."""
        args = ["emulate", "{input}", "--kernel", kernel, "--target", target, "--seed", str(seed % 1000), *extra]
        if extra:
            kernel = f"{kernel} {' '.join(extra)}"
        answer = self.run_cli("napkin", args, text.encode())
        verdict = emulator_verdict(args, answer)
        if verdict is None:
            if answer["rc"] == 0:
                self.counts.emulated[f"{kernel}: passed"] += 1
            elif badly_conditioned(answer.get("stdout", "")):
                self.counts.emulated[f"{kernel}: {BADLY_CONDITIONED}"] += 1
            else:
                why = next((ln for ln in answer["stderr"].splitlines() if ln.startswith("error:")), answer["stderr"])
                self.counts.emulated[f"{kernel}: refused: {normalize(why.removeprefix('error: '))}"] += 1
            return
        category = emulator_category(verdict[0])
        message = verdict[1]
        self.counts.emulated[f"{kernel}: {category}"] += 1
        sig = cli_signature("napkin", args, *verdict, emulator=True)
        self.record(
            FailureRecord(
                "cli",
                category,
                f"napkin emulate --kernel {kernel} on diagram {seed}: {message}",
                sig,
                spec=spec.to_json(),
                seed=seed,
                entry="napkin",
                args=args,
                input=base64.b64encode(text.encode()).decode(),
                description=f"generated diagram {seed}",
                detail=answer.get("stdout", "")[-2000:] + answer.get("stderr", "")[-2000:],
            )
        )

    # --- mutations ---------------------------------------------------------------------------------

    def run_mutation(self) -> None:
        stages = [s for s in self.corpus if self.corpus[s]]
        stage = self.rng.choices(stages, [{"diagram": 5, "partitioned": 3, "loops": 2}[s] for s in stages])[0]
        text = self.rng.choice(self.corpus[stage])
        donors = [self.rng.choice(self.corpus[s]) for s in stages]
        data, desc = mutate(self.rng, text, donors)
        axes = sorted(set(re.findall(r'"(\w+)"', " ".join(re.findall(r"axes = \[[^\]]*\]", text))))) or ["q"]
        entry, args = commands.pick_command(self.rng, stage, axes)
        if entry == "napkin" and args[0] == "verify" and commands.too_big_to_run(data.decode(errors="replace")):
            entry, args = "napkin-opt", ["{input}"]
        self.counts.mutations += 1
        self.counts.mutation_families[desc.split(":", 1)[0]] += 1
        answer = self.run_cli(entry, args, data)
        label = "napkin-opt" if entry == "napkin-opt" else f"napkin {args[0]}"
        outcome = f"{label}: {answer['died']}" if "died" in answer else f"{label}: exit {answer['rc']}"
        self.counts.mutation_outcomes[outcome] += 1
        verdict = commands.judge(entry, args, answer)
        if verdict is None:
            return
        category, message = verdict
        sig = cli_signature(entry, args, category, message)
        self.record(
            FailureRecord(
                "cli",
                category,
                f"{label} on a mutated {stage} program: {message}",
                sig,
                entry=entry,
                args=args,
                input=base64.b64encode(data).decode(),
                description=desc,
                detail=answer.get("escaped") or answer.get("stderr", "")[-3000:],
            )
        )

    def run_cli(self, entry: str, args: list[str], data: bytes) -> dict[str, Any]:
        job = {
            "kind": "cli",
            "entry": entry,
            "args": args,
            "input": base64.b64encode(data).decode(),
            "out_suffix": ".png",
        }
        answer = self.worker.call(job, CLI_TIMEOUT)
        if "died" in answer:
            self.counts.worker_restarts += 1
        return answer

    # --- the loop -----------------------------------------------------------------------------------

    def run(self) -> None:
        s = self.s
        start = time.monotonic()
        deadline = start + s.seconds
        share = min(max(s.mutation_share, 0.0), 0.95)

        def diagrams_left() -> bool:
            return s.diagrams is None or self.counts.diagrams < s.diagrams

        def mutations_left() -> bool:
            return s.mutations is None or self.counts.mutations < s.mutations

        try:
            self.check_until(deadline, start, share, diagrams_left, mutations_left)
        except KeyboardInterrupt:  # Ctrl-C (SIGINT): stop checking, keep the counts and reproducers
            self.log("  interrupted: the counts so far, then the reproducers")
            self.worker.stop()
        self.finish()

    def check_until(
        self,
        deadline: float,
        start: float,
        share: float,
        diagrams_left: Callable[[], bool],
        mutations_left: Callable[[], bool],
    ) -> None:
        """Diagrams and mutated inputs, interleaved by their share of the time, until `deadline`."""
        index = 0
        last_report = start
        while time.monotonic() < deadline and (diagrams_left() or mutations_left()):
            if diagrams_left():
                t0 = time.monotonic()
                self.run_diagram(index)
                index += 1
                self.counts.seconds_diagrams += time.monotonic() - t0
            # mutations until they have had their share of the time (or all of it, diagrams done)
            while time.monotonic() < deadline and mutations_left():
                spent = self.counts.seconds_mutations
                if diagrams_left() and spent >= share / (1 - share) * self.counts.seconds_diagrams:
                    break
                t0 = time.monotonic()
                self.run_mutation()
                self.counts.seconds_mutations += time.monotonic() - t0
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                c = self.counts
                self.log(
                    f"  [{last_report - start:5.0f} s] {c.diagrams} diagrams, {c.pipelines} pipelines, "
                    f"{c.comparisons + c.judged} comparisons, {c.mutations} mutated inputs, "
                    f"{sum(c.failures.values())} failures ({len(self.unique)} distinct)"
                )

    def finish(self) -> None:
        """Shrink the failures (`Settings.minimize`), stop the worker, write the reproducers and
        the counts."""
        s = self.s
        if s.minimize:
            t0 = time.monotonic()
            for rec in list(self.unique.values())[: s.max_minimized]:
                try:
                    self.shrink(rec)
                except Exception as err:  # the minimizer must not lose the failure
                    self.log(f"  (could not shrink {rec.signature}: {type(err).__name__}: {err})")
            self.counts.seconds_minimizing = time.monotonic() - t0
        self.counts.worker_restarts = self.worker.restarts
        self.worker.stop()
        self.write()

    # --- minimizing and writing -----------------------------------------------------------------------

    def diagram_fails(
        self, rec: FailureRecord, spec: Spec, steps: list[dict[str, Any]], target: str
    ) -> dict[str, Any] | None:
        """The answer when (spec, steps) still fails like `rec`, else None."""
        on_cpu = 1.0 if _step_kind(rec.pipeline, len(rec.pipeline)) == "lowering/cpu" else 0.0
        job: dict[str, Any] = {
            "kind": "diagram",
            "spec": spec.to_json(),
            "seed": rec.seed,
            "filename": f"fuzz{rec.seed}.mlir",
            "pipelines": [steps] if steps else None,
            "random_pipelines": 0 if steps else self.s.random_pipelines,
            "cpu": 1.0 if (on_cpu or rec.category in ("wrong-result", "backend-error", "abort", "timeout")) else 0.0,
        }
        answer = self.worker.call(job, DIAGRAM_TIMEOUT)
        if "died" in answer:
            answer["text"] = answer.get("text") or ""
            return answer if died_key(answer) == target else None
        for f in answer["report"]["failures"]:
            if diagram_signature(f) == target:
                answer["failure"] = f
                return answer
        return None

    def shrink(self, rec: FailureRecord) -> None:
        if rec.kind == "diagram" and rec.spec is not None and rec.category != "generator":
            target = rec.signature
            best: dict[str, Any] = {}

            def still(spec: Spec, steps: list[dict[str, Any]]) -> bool:
                answer = self.diagram_fails(rec, spec, steps, target)
                if answer is not None:
                    best["answer"] = answer
                return answer is not None

            spec0 = Spec.from_json(rec.spec)
            if not still(spec0, rec.pipeline):
                self.log(f"  (not reproduced alone, kept as found: {rec.signature})")
                return
            spec, steps, tries = minimize.shrink_spec(spec0, rec.pipeline, still, self.s.minimize_seconds)
            still(spec, steps)  # the answer of the final candidate
            answer = best["answer"]
            rec.spec, rec.pipeline, rec.minimized = spec.to_json(), steps, True
            rec.text = answer.get("text", rec.text)
            if "failure" in answer:
                rec.message = answer["failure"]["message"]
                rec.detail = answer["failure"].get("detail", rec.detail)
            self.log(f"  shrunk ({tries} tries): {len(spec.ops)} boxes, sizes {spec.sizes}: {rec.signature}")
        elif rec.kind == "cli" and rec.spec is not None:  # a generated diagram through a command
            best_text: dict[str, str] = {}

            def still_spec(spec: Spec, steps: list[dict[str, Any]]) -> bool:
                job = {
                    "kind": "cli",
                    "entry": rec.entry,
                    "args": rec.args,
                    "spec": spec.to_json(),
                    "out_suffix": ".png",
                }
                answer = self.worker.call(job, CLI_TIMEOUT)
                verdict = emulator_verdict(rec.args, answer)
                if verdict is None or cli_signature(rec.entry, rec.args, *verdict, emulator=True) != rec.signature:
                    return False
                best_text["text"] = answer.get("rendered", "")
                return True

            if not still_spec(Spec.from_json(rec.spec), []):
                self.log(f"  (not reproduced alone, kept as found: {rec.signature})")
                return
            spec, _steps, tries = minimize.shrink_spec(
                Spec.from_json(rec.spec), [], still_spec, self.s.minimize_seconds
            )
            still_spec(spec, [])
            rec.spec, rec.minimized = spec.to_json(), True
            rec.input = base64.b64encode(best_text["text"].encode()).decode()
            self.log(f"  shrunk ({tries} tries): {len(spec.ops)} boxes, sizes {spec.sizes}: {rec.signature}")
        elif rec.kind == "cli":
            data0 = base64.b64decode(rec.input)
            target = rec.signature

            def still_text(data: bytes) -> bool:
                answer = self.run_cli(rec.entry, rec.args, data)
                verdict = commands.judge(rec.entry, rec.args, answer)
                if verdict is None:
                    return False
                return cli_signature(rec.entry, rec.args, *verdict) == target

            if not still_text(data0):
                self.log(f"  (not reproduced alone, kept as found: {rec.signature})")
                return
            data, tries = minimize.shrink_text(data0, still_text, self.s.minimize_seconds)
            rec.input, rec.minimized = base64.b64encode(data).decode(), True
            self.log(f"  shrunk ({tries} tries) to {len(data)} bytes: {rec.signature}")

    def write(self) -> None:
        fdir = self.out / "failures"
        fdir.mkdir(parents=True, exist_ok=True)
        for n, rec in enumerate(self.unique.values(), start=1):
            stem = fdir / f"{n:03d}-{rec.kind}-{rec.category}"
            rec.files = write_reproducer(rec, stem)
        summary = {"settings": {k: str(v) for k, v in self.s.__dict__.items()}, "counts": self.counts.to_json()}
        summary["failures"] = [
            {k: v for k, v in r.__dict__.items() if k not in ("spec", "input", "text")} for r in self.unique.values()
        ]
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))


def write_reproducer(rec: FailureRecord, stem: Path) -> list[str]:
    """`stem.mlir` (the input) and `stem.json` (everything `--replay` needs)."""
    data: dict[str, Any] = {
        "kind": rec.kind,
        "category": rec.category,
        "message": rec.message,
        "signature": rec.signature,
        "minimized": rec.minimized,
        "count": rec.count,
        "status": "open",
    }
    mlir = stem.with_suffix(".mlir")
    if rec.kind == "diagram":
        sizes = rec.spec["sizes"] if rec.spec else {}
        pipeline = pl.render(rec.pipeline, sizes) if rec.pipeline else "(derived: napkin derive FILE)"
        header = [
            f"// fuzz failure [{rec.category}]: {rec.message.splitlines()[0][:400] if rec.message else ''}",
            f"// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed={rec.seed})",
            f"// pipeline: {pipeline}",
            f"// replay: python -m napkin_mlir.fuzz --replay {stem.with_suffix('.json').name}",
        ]
        text = rec.text
        if not text and rec.spec is not None:
            text = "// (the spec in the .json did not render: see the message)\n"
        mlir.write_text("\n".join(header) + "\n" + text)
        data.update(
            seed=rec.seed, pipeline=rec.pipeline, pipeline_text=pipeline, spec=rec.spec, detail=rec.detail[-3000:]
        )
    else:
        mlir.write_bytes(base64.b64decode(rec.input))
        args = [a.replace("{input}", mlir.name).replace("{out}", "out.png") for a in rec.args]
        data.update(
            entry=rec.entry,
            args=rec.args,
            command=shlex.join([rec.entry, *args]),
            mutation=rec.description,
            **({"seed": rec.seed, "spec": rec.spec} if rec.spec is not None else {}),
            detail=rec.detail[-3000:],
        )
    js = stem.with_suffix(".json")
    js.write_text(json.dumps(data, indent=1))
    return [str(mlir), str(js)]


def known_failures(directory: Path) -> dict[str, str]:
    """Signature -> file name of every open reproducer (`"status": "open"`) in `directory`."""
    found: dict[str, str] = {}
    for path in sorted(Path(directory).glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("status") == "open":
            for signature in [data.get("signature"), *data.get("signatures", [])]:
                if signature:
                    found[signature] = path.name
    return found


def record_of(path: Path) -> FailureRecord:
    """The failure a reproducer (`NNN-*.json` and its `.mlir`) describes."""
    data = json.loads(path.read_text())
    rec = FailureRecord(data["kind"], data["category"], data["message"], data["signature"], count=data.get("count", 1))
    if data["kind"] == "diagram":
        rec.seed, rec.spec, rec.pipeline = data["seed"], data.get("spec"), data.get("pipeline", [])
        rec.detail = data.get("detail", "")
    else:
        rec.entry, rec.args, rec.description = data["entry"], data["args"], data.get("mutation", "")
        rec.seed, rec.spec = data.get("seed", 0), data.get("spec")
        rec.input = base64.b64encode(path.with_suffix(".mlir").read_bytes()).decode()
    return rec


def shrink_file(path: Path, settings: Settings, log: Callable[[str], None] = print) -> list[str]:
    """Shrink the reproducer at `path` further and rewrite it (and its `.mlir`)."""
    campaign = Campaign(settings, log)
    rec = record_of(path)
    try:
        campaign.shrink(rec)
    finally:
        campaign.worker.stop()
    return write_reproducer(rec, path.with_suffix(""))


def replay(path: Path, workdir: Path) -> tuple[bool, str]:
    """Re-run a reproducer (`NNN-*.json`): (still fails, what happened)."""
    data = json.loads(path.read_text())
    worker = Worker(workdir)
    try:
        if data["kind"] == "diagram":
            text = path.with_suffix(".mlir").read_text()
            job: dict[str, Any] = {
                "kind": "diagram",
                "text": text,
                "seed": data["seed"],
                "filename": path.with_suffix(".mlir").name,
                "pipelines": [data["pipeline"]] if data["pipeline"] else None,
                "cpu": 1.0,
            }
            answer = worker.call(job, DIAGRAM_TIMEOUT)
            if "died" in answer:
                return True, died_key(answer)
            failures = answer["report"]["failures"]
            if failures:
                return True, "; ".join(f"[{f['category']}] {f['message'][:300]}" for f in failures)
            return False, "passes: " + json.dumps({k: answer["report"][k] for k in ("passes", "comparisons", "judged")})
        raw = path.with_suffix(".mlir").read_bytes()
        job = {
            "kind": "cli",
            "entry": data["entry"],
            "args": data["args"],
            "input": base64.b64encode(raw).decode(),
            "out_suffix": ".png",
        }
        answer = worker.call(job, CLI_TIMEOUT)
        emulated = data["entry"] == "napkin" and data["args"][:1] == ["emulate"]
        verdict = (
            emulator_verdict(data["args"], answer) if emulated else commands.judge(data["entry"], data["args"], answer)
        )
        if verdict is not None:
            return True, f"[{verdict[0]}] {verdict[1]}"
        return False, f"exit {answer['rc']}: {answer['stderr'].strip()[:300]}"
    finally:
        worker.stop()


def summary_text(c: Counts, unique: dict[str, FailureRecord], s: Settings) -> str:
    total = c.seconds_diagrams + c.seconds_mutations
    lines = [
        f"fuzz: seed {s.seed}, {total:.0f} s of checking (diagrams {c.seconds_diagrams:.0f} s, mutations "
        f"{c.seconds_mutations:.0f} s), {c.seconds_minimizing:.0f} s minimizing, {c.worker_restarts} worker restarts",
        f"  diagrams generated   {c.diagrams:7d}   ({c.diagrams / max(c.seconds_diagrams, 1e-9):.2f}/s)",
        f"  pipelines run        {c.pipelines:7d}   ({c.passes} passes)",
        f"  comparisons made     {c.comparisons + c.judged:7d}   ({c.comparisons} interpretations after a pass, "
        f"{c.judged} CPU outputs judged in {c.cpu_runs} CPU runs)",
    ]
    if c.skipped:
        lines.append("  not judged           " + "; ".join(f"{n} {why}" for why, n in c.skipped.most_common()))
    lines.append(f"  refusals             {sum(c.refusals.values()):7d}   by reason:")
    lines += [f"      {n:5d}  {why}" for why, n in c.refusals.most_common()]
    lines.append(
        f"  mutated inputs       {c.mutations:7d}   ({c.mutations / max(c.seconds_mutations, 1e-9):.1f}/s; "
        + ", ".join(f"{k} {v}" for k, v in c.mutation_families.most_common())
        + ")"
    )
    lines += [f"      {n:5d}  {k}" for k, n in sorted(c.mutation_outcomes.items())]
    if c.emulated:
        lines.append(
            f"  on the emulator      {sum(c.emulated.values()):7d}   small diagrams as `napkin emulate FILE --kernel simt`, "
            "attention variants with --kernel tensorcore (sm_80) and wgmma (sm_90a, d = 64):"
        )
        lines += [f"      {n:5d}  {k}" for k, n in c.emulated.most_common()]
    if c.known:
        lines.append(
            f"  known open bugs      {sum(c.known.values()):7d}   (failures matching a reproducer of test/fuzz/regressions)"
        )
        lines += [f"      {n:5d}  {name}" for name, n in c.known.most_common()]
    lines.append(f"  failures             {sum(c.failures.values()):7d}   ({len(unique)} distinct)")
    for rec in unique.values():
        where = f" -> {rec.files[0]}" if rec.files else ""
        lines.append(
            f"      [{rec.category}] x{rec.count} {rec.message.splitlines()[0][:200] if rec.message else ''}{where}"
        )
    return "\n".join(lines)


def run_campaign(settings: Settings, log: Callable[[str], None] = print) -> Campaign:
    campaign = Campaign(settings, log)
    campaign.run()
    return campaign
