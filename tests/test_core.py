"""The core plugin seen from outside: real gunicorn, real requests, real signals, real /proc.

Task ids and process titles, every row of the exit table, the restart cap, one worker per
usable CPU for ``workers = 0``, bad options refused before any fork, and the restart log.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import HOOKS

from server import MARK, Server, answer, pid_alive, proc_env, proc_title, wait_for

Gunicorn = Callable[..., Server]
GIVE_UP = "Too many child restarts, giving up"


# -- helpers -------------------------------------------------------------------------------


def poke(server: Server, path: str) -> None:
    """GET a path that ends the worker serving it; no answer is expected."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        server.get(path)


def answers_by_task(server: Server, tasks: int) -> dict[int, dict[str, Any]]:
    """The app's answer from every one of ``tasks`` workers, by task id (concurrent slow
    requests, so that every sync worker takes one)."""
    seen: dict[int, dict[str, Any]] = {}

    def collect() -> bool:
        with ThreadPoolExecutor(tasks) as pool:
            for reply in pool.map(lambda _: answer(server, "/sleep/0.2"), range(tasks)):
                seen[int(reply["task"])] = reply
        return sorted(seen) == list(range(tasks))

    wait_for(collect, 20, f"answers from tasks 0..{tasks - 1}")
    return seen


def events(server: Server) -> list[tuple[str, ...]]:
    """The hook events of ``tests/apps/hooks.py`` as ``(hook, pid, task_id, env)`` tuples."""
    return [tuple(line.split()) for line in server.event_lines()]


def wait_booted(server: Server, pids: list[int]) -> None:
    """Wait until each of these workers has run ``post_worker_init`` (its signal handlers
    are in place from then on)."""

    def booted() -> bool:
        ready = {int(e[1]) for e in events(server) if e[0] == "post_worker_init"}
        return all(pid in ready for pid in pids)

    wait_for(booted, 15, f"workers {pids} to boot")


def wait_replaced(server: Server, before: dict[int, int]) -> tuple[int, dict[int, int]]:
    """Wait until the same task ids are held again and exactly one changed its pid;
    that task id and the new task id -> pid map."""

    def changed() -> tuple[list[int], dict[int, int]] | None:
        now = server.worker_pids()
        if sorted(now) != sorted(before):
            return None
        moved = [task for task in now if now[task] != before[task]]
        return (moved, now) if moved else None

    found = wait_for(changed, 15, f"a worker of {before} to be replaced")
    assert found is not None
    moved, now = found
    assert len(moved) == 1, (before, now)
    return moved[0], now


def wait_gone(server: Server, before: dict[int, int]) -> int:
    """Wait until exactly one of these workers is gone; its task id."""

    def gone() -> list[int] | None:
        now = server.worker_pids()
        left = [task for task in before if now.get(task) == before[task]]
        return [task for task in before if task not in left] if len(left) == len(before) - 1 else None

    found = wait_for(gone, 15, f"one worker of {before} to end")
    assert found is not None
    (task,) = found
    return task


def log_lines(server: Server, pattern: str) -> list[str]:
    return [line for line in server.log().splitlines() if re.search(pattern, line)]


def wait_log_line(server: Server, pattern: str, timeout: float = 15.0) -> str:
    """The first error-log line matching ``pattern``, once there is one."""
    lines = wait_for(lambda: log_lines(server, pattern), timeout, f"a log line matching {pattern!r}")
    return lines[0]


def restart_line(server: Server, pid: int) -> str:
    """The WARNING line that reports the restart of worker ``pid``."""
    return wait_log_line(server, rf"\[WARNING\] task \d+ \(pid {pid}\)")


def wait_master_title(server: Server, name: str) -> str:
    """Wait for the master's title, ``gunicorn: master [<name>]`` (the state of its tasks
    may follow); the title."""
    prefix = f"gunicorn: master [{name}]"

    def titled() -> str:
        title = proc_title(server.pid)
        return title if title == prefix or title.startswith(prefix + " ") else ""

    return wait_for(titled, 10, f"the master's title {prefix!r}")


def server_alive(server: Server, pid: int) -> bool:
    """Whether ``pid`` is a live process started by ``server`` (not a reused pid)."""
    return pid_alive(pid) and proc_env(pid).get(MARK) == server.mark


