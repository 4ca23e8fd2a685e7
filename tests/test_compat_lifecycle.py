"""A worker's life under gunicorn's own rules, with task ids: recycling (``max_requests``,
``--reload``) keeps the id and is not counted; a timeout abort keeps the id and is counted;
every hook that gets a worker sees its task id, and a user's own hooks still run.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import HOOKS
from test_compat_signals import BOOTED, counted_restarts, live_workers, ready

from server import APPS, Server, answer, pid_alive, wait_for

Start = Callable[..., Server]
# gunicorn reads the config file before it applies --chdir: put tests/apps/hooks.py in reach.
WITH_HOOKS = f"import sys\nsys.path.insert(0, {str(APPS)!r})\n{HOOKS}"

# Records every worker's wait status as the master reaps it: ``waitpid <pid> <exit code>``.
RECORD_WAIT_STATUS = """
import os as _os

_real_waitpid = _os.waitpid

def _recording_waitpid(pid, options):
    wpid, status = _real_waitpid(pid, options)
    if wpid > 0:
        with open(_os.environ["TF_EVENTS"], "a") as f:
            f.write(f"waitpid {wpid} {_os.waitstatus_to_exitcode(status)}\\n")
    return wpid, status

_os.waitpid = _recording_waitpid
"""


def events(server: Server, name: str) -> list[list[str]]:
    """The fields after the name of every event line called ``name``."""
    return [line.split()[1:] for line in server.event_lines() if line.split()[0] == name]


# -- recycling ---------------------------------------------------------------------------


@pytest.mark.compat
def test_max_requests_recycles_with_the_same_id_uncounted(gunicorn: Start) -> None:
    """``max_requests`` (with jitter) recycles each worker: its replacement has the same id,
    nothing is counted (max_restarts=0) and every request is answered."""
    server = gunicorn(
        options="max_restarts=0", config="workers = 2\nmax_requests = 3\nmax_requests_jitter = 2\n" + BOOTED
    )
    ready(server, [0, 1])
    seen: dict[int, set[int]] = {0: set(), 1: set()}

    def recycled_both() -> bool:
        reply = answer(server)
        assert reply["env"] == reply["task"]
        seen[int(reply["task"])].add(int(reply["pid"]))
        return all(len(pids) >= 2 for pids in seen.values())

    wait_for(recycled_both, 30, "both tasks to be served by a recycled worker")
    log = server.log()
    for task in (0, 1):
        assert re.search(rf"task {task} \(pid \d+\) recycled, replacing it", log)
    ready(server, [0, 1])
    assert not counted_restarts(server) and "Too many child restarts" not in log
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


RELOAD_APP = """
from testapp import body

VERSION = {version!r}


def wsgi(environ, start_response):
    data = b"version=" + VERSION.encode() + b" " + body()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
"""


def test_code_reload_recycles_with_the_same_id_uncounted(gunicorn: Start, tmp_path: Path) -> None:
    """``--reload`` sees a code change and recycles the worker: its replacement runs the new
    code with the same id, and nothing is counted (max_restarts=0)."""
    code = tmp_path / "app" / "reloadapp.py"
    code.parent.mkdir()
    code.write_text(RELOAD_APP.format(version="one"))
    server = gunicorn(
        options="max_restarts=0",
        config="workers = 1\n" + BOOTED,
        app="reloadapp:wsgi",
        args=["--reload", "--pythonpath", str(code.parent)],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    first = ready(server, [0])[0]
    reply = answer(server)
    assert reply == {"version": "one", "task": "0", "pid": str(first), "env": "0", "ppid": str(server.pid)}
    code.write_text(RELOAD_APP.format(version="two"))
    stamp = time.time()

    def reloaded() -> bool:
        # gunicorn's polling reloader compares mtimes from its first scan on: move the file's
        # mtime on until a scan after that one has seen it change.
        nonlocal stamp
        if (live_workers(server) or {}).get(0, first) != first:
            return True
        stamp += 1
        os.utime(code, (stamp, stamp))
        return False

    wait_for(reloaded, 30, "the worker to be recycled on the code change")
    ready(server, [0], old={0: first})
    reply = answer(server)
    assert reply["version"] == "two" and reply["task"] == reply["env"] == "0"
    assert reply["pid"] != str(first)
    log = server.log()
    assert f"task 0 (pid {first}) recycled, replacing it" in log
    assert not counted_restarts(server) and "Too many child restarts" not in log
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# -- timeouts ----------------------------------------------------------------------------


def test_timeout_abort_is_replaced_with_the_same_id_and_counted(gunicorn: Start) -> None:
    """A worker stuck in a request past ``timeout`` is aborted; its replacement has the same
    id, the other worker is untouched, and the abort counts although the sync worker exits
    with status 0 (it answers the aborted request with an error and leaves its loop): the
    arbiter's ``aborted`` flag is what tells."""
    server = gunicorn(
        options="max_restarts=5", config="workers = 2\ntimeout = 2\n" + BOOTED + RECORD_WAIT_STATUS
    )
    start = ready(server, [0, 1])
    _, replies = server.get_in_background("/sleep/30", timeout=40)
    log = server.wait_log("timed out and was aborted, restarting", 30)
    stuck = int(re.findall(r"task (\d) \(pid \d+\) timed out and was aborted", log)[0])
    assert f"WORKER TIMEOUT (pid:{start[stuck]})" in log
    assert f"task {stuck} (pid {start[stuck]}) timed out and was aborted, restarting (1 of" in log
    after = ready(server, [0, 1], old={stuck: start[stuck]})
    assert after[1 - stuck] == start[1 - stuck]
    wait_for(lambda: replies, 30, "the stuck request to end")
    assert replies[0] != 200
    statuses = {int(pid): int(code) for pid, code in events(server, "waitpid")}
    assert statuses[start[stuck]] == 0
    assert counted_restarts(server) == ["restarting (1 of max_restarts 5)"]
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# -- hooks -------------------------------------------------------------------------------


