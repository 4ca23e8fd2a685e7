"""Start real gunicorn servers with the plugin, look at them from outside, clean them up.

Every wait polls a condition against a deadline. Every process a server starts carries a
marker in its environment, so cleanup finds and kills it even after a setsid (--daemon).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

APPS = Path(__file__).parent / "apps"
MARK = "TORNADOFORK_TEST_MARK"
WORKER_PREFIX = "gunicorn: worker ["
T = TypeVar("T")


class Timeout(AssertionError):
    """A condition did not hold before its deadline."""


def wait_for(condition: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def proc_title(pid: int) -> str:
    """The process title as ``ps`` shows it (setproctitle rewrites the argv area)."""
    return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def proc_ppid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None  # a zombie is not a live worker
    return int(fields[1])


def proc_env(pid: int) -> dict[str, str]:
    env = {}
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def marked_pids(mark: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``mark``."""
    me = os.getpid()
    return [
        pid
        for pid in all_pids()
        if pid != me and proc_env(pid).get(MARK) == mark and proc_ppid(pid) is not None
    ]


def pid_alive(pid: int) -> bool:
    return proc_ppid(pid) is not None


class Server:
    """One gunicorn master started with a generated config file."""

    def __init__(
        self,
        directory: Path,
        *,
        options: str = "",
        config: str = "",
        app: str = "testapp:wsgi",
        args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        install: bool = True,
    ) -> None:
        self.dir = directory
        self.port = free_port()
        self.mark = uuid.uuid4().hex
        self.errorlog = directory / "error.log"
        self.pidfile = directory / "gunicorn.pid"
        self.events = directory / "events.log"
        self.config_path = directory / "gunicorn.conf.py"
        install_hook = (
            f"def on_starting(server):\n    gunicorn_tornadofork.install(server, {options})\n"
            if install
            else ""
        )
        self.config_path.write_text(
            "import gunicorn_tornadofork\n"
            f"bind = '127.0.0.1:{self.port}'\n"
            f"errorlog = {str(self.errorlog)!r}\n"
            f"pidfile = {str(self.pidfile)!r}\n"
            "loglevel = 'debug'\n"
            "graceful_timeout = 5\n"
            # gunicorn >= 24 serves a control socket at one path per user: give each its own.
            f"control_socket = {str(directory / 'gunicorn.ctl')!r}\n" + install_hook + textwrap.dedent(config)
        )
        self.argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(self.config_path),
            "--chdir",
            str(APPS),
            *args,
            app,
        ]
        self.env = {
            **os.environ,
            MARK: self.mark,
            "TF_EVENTS": str(self.events),
            # setproctitle would otherwise reuse the environ area for longer titles, and
            # /proc/<pid>/environ (where cleanup finds the marker) would read as the title.
            "SPT_NOENV": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Server:
        self.output = open(self.dir / "output.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the master to exit; its exit status."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"gunicorn master {self.pid} still running after {timeout}s") from None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> list[int]:
        """Stop the master if it still runs (SIGTERM, then SIGKILL), then kill whatever the
        server started; returns the pids that outlived their master."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # A worker may take a moment to notice its master is gone: give it that moment.
        with contextlib.suppress(Timeout):
            wait_for(lambda: not marked_pids(self.mark), 3, "workers to follow their master")
        left = marked_pids(self.mark)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not marked_pids(self.mark), 10, "processes of the test to die")
        if hasattr(self, "output"):
            self.output.close()
        return left

    # -- looking from outside ------------------------------------------------------------

    def log(self) -> str:
        return self.errorlog.read_text(errors="replace") if self.errorlog.exists() else ""

    def output_text(self) -> str:
        path = self.dir / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def event_lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    def workers(self, master: int | None = None) -> dict[int, list[int]]:
        """Task id -> pids of the live workers of ``master``, read from /proc titles."""
        master = self.pid if master is None else master
        found: dict[int, list[int]] = {}
        for pid in all_pids():
            if proc_ppid(pid) != master:
                continue
            title = proc_title(pid)
            if not title.startswith(WORKER_PREFIX) or " task " not in title:
                continue
            found.setdefault(int(title.rsplit(" task ", 1)[1]), []).append(pid)
        return found

    def worker_pids(self) -> dict[int, int]:
        """Task id -> pid; fails if two live workers share an id."""
        workers = self.workers()
        shared = {task: pids for task, pids in workers.items() if len(pids) > 1}
        assert not shared, f"task ids held by several live workers: {shared}"
        return {task: pids[0] for task, pids in workers.items()}

    def wait_workers(self, tasks: Iterable[int], timeout: float = 15.0) -> dict[int, int]:
        """Wait until exactly these task ids have a live worker each; task id -> pid."""
        expected = sorted(tasks)

        def ready() -> dict[int, int] | None:
            workers = self.worker_pids()
            return workers if sorted(workers) == expected else None

        return wait_for(ready, timeout, f"workers with task ids {expected}")

    def wait_log(self, text: str, timeout: float = 15.0, count: int = 1) -> str:
        return wait_for(
            lambda: self.log() if self.log().count(text) >= count else "",
            timeout,
            f"{count}x {text!r} in the error log",
        )

    def get(self, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
        """One HTTP GET on a new connection; (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def get_in_background(self, path: str, timeout: float) -> tuple[threading.Thread, list[object]]:
        """Start one GET of ``path`` in a thread; (the thread, a list that receives the answer's
        status or the OSError that ended the request)."""
        result: list[object] = []

        def run() -> None:
            try:
                result.append(self.get(path, timeout=timeout)[0])
            except OSError as exc:
                result.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, result

    def wait_serving(self, timeout: float = 15.0) -> None:
        def answers() -> bool:
            try:
                return self.get("/", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(answers, timeout, "the server to answer")


def answer(server: Server, path: str = "/") -> dict[str, Any]:
    """GET ``path`` from the test app and parse its ``key=value`` answer."""
    status, body = server.get(path)
    assert status == 200, (status, body)
    return dict(item.split("=", 1) for item in body.split())
