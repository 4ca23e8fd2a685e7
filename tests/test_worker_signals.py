"""A worker starts with the signal dispositions plain gunicorn gives it.

With ``backoff`` on, the arbiter handles SIGALRM to end a backoff; a worker must not keep
that handler, or an app that uses ``signal.alarm()`` as a watchdog would never be stopped.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Callable

import pytest
from test_compat_workers import ready

from server import Server, all_pids, proc_ppid, wait_for

Start = Callable[..., Server]
MASKS = ("SigBlk", "SigIgn", "SigCgt")
CLASSES = [("sync",), ("gthread", "--threads", "2")]


def signal_masks(pid: int) -> dict[str, str]:
    """The blocked, ignored and caught signal masks of ``pid`` from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return {name: fields[name].strip() for name in MASKS}


def one_worker(server: Server) -> int:
    """The pid of the server's one worker, once it runs its main loop."""

    def child() -> int | None:
        kids = [pid for pid in all_pids() if proc_ppid(pid) == server.pid]
        return kids[0] if len(kids) == 1 else None

    pid = wait_for(child, 15, "the worker")
    ready([pid])
    return pid


# A master hook that takes SIGALRM for itself after the arbiter set up its handlers: plain
# gunicorn's workers inherit that handler.
ALARM_IN_WHEN_READY = """
import signal

def when_ready(server):
    signal.signal(signal.SIGALRM, lambda signum, frame: None)
"""


@pytest.mark.parametrize("hook", ["", ALARM_IN_WHEN_READY], ids=["plain", "alarm-in-when_ready"])
@pytest.mark.parametrize("args", CLASSES, ids=[c[0] for c in CLASSES])
def test_worker_signal_dispositions_match_plain_gunicorn(
    gunicorn: Start, args: tuple[str, ...], hook: str
) -> None:
    """A worker of the plugin with ``backoff`` on blocks, ignores and catches exactly the
    signals that a worker of plain gunicorn (same class, same config) does."""
    config = "workers = 1\n" + hook
    plain = gunicorn(config=config, args=["-k", *args], install=False)
    plugin = gunicorn(options="backoff=1", config=config, args=["-k", *args])
    expected = signal_masks(one_worker(plain))
    assert signal_masks(one_worker(plugin)) == expected


def test_alarm_watchdog_kills_the_worker(gunicorn: Start) -> None:
    """An app that arms ``signal.alarm()`` and then hangs dies of SIGALRM, as under plain
    gunicorn, even with ``backoff`` on; the worker is replaced with the same id, counted."""
    server = gunicorn(options="backoff=0.1, max_restarts=5", config="workers = 1\n")
    old = server.wait_workers([0])
    ready(old.values())

    def hang() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", "/alarm/1")
            conn.getresponse().read()
        except OSError:
            pass  # the worker dies with the request
        finally:
            conn.close()

    client = threading.Thread(target=hang, daemon=True)
    client.start()
    pattern = re.compile(
        rf"task 0 \(pid {old[0]}\) killed by signal SIGALRM, restarting in [\d.]+s \(1 of max_restarts 5\)"
    )
    wait_for(lambda: pattern.search(server.log()), 15, "the worker's death by SIGALRM in the log")
    new = server.wait_workers([0])
    assert new[0] != old[0]
    assert server.running()
    client.join(30)
