"""respawn: from SIGKILL of one worker to its replacement ready."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchkit.figures import Figure
from benchkit.profiles import Profile
from benchkit.runner import NS, BenchError, Server, settle
from benchkit.servers import PLAIN, PLUGIN, TORNADO

Phases = dict[str, list[float]]
PHASES = ("SIGKILL → pre_fork", "pre_fork → post_fork", "post_fork → ready")


def measure_respawn(
    kinds: list[str], workers: int, kills: int, root: Path, phases: bool = False
) -> dict[str, Phases]:
    """Seconds from SIGKILL of one worker to its replacement ready, ``kills`` times per server,
    spaced. The servers of ``kinds`` run side by side, idle but for the kill, which goes to
    each in turn (A B A B ...), so that the machine's load changes weigh on them alike. With
    ``phases``, each latency is also split at gunicorn's ``pre_fork`` and ``post_fork``."""
    latencies: dict[str, Phases] = {kind: {name: [] for name in ("total", *PHASES)} for kind in kinds}
    with ExitStack() as stack:
        servers = {
            kind: stack.enter_context(Server(kind, workers, root, phases=phases and kind != TORNADO))
            for kind in kinds
        }
        current = {
            kind: {event.pid: event.task for event in server.wait_workers(workers)}
            for kind, server in servers.items()
        }
        for i in range(kills):
            for kind, server in servers.items():
                settle()
                victim = sorted(current[kind])[i % workers]
                task = current[kind].pop(victim)
                known = set(server.ready)
                start = time.monotonic_ns()
                os.kill(victim, signal.SIGKILL)
                event = server.wait_new_worker(known)
                latencies[kind]["total"].append((event.ns - start) / NS)
                if phases and kind != TORNADO:
                    forked = next(e.ns for e in server.events if e.kind == "F" and e.ns > start)
                    child = next(e.ns for e in server.events if e.kind == "C" and e.pid == event.pid)
                    for phase, begin, end in zip(
                        PHASES, (start, forked, child), (forked, child, event.ns), strict=True
                    ):
                        latencies[kind][phase].append((end - begin) / NS)
                if kind != PLAIN and event.task != task:
                    raise BenchError(f"{kind}: task {task} replaced by a worker with task {event.task}")
                current[kind][event.pid] = event.task
    return latencies


def run_respawn(
    profile: Profile, root: Path, floor: bool, phases: bool, log: Callable[[str], None]
) -> list[Figure]:
    workers = profile.respawn_workers
    figure = Figure(f"respawn, SIGKILL → replacement ready, N = {workers}", "s", target_kind="ratio<=")
    figure.target = 1.05
    parts = [Figure(f"respawn phase: {phase}, N = {workers}", "s") for phase in PHASES]
    kinds = [PLUGIN, PLAIN, *([TORNADO] if floor else [])]
    for _ in range(profile.respawn_runs):
        latencies = measure_respawn(kinds, workers, profile.respawn_kills, root, phases)
        for kind in kinds:
            figure.samples.setdefault(kind, []).extend(latencies[kind]["total"])
            for part, phase in zip(parts, PHASES, strict=True):
                if latencies[kind][phase]:
                    part.samples.setdefault(kind, []).extend(latencies[kind][phase])
    log(f"respawn: { {k: [round(v * 1000, 1) for v in vs] for k, vs in figure.samples.items()} }")
    return [figure, *parts] if phases else [figure]
