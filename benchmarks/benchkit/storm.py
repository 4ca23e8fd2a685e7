"""crash storm: workers forked per second while every child of the master is killed as soon
as it appears, and the master's CPU time per fork."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from benchkit.figures import Figure, alternate
from benchkit.proc import cpu_ns
from benchkit.profiles import Profile
from benchkit.runner import Server, settle
from benchkit.servers import HUGE_MAX_RESTARTS, TORNADO


def measure_storm(kind: str, workers: int, seconds: float, root: Path) -> tuple[float, float]:
    """Replacement workers forked per second while every child of the master is SIGKILLed as
    soon as it shows in /proc; and the master's CPU time per fork, in µs (everything it did
    over the storm: reaping, judging, logging, forking, and its own loop)."""
    with Server(kind, workers, root, max_restarts=HUGE_MAX_RESTARTS) as server:
        server.wait_workers(workers)
        settle()
        seen = set(server.children())
        cpu_before = cpu_ns(server.pid)
        for pid in seen:
            os.kill(pid, signal.SIGKILL)
        forked = 0
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            for pid in server.children():
                if pid not in seen:
                    seen.add(pid)
                    forked += 1
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            server.drain()  # the workers that got ready before the kill must not fill the pipe
            time.sleep(0.001)
        elapsed = time.monotonic() - start
        cpu = cpu_ns(server.pid) - cpu_before
        server.check_alive()
    return forked / elapsed, cpu / 1000 / max(forked, 1)


def run_storm(profile: Profile, root: Path, floor: bool, log: Callable[[str], None]) -> list[Figure]:
    rates, costs = [], []
    for workers, runs in profile.storm_sizes:
        rate = Figure(f"crash storm, forks per second, N = {workers}", "forks/s", target_kind="ratio>=")
        rate.target = 3.0
        cost = Figure(f"crash storm, master CPU per fork, N = {workers}", "CPU µs")
        kinds = [*alternate(runs), *([TORNADO] * runs if floor else [])]
        for kind in kinds:
            per_second, per_fork = measure_storm(kind, workers, profile.storm_seconds, root)
            rate.add(kind, per_second)
            cost.add(kind, per_fork)
        log(f"storm N={workers}: {rate.samples}; master CPU µs per fork: {cost.samples}")
        rates.append(rate)
        costs.append(cost)
    return rates + costs
