"""The arbiter's loop under the plugin: a shortcut never skips a due action, the master's title
keeps the task state through a reload, and gunicorn's own per-exit log lines stay as they are.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from server import Server, all_pids, proc_ppid, proc_title, wait_for

Start = Callable[..., Server]

# Every worker says when it has booted; with TF_STUBBORN set, task 1 ignores SIGTERM.
BOOTED = """
import os as _os, signal as _signal

def post_worker_init(worker):
    if _os.environ.get("TF_STUBBORN") and worker.task_id == 1:
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"booted {_os.getpid()}\\n")
"""

PLAIN_BOOTED = """
import os as _os

def post_worker_init(worker):
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"booted {_os.getpid()}\\n")
"""


def booted(server: Server, pid: int) -> bool:
    return f"booted {pid}" in server.event_lines()


def children(server: Server) -> list[int]:
    """The live workers of ``server``'s master, with or without the plugin."""
    return [
        pid
        for pid in all_pids()
        if proc_ppid(pid) == server.pid and proc_title(pid).startswith("gunicorn: worker [")
    ]


@pytest.mark.compat
@pytest.mark.timeout(60)
def test_backoff_is_not_stalled_by_a_retired_worker(gunicorn: Start) -> None:
    """A task's backoff ends on time while a retired worker that ignores SIGTERM is still
    running: the worker count matching the task count is no reason to skip a due spawn."""
    server = gunicorn(
        options="backoff=1",
        config="workers = 2\ngraceful_timeout = 10\n" + BOOTED,
        env={"TF_STUBBORN": "1"},
    )
    pids = server.wait_workers([0, 1])
    wait_for(lambda: all(booted(server, pid) for pid in pids.values()), 15, "both workers to boot")
    os.kill(pids[0], signal.SIGKILL)
    server.wait_log(f"task 0 (pid {pids[0]}) killed by signal SIGKILL, restarting in 1s")
    server.signal(signal.SIGTTOU)  # retires task 1, which ignores the SIGTERM
    # Task 0 is back after its 1 s backoff, well before task 1's graceful_timeout (10 s) ends.
    new = wait_for(
        lambda: [pid for pid in server.workers().get(0, []) if pid != pids[0]],
        6,
        "task 0's replacement while the retired task 1 still runs",
    )
    assert pids[1] in server.workers().get(1, []), "the retired worker was gone early"
    # Then the retired worker is killed after graceful_timeout, and only task 0 is left.
    assert server.wait_workers([0], timeout=20) == {0: new[0]}
    assert "restarting (2 of" not in server.log()


@pytest.mark.compat
def test_master_title_keeps_the_task_state_after_a_reload(gunicorn: Start) -> None:
    """gunicorn's reload titles the master anew; the task state is back on it at once."""
    server = gunicorn(options="max_restarts=9", config="workers = 2\n" + BOOTED)
    pids = server.wait_workers([0, 1])
    wait_for(lambda: proc_title(server.pid).endswith("tasks 2/2 restarts 0/9"), 10, "the title")
    server.signal(signal.SIGHUP)
    wait_for(
        lambda: (w := server.worker_pids()).keys() == {0, 1} and not set(w.values()) & set(pids.values()),
        20,
        "every task's successor",
    )
    # The last successor is titled in its own process as the master goes on from its fork
    # to its title: poll until the master's title shows both tasks again.
    expected = "gunicorn: master [testapp:wsgi] tasks 2/2 restarts 0/9"
    wait_for(
        lambda: proc_title(server.pid) == expected, 5, "the task state on the master's title after the reload"
    )


@pytest.mark.compat
def test_master_title_keeps_the_task_state_while_a_reload_rolls(gunicorn: Start) -> None:
    """A reload held up by a long request keeps the task state on the master's title from
    its start, not only once every task has its successor."""
    began = "def pre_request(worker, req):\n    open(_os.environ['TF_EVENTS'], 'a').write('began\\n')\n"
    config = "workers = 1\ngraceful_timeout = 20\n" + BOOTED + began
    server = gunicorn(options="max_restarts=9", config=config)
    (pid,) = server.wait_workers([0]).values()
    wait_for(lambda: booted(server, pid), 15, "the worker to boot")
    thread, replies = server.get_in_background("/sleep/4", timeout=20)
    wait_for(lambda: "began" in server.event_lines(), 10, "the long request to begin")
    server.signal(signal.SIGHUP)
    server.wait_log("Hang up: Master")
    title = wait_for(
        lambda: proc_title(server.pid).endswith("restarts 0/9") and proc_title(server.pid), 2, "the title"
    )
    assert server.worker_pids() == {0: pid}, "the reload was not held up"
    assert title.endswith("tasks 0/1 restarts 0/9") or title.endswith("tasks 1/1 restarts 0/9"), title
    thread.join(20)
    assert replies == [200]


# gunicorn's lines for a reaped worker, as each version writes them.
REAP_LINE = re.compile(r"\[(\w+)\] (Worker \(pid:\d+\) (?:was sent|exited with) .*)$", re.M)


def reap_lines(server: Server) -> list[str]:
    """gunicorn's per-exit lines of ``server``, level included, the pids blanked."""
    return [
        level + " " + re.sub(r"pid:\d+", "pid:N", text) for level, text in REAP_LINE.findall(server.log())
    ]