# -- 1. task ids, titles, environment, hooks -----------------------------------------------


@pytest.mark.compat
def test_task_ids_titles_env_and_answers(gunicorn: Gunicorn) -> None:
    """Three workers hold task ids 0, 1, 2: in their /proc titles, in ``task_id()`` and
    GUNICORN_TASK_ID as the app sees them, and in the /proc environment of a subprocess the
    app starts; the master is titled ``master [app]``."""
    server = gunicorn(config="workers = 3\n", app="envapp:wsgi")
    workers = server.wait_workers([0, 1, 2])
    wait_master_title(server, "envapp:wsgi")
    for task, pid in workers.items():
        assert proc_title(pid) == f"gunicorn: worker [envapp:wsgi] task {task}"
    for task, reply in answers_by_task(server, 3).items():
        expected = {"task": task, "pid": workers[task], "env": task, "ppid": server.pid, "child_env": task}
        assert reply == {key: str(value) for key, value in expected.items()}
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_proc_name_in_titles(gunicorn: Gunicorn) -> None:
    """``proc_name`` replaces the app name in the master's and the workers' titles."""
    server = gunicorn(config="workers = 2\nproc_name = 'x'\n")
    workers = server.wait_workers([0, 1])
    wait_master_title(server, "x")
    for task, pid in workers.items():
        assert proc_title(pid) == f"gunicorn: worker [x] task {task}"


def test_default_on_starting_hook(gunicorn: Gunicorn) -> None:
    """``from gunicorn_tornadofork import on_starting`` alone turns the plugin on, with the
    default cap of 100: a killed worker comes back with its task id."""
    server = gunicorn(install=False, config="from gunicorn_tornadofork import on_starting\nworkers = 2\n")
    before = server.wait_workers([0, 1])
    os.kill(before[1], signal.SIGKILL)
    task, _ = wait_replaced(server, before)
    assert task == 1
    line = restart_line(server, before[1])
    assert "SIGKILL" in line and re.search(r"max_restarts\D+100\b", line), line


def test_hooks_see_task_id(gunicorn: Gunicorn) -> None:
    """Every hook that gets a worker sees its ``task_id``, on the master's side (pre_fork,
    child_exit) and the worker's (post_fork, post_worker_init, worker_exit, which also see
    GUNICORN_TASK_ID), for first workers and replacements alike."""
    server = gunicorn(config="workers = 2\n" + HOOKS)
    first = server.wait_workers([0, 1])
    wait_booted(server, list(first.values()))
    os.kill(first[1], signal.SIGKILL)
    _, second = wait_replaced(server, first)
    wait_booted(server, [second[1]])
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    master = str(server.pid)
    expected: list[tuple[str, ...]] = [("on_exit", master, "-", "-")]
    for task, pid in [(0, first[0]), (1, first[1]), (1, second[1])]:
        t, p = str(task), str(pid)
        expected += [
            ("pre_fork", master, t, "-"),
            ("post_fork", p, t, t),
            ("post_worker_init", p, t, t),
            ("child_exit", master, t, "-"),
        ]
        if pid != first[1]:  # a SIGKILLed worker runs no exit hook of its own
            expected.append(("worker_exit", p, t, t))
    assert Counter(events(server)) == Counter(expected)


# -- 2. the exit table ---------------------------------------------------------------------


def by_signal(sig: int) -> Callable[[Server, dict[int, int]], None]:
    def act(server: Server, workers: dict[int, int]) -> None:
        os.kill(workers[1], sig)

    return act


def by_request(path: str) -> Callable[[Server, dict[int, int]], None]:
    def act(server: Server, workers: dict[int, int]) -> None:
        poke(server, path)

    return act


def exit_at_boot(status: int, once: bool) -> str:
    """Config lines: task 1's worker raises ``SystemExit(status)`` at the end of its boot
    (in ``post_worker_init``), every time or only the first time."""
    return HOOKS + textwrap.dedent(
        f"""
        import os
        from hooks import record

        def post_worker_init(worker):
            record("post_worker_init", worker)
            flag = os.environ["TF_EVENTS"] + ".sys_exit"
            if worker.task_id == 1 and not ({once} and os.path.exists(flag)):
                open(flag, "w").close()
                record("sys_exit", worker)
                sys.exit({status})
        """
    )


