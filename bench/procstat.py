"""CPU and memory of a process from /proc (Linux), and a background sampler for peaks."""

import os
import threading
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy(window: float = 0.5) -> float:
    """Share of all CPUs not idle (idle + iowait) over the next `window` seconds, from /proc/stat."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]

    total0, idle0 = read()
    time.sleep(window)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in bytes."""
    out = {"rss": 0, "peak_rss": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                out["peak_rss"] = int(line.split()[1]) * 1024
    return out


@dataclass
class CpuWindow:
    """CPU used by a process between `start()` and `stop()`, as seconds and as a share of one core."""

    pid: int
    t0: float = 0.0
    c0: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0

    def start(self) -> "CpuWindow":
        self.t0, self.c0 = time.monotonic(), cpu_seconds(self.pid)
        return self

    def stop(self) -> dict[str, float]:
        self.seconds = time.monotonic() - self.t0
        self.cpu = cpu_seconds(self.pid) - self.c0
        return {"wall_seconds": self.seconds, "cpu_seconds": self.cpu,
                "cores": self.cpu / self.seconds if self.seconds else 0.0}


@dataclass
class PeakSampler:
    """Samples RSS of some processes every `interval` seconds in a thread; keeps the peaks."""

    pids: dict[str, int]
    interval: float = 0.5
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                rss = memory(pid)["rss"]
            except OSError:
                continue
            self.peaks[name] = max(self.peaks.get(name, 0), rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakSampler":
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()