@pytest.mark.compat
@pytest.mark.timeout(90)
def test_gunicorns_per_exit_log_lines_are_kept(gunicorn: Start) -> None:
    """The lines gunicorn writes when it reaps a worker (``Worker (pid:N) was sent SIGKILL!
    Perhaps out of memory?``, ``Worker (pid:N) exited with code 1.`` …) appear word for word
    and at gunicorn's level under the plugin, beside the plugin's own task line."""
    plain = gunicorn(config="workers = 1\n" + PLAIN_BOOTED, install=False)
    plugin = gunicorn(config="workers = 1\n" + PLAIN_BOOTED)
    servers = (plain, plugin)

    def booted_worker(server: Server, old: int | None) -> int:
        def ready() -> int | None:
            pids = [pid for pid in children(server) if pid != old and booted(server, pid)]
            return pids[0] if len(pids) == 1 and len(children(server)) == 1 else None

        return wait_for(ready, 15, "a booted worker")

    workers = {server.pid: booted_worker(server, None) for server in servers}
    events: list[tuple[str, Callable[[Server, int], None]]] = [
        ("SIGKILL", lambda server, pid: os.kill(pid, signal.SIGKILL)),
        ("SIGQUIT", lambda server, pid: os.kill(pid, signal.SIGQUIT)),
        ("SIGSEGV", lambda server, pid: os.kill(pid, signal.SIGSEGV)),
        ("exit 1", lambda server, pid: _exit_via(server, 1)),
        ("exit 42", lambda server, pid: _exit_via(server, 42)),
    ]
    for _name, act in events:
        for server in servers:
            old = workers[server.pid]
            act(server, old)
            workers[server.pid] = booted_worker(server, old)
    expected = reap_lines(plain)
    assert len(expected) >= len(events) - 1, plain.log()  # a stray SIGQUIT ends a sync worker with 0
    assert reap_lines(plugin) == expected
    assert plugin.log().count("restarting (") == len(events)
    assert "ERROR Worker (pid:N) was sent SIGKILL! Perhaps out of memory?" in expected


def _exit_via(server: Server, status: int) -> None:
    """Ask the worker to end itself with ``status`` (the request itself gets no answer)."""
    with contextlib.suppress(OSError):
        server.get(f"/exit/{status}", timeout=5)


def live_children(server: Server) -> list[int]:
    """Every child of the master that has not exited, titled as a worker or not yet."""
    live = []
    for pid in all_pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == server.pid and fields[0] != "Z":
            live.append(pid)
    return live


def three_left(server: Server) -> bool:
    return sorted(server.workers()) == [0, 1, 2] and len(live_children(server)) == 3


@pytest.mark.compat
@pytest.mark.timeout(90)
def test_a_stop_signal_right_after_the_fork_is_not_lost(gunicorn: Start) -> None:
    """A worker asked to stop the moment it is forked (a TTOU handled right after the reload
    that started it) stops at once: the signal is not lost in the instant before the new
    worker drops the arbiter's handlers, which would leave it serving, retired, until
    graceful_timeout runs out."""
    server = gunicorn(config="workers = 4\ngraceful_timeout = 10\n" + BOOTED)
    slow = []
    for _ in range(8):
        pids = list(server.wait_workers(range(4), timeout=20).values())
        try:
            wait_for(lambda p=pids: all(booted(server, pid) for pid in p), 30, "every worker to boot")
        except AssertionError as failure:
            raise AssertionError(f"{failure}: {pids}, {server.workers()}\n{server.log()[-4000:]}") from None
        taken = server.log().count("Handling signal: ttou")
        rolled = server.log().count("Reload done")
        server.signal(signal.SIGHUP)
        server.signal(signal.SIGTTOU)

        # A child not yet titled is no "worker" in /proc: three titled ones are not enough,
        # only three live children are, and only once the TTOU is taken up and the reload's
        # roll is over (in the middle of the roll, between a task's old worker and its
        # successor, three is a count the server passes through). The next HUP and TTOU then
        # come with no worker exiting: a SIGCHLD handled as they arrive could have TTOU taken
        # before HUP, which would bring the retired task back with the config's `workers`.
        def retired(taken: int = taken, rolled: int = rolled) -> bool:
            log = server.log()
            return (
                log.count("Handling signal: ttou") > taken
                and log.count("Reload done") > rolled
                and three_left(server)
            )

        try:
            wait_for(retired, 5, "three workers, retired one gone")
        except AssertionError:
            slow.append((server.workers(), server.log()[-4000:]))
            wait_for(retired, 20, "three workers, retired one gone")
        server.signal(signal.SIGTTIN)
    assert not slow, f"a retired worker outlived its stop signal: {slow}"
    assert "restarting (" not in server.log()


SLOW_WORKER_EXIT = """
import time as _time

def worker_exit(server, worker):
    _time.sleep(3)
"""


@pytest.mark.compat
def test_master_title_shows_the_count_that_gave_up(gunicorn: Start) -> None:
    """While the server stops after giving up (workers with a slow ``worker_exit``), the
    master's title shows the restart that exceeded the cap."""
    server = gunicorn(options="max_restarts=0", config="workers = 2\n" + BOOTED + SLOW_WORKER_EXIT)
    pids = server.wait_workers([0, 1])
    wait_for(lambda: all(booted(server, pid) for pid in pids.values()), 15, "both workers to boot")
    os.kill(pids[0], signal.SIGKILL)
    server.wait_log("Too many child restarts, giving up")
    assert proc_title(server.pid).endswith("tasks 1/2 restarts 1/0"), proc_title(server.pid)
    assert server.wait_exit() == 5
