"""throughput: requests per second on one worker, and per CPU second of that worker."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchkit.figures import Figure, alternate
from benchkit.loadgen import load
from benchkit.proc import cpu_ns
from benchkit.profiles import Profile
from benchkit.runner import NS, BenchError, Server
from benchkit.servers import PLAIN, PLUGIN


def run_throughput(profile: Profile, root: Path, generator: str, log: Callable[[str], None]) -> list[Figure]:
    """Requests per second, and requests per CPU second of the workers: the machine's other
    load changes the first much more than the second."""
    figures = []
    workers = profile.throughput_workers
    for worker_class, threads in (("sync", 1), ("gthread", 4)):
        label = f"{worker_class}{f' x {threads} threads' if threads > 1 else ''}, N = {workers}"
        rate = Figure(f"throughput, {label}", "req/s", target_kind="ratio>=")
        rate.target = 0.98
        efficiency = Figure(f"requests per worker CPU second, {label}", "req/CPU s", target_kind="ratio>=")
        efficiency.target = 0.98
        with ExitStack() as stack:
            servers = {
                kind: stack.enter_context(
                    Server(kind, workers, root, worker_class=worker_class, threads=threads)
                )
                for kind in (PLUGIN, PLAIN)
            }
            for server in servers.values():
                server.wait_workers(workers)
                load(server.url(), profile.throughput_connections, 1, generator)  # warm up
            for kind in alternate(profile.throughput_pairs):
                server = servers[kind]
                before = sum(cpu_ns(pid) for pid in server.ready)
                per_second, done, errors = load(
                    server.url(), profile.throughput_connections, profile.throughput_seconds, generator
                )
                used = sum(cpu_ns(pid) for pid in server.ready) - before
                server.check_alive()
                if len(server.ready) != workers:
                    raise BenchError(f"{kind}: a worker was replaced under load\n{server.log_tail()}")
                rate.add(kind, per_second)
                efficiency.add(kind, done / (used / NS))
                if errors:
                    rate.notes.append(f"{kind}: {errors}")
        log(f"throughput {worker_class}: {rate.samples}")
        log(f"efficiency {worker_class}: {efficiency.samples}")
        figures += [rate, efficiency]
    return figures
