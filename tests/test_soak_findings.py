"""What the soak (``benchmarks/soak.py``) found, each as a plain test against real gunicorn.

* The arbiter's ``USR1`` (reopen the logs, which gunicorn passes on to every worker) can reach
  a worker that is recycling after its loop has ended and its class has put the default
  dispositions back (aiohttp's workers close their asyncio loop, which removes its signal
  handlers, before ``worker_exit`` runs): the worker dies of ``SIGUSR1``. It had recycled:
  replaced, not counted.
* ``finish_task()`` in a worker whose app ignores ``SIGTERM`` still ends the task after the
  current request, with every worker class: finished, not replaced, nothing counted.
* The backoff timer still armed when the master exits (it gave up, or was shut down) must not
  end it by ``SIGALRM`` once its interpreter has put the default dispositions back.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from test_compat_workers import KINDS, Kind, ready

from gunicorn_tornadofork import GIVE_UP_STATUS
from server import Server, answer, wait_for

# The compatibility subset takes the USR1 test and the classes KINDS marks for it.
pytestmark = pytest.mark.timeout(90)

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
IGNORE_TERM_HOOK = """
import signal as _signal

def post_worker_init(worker):
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
"""


def assert_not_counted(server: Server) -> None:
    log = server.log()
    assert ", restarting (" not in log, log
    assert "giving up" not in log, log


@pytest.mark.compat
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


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    kind: Kind = request.param
    kind.check()
    return kind


def test_finish_task_when_the_app_ignores_sigterm(gunicorn: Start, kind: Kind) -> None:
    """The app ignores SIGTERM, then calls finish_task(): the request is answered, the worker
    ends, is judged finished and is not replaced while the other task serves on; nothing is
    counted, and once the second task finishes the same way the server exits 0."""
    config = f"workers = 2\nworker_class = {kind.worker_class!r}\n" + IGNORE_TERM_HOOK
    if kind.worker_class == "gthread":
        config += "threads = 4\n"
    # uvicorn's server sets its own SIGTERM handler after post_worker_init: there the app
    # ignores SIGTERM in the request (the main thread), as it can wherever it runs there.
    server = gunicorn(options="max_restarts=0", config=config, app=kind.app, args=list(kind.args))
    old = server.wait_workers([0, 1])
    ready(old.values())
    first = answer(server, "/ignoreterm/finish")
    done, pid = int(first["task"]), int(first["pid"])
    assert old[done] == pid
    server.wait_log(f"task {done} (pid {pid}) finished", 20)
    other = 1 - done
    assert server.wait_workers([other]) == {other: old[other]}
    assert server.running()
    assert_not_counted(server)
    second = answer(server, "/ignoreterm/finish")
    assert int(second["pid"]) == old[other]
    assert server.wait_exit(30) == 0
    log = server.log()
    assert f"task {other} (pid {old[other]}) finished" in log, log
    assert "All 2 tasks finished" in log, log
    assert_not_counted(server)


# An object of the config file whose finalizer, in the master only, takes its time: the master's
# interpreter finalizes it after it has put back the default signal dispositions, as it does
# with any module or extension that is slow to tear down.
SLOW_FINALIZER = """
import os as _os, sys as _sys, time as _time

class _SlowFinalizer:
    # What the finalizer uses is bound here: module globals may be gone by the time it runs.
    def __del__(self, pid=_os.getpid(), getpid=_os.getpid, sleep=_time.sleep):
        if getpid() == pid:
            sleep(2.5)

_sys.tf_slow_finalizer = _SlowFinalizer()  # kept until the interpreter tears sys down
"""


@pytest.mark.compat
@pytest.mark.parametrize("ending", ["give up", "shutdown"])
def test_a_pending_backoff_does_not_kill_the_exiting_master(gunicorn: Start, ending: str) -> None:
    """A task waits out its backoff (the arbiter's SIGALRM timer is armed) when the arbiter
    gives up or is shut down: the timer must not fire into the exiting master, whose signal
    handlers are gone by then. It exits 5 after giving up, 0 after SIGTERM."""
    server = gunicorn(options="max_restarts=1, backoff=1", config="workers = 2\n" + SLOW_FINALIZER)
    pids = server.wait_workers([0, 1])
    ready(pids.values())
    os.kill(pids[0], signal.SIGKILL)
    server.wait_log(f"task 0 (pid {pids[0]}) killed by signal SIGKILL, restarting in 1s (1 of")
    if ending == "give up":
        os.kill(pids[1], signal.SIGKILL)
        expected = GIVE_UP_STATUS
    else:
        server.signal(signal.SIGTERM)
        expected = 0
    assert server.wait_exit(20) == expected, server.log()
