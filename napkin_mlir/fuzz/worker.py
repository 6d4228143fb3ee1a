"""The fuzzer's worker process and its supervisor.

The MLIR bindings can abort the whole process (an assertion, `LLVM ERROR`), so every input
runs in a worker subprocess; to run thousands per minute one worker takes many jobs, one
JSON line each on its stdin, and answers one JSON line each. `Worker` (the supervisor side,
plain Python) starts it, sends a job, waits with a timeout, and restarts it when it dies or
hangs: the job that killed it comes back as `{"died": "abort" | "timeout", ...}` with the
tail of what the process wrote to stderr (the assertion, the LLVM error).

Jobs (`python -m napkin_mlir.fuzz.worker CAPTURE_DIR` serves them):

* `{"kind": "diagram", "spec": {...} | "text": "...", "seed": N, ...}`: build the diagram
  (from a spec: `spec.render`) and run `differential.check_diagram` on it; the answer is the
  report (`Report.to_json`) and the diagram's text.
* `{"kind": "selftest", "abort": true | "sleep": seconds}`: die or hang on purpose (the
  supervisor's own test);
* `{"kind": "cli", "entry": "napkin-opt" | "napkin", "args": [...], "input": base64}` (or
  `"spec": {...}`, a generated diagram rendered as the input): write the input to a file, run the console entry point in-process with `{input}` and `{out}` in
  the arguments replaced by file paths, file descriptors 1 and 2 redirected to files (so
  what the C++ side prints is caught too); the answer is the exit status, stdout and stderr.

The worker reaches the command-line tools through their console-script entry points (the
installed `[project.scripts]`, resolved by name at run time), the way a user's shell does:
the fuzz layer sits below `cli` and imports nothing of it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: XLA compiles every op of the interpretation once per shape; a random diagram's shapes
#: are new, so compile time dominates. Optimizing less makes it about 1.6 times faster.
XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

#: Jobs a worker runs before it is replaced (bounds what JIT engines and caches hold).
RECYCLE_AFTER = 1500


class Worker:
    """A worker subprocess: `call(job, timeout)` returns its answer, or a `died` record."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.jobs = 0
        self.hung = False
        self.restarts = 0
        self.started = 0

    def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("XLA_FLAGS", XLA_FLAGS)
        env.setdefault("MPLBACKEND", "Agg")
        env.setdefault("JAX_PLATFORMS", "cpu")
        env.pop("NAPKIN_DEBUG", None)
        boot = open(self.workdir / "boot.log", "wb")  # noqa: SIM115 (kept open by the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "napkin_mlir.fuzz.worker", str(self.workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=boot,
            env=env,
            start_new_session=True,
        )
        boot.close()
        self.started += 1
        self.jobs = 0
        ready = self._read(300.0)
        if ready is None or not ready.get("ready"):
            tail = (self.workdir / "boot.log").read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"the fuzz worker did not start:\n{tail}")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]
        self.proc = None

    def _read(self, timeout: float) -> dict[str, Any] | None:
        """One answer line, or None when the worker died or `timeout` passed (then
        `self.hung` says which)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buf = b""
        self.hung = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.hung = True
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:  # end of file: the worker is gone (or going)
                return None
            buf += chunk
            if buf.endswith(b"\n"):
                return json.loads(buf)

    def call(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.proc is None or self.jobs >= RECYCLE_AFTER:
            self.stop()
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.jobs += 1
        t0 = time.monotonic()
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            answer = self._read(timeout)
        except (BrokenPipeError, OSError):
            answer, self.hung = None, False
        if answer is not None:
            return answer
        alive = self.hung
        err = (self.workdir / "stderr").read_bytes()[-4000:].decode(errors="replace")
        progress = self.workdir / "progress.json"
        steps = json.loads(progress.read_text()) if job["kind"] == "diagram" and progress.exists() else []
        diagram = self.workdir / "diagram.mlir"
        text = diagram.read_text() if job["kind"] == "diagram" and diagram.exists() else ""
        self.stop()
        self.restarts += 1
        if alive:
            return {
                "died": "timeout",
                "seconds": round(time.monotonic() - t0, 1),
                "stderr": err,
                "pipeline": steps,
                "text": text,
            }
        return {"died": "abort", "stderr": err, "pipeline": steps, "text": text}


# --- the worker side --------------------------------------------------------------------------------


def _entry(name: str) -> Any:
    from importlib.metadata import entry_points

    found = entry_points(group="console_scripts", name=name)
    for ep in found:
        return ep.load()
    raise RuntimeError(f"no console script '{name}' is installed")


class _Redirect:
    """File descriptors 1 and 2 pointed at files for the duration of a job."""

    def __init__(self, capture: Path) -> None:
        self.out = capture / "stdout"
        self.err = capture / "stderr"

    def __enter__(self) -> _Redirect:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, path in ((1, self.out), (2, self.err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()

    def read(self) -> tuple[str, str]:
        """What the job printed: all of it, or its head and tail when it is long (the
        first lines carry the verdict, an IR dump in a note can be megabytes)."""
        return _head_tail(self.out.read_bytes()), _head_tail(self.err.read_bytes())


def _head_tail(data: bytes, head: int = 16000, tail: int = 4000) -> str:
    if len(data) > head + tail:
        data = data[:head] + b"\n[... %d bytes ...]\n" % (len(data) - head - tail) + data[-tail:]
    return data.decode(errors="replace")


def _cli_job(job: dict[str, Any], capture: Path, entries: dict[str, Any]) -> dict[str, Any]:
    import traceback

    suffix = job.get("suffix", ".mlir")
    path = capture / f"input{suffix}"
    rendered = ""
    if "spec" in job:  # a generated diagram: its text is the input
        from napkin_mlir.fuzz.spec import Spec, render

        rendered = render(Spec.from_json(job["spec"]))
        path.write_text(rendered)
    else:
        path.write_bytes(base64.b64decode(job["input"]))
    out = capture / f"out{job.get('out_suffix', '.mlir')}"
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    args = [a.replace("{input}", str(path)).replace("{out}", str(out)) for a in job["args"]]
    name = job["entry"]
    if name not in entries:
        entries[name] = _entry(name)
    escaped = ""
    redirect = _Redirect(capture)
    t0 = time.perf_counter()
    with redirect:
        try:
            entries[name](args)
            code: object = 0
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # escaped the driver: a bug (the drivers catch everything)
            code = -1
            escaped = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
    stdout, stderr = redirect.read()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        stderr += str(code)
        code = 1
    return {
        "rc": code,
        "stdout": stdout[-4000:],
        "stderr": stderr,
        "escaped": escaped,
        "seconds": round(time.perf_counter() - t0, 3),
        "rendered": rendered,
    }


def _diagram_job(job: dict[str, Any], capture: Path) -> dict[str, Any]:
    import traceback

    for stale in ("progress.json", "diagram.mlir"):
        with contextlib.suppress(FileNotFoundError):
            (capture / stale).unlink()

    from napkin_mlir.fuzz.differential import Failure, Report, check_diagram
    from napkin_mlir.fuzz.spec import Spec, render

    with _Redirect(capture):
        text = job.get("text")
        if text is None:
            try:
                text = render(Spec.from_json(job["spec"]))
            except Exception as err:
                tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
                report = Report(
                    failures=[
                        Failure("generator", f"building the spec: {type(err).__name__}: {err}", detail=tb[-3000:])
                    ]
                )
                return {"report": report.to_json(), "text": ""}
        (capture / "diagram.mlir").write_text(text)  # for the supervisor, should the process die
        report = check_diagram(
            text,
            job.get("pipelines"),
            job.get("seed", 0),
            job.get("filename", "fuzz.mlir"),
            job.get("random_pipelines", 2),
            job.get("cpu", 1.0),
            job.get("keep_stages", False),
            lambda steps: (capture / "progress.json").write_text(json.dumps(steps)),
        )
    return {"report": report.to_json(), "text": text}


def serve(capture_dir: str) -> None:
    """Answer jobs from stdin until it closes (see the module docstring)."""
    capture = Path(capture_dir)
    capture.mkdir(parents=True, exist_ok=True)
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    with _Redirect(capture):
        import napkin_mlir.fuzz.differential  # noqa: F401  (the heavy imports, once)
    entries: dict[str, Any] = {}
    proto_out.write(b'{"ready": true}\n')
    proto_out.flush()
    for line in proto_in:
        job = json.loads(line)
        if job["kind"] == "selftest":  # the supervisor's own test: die or hang on purpose
            if job.get("abort"):
                os.write(2, b"selftest: aborting\n")
                os.abort()
            time.sleep(float(job.get("sleep", 0)))
            answer: dict[str, Any] = {"ok": True}
        elif job["kind"] == "cli":
            answer = _cli_job(job, capture, entries)
        else:
            answer = _diagram_job(job, capture)
        proto_out.write((json.dumps(answer) + "\n").encode())
        proto_out.flush()


if __name__ == "__main__":
    serve(sys.argv[1])
