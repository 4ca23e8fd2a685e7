"""A worker's own end wins over a timeout abort that reaches it after its loop ended.

gunicorn's arbiter checks the heartbeat of every worker it still has, including one that
runs a slow ``worker_exit`` hook or drains its requests after its loop (gunicorn 23's gthread
worker does not heartbeat then): past ``timeout`` it aborts it. A worker that had finished
its task, recycled, or been asked to stop keeps that judgment; only a worker aborted in its
loop is a timeout, counted (``tests/test_faults.py::test_hung_worker_is_aborted_and_replaced``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from test_compat_workers import ready

from server import APPS, Server, answer

pytestmark = [pytest.mark.compat, pytest.mark.timeout(90)]

Start = Callable[..., Server]
TIMEOUT = 2  # the workers' `timeout`; the slow hook takes far longer
SLOW_EXIT = 20  # seconds the slow worker_exit would take if the abort did not end it


def start(
    gunicorn: Start, tmp_path: Path, workers: int, config: str = "", args: tuple[str, ...] = ()
) -> tuple[Server, Path, dict[int, int]]:
    """A server with ``max_restarts=0`` (any counted restart ends it with status 5) whose
    ``worker_exit`` is slow while the returned flag file exists; (server, flag, task -> pid)."""
    flag = tmp_path / "slow-exit"
    server = gunicorn(
        options="max_restarts=0",
        config=(
            f"import sys\nsys.path.insert(0, {str(APPS)!r})\nfrom slowexit import worker_exit\n"
            f"workers = {workers}\ntimeout = {TIMEOUT}\n{config}"
        ),
        args=list(args),
        env={"TF_SLOW_EXIT": str(flag)},
    )
    pids = server.wait_workers(range(workers))
    ready(pids.values())
    return server, flag, pids


def slow(flag: Path, seconds: float = SLOW_EXIT) -> None:
    """Make every worker_exit from now on take ``seconds``."""
    flag.write_text(str(seconds))


def assert_not_counted(server: Server) -> None:
    """No restart was counted, and the server did not give up."""
    log = server.log()
    assert ", restarting (" not in log, log
    assert "giving up" not in log, log


def test_finished_task_with_slow_worker_exit_is_not_replaced(gunicorn: Start, tmp_path: Path) -> None:
    """finish_task(), then a worker_exit longer than ``timeout``: the arbiter aborts the
    worker, which still finished its task: not replaced, not counted, and once both tasks
    are done the server exits 0."""
    server, flag, old = start(gunicorn, tmp_path, workers=2)
    slow(flag)
    first = answer(server, "/finish")
    done, pid = int(first["task"]), int(first["pid"])
    server.wait_log(f"task {done} (pid {pid}) finished", 30)
    assert f"WORKER TIMEOUT (pid:{pid})" in server.log()  # the abort came during worker_exit
    other = 1 - done
    assert server.wait_workers([other]) == {other: old[other]}
    assert_not_counted(server)
    second = answer(server, "/finish")
    assert int(second["pid"]) == old[other]
    assert server.wait_exit(30) == 0
    assert f"WORKER TIMEOUT (pid:{old[other]})" in server.log()
    assert "All 2 tasks finished" in server.log()
    assert_not_counted(server)


def test_recycle_with_slow_worker_exit_is_not_counted(gunicorn: Start, tmp_path: Path) -> None:
    """A worker recycled after ``max_requests`` whose worker_exit outlasts ``timeout`` is
    aborted there; it recycled all the same: replaced with the same id, not counted (with
    ``max_restarts=0`` the server keeps running)."""
    server, flag, old = start(gunicorn, tmp_path, workers=1, config="max_requests = 2\n")
    slow(flag)
    for _ in range(2):
        assert int(answer(server)["pid"]) == old[0]
    server.wait_log(f"task 0 (pid {old[0]}) recycled, replacing it", 30)
    assert f"WORKER TIMEOUT (pid:{old[0]})" in server.log()
    flag.unlink()
    new = server.wait_workers([0])
    assert new[0] != old[0]
    assert int(answer(server)["pid"]) == new[0]
    assert server.running()
    assert_not_counted(server)


def test_retired_worker_with_slow_worker_exit_is_not_counted(gunicorn: Start, tmp_path: Path) -> None:
    """A worker retired by TTOU whose worker_exit outlasts ``timeout`` is aborted there: it
    was stopped by the arbiter, not restarted and not counted."""
    server, flag, old = start(gunicorn, tmp_path, workers=2)
    slow(flag)
    server.signal(signal.SIGTTOU)
    server.wait_log(f"task 1 (pid {old[1]}) stopped", 30)
    assert f"WORKER TIMEOUT (pid:{old[1]})" in server.log()
    assert server.wait_workers([0]) == {0: old[0]}
    assert server.running()
    assert_not_counted(server)
    flag.unlink()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_gthread_recycle_with_long_request_in_flight_is_not_counted(gunicorn: Start, tmp_path: Path) -> None:
    """A gthread worker recycled by ``max_requests`` while a request longer than ``timeout``
    is in flight: the worker waits for it without a heartbeat (gunicorn 23 in its drain,
    later versions when the process exits and joins the request's thread) and is aborted;
    it recycled all the same: replaced, not counted, and the server keeps running."""
    server, _, old = start(
        gunicorn, tmp_path, workers=1, config="max_requests = 2\n", args=("-k", "gthread", "--threads", "4")
    )
    client, _ = server.get_in_background("/sleep/15", timeout=30)
    assert int(answer(server)["pid"]) == old[0]
    server.wait_log(f"task 0 (pid {old[0]}) recycled, replacing it", 40)
    assert f"WORKER TIMEOUT (pid:{old[0]})" in server.log()
    new = server.wait_workers([0])
    assert new[0] != old[0]
    assert int(answer(server)["pid"]) == new[0]
    assert server.running()
    assert_not_counted(server)
    client.join(30)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