def wait_sys_exit(server: Server) -> int:
    """The pid of the first worker that raised SystemExit at boot (see ``exit_at_boot``)."""
    exits = wait_for(lambda: [e for e in events(server) if e[0] == "sys_exit"], 15, "a worker to sys.exit")
    return int(exits[0][1])


def assert_counted_restart(server: Server, task: int, old_pid: int, cause: str, now: dict[int, int]) -> None:
    """The restart of ``old_pid`` is logged at WARNING with its task id, pid and ``cause``; the
    server still serves; and the restart counted: with ``max_restarts=1`` one more SIGKILL
    makes the server give up with status 5."""
    line = restart_line(server, old_pid)
    assert re.search(rf"\btask {task}\b", line), line
    assert re.search(cause, line), line
    assert server.running()
    assert int(answer(server)["task"]) in (0, 1)

    wait_booted(server, [now[task]])  # so that the give-up's SIGTERM finds its handler
    os.kill(now[1 - task], signal.SIGKILL)
    assert server.wait_exit() == 5
    assert GIVE_UP in server.log()
    assert server.log().count("Booting worker") == 3


# (how to end one worker, the cause its restart log line names, a hook the worker runs)
COUNTED = [
    pytest.param(by_signal(signal.SIGKILL), r"\bSIGKILL\b", None, id="SIGKILL", marks=pytest.mark.compat),
    pytest.param(by_signal(signal.SIGTERM), r"\bSIGTERM\b", None, id="external-SIGTERM"),
    # gunicorn's worker_int hook runs on SIGQUIT and SIGINT: it sees the task id too
    pytest.param(by_signal(signal.SIGQUIT), r"\bSIGQUIT\b", "worker_int", id="external-SIGQUIT"),
    pytest.param(by_signal(signal.SIGINT), r"\bSIGINT\b", "worker_int", id="external-SIGINT"),
    pytest.param(by_request("/exit/1"), r"\bstatus 1\b", None, id="exit-1"),
    pytest.param(by_request(f"/kill/{int(signal.SIGUSR2)}"), r"\bSIGUSR2\b", None, id="self-SIGUSR2"),
]


@pytest.mark.parametrize(("end", "cause", "hook"), COUNTED)
def test_counted_end_is_replaced_logged_and_counted(
    gunicorn: Gunicorn, end: Callable[[Server, dict[int, int]], None], cause: str, hook: str | None
) -> None:
    """A worker killed by a signal, stopped by one the arbiter did not send, or exiting
    non-zero is replaced with the same task id, its restart logged (task id, old pid, cause,
    WARNING) and counted toward ``max_restarts``."""
    server = gunicorn(options="max_restarts=1", config="workers = 2\n" + HOOKS)
    before = server.wait_workers([0, 1])
    wait_booted(server, list(before.values()))
    end(server, before)
    task, now = wait_replaced(server, before)
    if hook is not None:
        assert (hook, str(before[task]), str(task), str(task)) in events(server)
    assert_counted_restart(server, task, before[task], cause, now)


def test_sys_exit_nonzero_is_replaced_and_counted(gunicorn: Gunicorn) -> None:
    """A worker that raises ``SystemExit(2)`` is replaced with the same id, its restart
    logged with ``status 2`` and counted."""
    server = gunicorn(options="max_restarts=1", config="workers = 2\n" + exit_at_boot(2, once=True))
    old = wait_sys_exit(server)

    def replaced() -> dict[int, int] | None:
        now = server.worker_pids()
        return now if sorted(now) == [0, 1] and now[1] != old else None

    now = wait_for(replaced, 15, "task 1 to get a new worker")
    assert now is not None
    assert_counted_restart(server, 1, old, r"\bstatus 2\b", now)


@pytest.mark.timeout(90)
def test_timeout_abort_is_replaced_and_counted(gunicorn: Gunicorn) -> None:
    """A worker aborted for its ``timeout`` is replaced with the same id, its restart logged
    and counted (gunicorn 27's sync worker exits 0 after an abort: the arbiter still knows)."""
    server = gunicorn(options="max_restarts=1", config="workers = 2\ntimeout = 2\n" + HOOKS)
    before = server.wait_workers([0, 1])
    wait_booted(server, list(before.values()))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as held:
        held.sendall(b"GET /sleep/60 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        task, now = wait_replaced(server, before)
    assert "WORKER TIMEOUT" in server.log()
    assert ("worker_abort", str(before[task]), str(task), str(task)) in events(server)
    assert_counted_restart(server, task, before[task], r"time", now)


def assert_task_finished(server: Server, task: int, pid: int) -> None:
    """Worker ``pid`` ended task ``task``: logged below WARNING, not replaced; then the
    other task finishes too and the master exits 0, pidfile removed, nothing restarted."""
    line = wait_log_line(server, rf"\b{pid}\b.*finished")
    assert "[WARNING]" not in line and "[ERROR]" not in line, line
    assert re.search(rf"\btask {task}\b", line), line
    other = 1 - task
    assert sorted(server.worker_pids()) == [other]

    assert answer(server, "/finish")["task"] == str(other)
    assert server.wait_exit() == 0
    log = server.log()
    assert "All 2 tasks finished" in log
    assert log.count("Booting worker") == 2
    assert not server.pidfile.exists()


@pytest.mark.parametrize("path", [pytest.param("/finish", marks=pytest.mark.compat), "/exit/0"])
def test_clean_exit_finishes_the_task(gunicorn: Gunicorn, path: str) -> None:
    """A worker that calls ``finish_task()`` or exits 0 (``os._exit(0)``) is not replaced and
    not counted (``max_restarts=0``); when the last task finishes the master logs
    "All 2 tasks finished", removes its pidfile and exits 0."""
    server = gunicorn(options="max_restarts=0", config="workers = 2\n")
    before = server.wait_workers([0, 1])
    server.wait_serving()
    if path == "/finish":
        assert int(answer(server, path)["task"]) in (0, 1)  # the request itself is served
    else:
        poke(server, path)
    task = wait_gone(server, before)
    assert_task_finished(server, task, before[task])


def test_sys_exit_zero_finishes_the_task(gunicorn: Gunicorn) -> None:
    """A worker that raises ``SystemExit(0)`` has finished its task: not replaced, not
    counted; the server exits 0 once the other task finishes too."""
    server = gunicorn(options="max_restarts=0", config="workers = 2\n" + exit_at_boot(0, once=False))
    pid = wait_sys_exit(server)
    server.wait_workers([0])
    assert_task_finished(server, 1, pid)
    assert len([e for e in events(server) if e[0] == "sys_exit"]) == 1


def test_recycle_is_replaced_and_not_counted(gunicorn: Gunicorn) -> None:
    """A worker recycled by ``max_requests`` is replaced with the same id and not counted:
    with ``max_restarts=0`` the server survives three recycles."""
    server = gunicorn(options="max_restarts=0", config="workers = 1\nmax_requests = 2\n")
    server.wait_workers([0])
    replies = [answer(server) for _ in range(6)]
    assert {r["task"] for r in replies} == {"0"}
    assert {r["env"] for r in replies} == {"0"}
    pids = [r["pid"] for r in replies]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5] != pids[0]
    wait_for(lambda: len(log_lines(server, r"\brecycled\b")) >= 3, 15, "three recycles logged")
    assert all("[WARNING]" not in line for line in log_lines(server, r"\brecycled\b"))
    reply = answer(server)
    assert reply["task"] == "0" and reply["pid"] not in pids
    assert server.running()
    assert GIVE_UP not in server.log()


@pytest.mark.parametrize("shutdown", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name)
def test_arbiter_requested_stops_are_not_counted(gunicorn: Gunicorn, shutdown: signal.Signals) -> None:
    """Workers the arbiter stops itself (TTOU scale-down, then shutdown by TERM, INT or
    QUIT) are neither replaced nor counted: with ``max_restarts=0`` the server exits 0."""
    server = gunicorn(options="max_restarts=0", config="workers = 3\n")
    workers = server.wait_workers([0, 1, 2])
    server.signal(signal.SIGTTOU)
    assert server.wait_workers([0, 1]) == {0: workers[0], 1: workers[1]}
    server.signal(signal.SIGTTOU)
    assert server.wait_workers([0]) == {0: workers[0]}
    assert answer(server)["task"] == "0"
    server.signal(shutdown)
    assert server.wait_exit() == 0
    assert GIVE_UP not in server.log()
    assert not log_lines(server, r"\[WARNING\].*\btask \d")


