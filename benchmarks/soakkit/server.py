"""One gunicorn server of the soak: its config, its files, its session."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from . import observe
from .plan import Round, traits

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
TIMEOUT = 4  # gunicorn's `timeout`
GRACEFUL_TIMEOUT = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """gunicorn with the plugin on loopback, in a session of its own."""

    def __init__(self, directory: Path, rnd: Round, worker_class: str) -> None:
        self.dir = directory
        self.round = rnd
        self.worker_class = worker_class
        self.port = free_port()
        self.errorlog = directory / "error.log"
        self.workers_file = directory / "workers"
        directory.mkdir(parents=True)
        (directory / "locks").mkdir()
        (directory / "cmd").mkdir()
        for name in ("spawns.log", "requests.log", "error.log"):
            (directory / name).touch()
        self.set_workers(rnd.workers)
        if rnd.privdrop:  # workers running as nobody write the soak's records
            for path in [directory, *directory.iterdir()]:
                os.chmod(path, 0o777 if path.is_dir() else 0o666)
        self.config = directory / "gunicorn.conf.py"
        self.config.write_text(self._config_text())
        app = {"asgi": "soakkit.app:asgi", "aiohttp": "soakkit.app:aiohttp_app"}.get(
            traits(worker_class).app, "soakkit.app:wsgi"
        )
        self.argv = [sys.executable, "-m", "gunicorn", "--config", str(self.config), app]
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_status: int | None = None
        self.exited_at: float | None = None

    def _config_text(self) -> str:
        rnd = self.round
        privdrop = "user = 'nobody'\ngroup = 'nogroup'\n" if rnd.privdrop else ""
        return (
            textwrap.dedent(
                f"""\
            import sys
            sys.path.insert(0, {str(HERE)!r})
            import gunicorn_tornadofork
            import soakkit.app  # imported in the master: workers may drop privileges
            from soakkit.hooks import post_fork, post_worker_init, worker_exit

            bind = "127.0.0.1:{self.port}"
            workers = int(open({str(self.workers_file)!r}).read())
            worker_class = {self.worker_class!r}
            threads = {4 if self.worker_class == "gthread" else 1}
            timeout = {TIMEOUT}
            graceful_timeout = {GRACEFUL_TIMEOUT}
            max_requests = {rnd.max_requests}
            max_requests_jitter = {rnd.max_requests_jitter}
            errorlog = {str(self.errorlog)!r}
            loglevel = "debug"
            proc_name = "soak"
            control_socket_disable = True
            control_socket = {str(self.dir / "gunicorn.ctl")!r}
            """
            )
            + privdrop
            + textwrap.dedent(
                f"""\

            def on_starting(server):
                gunicorn_tornadofork.install(server, **{rnd.options!r})
            """
            )
        )

    def set_workers(self, count: int) -> None:
        """The ``workers`` the config file gives on its next read (start, HUP)."""
        tmp = self.workers_file.with_suffix(".tmp")
        tmp.write_text(str(count))
        os.chmod(tmp, 0o644)
        tmp.replace(self.workers_file)

    def start(self) -> None:
        env = {**os.environ, "SOAK_DIR": str(self.dir), "PYTHONUNBUFFERED": "1"}
        with open(self.dir / "output.log", "wb") as output:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> int | None:
        """The master's exit status once it has exited (-N: killed by signal N)."""
        if self.proc is not None and self.exit_status is None:
            status = self.proc.poll()
            if status is not None:
                self.exit_status, self.exited_at = status, time.monotonic()
        return self.exit_status

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def text(self, name: str) -> str:
        path = self.dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_all(self, timeout: float = 10.0) -> list[int]:
        """SIGKILL the whole session and wait until nothing of it is left; the pids that
        were still there."""
        left = observe.session_members(self.pid) if self.proc is not None else []
        if self.proc is None:
            return left
        self.signal_group(signal.SIGKILL)
        for pid in observe.session_members(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        self.poll()
        deadline = time.monotonic() + timeout
        while observe.session_members(self.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of server {self.pid} survive SIGKILL")
            time.sleep(0.05)
        return [pid for pid in left if pid != self.pid]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
