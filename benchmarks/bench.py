"""Benchmark gunicorn with gunicorn_tornadofork against plain gunicorn.

    python benchmarks/bench.py --quick      # a few repeats, about three minutes
    python benchmarks/bench.py              # the full run, about nine minutes

Both servers run the same gunicorn (the one of this Python), worker class, app and settings;
only ``install()`` in ``on_starting`` differs. Runs alternate plugin and plain (A B A B ...);
where both servers sit idle between events (respawn, rest) they run side by side and the
events alternate between them. Every figure is the median of its samples; the table gives the
plugin/plain ratio of the medians against its target, and the interquartile range of the
ratios of samples taken together, which shows the machine's noise. tornado's own
``fork_processes`` with a trivial child is measured as the floor of boot, respawn and crash
storm. The table is printed as Markdown and the numbers, every sample included, are written
to ``benchmarks/results/latest.json``.

Every server runs in its own session on loopback and is killed with its whole process group
when its measurement ends; the benchmark then waits until no process of it holds the pipe
that reports readiness, so nothing outlives a run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PLUGIN, PLAIN, TORNADO = "plugin", "plain", "tornado"
#: A cap so high that the crash storm never reaches it.
HUGE_MAX_RESTARTS = 10**9
ENV_FD = "BENCH_READY_FD"
NS = 1_000_000_000
MIB = 1024 * 1024


class BenchError(RuntimeError):
    """A server did not behave as the benchmark needs (exited, never got ready)."""


# -- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How many repeats and how long: ``quick`` for development, ``full`` for the table."""

    name: str
    boot_sizes: tuple[int, ...]
    boot_pairs: int
    respawn_workers: int
    respawn_runs: int
    respawn_kills: int
    storm_sizes: tuple[int, ...]
    storm_runs: int
    storm_seconds: float
    throughput_workers: int
    throughput_connections: int
    throughput_pairs: int
    throughput_seconds: int  # wrk takes whole seconds
    rest_workers: int
    rest_pairs: int
    rest_seconds: float


QUICK = Profile(
    name="quick",
    boot_sizes=(1, 4, 16, 64),
    boot_pairs=3,
    respawn_workers=4,
    respawn_runs=2,
    respawn_kills=10,
    storm_sizes=(8, 64),
    storm_runs=2,
    storm_seconds=2.0,
    throughput_workers=1,
    throughput_connections=8,
    throughput_pairs=8,
    throughput_seconds=1,
    rest_workers=16,
    rest_pairs=2,
    rest_seconds=10.0,
)
FULL = Profile(
    name="full",
    boot_sizes=(1, 4, 16, 64),
    boot_pairs=7,
    respawn_workers=4,
    respawn_runs=3,
    respawn_kills=25,
    storm_sizes=(8, 64),
    storm_runs=3,
    storm_seconds=5.0,
    throughput_workers=1,
    throughput_connections=8,
    throughput_pairs=20,
    throughput_seconds=2,
    rest_workers=16,
    rest_pairs=4,
    rest_seconds=30.0,
)
FIGURES = ("boot", "respawn", "storm", "throughput", "rest")
#: Pause between spaced kills and after a boot: lets the master finish the spawn loop it
#: was in (plain gunicorn sleeps up to 100 ms after each fork) before the next event.
SETTLE_SECONDS = 0.3


# -- readiness, reported by the servers ---------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One line from a server: ``M`` (master ready) or ``R`` (worker ready)."""

    kind: str
    pid: int
    task: int
    ns: int  # CLOCK_MONOTONIC in the reporting process


class ReadyPipe:
    """The pipe the servers' hooks write into; end of file means every holder is gone."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.eof = False
        self._buffer = b""

    def close_writer(self) -> None:
        """Drop this process's copy of the write end (the server has its own)."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_writer()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def read(self, timeout: float) -> list[Event]:
        """The events that arrive within ``timeout`` seconds (maybe none)."""
        if self.eof:
            return []
        readable, _, _ = select.select([self.read_fd], [], [], max(0.0, timeout))
        return self.drain() if readable else []

    def drain(self) -> list[Event]:
        """Whatever events are already in the pipe, without waiting."""
        chunks = []
        while not self.eof:
            try:
                data = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
            chunks.append(data)
        self._buffer += b"".join(chunks)
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for line in lines:
            kind, pid, task, ns = line.decode().split()
            events.append(Event(kind, int(pid), int(task), int(ns)))
        return events


