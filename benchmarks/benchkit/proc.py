"""A process seen from ``/proc``: CPU time, memory, and the turns of its main loop."""

from __future__ import annotations

import os

from benchkit.runner import BenchError

MIB = 1024 * 1024


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` in ns (schedstat: finer than clock ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def sleeps(pid: int) -> int:
    """How often the main thread of ``pid`` has gone to sleep of its own accord (voluntary
    context switches). A gunicorn master at rest sleeps once per turn of its main loop (its
    ``select`` on the wake-up pipe, one second at most), so the difference over a window
    counts the loop's turns without looking inside the master."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise BenchError(f"no voluntary_ctxt_switches for pid {pid}")
