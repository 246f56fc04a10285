"""Busy background processes for the loaded variants: each burns one core until a deadline.

Bounded twice: each process exits by itself at its deadline, and the context manager
kills it on the way out, error or not.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# A pure-Python loop: it never sleeps, and checks its deadline every ~1 ms of work.
_BURN = (
    "import time,sys\n"
    "end=time.monotonic()+float(sys.argv[1])\n"
    "sys.stdout.write('busy\\n'); sys.stdout.flush()\n"
    "while time.monotonic()<end:\n"
    "    for _ in range(10000): pass\n"
)


@contextmanager
def busy_processes(count: int, seconds: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` processes spinning for at most `seconds` while the block runs."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _BURN, f"{seconds:g}"], stdout=subprocess.PIPE
                )
            )
        # Measure only once every one of them is burning (each says so, or exits at once).
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline() != b"busy\n":
                raise RuntimeError(f"busy process {proc.pid} did not start (exit {proc.poll()})")
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
