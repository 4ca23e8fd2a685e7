"""Fault injection against real gunicorn: the promises of the spec hold under crash storms, a
killed arbiter, the give-up path, stubborn and hung workers, load through changes, and bad input.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from conftest import HOOKS

from server import WORKER_PREFIX, Server, marked_pids, proc_title, wait_for

T = TypeVar("T")

# "task 3 (pid 1234) killed by signal SIGKILL, restarting (7 of max_restarts 100)"
RESTART = re.compile(
    r"task (\d+) \(pid (\d+)\) (.+?), restarting(?: in \S+)? \((\d+) of max_restarts (\d+)\)"
)
GIVE_UP = "Too many child restarts, giving up"
# Every worker leaves a file once its own signal handlers are in place: a stop signal that
# reaches a worker before that is handled by the arbiter's inherited handler, and lost.
READY = """
import os as _os

def post_worker_init(worker):
    _here = _os.path.dirname(_os.environ["TF_EVENTS"])
    open(_os.path.join(_here, f"ready-{worker.pid}"), "w").close()
"""


# -- looking at workers from outside ----------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """One process, named by pid and start time (a pid alone may be reused)."""

    pid: int
    start: int  # clock ticks after boot
    title: str = field(compare=False)  # changes once the worker knows its task id

    @property
    def task(self) -> int | None:
        _, sep, tail = self.title.rpartition(" task ")
        return int(tail) if sep and tail.isdigit() else None


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def alive(proc: Proc) -> bool:
    """Whether this very process still runs (a zombie does not)."""
    stat = _stat(proc.pid)
    return stat is not None and stat[0] not in "ZXx" and stat[2] == proc.start


def worker_procs(master: int) -> list[Proc]:
    """The live children of ``master`` titled as workers, with or without a task id yet."""
    procs = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        stat = _stat(pid)
        if stat is None or stat[1] != master or stat[0] in "ZXx":
            continue
        title = proc_title(pid)
        if title.startswith(WORKER_PREFIX):
            procs.append(Proc(pid, stat[2], title))
    return procs


@dataclass
class Watch:
    """Samples a master's workers and fails as soon as two live workers hold one task id."""

    master: int
    samples: int = 0
    tasks_seen: set[int] = field(default_factory=set)

    def sample(self) -> list[Proc]:
        procs = worker_procs(self.master)
        holders: dict[int, list[Proc]] = defaultdict(list)
        for proc in procs:
            if proc.task is not None:
                holders[proc.task].append(proc)
        for task, group in holders.items():
            # One pass over /proc is not atomic: an old worker read early and its successor
            # read late can both look alive. If every one of them is still alive after the
            # pass, they were all alive at one same moment.
            if len(group) > 1 and all(alive(proc) for proc in group):
                raise AssertionError(f"task {task} held by several live workers at once: {group}")
        self.samples += 1
        self.tasks_seen.update(holders)
        return procs

    def tasks(self) -> dict[int, int]:
        """Task id -> pid of the live titled workers, sampled (and checked) now."""
        return {proc.task: proc.pid for proc in self.sample() if proc.task is not None}

    def until(self, condition: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
        """Poll ``condition`` until it returns something truthy, sampling the workers at every poll."""

        def check() -> T | None:
            self.sample()
            return condition()

        result = wait_for(check, timeout, what)
        assert result is not None
        return result

    def wait_tasks(self, tasks: range, timeout: float = 20.0) -> dict[int, int]:
        """Wait until exactly these ids have a live worker each; task id -> pid."""
        expected = list(tasks)
        return self.until(
            lambda: found if sorted(found := self.tasks()) == expected else None,
            timeout,
            f"workers with task ids {expected}",
        )


def identify(pid: int) -> Proc:
    """``pid`` as a Proc, so that a later check cannot mistake a new process for it."""
    stat = _stat(pid)
    assert stat is not None, f"process {pid} is gone"
    return Proc(pid, stat[2], proc_title(pid))


def log_tail(server: Server, lines: int = 40) -> str:
    """The end of the server's log without debug lines, for failure messages."""
    kept = [line for line in server.log().splitlines() if "[DEBUG]" not in line and line[:1] == "["]
    return "\n".join(kept[-lines:])


def wait_ready(server: Server, *pids: int) -> None:
    """Wait until these workers (of a server configured with READY) handle stop signals."""
    wait_for(lambda: all((server.dir / f"ready-{pid}").exists() for pid in pids), 15, f"workers {pids} ready")


def restarts(server: Server) -> list[re.Match[str]]:
    """The counted-restart lines of the server's log, in order."""
    return [m for m in map(RESTART.search, server.log().splitlines()) if m]


def gone(procs: list[Proc]) -> bool:
    return not any(alive(proc) for proc in procs)


def storm(server: Server, watch: Watch, kills: set[Proc], *, until: Callable[[], bool]) -> None:
    """SIGKILL every live worker of ``server`` in one loop, again and again, until ``until()``;
    every kill that found its process alive is added to ``kills``."""
    while server.running() and not until():
        hit = 0
        for proc in watch.sample():
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills.add(proc)
            hit += 1
        if not hit:
            time.sleep(0.001)  # pacing only: nothing to kill yet, let the arbiter fork


# -- crash storm -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("tasks", [4, 8])
def test_crash_storm(gunicorn: Callable[..., Server], tasks: int) -> None:
    """Hundreds of SIGKILLs, many at one instant: never two live workers with one id, a TTIN
    sent mid-storm takes effect, every kill is counted once, and ids are 0..N-1 again after."""
    server = gunicorn(options="max_restarts=100000", config=f"workers = {tasks}\n" + READY)
    watch = Watch(server.pid)
    watch.wait_tasks(range(tasks))
    kills: set[Proc] = set()
    wanted = 300
    deadline = time.monotonic() + 20

    storm(server, watch, kills, until=lambda: len(kills) >= wanted // 3 or time.monotonic() > deadline)
    server.signal(signal.SIGTTIN)
    storm(
        server,
        watch,
        kills,
        until=lambda: (len(kills) >= wanted and tasks in watch.tasks_seen) or time.monotonic() > deadline,
    )
    assert tasks in watch.tasks_seen, "the TTIN sent during the storm never took effect"
    assert len(kills) >= 100, f"only {len(kills)} kills landed in 20 s"

    wait_for(lambda: not any(alive(proc) for proc in kills), 10, "every killed worker to die")
    watch.wait_tasks(range(tasks + 1), timeout=30)
    wait_for(lambda: len(restarts(server)) >= len(kills), 15, f"{len(kills)} restarts in the log")
    lines = restarts(server)
    assert len(lines) == len(kills)
    assert Counter(int(m[2]) for m in lines) == Counter(proc.pid for proc in kills)
    assert [int(m[4]) for m in lines] == list(range(1, len(kills) + 1))
    assert {int(m[1]) for m in lines} <= set(range(tasks + 1))
    assert all(m[3] == "killed by signal SIGKILL" for m in lines)

    top = identify(watch.tasks()[tasks])
    wait_ready(server, top.pid)
    server.signal(signal.SIGTTOU)
    watch.wait_tasks(range(tasks))
    wait_for(lambda: not alive(top), 10, "the retired worker to exit")
    assert len(restarts(server)) == len(kills), "retiring a worker was counted as a restart"
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# -- the arbiter killed ------------------------------------------------------------------------


@pytest.mark.compat
def test_arbiter_sigkill_takes_workers_along(gunicorn: Callable[..., Server]) -> None:
    """SIGKILL of the arbiter takes every worker along within 2 s; plain gunicorn's workers are
    still up at that moment (they only notice at their next poll of the parent pid)."""
    server = gunicorn(config="workers = 4\n")
    plain = gunicorn(config="workers = 4\n", install=False)
    watch = Watch(server.pid)
    workers = [identify(pid) for pid in watch.wait_tasks(range(4)).values()]
    plain_workers = wait_for(
        lambda: w if len(w := worker_procs(plain.pid)) == 4 else [], 15, "plain's 4 workers"
    )

    server.signal(signal.SIGKILL)
    plain.signal(signal.SIGKILL)
    wait_for(lambda: gone(workers), 2.5, "every worker to follow its killed arbiter")
    assert not gone(plain_workers), "plain gunicorn's workers died as fast: the test proves nothing"
    assert not marked_pids(server.mark)
    for proc in plain_workers:
        os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: gone(plain_workers), 10, "plain gunicorn's workers to die")


def test_arbiter_sigkill_while_forking(gunicorn: Callable[..., Server]) -> None:
    """SIGKILL of the arbiter while it forks its workers leaves no process behind, however
    far each child had got."""
    server = gunicorn(config="workers = 8\n")
    wait_for(lambda: worker_procs(server.pid), 15, "the first worker")
    server.signal(signal.SIGKILL)
    wait_for(lambda: not marked_pids(server.mark), 2.5, "every child to follow its killed arbiter")


# -- giving up ---------------------------------------------------------------------------------


@pytest.mark.compat
def test_give_up_during_storm(gunicorn: Callable[..., Server]) -> None:
    """Continuous kills trip max_restarts=5: the master logs the give-up once, exits 5, runs
    on_exit, removes its pidfile, and no worker outlives it."""
    server = gunicorn(options="max_restarts=5", config="workers = 4\n" + HOOKS)
    watch = Watch(server.pid)
    watch.wait_tasks(range(4))
    assert server.pidfile.exists()
    kills: set[Proc] = set()
    deadline = time.monotonic() + 30
    storm(server, watch, kills, until=lambda: time.monotonic() > deadline)

    assert server.wait_exit(timeout=15) == 5
    wait_for(lambda: not marked_pids(server.mark), 2, "every worker to be gone with its master")
    log = server.log()
    assert [int(m[4]) for m in restarts(server)] == [1, 2, 3, 4, 5]
    assert log.count(f"{GIVE_UP} (6 restarts > max_restarts 5)") == 1
    assert log.count(f"Reason: {GIVE_UP}") == 1
    assert not server.pidfile.exists()
    assert f"on_exit {server.pid} - -" in server.event_lines()


# -- stubborn and hung workers -----------------------------------------------------------------

STUBBORN = """
graceful_timeout = 2
import os, signal

def post_worker_init(worker):
    # Task 0's first worker ignores SIGTERM; every worker says when it handles signals.
    here = os.path.dirname(os.environ["TF_EVENTS"])
    if worker.task_id == 0 and not os.path.exists(os.path.join(here, "stubborn")):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(os.path.join(here, "stubborn"), "w").close()
    open(os.path.join(here, f"ready-{worker.pid}"), "w").close()
"""


def test_shutdown_kills_worker_ignoring_sigterm(gunicorn: Callable[..., Server]) -> None:
    """On shutdown, a worker that ignores SIGTERM is killed once graceful_timeout has passed;
    the others exit at once."""
    server = gunicorn(config="workers = 2\n" + HOOKS + STUBBORN)
    watch = Watch(server.pid)
    workers = {task: identify(pid) for task, pid in watch.wait_tasks(range(2)).items()}
    wait_ready(server, *(proc.pid for proc in workers.values()))
    assert (server.dir / "stubborn").exists()
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    wait_for(lambda: not alive(workers[1]), 10, "the obedient worker to exit")
    assert alive(workers[0]), f"the worker that ignores SIGTERM exited with the others\n{log_tail(server)}"
    assert server.wait_exit(timeout=15) == 0
    assert time.monotonic() - started >= 2 * 0.9, (
        f"the master did not wait graceful_timeout\n{log_tail(server)}"
    )
    wait_for(lambda: not alive(workers[0]), 2, "the stubborn worker to be killed")
    exits = [line.split()[1] for line in server.event_lines() if line.startswith("worker_exit")]
    assert str(workers[1].pid) in exits
    assert str(workers[0].pid) not in exits, "the stubborn worker exited on its own"


def test_reload_kills_worker_ignoring_sigterm(gunicorn: Callable[..., Server]) -> None:
    """A reload waits graceful_timeout for a worker that ignores SIGTERM, then kills it, and only
    then starts its successor: that kill is not a counted restart."""
    server = gunicorn(config="workers = 2\n" + STUBBORN)
    watch = Watch(server.pid)
    old = watch.wait_tasks(range(2))
    stubborn = identify(old[0])
    wait_ready(server, *old.values())
    assert (server.dir / "stubborn").exists()
    started = time.monotonic()
    server.signal(signal.SIGHUP)
    new = watch.until(
        lambda: t if len(t := watch.tasks()) == 2 and not set(t.values()) & set(old.values()) else None,
        20,
        "both tasks to get new workers",
    )
    elapsed = time.monotonic() - started
    assert elapsed >= 2 * 0.9, f"task 0 replaced after {elapsed:.2f}s < graceful_timeout\n{log_tail(server)}"
    assert not alive(stubborn)
    assert sorted(new) == [0, 1]
    assert not restarts(server), f"a worker stopped by a reload was counted\n{log_tail(server)}"
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_hung_worker_is_aborted_and_replaced(gunicorn: Callable[..., Server]) -> None:
    """A worker stuck in a request (no heartbeat) is aborted after `timeout` and replaced with
    the same id; the abort counts as a restart."""
    server = gunicorn(config="workers = 1\ntimeout = 2\n")
    watch = Watch(server.pid)
    hung = watch.wait_tasks(range(1))[0]
    hung_proc = identify(hung)
    server.wait_serving()
    result: list[Any] = []

    def request() -> None:
        try:
            result.append(server.get("/sleep/30", timeout=20))
        except OSError as exc:
            result.append(exc)

    client = threading.Thread(target=request, daemon=True)
    client.start()
    replaced = watch.until(
        lambda: t if (t := watch.tasks()).get(0) not in (None, hung) else None, 20, "task 0 replaced"
    )
    client.join(20)
    # Depending on the gunicorn version the aborted request gets a 500 or a closed connection.
    assert result and (isinstance(result[0], OSError) or result[0][0] != 200), result
    lines = [(m[1], m[2], m[3], m[4]) for m in restarts(server)]
    assert lines == [("0", str(hung), "timed out and was aborted", "1")], log_tail(server)
    assert not alive(hung_proc)
    assert replaced[0] != hung
    assert server.get("/")[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


SLOW_BOOT = """
graceful_timeout = 1
import time

def post_fork(server, worker):
    if worker.task_id == 2:
        time.sleep(3)  # task 2 boots slowly: a stop signal reaches it before its own handlers
"""
STUBBORN_2 = """
graceful_timeout = 1
import os, signal

def post_worker_init(worker):
    if worker.task_id == 2:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(os.path.dirname(os.environ["TF_EVENTS"]), f"ready-{worker.pid}"), "w").close()
"""


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(SLOW_BOOT, id="retired-while-booting"),
        pytest.param(STUBBORN_2, id="ignores-sigterm"),
    ],
)
def test_retired_worker_is_gone_after_graceful_timeout(gunicorn: Callable[..., Server], config: str) -> None:
    """A TTOU right after a TTIN retires the new top id, also while its worker still boots (the
    SIGTERM comes before the worker's own handlers) or when it ignores SIGTERM (it is killed
    after graceful_timeout): the ids are 0..N-1 again, and nothing is counted."""
    server = gunicorn(config="workers = 2\n" + config)
    watch = Watch(server.pid)
    old = {identify(pid) for pid in watch.wait_tasks(range(2)).values()}
    server.signal(signal.SIGTTIN)
    new = wait_for(lambda: [p for p in worker_procs(server.pid) if p not in old], 15, "the new worker")[0]
    if config is not SLOW_BOOT:
        wait_ready(server, new.pid)
    server.signal(signal.SIGTTOU)
    watch.until(lambda: set(worker_procs(server.pid)) == old, 8, "the retired worker to be gone")
    assert not restarts(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# -- load through changes ----------------------------------------------------------------------


class Load:
    """Client threads looping requests on new connections; they can be paused between requests."""

    def __init__(self, server: Server, paths: list[str]) -> None:
        self.server = server
        self.phase = "start"
        self.ok: Counter[str] = Counter()
        self.failures: list[tuple[str, str, str]] = []
        self._cond = threading.Condition()
        self._paused = False
        self._busy = 0
        self._stop = False
        self._threads = [threading.Thread(target=self._loop, args=(p,), daemon=True) for p in paths]

    def _loop(self, path: str) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or not self._paused)
                if self._stop:
                    return
                self._busy += 1
                phase = self.phase
            try:
                status, _ = self.server.get(path, timeout=20)
                outcome = "ok" if status == 200 else f"HTTP {status}"
            except OSError as exc:
                outcome = repr(exc)
            with self._cond:
                self._busy -= 1
                if outcome == "ok":
                    self.ok[phase] += 1
                else:
                    self.failures.append((phase, path, outcome))
                self._cond.notify_all()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(30)

    def total(self) -> int:
        with self._cond:
            return sum(self.ok.values())

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No request is in flight inside this block."""
        with self._cond:
            self._paused = True
            assert self._cond.wait_for(lambda: self._busy == 0, 30), "requests still in flight"
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    def more(self, count: int = 5) -> None:
        """Wait until ``count`` more requests have succeeded."""
        target = self.total() + count
        wait_for(lambda: self.total() >= target, 20, f"{count} more answered requests")


def renewed(now: dict[int, int], before: dict[int, int]) -> dict[int, int] | None:
    """``now`` if it has the same ids as ``before`` and none of its workers."""
    return now if sorted(now) == sorted(before) and not set(now.values()) & set(before.values()) else None


@pytest.mark.compat
@pytest.mark.timeout(90)
def test_no_failed_request_through_changes(gunicorn: Callable[..., Server]) -> None:
    """Requests keep flowing without one failure through a reload (HUP), a TTIN, a TTOU and
    the SIGKILL of an idle worker; ids stay unique throughout."""
    server = gunicorn(config="workers = 4\n" + READY)
    watch = Watch(server.pid)
    first = watch.wait_tasks(range(4))
    wait_ready(server, *first.values())
    with Load(server, ["/", "/sleep/0.05", "/sleep/0.02"]) as load:
        load.more()

        load.phase = "reload"
        server.signal(signal.SIGHUP)
        second = watch.until(
            lambda: (
                t
                if sorted(t := watch.tasks()) == [0, 1, 2, 3] and not set(t.values()) & set(first.values())
                else None
            ),
            30,
            "every task to get a new worker",
        )
        wait_ready(server, *second.values())
        load.more()

        load.phase = "ttin"
        server.signal(signal.SIGTTIN)
        wait_ready(server, watch.wait_tasks(range(5))[4])
        load.more()

        load.phase = "ttou"
        top = identify(watch.tasks()[4])
        server.signal(signal.SIGTTOU)
        watch.wait_tasks(range(4))
        watch.until(lambda: not alive(top), 10, "the retired worker to exit")
        load.more()

        load.phase = "crash"
        with load.paused():
            victim = watch.tasks()[1]
            os.kill(victim, signal.SIGKILL)
            watch.until(lambda: watch.tasks().get(1) not in (None, victim), 15, "task 1 to be replaced")
        load.more()
        load.phase = "end"
        load.more()

    assert not load.failures, f"failed requests: {load.failures}; answered: {dict(load.ok)}"
    assert [(m[1], m[2]) for m in restarts(server)] == [("1", str(victim))]
    assert watch.samples > 0
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.compat
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("max_restarts=-1", "option max_restarts must be an integer >= 0, got -1"),
        ("max_restarts='ten'", "option max_restarts must be an integer >= 0, got 'ten'"),
        ("max_restarts=1.5", "option max_restarts must be an integer >= 0, got 1.5"),
        ("max_restarts=None", "option max_restarts must be an integer >= 0, got None"),
        ("max_restarts=True", "option max_restarts must be an integer >= 0, got True"),
        ("max_restart=3", "got an unknown option 'max_restart'; accepted options: max_restarts"),
    ],
    ids=["negative", "string", "float", "none", "bool", "unknown-name"],
)
def test_bad_option_refused_before_fork(gunicorn: Callable[..., Server], options: str, message: str) -> None:
    """A bad install() option: one clear error line, exit status 1, pidfile removed, and not
    one worker forked."""
    server = gunicorn(options=options, config="workers = 2\n" + HOOKS)
    assert server.wait_exit() == 1
    errors = [line for line in server.log().splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and f"gunicorn_tornadofork: install() {message}" in errors[0], errors
    assert "Booting worker" not in server.log()
    assert not [line for line in server.event_lines() if line.startswith(("pre_fork", "post_fork"))]
    assert "Traceback" not in server.log() + server.output_text()
    assert not server.pidfile.exists()


BOOT_FAILS = "def post_worker_init(worker):\n    raise RuntimeError('worker fails to boot')\n"


@pytest.mark.parametrize(
    ("app", "config", "status", "reason"),
    [
        # gunicorn's rule: an app object it cannot find is an app load error (4); an app module
        # that raises while imported, or is missing, is a worker that failed to boot (3).
        ("testapp:no_such_app", "", 4, "App failed to load."),
        ("importfails:wsgi", "", 3, "Worker failed to boot."),
        ("no_such_module_for_tests:wsgi", "", 3, "Worker failed to boot."),
        ("testapp:wsgi", BOOT_FAILS, 3, "Worker failed to boot."),
    ],
    ids=["app-not-found", "app-import-raises", "app-module-missing", "post-worker-init-raises"],
)
def test_worker_boot_failure_halts(
    gunicorn: Callable[..., Server], app: str, config: str, status: int, reason: str
) -> None:
    """A worker that cannot load the app (4) or boot (3) halts the arbiter with gunicorn's
    status and reason, logged once, not as a restart; the pidfile is removed."""
    server = gunicorn(app=app, config="workers = 2\n" + config)
    assert server.wait_exit(timeout=20) == status, log_tail(server)
    log = server.log()
    assert log.count(f"Reason: {reason}") == 1
    assert len(re.findall(rf"task \d \(pid \d+\) exited with status {status}$", log, re.M)) == 1
    assert not restarts(server)
    assert not server.pidfile.exists()


@pytest.mark.parametrize("extra", [0, 3], ids=["zero-means-cpus", "more-than-cpus"])
def test_worker_count_versus_cpus(gunicorn: Callable[..., Server], extra: int) -> None:
    """``workers = 0`` runs one task per usable CPU; more workers than CPUs run just that many."""
    cpus = len(os.sched_getaffinity(0))
    count = cpus + extra
    server = gunicorn(config=f"workers = {count if extra else 0}\n")
    Watch(server.pid).wait_tasks(range(count))
    assert f"gunicorn_tornadofork: {count} tasks" in server.log()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
