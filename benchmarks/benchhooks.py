"""gunicorn hooks that tell the benchmark when the master and each worker are ready (and, for
the reload figure, when the master has reaped a worker).

Each writes one line ``<kind> <pid> <task id> <CLOCK_MONOTONIC ns>`` into the pipe whose
descriptor is in ``BENCH_READY_FD`` (inherited from the benchmark); the time is taken in the
server's process, so the benchmark's own scheduling does not enter the figures. Without the
variable the hooks do nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

ENV_FD = "BENCH_READY_FD"


def report(kind: str, task: int, pid: int | None = None) -> None:
    """Write one line (``M`` master ready, ``R`` worker ready, ...) into the benchmark's pipe,
    about this process or about ``pid``."""
    fd = os.environ.get(ENV_FD)
    if not fd:
        return
    line = f"{kind} {os.getpid() if pid is None else pid} {task} {time.monotonic_ns()}\n".encode()
    with contextlib.suppress(OSError):
        os.write(int(fd), line)  # shorter than PIPE_BUF: one atomic write


def when_ready(server: Any) -> None:
    """The master is listening and about to fork its workers."""
    report("M", -1)


def pre_fork(server: Any, worker: Any) -> None:
    """The master is about to fork a worker (only with ``--phases``)."""
    report("F", _task(worker))


def post_fork(server: Any, worker: Any) -> None:
    """The worker process has just been forked (only with ``--phases``)."""
    report("C", _task(worker))


def post_worker_init(worker: Any) -> None:
    """The worker has loaded the app and is about to serve."""
    report("R", _task(worker))


def child_exit(server: Any, worker: Any) -> None:
    """The master has reaped a worker (only for the reload figure): the line names the worker."""
    report("X", _task(worker), worker.pid)


def _task(worker: Any) -> int:
    task = getattr(worker, "task_id", None)
    return -1 if task is None else int(task)
