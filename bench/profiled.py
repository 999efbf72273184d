"""Profiling a server process only while it serves the measured load, armed by signals.

In the profiled process, `armed_profiler(out)`: SIGUSR1 starts cProfile, SIGUSR2 stops it (so start-up and
shut-down are not in the profile), and the stats go to OUT when the process exits (uvicorn turns SIGTERM
into a clean shutdown). From the benchmark, `profiling(pid)` brackets the load.
`python -m bench.profiled OUT -- ARGS` runs `kubehands ARGS...` that way.
"""

import cProfile
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

SIGNAL_SETTLE_SECONDS = 0.1  # the handler runs between two bytecodes of the target's event loop


@contextmanager
def armed_profiler(out: str | None) -> Iterator[None]:
    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    # uvicorn re-raises the SIGTERM it captured after its clean shutdown: exit through `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        yield
    finally:
        profiler.disable()
        if out:
            profiler.dump_stats(out)


@contextmanager
def profiling(pid: int) -> Iterator[None]:
    """Profile process `pid` (running under `armed_profiler`) only inside this block."""
    os.kill(pid, signal.SIGUSR1)
    time.sleep(SIGNAL_SETTLE_SECONDS)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGUSR2)
        time.sleep(SIGNAL_SETTLE_SECONDS)


def main() -> int:
    out, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: python -m bench.profiled OUT -- kubehands-args..."
    from kubehands.cli import main as kubehands_main

    with armed_profiler(out):
        return int(kubehands_main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
