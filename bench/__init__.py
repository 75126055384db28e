"""`make bench`: keyservice's benchmark. How it works and how to extend it: bench/README.md."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TextIO

HOST = "127.0.0.1"


class BenchError(Exception):
    """The run cannot go on; the message says why."""


def say(message: str, *, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(message + "\n")
    stream.flush()


def pin_to(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning a child process to ``cpus`` before it runs, so that the threads it
    starts are pinned too (setting the affinity after the start would race with them).

    ``preexec_fn`` is unsafe in a process with threads; the bench's driver starts none.
    """
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin
