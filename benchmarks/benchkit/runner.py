"""One server under measurement: started in a session of its own, watched through the pipe
its hooks write into, and killed with its whole process group at the end."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from benchkit.servers import HERE, TORNADO, gunicorn_config

ENV_FD = "BENCH_READY_FD"
NS = 1_000_000_000
#: Pause between spaced kills and after a boot: lets the master finish the spawn loop it
#: was in (plain gunicorn sleeps up to 100 ms after each fork) before the next event.
SETTLE_SECONDS = 0.3


class BenchError(RuntimeError):
    """A server did not behave as the benchmark needs (exited, never got ready)."""


@dataclass(frozen=True)
class Event:
    """One line from a server: ``M`` (master ready), ``R`` (worker ready), ``F``/``C``
    (``pre_fork``/``post_fork``, with ``--phases``), ``X`` (the master reaped worker ``pid``)."""

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        reaps: bool = False,
        graceful_timeout: int = 5,
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
        self.reaped: dict[int, Event] = {}  # pid -> the master's child_exit event (with reaps)
        self.events: list[Event] = []
        if kind == TORNADO:
            self.argv = [sys.executable, str(HERE / "tornado_floor.py"), str(workers)]
        else:
            config = self.dir / "gunicorn.conf.py"
            config.write_text(
                gunicorn_config(
                    kind,
                    workers,
                    self.port,
                    self.dir,
                    worker_class,
                    threads,
                    max_restarts,
                    phases=phases,
                    reaps=reaps,
                    graceful_timeout=graceful_timeout,
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
            elif event.kind == "X":
                self.reaped.setdefault(event.pid, event)
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

    def live_workers(self) -> set[int]:
        """The workers that reported ready and have not been reaped (needs ``reaps``)."""
        return set(self.ready) - set(self.reaped)

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


def settle() -> None:
    """Give the master time to leave the spawn loop it is in (pacing, not synchronisation)."""
    time.sleep(SETTLE_SECONDS)