def test_worker_hooks_see_the_task_id(gunicorn: Start) -> None:
    """``pre_fork``, ``post_fork``, ``post_worker_init``, ``worker_int``, ``worker_abort``,
    ``worker_exit`` and ``child_exit`` each get a worker whose ``task_id`` is its id, on the
    master side and in the worker (where ``GUNICORN_TASK_ID`` matches)."""
    server = gunicorn(options="max_restarts=5", config="workers = 2\n" + WITH_HOOKS)
    start = ready(server, [0, 1])
    os.kill(start[1], signal.SIGQUIT)  # the worker runs worker_int and exits
    second = ready(server, [0, 1], old={1: start[1]})[1]
    os.kill(start[0], signal.SIGABRT)  # the worker runs worker_abort and exits
    third = ready(server, [0, 1], old=start)[0]
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    master = str(server.pid)
    task_of = {start[0]: 0, start[1]: 1, second: 1, third: 0}
    # Master side: the worker object carries the id; the master has no GUNICORN_TASK_ID.
    for hook in ("pre_fork", "child_exit"):
        lines = events(server, hook)
        assert lines and all(pid == master and env == "-" for pid, _, env in lines), (hook, lines)
        assert sorted(int(task) for _, task, _ in lines) == [0, 0, 1, 1], (hook, lines)
    # Worker side: the hook runs in the worker, whose id is its task_id and its env.
    for hook, pids in [
        ("post_fork", set(task_of)),
        ("post_worker_init", set(task_of)),
        ("worker_exit", set(task_of)),
        ("worker_int", {start[1]}),
        ("worker_abort", {start[0]}),
    ]:
        lines = events(server, hook)
        assert {int(pid) for pid, _, _ in lines} == pids, (hook, lines)
        for pid, task, env in lines:
            assert task == env == str(task_of[int(pid)]), (hook, lines)
    assert server.event_lines()[-1].split()[0] == "on_exit"
    assert counted_restarts(server) == [f"restarting ({n} of max_restarts 5)" for n in (1, 2)]


USER_HOOKS = """
import os

import gunicorn_tornadofork


def _note(*words):
    with open(os.environ["TF_EVENTS"], "a") as f:
        f.write(" ".join(str(word) for word in words) + "\\n")


def on_starting(server):
    gunicorn_tornadofork.install(server, max_restarts=0)
    _note("on_starting", type(server).__name__, server.num_workers)


def when_ready(server):
    _note("when_ready", os.getpid())


def on_reload(server):
    _note("on_reload", os.getpid())


def on_exit(server):
    _note("on_exit", os.getpid())
"""


def test_user_hooks_still_run(gunicorn: Start) -> None:
    """A config file's own ``on_starting`` (which installs the plugin, then does its own
    work), ``when_ready``, ``on_reload`` and ``on_exit`` all run, in the master."""
    server = gunicorn(install=False, config="workers = 2\n" + USER_HOOKS + BOOTED)
    start = ready(server, [0, 1])
    server.signal(signal.SIGHUP)
    ready(server, [0, 1], old=start)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    master = str(server.pid)
    names = [line.split()[0] for line in server.event_lines() if not line.startswith("booted ")]
    assert names == ["on_starting", "when_ready", "on_reload", "on_exit"]
    assert events(server, "on_starting") == [["TornadoForkArbiter", "2"]]
    for hook in ("when_ready", "on_reload", "on_exit"):
        assert events(server, hook) == [[master]], hook
    assert not any(pid_alive(pid) for pid in start.values())
