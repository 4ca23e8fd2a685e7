"""gunicorn hooks that append ``<hook> <pid> <task_id> <env>`` to the file named by TF_EVENTS."""

from __future__ import annotations

import os
from typing import Any


def record(hook: str, worker: Any = None) -> None:
    task = getattr(worker, "task_id", "none") if worker is not None else "-"
    line = f"{hook} {os.getpid()} {task} {os.environ.get('GUNICORN_TASK_ID', '-')}\n"
    with open(os.environ["TF_EVENTS"], "a") as f:
        f.write(line)


def pre_fork(server: Any, worker: Any) -> None:
    record("pre_fork", worker)


def post_fork(server: Any, worker: Any) -> None:
    record("post_fork", worker)


def post_worker_init(worker: Any) -> None:
    record("post_worker_init", worker)


def worker_int(worker: Any) -> None:
    record("worker_int", worker)


def worker_abort(worker: Any) -> None:
    record("worker_abort", worker)


def worker_exit(server: Any, worker: Any) -> None:
    record("worker_exit", worker)


def child_exit(server: Any, worker: Any) -> None:
    record("child_exit", worker)


def on_exit(server: Any) -> None:
    record("on_exit")
