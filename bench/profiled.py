"""Run `kubehands ARGS...` with cProfile armed by signals: `python -m bench.profiled OUT -- ARGS`.

SIGUSR1 starts profiling, SIGUSR2 stops it (so start-up and shut-down are not in the profile); the
stats are written to OUT when the process exits (uvicorn turns SIGTERM into a clean shutdown)."""

import cProfile
import signal
import sys


def main() -> int:
    out, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: python -m bench.profiled OUT -- kubehands-args..."
    from kubehands.cli import main as kubehands_main

    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    # uvicorn re-raises the SIGTERM it captured after its clean shutdown: exit through `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return int(kubehands_main(args) or 0)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    sys.exit(main())