# -- one server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gunicorn_config(
    kind: str,
    workers: int,
    port: int,
    directory: Path,
    worker_class: str,
    threads: int,
    max_restarts: int,
    phases: bool,
) -> str:
    """The config file: identical for both kinds but for the plugin's ``on_starting``."""
    hooks = "post_worker_init, when_ready" + (", pre_fork, post_fork" if phases else "")
    text = f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from benchhooks import {hooks}

        bind = "127.0.0.1:{port}"
        workers = {workers}
        worker_class = {worker_class!r}
        threads = {threads}
        errorlog = {str(directory / "error.log")!r}
        loglevel = "info"
        graceful_timeout = 5
        # gunicorn >= 24 serves a control socket; 27 stops and restarts its thread around
        # every fork. Off, and at a path of its own in case it is not (23 ignores both).
        control_socket_disable = True
        control_socket = {str(directory / "gunicorn.ctl")!r}
        """
    if kind == PLUGIN:
        text += f"""
        import gunicorn_tornadofork

        def on_starting(server):
            gunicorn_tornadofork.install(server, max_restarts={max_restarts})
        """
    return textwrap.dedent(text)


class Server:
    """A gunicorn master (plugin or plain) or tornado's ``fork_processes`` parent, run in a
    session of its own; ``with`` kills the whole session on the way out."""

    def __init__(
        self,
        kind: str,
        workers: int,
        root: Path,
        *,
        worker_class: str = "sync",
        threads: int = 1,
        max_restarts: int = 100,
        phases: bool = False,
    ) -> None:
        self.kind = kind
        self.workers = workers
        self.dir = Path(tempfile.mkdtemp(prefix=f"{kind}-{workers}-", dir=root))
        self.port = free_port()
        self.pipe = ReadyPipe()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_ns = 0
        self.master_ready_ns: int | None = None
        self.ready: dict[int, Event] = {}  # pid -> its worker-ready event, in arrival order
        self.events: list[Event] = []
        if kind == TORNADO:
            self.argv = [sys.executable, str(HERE / "tornado_floor.py"), str(workers)]
        else:
            config = self.dir / "gunicorn.conf.py"
            config.write_text(
                gunicorn_config(
                    kind, workers, self.port, self.dir, worker_class, threads, max_restarts, phases
                )
            )
            self.argv = [sys.executable, "-m", "gunicorn", "--config", str(config), "benchapp:app"]

    def __enter__(self) -> Server:
        path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, ENV_FD: str(self.pipe.write_fd), "PYTHONPATH": path}
        with open(self.dir / "output.log", "wb") as output:
            self.start_ns = time.monotonic_ns()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=HERE,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(self.pipe.write_fd,),
                start_new_session=True,
            )
        self.pipe.close_writer()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGKILL the session, reap the master, wait until no process holds the pipe."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not self.pipe.eof:
            if time.monotonic() > deadline:
                raise BenchError(f"processes of {self.kind} server {self.pid} outlived it")
            self.pipe.read(0.1)
            if not self.pipe.eof:  # a child forked as the group was being killed
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        self.pipe.close()
        self.proc = None

    # -- watching ------------------------------------------------------------------------------

    def _take(self, events: list[Event]) -> list[Event]:
        self.events += events
        for event in events:
            if event.kind == "M" and self.master_ready_ns is None:
                self.master_ready_ns = event.ns
            elif event.kind == "R":
                self.ready.setdefault(event.pid, event)
        return events

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or self.pipe.eof:
            raise BenchError(f"{self.kind} server exited (status {self.proc.poll()}):\n{self.log_tail()}")

    def pump(self, timeout: float) -> list[Event]:
        """Read the events that arrive within ``timeout`` seconds."""
        self.check_alive()
        return self._take(self.pipe.read(timeout))

    def drain(self) -> None:
        self._take(self.pipe.drain())

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.kind} server: timed out waiting for {what}\n{self.log_tail()}")
            self.pump(min(left, 1.0))

    def wait_workers(self, count: int, timeout: float = 120.0) -> list[Event]:
        """Wait until ``count`` workers have reported ready; their events."""
        self.wait_until(lambda: len(self.ready) >= count, timeout, f"{count} workers ready")
        return list(self.ready.values())[:count]

    def wait_new_worker(self, known: set[int], timeout: float = 30.0) -> Event:
        """Wait for a worker-ready event from a pid not in ``known``."""
        self.wait_until(lambda: any(pid not in known for pid in self.ready), timeout, "a new worker")
        return next(event for pid, event in self.ready.items() if pid not in known)

    def children(self) -> list[int]:
        """The pids of the master's children (zombies included), from /proc."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for name in ("error.log", "output.log"):
            path = self.dir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


