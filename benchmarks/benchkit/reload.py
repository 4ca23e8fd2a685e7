"""reload under load: SIGHUP to a master of N workers while wrk keeps loading it.

Each sample is one wrk run (``probe.lua``) on one server: a short warm-up, a steady window,
then SIGHUP, and wrk goes on until the reload is over and a little after. The reload is over
when the master has reaped every old worker (``child_exit``, reported by the master) and as
many successors as there were workers have reported ready (``post_worker_init``): both times
come from the servers' hooks, on CLOCK_MONOTONIC, like the ends of wrk's requests."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchkit.figures import Figure, alternate
from benchkit.probe import PROBE, parse_probe, percentile
from benchkit.profiles import Profile
from benchkit.report import version
from benchkit.runner import NS, BenchError, Server
from benchkit.servers import PLAIN, PLUGIN

#: wrk's connections are set up and the workers warm before the steady window opens.
WARMUP_SECONDS = 0.5
#: wrk goes on after the reload, so that the requests in flight at its end are answered.
TAIL_SECONDS = 0.5
#: Identical for both servers: how long an old worker may take to finish its requests.
GRACEFUL_TIMEOUT = 30


@dataclass(frozen=True)
class ReloadSample:
    duration: float  # s, HUP → last old worker reaped and every successor ready
    failed: int  # requests, over the whole wrk run
    steady_rate: float  # req/s
    reload_rate: float  # req/s, answers that ended in the reload window
    kept: float  # reload_rate / steady_rate: the share of its own steady throughput kept
    steady_p99: float  # s
    reload_p99: float  # s, requests in flight at some moment of the reload
    errors: str


def reload_done(server: Server, old: set[int], hup_ns: int, workers: int) -> int | None:
    """When the reload was over (ns), or None while it is not: every pid of ``old`` reaped
    and ``workers`` workers started since the HUP ready and still there."""
    if not old <= set(server.reaped):
        return None
    successors = [event for pid, event in server.ready.items() if pid not in old and pid not in server.reaped]
    successors = [event for event in successors if event.ns >= hup_ns]
    if len(successors) < workers:
        return None
    return max([server.reaped[pid].ns for pid in old] + [event.ns for event in successors])


def measure_reload(server: Server, connections: int, steady: float) -> ReloadSample:
    """One HUP under load (see the module's text)."""
    server.drain()
    old = server.live_workers()
    if len(old) != server.workers:
        raise BenchError(f"{server.kind}: {len(old)} live workers before the HUP\n{server.log_tail()}")
    wrk = shutil.which("wrk") or "wrk"
    argv = [wrk, f"-t{connections}", f"-c{connections}", "-d600s", "-s", str(PROBE), server.url()]
    with open(server.dir / "wrk.out", "w+") as output:
        client = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=server.dir)
        try:
            time.sleep(WARMUP_SECONDS)
            steady_from = time.monotonic_ns()
            time.sleep(steady)
            hup = time.monotonic_ns()
            os.kill(server.pid, signal.SIGHUP)
            done: list[int] = []

            def over() -> bool:
                end = reload_done(server, old, hup, server.workers)
                if end is not None:
                    done.append(end)
                return end is not None

            server.wait_until(over, GRACEFUL_TIMEOUT + 30, "the reload to end")
            time.sleep(TAIL_SECONDS)
        finally:
            client.send_signal(signal.SIGINT)  # wrk stops, prints its summary, runs done()
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        output.seek(0)
        text = output.read()
    record = parse_probe(text)
    end = done[0]
    steady_lat = record.latencies_within(steady_from, hup)
    reload_lat = record.latencies_across(hup, end)
    steady_rate, reload_rate = record.rate(steady_from, hup), record.rate(hup, end)
    return ReloadSample(
        duration=(end - hup) / NS,
        failed=record.failed(),
        steady_rate=steady_rate,
        reload_rate=reload_rate,
        kept=reload_rate / steady_rate if steady_rate > 0 else math.nan,
        steady_p99=percentile(steady_lat, 99) / NS,
        reload_p99=percentile(reload_lat, 99) / NS,
        errors=", ".join(f"{kind} {count}" for kind, count in record.errors.items() if count),
    )


def reload_figures(label: str) -> dict[str, Figure]:
    figures = {
        "duration": Figure(f"reload, {label}: HUP → old gone and all new ready", "s", target_kind="ratio<="),
        "failed": Figure(f"reload, {label}: failed requests", "failed", target_kind="total<=", stat="total"),
        "reload_rate": Figure(f"reload, {label}: throughput during reload", "req/s", target_kind="ratio>="),
        "steady_rate": Figure(f"reload, {label}: throughput steady", "req/s"),
        "kept": Figure(f"reload, {label}: throughput during reload / steady", "%"),
        "reload_p99": Figure(f"reload, {label}: p99 latency during reload", "s", target_kind="ratio<="),
        "steady_p99": Figure(f"reload, {label}: p99 latency steady", "s"),
    }
    figures["duration"].target = 1.00
    figures["failed"].target = 0
    figures["reload_rate"].target = 0.90
    figures["reload_p99"].target = 1.50
    return figures


def run_reload(profile: Profile, root: Path, generator: str, log: Callable[[str], None]) -> list[Figure]:
    if generator != "wrk":
        log("reload: needs wrk (apt-get install wrk); skipped")
        return []
    workers, gunicorn = profile.reload_workers, version("gunicorn")
    result = []
    for worker_class, threads in (("sync", 1), ("gthread", 4)):
        label = f"{worker_class}{f' x {threads} threads' if threads > 1 else ''}, N = {workers}"
        figures = reload_figures(f"{label}, gunicorn {gunicorn}")
        with ExitStack() as stack:
            servers = {
                kind: stack.enter_context(
                    Server(
                        kind,
                        workers,
                        root,
                        worker_class=worker_class,
                        threads=threads,
                        reaps=True,
                        graceful_timeout=GRACEFUL_TIMEOUT,
                    )
                )
                for kind in (PLUGIN, PLAIN)
            }
            for server in servers.values():
                server.wait_workers(workers)
            time.sleep(1.0)  # plain gunicorn's last spawn-loop sleep
            for kind in alternate(profile.reload_pairs):
                sample = measure_reload(
                    servers[kind], profile.reload_connections, profile.reload_steady_seconds
                )
                for name, figure in figures.items():
                    value = getattr(sample, name)
                    if not (isinstance(value, float) and math.isnan(value)):
                        figure.add(kind, value)
                if sample.errors:
                    figures["failed"].notes.append(f"{kind}: {sample.errors}")
                log(f"reload {worker_class} {kind}: {sample}")
                time.sleep(0.5)  # the successors' first moments
        result += list(figures.values())
    return result
