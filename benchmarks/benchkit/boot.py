"""boot: from ``exec`` of the server to the last of N workers ready."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchkit.figures import Figure, alternate
from benchkit.profiles import Profile
from benchkit.runner import NS, Server
from benchkit.servers import TORNADO


def measure_boot(kind: str, workers: int, root: Path) -> tuple[float, float]:
    """Seconds from exec to all workers ready, and from the master's ``when_ready`` (or
    tornado's parent before ``fork_processes``) to all workers ready."""
    with Server(kind, workers, root) as server:
        events = server.wait_workers(workers)
        last = max(event.ns for event in events)
        assert server.master_ready_ns is not None
        return (last - server.start_ns) / NS, (last - server.master_ready_ns) / NS


def run_boot(profile: Profile, root: Path, floor: bool, log: Callable[[str], None]) -> list[Figure]:
    figures = []
    for workers, pairs in profile.boot_sizes:
        total = Figure(f"boot, exec → all ready, N = {workers}", "s")
        spawn = Figure(f"boot, when_ready → all ready, N = {workers}", "s")
        if workers == 16:
            for figure in (total, spawn):
                figure.target_kind, figure.target = "ratio<=", 0.30
        kinds = [*alternate(pairs), *([TORNADO] * pairs if floor else [])]
        for kind in kinds:
            whole, spawning = measure_boot(kind, workers, root)
            total.add(kind, whole)
            spawn.add(kind, spawning)
        log(f"boot N={workers}: {total.samples}")
        figures += [total, spawn]
    return figures