# -- the master process, seen from /proc ------------------------------------------------


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


def settle() -> None:
    """Give the master time to leave the spawn loop it is in (pacing, not synchronisation)."""
    time.sleep(SETTLE_SECONDS)


# -- figures ---------------------------------------------------------------------------------


Samples = dict[str, list[float]]


def alternate(pairs: int) -> Iterator[str]:
    """A B A B ...: plugin, then plain, ``pairs`` times."""
    for _ in range(pairs):
        yield PLUGIN
        yield PLAIN


def measure_boot(kind: str, workers: int, root: Path) -> tuple[float, float]:
    """Seconds from exec to all workers ready, and from the master's ``when_ready`` (or
    tornado's parent before ``fork_processes``) to all workers ready."""
    with Server(kind, workers, root) as server:
        events = server.wait_workers(workers)
        last = max(event.ns for event in events)
        assert server.master_ready_ns is not None
        return (last - server.start_ns) / NS, (last - server.master_ready_ns) / NS


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


def measure_storm(kind: str, workers: int, seconds: float, root: Path) -> float:
    """Replacement workers forked per second while every child of the master is SIGKILLed as
    soon as it shows in /proc."""
    with Server(kind, workers, root, max_restarts=HUGE_MAX_RESTARTS) as server:
        server.wait_workers(workers)
        settle()
        seen = set(server.children())
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
        server.check_alive()
    return forked / elapsed


WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_COUNT = re.compile(r"(\d+) requests in")
WRK_ERRORS = re.compile(r"Socket errors:.*|Non-2xx or 3xx responses:.*")


def load_generator(choice: str) -> str:
    """``wrk`` where installed (or asked for), else ``python``."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    return choice


def load(url: str, connections: int, seconds: int, generator: str) -> tuple[float, int, str]:
    """Requests per second on ``url``, requests answered, and any errors reported: with wrk,
    or with the Python client."""
    if generator == "python":
        done = python_load(url, connections, seconds)
        return done / seconds, done, ""
    wrk = shutil.which("wrk") or "wrk"
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rate, count = WRK_RATE.search(out), WRK_COUNT.search(out)
    if rate is None or count is None:
        raise BenchError(f"no rate in wrk's output:\n{out}")
    return float(rate.group(1)), int(count.group(1)), "; ".join(WRK_ERRORS.findall(out))


def python_load(url: str, connections: int, seconds: float) -> int:
    """The fallback load generator: Python is slow enough that more than two client processes
    would take the CPUs from the server, so at most two, each one request at a time."""
    connections = min(connections, 2)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    reader, writer = os.pipe()
    pids = []
    deadline = time.monotonic() + seconds
    try:
        for _ in range(connections):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 1
                try:
                    os.close(reader)
                    os.write(writer, f"{python_client(port, deadline)}\n".encode())
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(writer)
        writer = -1
        with os.fdopen(reader, "rb") as f:
            reader = -1
            total = sum(int(line) for line in f.read().split())
    finally:
        for fd in (reader, writer):
            if fd >= 0:
                os.close(fd)
        for pid in pids:
            os.waitpid(pid, 0)
    return total


def python_client(port: int, deadline: float) -> int:
    """Requests completed until ``deadline``, keeping the connection while the server does."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    done = 0
    sock: socket.socket | None = None
    while time.monotonic() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except OSError:
            data = b""
        else:
            if head.startswith(b"HTTP/1.1 200") and len(body) >= length:
                done += 1
        if sock is not None and (not data or re.search(rb"(?i)connection:\s*close", head)):
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return done


def measure_rest(
    kinds: list[str], workers: int, seconds: float, root: Path
) -> dict[str, tuple[float, float]]:
    """Each master at rest with all its workers up: its RSS (MiB) and the CPU seconds it used
    over ``seconds`` (schedstat, in ns: an idle master uses less than a 100 Hz clock tick).
    The servers of ``kinds`` idle side by side over the same window, so that the machine's
    load weighs on them alike."""
    with ExitStack() as stack:
        servers = {kind: stack.enter_context(Server(kind, workers, root)) for kind in kinds}
        for server in servers.values():
            server.wait_workers(workers)
        time.sleep(2.0)  # the boot's aftermath: the last spawn-loop sleep, the first heartbeats
        before = {kind: cpu_ns(server.pid) for kind, server in servers.items()}
        time.sleep(seconds)
        after = {kind: cpu_ns(server.pid) for kind, server in servers.items()}
        for server in servers.values():
            server.drain()
            server.check_alive()
        return {
            kind: (rss_bytes(server.pid) / MIB, (after[kind] - before[kind]) / NS)
            for kind, server in servers.items()
        }