# (extra config, app, a request that ends a booted worker, the status plain gunicorn halts with, its reason)
HALTS = [
    pytest.param(
        "def post_fork(server, worker):\n    raise RuntimeError('no boot')\n",
        "testapp:wsgi",
        None,
        3,
        "Worker failed to boot.",
        id="post_fork-raises",
    ),
    pytest.param("", "nosuchmodule:wsgi", None, 3, "Worker failed to boot.", id="no-such-module"),
    pytest.param("", "importfails:wsgi", None, 3, "Worker failed to boot.", id="module-raises-at-import"),
    pytest.param("", "testapp:wsgi", "/exit/3", 3, "Worker failed to boot.", id="app-exits-3"),
    pytest.param("", "testapp:nosuch", None, 4, "App failed to load.", id="no-such-app-object"),
    pytest.param("", "testapp:wsgi", "/exit/4", 4, "App failed to load.", id="app-exits-4"),
]


@pytest.mark.parametrize(("config", "app", "path", "status", "reason"), HALTS)
def test_boot_and_load_failures_halt_as_gunicorn_does(
    gunicorn: Gunicorn, config: str, app: str, path: str | None, status: int, reason: str
) -> None:
    """A worker that exits 3 (failed to boot) or 4 (app failed to load), at boot or later,
    halts the server with gunicorn's own status and reason, as plain gunicorn does; it is
    not a counted restart (``max_restarts=0`` does not turn it into a give-up), and the
    halt is clean when several workers fail at once."""
    # One worker: plain gunicorn 27 can exit 1 instead when a second failing worker is
    # reaped during its own halt (HaltServer raised again from stop()).
    plain = gunicorn(install=False, app=app, config="workers = 1\n" + config)
    if path is not None:
        plain.wait_serving()  # its one worker is booted
        poke(plain, path)
    assert plain.wait_exit() == status
    assert f"Reason: {reason}" in plain.log()

    server = gunicorn(options="max_restarts=0", app=app, config="workers = 3\n" + HOOKS + config)
    if path is not None:
        # Every worker booted first: one still booting ignores the halt's SIGTERM (the
        # arbiter's handler is still in place) and holds the halt for graceful_timeout.
        wait_booted(server, list(server.wait_workers([0, 1, 2]).values()))
        poke(server, path)
    assert server.wait_exit() == status
    assert f"Reason: {reason}" in server.log()
    assert "Traceback" not in server.output_text()
    assert GIVE_UP not in server.log()
    assert not server.pidfile.exists()


# -- 3. the cap ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_max_restarts_zero_gives_up_on_first_kill(gunicorn: Gunicorn, sig: signal.Signals) -> None:
    """With ``max_restarts=0`` the first worker killed (SIGKILL) or stopped from outside
    (``kill -TERM``) makes the server give up with status 5, replacing nothing."""
    server = gunicorn(options="max_restarts=0", config="workers = 2\n" + HOOKS)
    workers = server.wait_workers([0, 1])
    wait_booted(server, list(workers.values()))
    os.kill(workers[0], sig)
    assert server.wait_exit() == 5
    assert GIVE_UP in server.log()
    assert server.log().count("Booting worker") == 2


@pytest.mark.compat
def test_cap_gives_up_after_max_restarts(gunicorn: Gunicorn) -> None:
    """With ``max_restarts=2`` the server survives two kills and gives up on the third:
    status 5, the give-up line, no replacement, the other worker stopped gracefully, pidfile
    removed, ``on_exit`` run and no worker it ever had left alive."""
    server = gunicorn(options="max_restarts=2", config="workers = 2\n" + HOOKS)
    workers = server.wait_workers([0, 1])
    wait_for(server.pidfile.exists, 10, "the pidfile")
    seen = set(workers.values())
    for task in (0, 1):
        os.kill(workers[task], signal.SIGKILL)
        replaced, workers = wait_replaced(server, workers)
        assert replaced == task
        seen.update(workers.values())
        assert server.running()
    wait_booted(server, [workers[1]])
    os.kill(workers[0], signal.SIGKILL)
    assert server.wait_exit() == 5
    log = server.log()
    assert GIVE_UP in log
    assert log.count("Booting worker") == 4
    assert not server.pidfile.exists()
    assert ("on_exit", str(server.pid), "-", "-") in events(server)
    assert ("worker_exit", str(workers[1]), "1", "1") in events(server)  # stopped gracefully
    wait_for(lambda: not any(server_alive(server, pid) for pid in seen), 5, f"workers {seen} to be gone")


