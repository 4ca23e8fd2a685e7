"""The shipped examples work as their comments say."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from server import wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_config(name: str) -> str:
    """Config text that runs the example file but keeps the test's own bind address."""
    path = EXAMPLES / name
    return f"_bind = bind\nexec(compile(open({str(path)!r}).read(), {str(path)!r}, 'exec'))\nbind = _bind\n"


def test_readme_example_serves_task_ids_and_restarts_with_the_same_id(gunicorn):
    """examples/tornadofork.py with examples/app.py: 4 tasks; /crash is replaced with the same
    id; /finish on every task ends the server with status 0."""
    server = gunicorn(
        install=False,
        config=example_config("tornadofork.py"),
        app="app:wsgi",
        args=["--chdir", str(EXAMPLES)],
    )
    pids = server.wait_workers([0, 1, 2, 3])
    status, body = server.get("/")
    task, pid = body.split()[1], body.split()[3]
    assert status == 200 and pids[int(task)] == int(pid)
    os.kill(pids[2], signal.SIGKILL)
    wait_for(lambda: server.worker_pids().get(2) not in (None, pids[2]), 20, "task 2 replaced")
    finished: set[str] = set()
    wait_for(
        lambda: finished.add(server.get("/finish")[1].split()[1]) or len(finished) == 4,
        30,
        "every task to finish",
    )
    assert server.wait_exit() == 0
    assert "All 4 tasks finished" in server.log()


def test_statefulset_config_offsets_ids_by_pod_ordinal(gunicorn):
    """examples/statefulset.conf.py: pod web-2 with 2 workers holds ids 4 and 5; the pod-index
    label wins over the pod name."""
    server = gunicorn(
        install=False,
        config=example_config("statefulset.conf.py"),
        env={"POD_NAME": "web-2", "WORKERS_PER_POD": "2"},
    )
    server.wait_workers([4, 5])
    other = gunicorn(
        install=False,
        config=example_config("statefulset.conf.py"),
        env={"POD_NAME": "web-2", "POD_INDEX": "3", "WORKERS_PER_POD": "2"},
    )
    other.wait_workers([6, 7])
