"""A reload rolls on in the master's main loop: signals, timeouts and crashes are handled while
it runs, and it still replaces every running task once, never two live workers per id.

Each test slows the old workers' exit with a ``worker_exit`` hook (``tests/apps/slowexit.py``),
so that the roll takes far longer than what the test waits for: a reload that held the main
loop until its end would fail every one of them.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_compat_signals import BOOTED, live_workers, ready

from server import APPS, Server, proc_title, wait_for

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., Server]
WORKERS = 4  # a roll of one task at a time


def start(
    gunicorn: Start, tmp_path: Path, slow: float, config: str = "", workers: int = WORKERS
) -> tuple[Server, Path, dict[int, int]]:
    """``workers`` workers whose ``worker_exit`` takes ``slow`` seconds while the returned
    flag file exists (written here; removed, the exits are quick again); (server, flag,
    task id -> pid of the booted workers)."""
    flag = tmp_path / "slow-exit"
    server = gunicorn(
        options="max_restarts=9",
        config=(
            f"import sys\nsys.path.insert(0, {str(APPS)!r})\nfrom slowexit import worker_exit\n"
            f"workers = {workers}\ngraceful_timeout = 30\n{BOOTED}{config}"
        ),
        env={"TF_SLOW_EXIT": str(flag)},
    )
    old = ready(server, range(workers))
    flag.write_text(str(slow))
    return server, flag, old


def exiting(server: Server, pid: int) -> bool:
    """Whether the worker ``pid`` has left its loop (gunicorn logs this before ``worker_exit``)."""
    return f"Worker exiting (pid: {pid})" in server.log()


def counted(server: Server) -> list[str]:
    return re.findall(r"restarting(?: in \S+)? \(\d+ of max_restarts \d+\)", server.log())


def test_term_during_a_reload_stops_every_worker_at_once(gunicorn: Start, tmp_path: Path) -> None:
    """TERM in the middle of a slow roll: the master takes it up at once and asks every
    worker, old and new, to stop; the server is gone once their slow exit is over, not after
    the roll's four rounds."""
    server, flag, old = start(gunicorn, tmp_path, slow=6)
    server.signal(signal.SIGHUP)
    wait_for(lambda: exiting(server, old[0]), 10, "the roll to stop task 0's old worker")
    assert not any(exiting(server, old[task]) for task in (1, 2, 3)), "one task at a time"
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    server.wait_log("Handling signal: term", 5)
    wait_for(
        lambda: all(exiting(server, pid) for pid in old.values()),
        4,
        "every old worker to be asked to stop",
    )
    assert time.monotonic() - sent < 4
    assert server.wait_exit(25) == 0
    assert "Reload done" not in server.log()
    assert not counted(server)
    flag.unlink()


def test_scaling_and_usr1_are_taken_during_a_reload(gunicorn: Start, tmp_path: Path) -> None:
    """TTIN, USR1 and TTOU sent while a slow roll runs take effect while it runs; the roll
    then ends with every task of the new size replaced once, nothing counted."""
    server, flag, old = start(gunicorn, tmp_path, slow=3)
    server.signal(signal.SIGHUP)
    wait_for(lambda: exiting(server, old[0]), 10, "the roll to stop task 0's old worker")
    server.signal(signal.SIGTTIN)
    added = wait_for(lambda: (live_workers(server) or {}).get(4), 5, "task 4 to start")
    assert not exiting(server, old[3]), "the scale-up waited for the roll"
    server.signal(signal.SIGUSR1)
    server.wait_log(f"task 4: pid {added}", 5)
    server.signal(signal.SIGTTOU)
    server.wait_log(f"task 4 (pid {added}) stopped", 10)
    assert not exiting(server, old[3]), "the scale-down waited for the roll"
    flag.unlink()  # the rest of the roll goes quickly
    server.wait_log("Reload done: 4 old workers stopped", 40)
    new = ready(server, range(WORKERS), old=old)
    assert set(new.values()).isdisjoint(old.values())
    assert not counted(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0


def test_a_second_hup_during_a_reload_restarts_the_roll(gunicorn: Start, tmp_path: Path) -> None:
    """A second HUP while the first roll runs re-reads the config and rolls again over every
    running worker, including the successors the first roll started: in the end every task
    runs the second config, each id held by one worker throughout."""
    server, flag, old = start(gunicorn, tmp_path, slow=2)
    server.signal(signal.SIGHUP)
    first = wait_for(
        lambda: (w := live_workers(server)) and w.get(0) not in (None, old[0]) and w, 10, "task 0's successor"
    )
    server.config_path.write_text(server.config_path.read_text() + "proc_name = 'second'\n")
    server.signal(signal.SIGHUP)
    server.wait_log("Hang up: Master", 3, count=2)
    assert not exiting(server, old[3]), "the second HUP waited for the first roll"
    flag.unlink()  # the rest of the roll goes quickly
    new = ready(server, range(WORKERS), old=first, timeout=45)
    assert set(new.values()).isdisjoint(old.values())
    for task, pid in new.items():
        assert proc_title(pid) == f"gunicorn: worker [second] task {task}"
    server.wait_log("Reload done", 30)
    assert server.log().count("Reload done") == 1
    assert not counted(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0


def test_a_crash_during_a_reload_is_counted_and_the_roll_goes_on(gunicorn: Start, tmp_path: Path) -> None:
    """An old worker killed from outside while it waits for its turn is a counted restart,
    replaced at once; the roll passes over it and replaces the others."""
    server, flag, old = start(gunicorn, tmp_path, slow=3)
    server.signal(signal.SIGHUP)
    wait_for(lambda: exiting(server, old[0]), 10, "the roll to stop task 0's old worker")
    os.kill(old[3], signal.SIGKILL)
    server.wait_log(f"task 3 (pid {old[3]}) killed by signal SIGKILL, restarting (1 of max_restarts 9)", 5)
    replacement = wait_for(lambda: (w := live_workers(server)) and w.get(3) not in (None, old[3]) and w[3], 5)
    assert not exiting(server, old[2]), "the crash was judged while the roll ran"
    flag.unlink()  # the rest of the roll goes quickly
    server.wait_log("Reload done: 3 old workers stopped", 40)
    new = ready(server, range(WORKERS), old=old)
    assert new[3] == replacement, "the crash's replacement already runs the new config"
    assert len(counted(server)) == 1
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0


def test_timeouts_are_enforced_during_a_reload(gunicorn: Start, tmp_path: Path) -> None:
    """``timeout`` still reaches workers while a reload rolls: old workers whose
    ``worker_exit`` hangs far past it are aborted, as the arbiter asked them to stop the
    abort is not counted, and the roll ends long before the hooks would have."""
    server, flag, old = start(gunicorn, tmp_path, slow=60, config="timeout = 2\n", workers=2)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload done: 2 old workers stopped", 45)
    log = server.log()
    for pid in old.values():
        assert f"WORKER TIMEOUT (pid:{pid})" in log
    ready(server, range(2), old=old)
    assert not counted(server)
    flag.unlink()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