# -- 4. workers = 0: one worker per usable CPU ---------------------------------------------


def assert_task_count(server: Server, count: int) -> None:
    """Exactly ``count`` workers, ids 0..count-1, every one of them started."""
    server.wait_workers(range(count))
    server.wait_serving()
    assert sorted(server.worker_pids()) == list(range(count))
    assert server.log().count("Booting worker") == count


def test_workers_zero_follows_master_affinity(gunicorn: Gunicorn) -> None:
    """``workers = 0`` starts one worker per CPU the master may run on."""
    server = gunicorn(config="workers = 0\n")
    wait_for(lambda: proc_title(server.pid).startswith("gunicorn: master"), 10, "the master")
    assert_task_count(server, len(os.sched_getaffinity(server.pid)))


class PinnedServer(Server):
    """A server whose master runs pinned to one CPU (``taskset``, or an equivalent exec)."""

    def __init__(self, directory: Path, cpu: int, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        taskset = shutil.which("taskset")
        if taskset:
            prefix = [taskset, "-c", str(cpu)]
        else:
            pin = (
                "import os, sys\n"
                "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
                "os.execv(sys.argv[2], sys.argv[2:])"
            )
            prefix = [sys.executable, "-c", pin, str(cpu)]
        self.argv = [*prefix, *self.argv]


@pytest.fixture
def pinned_gunicorn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Like the ``gunicorn`` fixture, for servers pinned to one CPU."""
    servers: list[Server] = []

    def start(cpu: int, **kwargs: Any) -> Server:
        directory = tmp_path / f"pinned{len(servers)}"
        directory.mkdir()
        server = PinnedServer(directory, cpu, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    orphans = {server.pid: server.cleanup() for server in servers if server.proc is not None}
    assert not any(orphans.values()), f"processes that outlived their master: {orphans}"


def test_workers_zero_follows_affinity_not_host(pinned_gunicorn: Callable[..., Server]) -> None:
    """Pinned to one CPU of several, ``workers = 0`` starts one worker, not one per host CPU."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs at least 2 usable CPUs to tell affinity from the host's count")
    cpu = min(allowed)
    server = pinned_gunicorn(cpu, config="workers = 0\n")
    wait_for(lambda: proc_title(server.pid).startswith("gunicorn: master"), 10, "the master")
    assert os.sched_getaffinity(server.pid) == {cpu}
    assert_task_count(server, 1)


# -- 5. bad options ------------------------------------------------------------------------


BAD_OPTIONS = [
    pytest.param("max_restarts=-1", "max_restarts", ">= 0", id="negative"),
    pytest.param("max_restarts='ten'", "max_restarts", ">= 0", id="string"),
    pytest.param("max_restarts=True", "max_restarts", ">= 0", id="bool"),
    pytest.param("max_restarts=2.5", "max_restarts", ">= 0", id="float"),
    pytest.param("bogus=1", "bogus", "max_restarts", id="unknown"),
]


@pytest.mark.compat
@pytest.mark.parametrize(("options", "name", "accepted"), BAD_OPTIONS)
def test_bad_options_refused_before_any_fork(
    gunicorn: Gunicorn, options: str, name: str, accepted: str
) -> None:
    """A bad option stops the master with status 1 before any worker is forked: one error
    line naming the option and what is accepted, no traceback, pidfile removed."""
    server = gunicorn(options=options, config="workers = 2\n" + HOOKS)
    assert server.wait_exit() == 1
    log = server.log()
    errors = [line for line in log.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, errors
    assert "gunicorn_tornadofork" in errors[0] and name in errors[0] and accepted in errors[0], errors
    assert "Booting worker" not in log
    assert "Traceback" not in log + server.output_text()
    assert not [e for e in events(server) if e[0] in ("pre_fork", "post_fork")]
    assert not server.pidfile.exists()
