"""A WSGI app that answers with the serving worker's task id and pid.

``GET /`` answers ``task <id> pid <pid>``; ``GET /finish`` ends this worker's task
(it is not replaced); ``GET /crash`` kills this worker (it is replaced with the same id).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from typing import Any

import gunicorn_tornadofork


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer ``task <id> pid <pid>``, after finishing or crashing on request."""
    path = environ.get("PATH_INFO", "/")
    if path == "/finish":
        gunicorn_tornadofork.finish_task()
    elif path == "/crash":
        os.kill(os.getpid(), signal.SIGKILL)
    body = f"task {gunicorn_tornadofork.task_id()} pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
