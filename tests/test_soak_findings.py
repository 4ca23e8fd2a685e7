"""What the soak (``benchmarks/soak.py``) found, each as a plain test against real gunicorn.

* The arbiter's ``USR1`` (reopen the logs, which gunicorn passes on to every worker) can reach
  a worker that is recycling after its loop has ended and its class has put the default
  dispositions back (aiohttp's workers close their asyncio loop, which removes its signal
  handlers, before ``worker_exit`` runs): the worker dies of ``SIGUSR1``. It had recycled:
  replaced, not counted.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from test_compat_workers import ready

from server import Server, answer, wait_for

pytestmark = [pytest.mark.compat, pytest.mark.timeout(90)]

Start = Callable[..., Server]

# worker_exit records the worker's pid, then takes its time while the flag file exists.
SLOW_EXIT_HOOK = """
import os as _os, time as _time

def worker_exit(server, worker):
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"exiting {_os.getpid()}\\n")
    deadline = _time.monotonic() + 20
    while _os.path.exists(_os.environ["TF_SLOW_EXIT"]) and _time.monotonic() < deadline:
        _time.sleep(0.05)
"""


# Every worker's app ignores SIGTERM from the moment the worker has booted.
def assert_not_counted(server: Server) -> None:
    log = server.log()
    assert ", restarting (" not in log, log
    assert "giving up" not in log, log


def test_usr1_during_a_recycle_is_not_a_restart(gunicorn: Start, tmp_path: Path) -> None:
    """A worker recycled by ``max_requests`` is in its ``worker_exit`` (its loop closed, its
    handlers gone) when the master's USR1 reaches it and kills it: it recycled all the same,
    so with ``max_restarts=0`` the server replaces it and runs on.

    aiohttp's ``GunicornWebWorker`` opens that window wide (its asyncio loop is closed before
    ``worker_exit``); every class has it briefly, as Python puts the default dispositions
    back while the process exits. (uvloop's loop leaves the handlers in place.)
    """
    pytest.importorskip("aiohttp")
    worker_class = "aiohttp.GunicornWebWorker"
    flag = tmp_path / "slow-exit"
    flag.write_text("")
    server = gunicorn(
        options="max_restarts=0",
        config=f"workers = 1\nworker_class = {worker_class!r}\nmax_requests = 1\ntimeout = 60\n"
        + SLOW_EXIT_HOOK,
        app="aiohttpapp:app",
        env={"TF_SLOW_EXIT": str(flag)},
    )
    old = server.wait_workers([0])[0]
    ready([old])
    # aiohttp's workers recycle after more than max_requests requests.
    for _ in range(2):
        assert int(answer(server)["pid"]) == old
    wait_for(lambda: f"exiting {old}" in server.event_lines(), 15, "the recycled worker's worker_exit")
    server.signal(signal.SIGUSR1)
    log = server.wait_log(f"task 0 (pid {old}) ", 15)
    assert f"task 0 (pid {old}) recycled, replacing it" in log, log
    # The worker died of the USR1 (the case under test), not at the end of its worker_exit.
    assert f"Worker (pid:{old}) was sent SIGUSR1!" in log, log
    new = server.wait_workers([0])[0]
    assert new != old
    flag.unlink()
    assert int(answer(server)["pid"]) == new
    assert server.running()
    assert_not_counted(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