# -- the results ---------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table."""

    name: str
    unit: str
    samples: Samples = field(default_factory=dict)
    # "ratio<=", "ratio>=", or "diff<=" (plugin minus plain, in the figure's unit)
    target_kind: str = ""
    target: float | None = None
    notes: list[str] = field(default_factory=list)

    def median(self, kind: str) -> float | None:
        values = self.samples.get(kind)
        return statistics.median(values) if values else None

    def ratio(self) -> float | None:
        plugin, plain = self.median(PLUGIN), self.median(PLAIN)
        if plugin is None or plain is None or plain == 0:
            return None
        return plugin / plain

    def paired_ratios(self) -> list[float]:
        """plugin/plain of each pair of samples taken one after the other (or side by side)."""
        plugin, plain = self.samples.get(PLUGIN, []), self.samples.get(PLAIN, [])
        if len(plugin) != len(plain):
            return []
        return [a / b for a, b in zip(plugin, plain, strict=True) if b]

    def spread(self) -> tuple[float, float] | None:
        """The interquartile range of the paired ratios: how far noise moves one ratio."""
        ratios = self.paired_ratios()
        if len(ratios) < 2:
            return None
        quartiles = statistics.quantiles(ratios, n=4)
        return quartiles[0], quartiles[2]

    def met(self) -> bool | None:
        plugin, plain, ratio = self.median(PLUGIN), self.median(PLAIN), self.ratio()
        if self.target is None:
            return None
        if self.target_kind == "ratio<=" and ratio is not None:
            return ratio <= self.target
        if self.target_kind == "ratio>=" and ratio is not None:
            return ratio >= self.target
        if self.target_kind == "diff<=" and plugin is not None and plain is not None:
            return plugin - plain <= self.target
        return None

    def target_text(self) -> str:
        if self.target is None:
            return ""
        if self.target_kind == "diff<=":
            return f"≤ plain + {self.target:g} {self.unit}"
        return f"{'≤' if self.target_kind == 'ratio<=' else '≥'} {self.target:.2f}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": {kind: self.median(kind) for kind in self.samples},
            "ratio": self.ratio(),
            "paired_ratios_iqr": self.spread(),
            "target": self.target_text() or None,
            "met": self.met(),
            "samples": self.samples,
            "notes": self.notes,
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 0.1:
            return f"{value * 1000:.2f} ms"
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "CPU s":
        return f"{value * 1000:.2f} ms"
    if unit == "MiB":
        return f"{value:.2f} MiB"
    return f"{value:,.0f} {unit}"


def table(figures: list[Figure]) -> str:
    lines = [
        "| figure | plugin | plain | plugin/plain | paired ratios, IQR | target | met | tornado floor |",
        "|---|---:|---:|---:|---:|---|:---:|---:|",
    ]
    for figure in figures:
        ratio, spread = figure.ratio(), figure.spread()
        met = {True: "yes", False: "**no**", None: ""}[figure.met()]
        lines.append(
            f"| {figure.name} | {fmt(figure.median(PLUGIN), figure.unit)} "
            f"| {fmt(figure.median(PLAIN), figure.unit)} "
            f"| {'-' if ratio is None else f'{ratio:.2f}'} "
            f"| {'' if spread is None else f'{spread[0]:.2f} to {spread[1]:.2f}'} "
            f"| {figure.target_text()} | {met} "
            f"| {fmt(figure.median(TORNADO), figure.unit) if TORNADO in figure.samples else ''} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "gunicorn_tornadofork": version("gunicorn-tornadofork"),
        "tornado": version("tornado"),
    }


# -- the run ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_boot(profile: Profile, root: Path, floor: bool) -> list[Figure]:
    figures = []
    for workers in profile.boot_sizes:
        total = Figure(f"boot, exec → all ready, N = {workers}", "s")
        spawn = Figure(f"boot, when_ready → all ready, N = {workers}", "s")
        if workers == 16:
            for figure in (total, spawn):
                figure.target_kind, figure.target = "ratio<=", 0.30
        kinds = [*alternate(profile.boot_pairs), *([TORNADO] * profile.boot_pairs if floor else [])]
        for kind in kinds:
            whole, spawning = measure_boot(kind, workers, root)
            total.samples.setdefault(kind, []).append(whole)
            spawn.samples.setdefault(kind, []).append(spawning)
        log(f"boot N={workers}: {total.samples}")
        figures += [total, spawn]
    return figures


