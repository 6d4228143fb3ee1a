"""Warp specialization: the two sides of an `scf.if` run as cooperative tasks.

Hopper kernels give a CTA's warpgroups roles that run different code at once and wait on
each other (a producer waits for the consumers to release a stage, the consumers for the
producer's loads). Run one side after the other, as the lockstep machine runs an `scf.if`,
the side run first blocks on a wait only the other side can complete. So when both sides of
an `scf.if` have threads and either side may block on other threads (it holds, at any depth,
an op of `BLOCKING`), `run_concurrently` runs them as tasks:

* each task runs its side's steps under its own mask, in a Python thread of its own, but only
  one thread runs at a time (a baton: the task runs until it finishes or blocks, then hands
  the baton back to the scheduler of the split, the thread that ran the `scf.if`);
* an op that cannot go on (an mbarrier phase not complete once the barrier's loads in flight
  have landed, a named barrier short of threads) calls `block`: in a task, the task hands
  over the baton with a `Wait` saying when it can go on (its `ready`); outside any task the
  op reports the deadlock itself, as the lockstep machine always did;
* the scheduler resumes the first task, in round robin from the one after the task that ran
  last (the then-side first), that has not started or whose wait is ready; each switch
  restores the task's `Machine.mask` (its nested masks live in its own thread's frames) and
  `Machine.task`;
* if every unfinished task is blocked, the split blocks in turn when it runs inside a task
  (a nested split: it is ready when one of its tasks is), and otherwise reports the deadlock
  naming each task's threads and what it waits for, at which op;
* an exception in a task is raised again by the `scf.if`, once the other tasks, suspended,
  are unwound (`_Abandon`) and their threads joined: none is left running.

Only `Machine.mask` and `Machine.task` belong to a task; the rest of the machine is shared,
as on the GPU: memory, mbarriers, named barriers, the race check's shadow (from the first
split on, the machine keeps each warp's last reads, `memory.track_readers`, since warps no
longer run in step), and wgmma state, which is kept per warpgroup. `cp.async` commit groups
stay machine-wide: only one side of a split should use them.

The order is deterministic: the same kernel and data give the same interleaving. A switch
costs a semaphore round trip between two threads (about 0.1 ms on a loaded machine, a few
per loop iteration of a pipeline); a kernel without such an `scf.if` runs exactly as
before. Lockstep across the batch's CTAs stays: a task's wait goes on when the phase
completed in every CTA whose threads in the task wait.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napkin_mlir.emulator.machine import EmulationError, Machine, Steps
from napkin_mlir.emulator.memory import track_readers

#: Ops that can wait for other threads: an scf.if holding one may split into tasks.
BLOCKING = frozenset({"nvgpu.mbarrier.try_wait.parity", "nvvm.barrier"})


@dataclass
class Wait:
    """What a blocked task waits for: `ready()` says whether it can go on now (it may land TMA
    loads in flight); `describe()` says what it waits for and at which op (for a deadlock)."""

    ready: Callable[[], bool]
    describe: Callable[[], str]


class _Abandon(BaseException):
    """Unwinds a suspended task whose split gives up (another task raised)."""


class Task:
    """One side of a split `scf.if`: its steps, its mask, its thread, and what it waits for."""

    def __init__(self, split: _Split, name: str, steps: Steps, mask: np.ndarray) -> None:
        self.split = split
        self.name = name
        self.steps = steps
        self.mask = mask
        self.go = threading.Semaphore(0)
        self.thread: threading.Thread | None = None
        self.wait: Wait | None = None
        self.done = False
        self.cancelled = False
        self.error: BaseException | None = None

    def suspend(self, m: Machine, wait: Wait) -> None:
        """Hand the baton to the split's scheduler until `wait` is ready (run in this task's
        thread, by an op that cannot go on)."""
        self.wait, self.mask = wait, m.mask
        self.split.back.release()
        self.go.acquire()
        if self.cancelled:
            raise _Abandon
        self.wait = None
        m.task, m.mask = self, self.mask

    def main(self, m: Machine, context: contextvars.Context) -> None:
        self.go.acquire()
        try:
            if not self.cancelled:
                m.task, m.mask = self, self.mask
                context.run(m.run, self.steps)
        except _Abandon:
            pass
        except BaseException as error:  # raised again by the scheduler, in the caller's thread
            self.error = error
        finally:
            self.done = True
            self.wait = None
            self.split.back.release()


@dataclass
class _Split:
    where: str
    back: threading.Semaphore


def block(m: Machine, wait: Wait, deadlock: Callable[[], EmulationError]) -> None:
    """The op running cannot go on until `wait.ready()`: in a task, let the other tasks run
    until it is; outside any task nothing else runs, so raise `deadlock()`."""
    while not wait.ready():
        if m.task is None:
            raise deadlock()
        m.task.suspend(m, wait)


def describe_threads(m: Machine, mask: np.ndarray) -> str:
    """The threads of `mask`, as ranges of thread ids in its first CTA (and how many CTAs)."""
    ctas = np.nonzero(mask.any(axis=1))[0]
    if len(ctas) == 0:
        return "no threads"
    ids = np.nonzero(mask[ctas[0]])[0]
    breaks = np.nonzero(np.diff(ids) != 1)[0]
    starts, ends = np.r_[ids[0], ids[breaks + 1]], np.r_[ids[breaks], ids[-1]]
    ranges = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends, strict=True))
    more = f" and {len(ctas) - 1} more CTAs" if len(ctas) > 1 else ""
    return (
        f"thread{'s' if len(ids) > 1 else ''} {ranges} of {m.describe_lane(int(ctas[0]), 0).split(' thread')[0]}{more}"
    )


def run_concurrently(m: Machine, sides: list[tuple[str, Steps, np.ndarray]], where: str) -> None:
    """Run `sides` (name, steps, mask) as tasks until all finish (the scheduler; see the module)."""
    track_readers(m)
    parent, saved = m.task, m.mask
    split = _Split(where, threading.Semaphore(0))
    tasks = [Task(split, name, steps, mask) for name, steps, mask in sides]

    def blocked() -> list[Task]:
        return [t for t in tasks if not t.done]

    def describe() -> str:
        return "; ".join(
            f"the {t.name} ({describe_threads(m, t.mask)}) {t.wait.describe() if t.wait else 'has not started'}"
            for t in blocked()
        )

    def any_ready() -> bool:
        return any(t.wait is None or t.wait.ready() for t in blocked())

    nested = Wait(any_ready, lambda: f"is a split scf.if at {where} whose tasks are all blocked: {describe()}")
    turn = 0
    try:
        while blocked():
            chosen = None
            for k in range(len(tasks)):
                t = tasks[(turn + k) % len(tasks)]
                if not t.done and (t.wait is None or t.wait.ready()):
                    chosen = t
                    break
            if chosen is None:
                if parent is None:
                    raise EmulationError(
                        f"deadlock: every task of the warp-specialized scf.if is blocked: {describe()}", where
                    )
                parent.suspend(m, nested)
                continue
            if chosen.thread is None:
                chosen.thread = threading.Thread(
                    target=chosen.main,
                    args=(m, contextvars.copy_context()),
                    name=f"emulator {chosen.name}",
                    daemon=True,
                )
                chosen.thread.start()
            chosen.go.release()
            split.back.acquire()
            m.task, m.mask = parent, saved
            if chosen.error is not None:
                raise chosen.error
            turn = tasks.index(chosen) + 1
    finally:
        for t in tasks:  # unwind the suspended tasks (after an error) and join every thread
            if t.thread is not None and not t.done:
                t.cancelled = True
                t.go.release()
                split.back.acquire()
            if t.thread is not None:
                t.thread.join()
        m.task, m.mask = parent, saved
