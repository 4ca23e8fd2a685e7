"""Every worker class keeps the plugin's promises: task ids and titles, a restart with the
same id after a kill or a stray SIGTERM (counted), a clean finish (not replaced; the server
exits 0 once every task is done) and a ``max_requests`` recycle (same id, not counted).

Each case runs a real gunicorn with ``-k <class>``; a class whose package is missing, or
that this gunicorn does not ship, is skipped.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest
from gunicorn.workers import SUPPORTED_WORKERS

from gunicorn_tornadofork import GIVE_UP_STATUS
from server import Server, answer, proc_title, wait_for

# How the arbiter logs a worker stopped by a SIGTERM it did not send: a worker whose own
# handler ran says so in its report; one that died of the signal is simply killed by it.
STRAY_TERM_HANDLED = "stopped by signal SIGTERM that the arbiter did not send"
STRAY_TERM_KILLED = "killed by signal SIGTERM"


@dataclass(frozen=True)
class Kind:
    """A worker class as the command line names it, with the app it serves."""

    worker_class: str
    app: str = "testapp:wsgi"
    args: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # packages the class needs
    bundled: bool = True  # one of gunicorn's own classes (not every version has each)
    stray_term: str = STRAY_TERM_HANDLED
    recycle_after: int = 2  # requests it takes with ``max_requests = 2``

    def check(self) -> None:
        """Skip unless this Python and this gunicorn can run the class."""
        if self.bundled and self.worker_class not in SUPPORTED_WORKERS:
            pytest.skip(f"this gunicorn has no {self.worker_class!r} worker")
        for module in self.modules:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # eventlet warns that it is deprecated
                pytest.importorskip(module)


SYNC = Kind("sync")
GTHREAD = Kind("gthread", args=("--threads", "4"))
GEVENT = Kind("gevent", modules=("gevent",))
EVENTLET = Kind("eventlet", modules=("eventlet",))
TORNADO = Kind("tornado", modules=("tornado",))
ASGI = Kind("asgi", app="asgiapp:app")
# uvicorn's server catches SIGTERM itself and raises it again once it has shut down.
UVICORN = Kind(
    "uvicorn_worker.UvicornWorker",
    app="asgiapp:app",
    modules=("uvicorn_worker",),
    bundled=False,
    stray_term=STRAY_TERM_KILLED,
)
# uvicorn's own copy of that worker, deprecated but still in wide use.
UVICORN_LEGACY = Kind(
    "uvicorn.workers.UvicornWorker",
    app="asgiapp:app",
    modules=("uvicorn.workers",),
    bundled=False,
    stray_term=STRAY_TERM_KILLED,
)

# aiohttp's workers leave their loop with sys.exit(0) after more than `max_requests`
# requests (they check the count once a second).
AIOHTTP = Kind(
    "aiohttp.GunicornWebWorker", app="aiohttpapp:app", modules=("aiohttp",), bundled=False, recycle_after=3
)
AIOHTTP_UVLOOP = Kind(
    "aiohttp.GunicornUVLoopWebWorker",
    app="aiohttpapp:app",
    modules=("aiohttp", "uvloop"),
    bundled=False,
    recycle_after=3,
)

KINDS = [
    pytest.param(SYNC, id="sync", marks=pytest.mark.compat),
    pytest.param(GTHREAD, id="gthread", marks=pytest.mark.compat),
    pytest.param(GEVENT, id="gevent"),
    pytest.param(EVENTLET, id="eventlet"),
    pytest.param(TORNADO, id="tornado"),
    pytest.param(ASGI, id="asgi"),
    pytest.param(UVICORN, id="uvicorn"),
    pytest.param(UVICORN_LEGACY, id="uvicorn-legacy"),
    pytest.param(AIOHTTP, id="aiohttp", marks=pytest.mark.compat),
    pytest.param(AIOHTTP_UVLOOP, id="aiohttp-uvloop", marks=pytest.mark.compat),
]

Start = Callable[..., Server]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    kind: Kind = request.param
    kind.check()
    return kind


def heartbeat_started(pid: int) -> bool:
    """Whether worker ``pid`` has entered its main loop.

    gunicorn gives every worker a deleted temp file (``wgunicorn-*``) created at wall-clock
    time; only the worker's main loop touches it, setting its mtime to monotonic time. Before
    that, a worker may not have its own signal handlers yet, so a stop signal would not take
    the path under test (and the tornado worker sets ``alive`` again as its ``run()`` starts,
    undoing a SIGTERM that came just before).
    """
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for name in names:
        path = f"{fds}/{name}"
        try:
            if "wgunicorn-" not in os.readlink(path):
                continue
            st = os.stat(path)
        except OSError:
            continue
        if st.st_mtime < st.st_ctime - 1:
            return True
    return False


def ready(pids: Iterable[int]) -> None:
    """Wait until every one of these workers runs its main loop."""
    for pid in pids:
        wait_for(functools.partial(heartbeat_started, pid), 20, f"worker {pid} to enter its main loop")


def start(
    gunicorn: Start, kind: Kind, workers: int, options: str, config: str = ""
) -> tuple[Server, dict[int, int]]:
    """Start a server of ``kind`` and wait until all its workers run; (server, task id -> pid)."""
    server = gunicorn(
        options=options,
        config=f"workers = {workers}\n{config}",
        app=kind.app,
        args=["-k", kind.worker_class, *kind.args],
    )
    pids = server.wait_workers(range(workers))
    ready(pids.values())
    return server, pids


def restart_line(server: Server, task: int, pid: int) -> str:
    """The log line of the counted restart of ``task``, whose worker was ``pid``."""
    pattern = re.compile(rf"task {task} \(pid {pid}\) .*, restarting \(\d+ of max_restarts \d+\)")
    return wait_for(
        lambda: next((m.group(0) for m in pattern.finditer(server.log())), ""),
        15,
        f"the restart of task {task} (pid {pid}) in the log",
    )


def replaced(server: Server, old: dict[int, int], task: int) -> dict[int, int]:
    """Wait until ``task`` has a new running worker while every other task kept its own."""

    def renewed() -> dict[int, int] | None:
        now = server.worker_pids()
        return now if sorted(now) == sorted(old) and now[task] != old[task] else None

    now = wait_for(renewed, 15, f"a new worker for task {task}")
    assert now is not None
    assert {t: p for t, p in now.items() if t != task} == {t: p for t, p in old.items() if t != task}
    assert proc_title(now[task]).endswith(f" task {task}")
    ready([now[task]])
    return now


def test_ids_and_titles(gunicorn: Start, kind: Kind) -> None:
    """Workers hold ids 0..N-1, their titles end with ``task N``, and the app sees the id."""
    server, workers = start(gunicorn, kind, workers=3, options="max_restarts=0")
    for task, pid in workers.items():
        assert proc_title(pid) == f"gunicorn: worker [{kind.app}] task {task}"
    assert proc_title(server.pid).startswith(f"gunicorn: master [{kind.app}]")
    got = answer(server)
    task = int(got["task"])
    assert workers[task] == int(got["pid"])
    assert got["env"] == str(task)
    assert int(got["ppid"]) == server.pid


def test_sigkill_restarts_same_id_counted(gunicorn: Start, kind: Kind) -> None:
    """A worker killed by SIGKILL is replaced by one with the same id; the restart counts."""
    server, old = start(gunicorn, kind, workers=2, options="max_restarts=1")
    os.kill(old[1], signal.SIGKILL)
    line = restart_line(server, 1, old[1])
    assert line.endswith("killed by signal SIGKILL, restarting (1 of max_restarts 1)"), line
    new = replaced(server, old, 1)
    assert int(answer(server)["pid"]) in new.values()
    assert server.running()


def test_stray_sigterm_restarts_same_id_counted(gunicorn: Start, kind: Kind) -> None:
    """A SIGTERM the arbiter did not send: the worker is replaced with the same id, counted."""
    server, old = start(gunicorn, kind, workers=2, options="max_restarts=1")
    os.kill(old[1], signal.SIGTERM)
    line = restart_line(server, 1, old[1])
    assert line.endswith(f"{kind.stray_term}, restarting (1 of max_restarts 1)"), line
    new = replaced(server, old, 1)
    assert int(answer(server)["pid"]) in new.values()
    assert server.running()


def test_finish_task_is_not_replaced(gunicorn: Start, kind: Kind) -> None:
    """``finish_task()`` ends a worker for good; once both tasks finish, the master exits 0."""
    server, old = start(gunicorn, kind, workers=2, options="max_restarts=0")
    first = answer(server, "/finish")
    done, pid = int(first["task"]), int(first["pid"])
    assert old[done] == pid
    server.wait_log(f"task {done} (pid {pid}) finished")
    other = 1 - done
    assert server.wait_workers([other]) == {other: old[other]}
    second = answer(server, "/finish")
    assert (int(second["task"]), int(second["pid"])) == (other, old[other])
    assert server.wait_exit(20) == 0
    log = server.log()
    assert f"task {other} (pid {old[other]}) finished" in log
    assert "All 2 tasks finished" in log
    assert ", restarting (" not in log


def test_max_requests_recycles_same_id_uncounted(gunicorn: Start, kind: Kind) -> None:
    """A worker recycled after ``max_requests`` is replaced with the same id and is not
    counted: with ``max_restarts=0`` the server keeps running."""
    server, old = start(gunicorn, kind, workers=1, options="max_restarts=0", config="max_requests = 2\n")
    for _ in range(kind.recycle_after):
        assert int(answer(server)["pid"]) == old[0]
    server.wait_log(f"task 0 (pid {old[0]}) recycled, replacing it")
    new = replaced(server, old, 0)
    assert int(answer(server)["pid"]) == new[0]
    assert server.running()
    assert ", restarting (" not in server.log()
    assert "giving up" not in server.log()


# -- ends that only some worker classes have ------------------------------------------------


def test_uvicorn_ignored_sigquit_then_recycle_is_not_counted(gunicorn: Start) -> None:
    """uvicorn's workers hand SIGQUIT to gunicorn's base ``handle_exit``, which only clears
    ``alive``: uvicorn's server never reads it and goes on serving. When that worker later
    recycles after ``max_requests``, it is a recycle (same id, not counted), not a stop by
    SIGQUIT."""
    UVICORN.check()
    server, old = start(gunicorn, UVICORN, workers=1, options="max_restarts=0", config="max_requests = 2\n")
    os.kill(old[0], signal.SIGQUIT)
    for _ in range(2):
        assert int(answer(server)["pid"]) == old[0]  # the worker ignored the signal
    server.wait_log(f"task 0 (pid {old[0]}) ")
    assert f"task 0 (pid {old[0]}) recycled, replacing it" in server.log()
    replaced(server, old, 0)
    assert server.running()


def test_asgi_failed_lifespan_startup_is_not_a_recycle(gunicorn: Start) -> None:
    """An ASGI app whose lifespan startup fails cannot serve: its worker's end is a failure
    (gunicorn 27 halts with status 3; a counted restart would reach the cap), never a recycle
    repeated without end."""
    ASGI.check()
    server = gunicorn(
        options="max_restarts=2",
        config="workers = 1\nasgi_lifespan = 'on'\n",
        app="asgiapp:failing_startup",
        args=["-k", "asgi"],
    )
    wait_for(
        lambda: not server.running() or server.log().count("recycled, replacing it") >= 2,
        20,
        "the master to halt, or a second recycle",
    )
    assert "recycled, replacing it" not in server.log()
    assert server.wait_exit() in (3, GIVE_UP_STATUS)


# The worker's post_worker_init says it runs, then holds the worker between its class's signal
# handlers and its main loop for a while, as a slow app import would.
SLOW_LOOP_START = """
import os as _os, time as _time

def post_worker_init(worker):
    open(_os.path.join(_os.path.dirname(_os.environ["TF_EVENTS"]), f"init-{worker.pid}"), "w").close()
    _time.sleep(1.5)
"""


def test_shutdown_while_a_worker_loads_is_prompt(gunicorn: Start, kind: Kind) -> None:
    """A shutdown that reaches a worker after its signal handlers exist but before its main
    loop runs stops it then (gunicorn's tornado worker sets ``alive`` again as its loop
    starts, which would keep it serving until graceful_timeout ran out)."""
    if kind in (ASGI, AIOHTTP_UVLOOP):
        pytest.skip("loses a stop signal that comes before its event loop runs, in plain gunicorn too")
    server = gunicorn(
        config=f"workers = 1\ngraceful_timeout = 30\n{SLOW_LOOP_START}",
        app=kind.app,
        args=["-k", kind.worker_class, *kind.args],
    )
    pid = server.wait_workers([0])[0]
    wait_for(lambda: (server.dir / f"init-{pid}").exists(), 20, "the worker to load")
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=12) == 0
    assert "SIGKILL" not in server.log()
