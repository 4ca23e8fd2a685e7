"""finish_task() called from the ``post_fork`` hook ends that task before its worker boots."""

from __future__ import annotations

from collections.abc import Callable

from server import Server, answer, wait_for

Start = Callable[..., Server]

# A post_fork hook that finishes task 1 only.
POST_FORK = """
def post_fork(server, worker):
    if worker.task_id == 1:
        gunicorn_tornadofork.finish_task()
"""


def test_finish_task_in_post_fork(gunicorn: Start) -> None:
    """The worker of task 1 exits 0 without serving and is not replaced, nothing is counted,
    task 0 serves on; once task 0 finishes too, the server exits 0."""
    server = gunicorn(options="max_restarts=0", config="workers = 2\n" + POST_FORK)
    line = wait_for(
        lambda: next((ln for ln in server.log().splitlines() if "task 1 (pid " in ln), None),
        15,
        "the end of task 1 in the log",
    )
    assert line.endswith(") finished"), line
    workers = server.wait_workers([0])
    reply = answer(server)
    assert (int(reply["task"]), int(reply["pid"])) == (0, workers[0])
    assert server.running()
    assert answer(server, "/finish")["task"] == "0"
    assert server.wait_exit() == 0
    log = server.log()
    assert "All 2 tasks finished" in log
    assert ", restarting (" not in log
