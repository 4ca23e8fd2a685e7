"""gunicorn hooks of the soak's server (imported by its config file, in the master).

``post_fork`` takes the task's lock file (``flock``, never waiting): a task id guards an
exclusive resource, so failing to get it means another live worker holds the same id. It
records ``S <pid> <task> <ok|dup> <CLOCK_MONOTONIC>`` in ``$SOAK_DIR/spawns.log``. A worker
whose app asked for it (``/slowexit``) runs a ``worker_exit`` slower than ``timeout``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable
from typing import Any, cast

ENV_DIR = "SOAK_DIR"
WORKER: Any = None  # this worker process's gunicorn worker object (None in the master)
SLOW_EXIT = 0.0  # seconds the worker_exit hook of this worker sleeps
_LOCK_FD = -1


def record(name: str, line: str) -> None:
    """Append one line (one atomic write) to ``$SOAK_DIR/<name>``."""
    fd = os.open(os.path.join(os.environ[ENV_DIR], name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def post_fork(server: Any, worker: Any) -> None:
    global _LOCK_FD
    task = int(worker.task_id)
    path = os.path.join(os.environ[ENV_DIR], "locks", str(task))
    _LOCK_FD = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(_LOCK_FD, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = "ok"
    except OSError:
        held = "dup"
    record("spawns.log", f"S {os.getpid()} {task} {held} {time.monotonic():.6f}\n")


def post_worker_init(worker: Any) -> None:
    global WORKER
    WORKER = worker


def worker_exit(server: Any, worker: Any) -> None:
    if SLOW_EXIT and WORKER is not None:
        original_sleep()(SLOW_EXIT)


def original_sleep() -> Callable[[float], None]:
    """``time.sleep`` as it was before gevent or eventlet patched it."""
    gevent = sys.modules.get("gevent.monkey")
    if gevent is not None:
        with contextlib.suppress(Exception):
            return cast(Callable[[float], None], gevent.get_original("time", "sleep"))
    eventlet = sys.modules.get("eventlet.patcher")
    if eventlet is not None:
        with contextlib.suppress(Exception):
            return cast(Callable[[float], None], eventlet.original("time").sleep)
    return time.sleep
