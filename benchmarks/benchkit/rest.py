"""master at rest: the master's RSS, and its CPU time over a window and per turn of its loop,
with all its workers up and nothing happening."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchkit.figures import Figure
from benchkit.proc import MIB, cpu_ns, rss_bytes, sleeps
from benchkit.profiles import Profile
from benchkit.runner import NS, Server
from benchkit.servers import PLAIN, PLUGIN


def measure_rest(
    kinds: list[str], workers: int, seconds: float, root: Path
) -> dict[str, tuple[float, float, int]]:
    """Each master at rest with all its workers up: its RSS (MiB), the CPU seconds it used
    over ``seconds`` (schedstat, in ns: an idle master uses less than a 100 Hz clock tick),
    and the turns of its main loop meanwhile (its voluntary sleeps). The servers of ``kinds``
    idle side by side over the same window, so that the machine's load weighs on them alike."""
    with ExitStack() as stack:
        servers = {kind: stack.enter_context(Server(kind, workers, root)) for kind in kinds}
        for server in servers.values():
            server.wait_workers(workers, timeout=max(120.0, workers * 0.5))
        time.sleep(2.0)  # the boot's aftermath: the last spawn-loop sleep, the first heartbeats
        before = {kind: (cpu_ns(server.pid), sleeps(server.pid)) for kind, server in servers.items()}
        time.sleep(seconds)
        after = {kind: (cpu_ns(server.pid), sleeps(server.pid)) for kind, server in servers.items()}
        for server in servers.values():
            server.drain()
            server.check_alive()
        return {
            kind: (
                rss_bytes(server.pid) / MIB,
                (after[kind][0] - before[kind][0]) / NS,
                after[kind][1] - before[kind][1],
            )
            for kind, server in servers.items()
        }


def run_rest(profile: Profile, root: Path, log: Callable[[str], None]) -> list[Figure]:
    seconds = profile.rest_seconds
    figures = []
    for workers, pairs in profile.rest_sizes:
        rss = Figure(f"master at rest, RSS, N = {workers}", "MiB", target_kind="diff<=")
        rss.target = 2.0
        cpu = Figure(f"master at rest, CPU over {seconds:g} s, N = {workers}", "CPU s", target_kind="ratio<=")
        cpu.target = 1.0
        turn = Figure(f"master at rest, CPU per loop turn, N = {workers}", "CPU µs")
        for i in range(pairs):
            kinds = [PLUGIN, PLAIN] if i % 2 == 0 else [PLAIN, PLUGIN]  # start order alternates
            for kind, (memory, used, turns) in measure_rest(kinds, workers, seconds, root).items():
                rss.add(kind, memory)
                cpu.add(kind, used)
                turn.add(kind, used * 1e6 / max(turns, 1))
                log(
                    f"rest N={workers} {kind}: RSS {memory:.2f} MiB, CPU {used * 1000:.2f} ms, "
                    f"{turns} loop turns"
                )
        figures += [rss, cpu, turn]
    return figures