def run_respawn(profile: Profile, root: Path, floor: bool, phases: bool) -> list[Figure]:
    workers = profile.respawn_workers
    figure = Figure(f"respawn, SIGKILL → replacement ready, N = {workers}", "s", target_kind="ratio<=")
    figure.target = 1.10
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


def run_storm(profile: Profile, root: Path, floor: bool) -> list[Figure]:
    figures = []
    for workers in profile.storm_sizes:
        figure = Figure(f"crash storm, forks per second, N = {workers}", "forks/s", target_kind="ratio>=")
        figure.target = 3.0
        kinds = [*alternate(profile.storm_runs), *([TORNADO] * profile.storm_runs if floor else [])]
        for kind in kinds:
            rate = measure_storm(kind, workers, profile.storm_seconds, root)
            figure.samples.setdefault(kind, []).append(rate)
        log(f"storm N={workers}: {figure.samples}")
        figures.append(figure)
    return figures


def run_throughput(profile: Profile, root: Path, generator: str) -> list[Figure]:
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
                rate.samples.setdefault(kind, []).append(per_second)
                efficiency.samples.setdefault(kind, []).append(done / (used / NS))
                if errors:
                    rate.notes.append(f"{kind}: {errors}")
        log(f"throughput {worker_class}: {rate.samples}")
        log(f"efficiency {worker_class}: {efficiency.samples}")
        figures += [rate, efficiency]
    return figures


def run_rest(profile: Profile, root: Path) -> list[Figure]:
    workers, seconds = profile.rest_workers, profile.rest_seconds
    rss = Figure(f"master at rest, RSS, N = {workers}", "MiB", target_kind="diff<=")
    rss.target = 2.0
    cpu = Figure(f"master at rest, CPU over {seconds:g} s, N = {workers}", "CPU s", target_kind="ratio<=")
    cpu.target = 1.0
    for i in range(profile.rest_pairs):
        kinds = [PLUGIN, PLAIN] if i % 2 == 0 else [PLAIN, PLUGIN]  # start order alternates
        for kind, (memory, used) in measure_rest(kinds, workers, seconds, root).items():
            rss.samples.setdefault(kind, []).append(memory)
            cpu.samples.setdefault(kind, []).append(used)
            log(f"rest {kind}: RSS {memory:.2f} MiB, CPU {used * 1000:.2f} ms")
    return [rss, cpu]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few repeats, short windows (development)")
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated figures among {', '.join(FIGURES)}"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip tornado's fork_processes floor")
    parser.add_argument(
        "--phases",
        action="store_true",
        help="split respawn at the pre_fork and post_fork hooks (adds those hooks to both servers)",
    )
    parser.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="throughput load generator: wrk where installed (auto), or the built-in Python client",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "latest.json", help="where to write the numbers (JSON)"
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    floor = not args.no_floor
    if floor:
        try:
            import tornado  # noqa: F401
        except ImportError:
            log("tornado is not installed: no floor (pip install tornado)")
            floor = False

    info = machine()
    info["load_generator"] = load_generator(args.load)
    info["loadavg_before"] = os.getloadavg()
    log(f"{profile.name} run on {info}")
    started = time.time()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="tornadofork-bench-") as tmp:
        root = Path(tmp)
        runners: dict[str, Callable[[], list[Figure]]] = {
            "boot": lambda: run_boot(profile, root, floor),
            "respawn": lambda: run_respawn(profile, root, floor, args.phases),
            "storm": lambda: run_storm(profile, root, floor),
            "throughput": lambda: run_throughput(profile, root, info["load_generator"]),
            "rest": lambda: run_rest(profile, root),
        }
        for name in FIGURES:
            if name in chosen:
                figures += runners[name]()
    info["loadavg_after"] = os.getloadavg()
    duration = time.time() - started

    markdown = table(figures)
    print(markdown)
    print()
    print(
        f"{profile.name} run, {duration:.0f} s: {info['nproc']} CPUs ({info['cpu']}), "
        f"Python {info['python']}, gunicorn {info['gunicorn']}, tornado {info['tornado']}, "
        f"load generator {info['load_generator']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "profile": profile.name,
                "settings": profile.__dict__,
                "machine": info,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "duration_s": round(duration, 1),
                "figures": [figure.as_json() for figure in figures],
                "markdown": markdown,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"numbers written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
