"""The test app: answers ``task=<id> pid=<pid> env=<GUNICORN_TASK_ID>`` and acts on request.

``/finish`` finishes the task, ``/kill/<signal>`` signals its own worker, ``/exit/<status>``
ends the process at once, ``/sleep/<seconds>`` holds the request, ``/alarm/<seconds>`` arms
``signal.alarm()`` as a watchdog and then hangs, ``/ignoreterm`` ignores SIGTERM from then on
(where the app runs in the main thread) and ``/ignoreterm/finish`` then finishes the task.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

import gunicorn_tornadofork


def body() -> bytes:
    return (
        f"task={gunicorn_tornadofork.task_id()} pid={os.getpid()} "
        f"env={os.environ.get('GUNICORN_TASK_ID', '-')} ppid={os.getppid()}\n"
    ).encode()


def act(path: str) -> None:
    action, _, arg = path.strip("/").partition("/")
    if action == "finish":
        gunicorn_tornadofork.finish_task()
    elif action == "kill":
        os.kill(os.getpid(), int(arg))
    elif action == "exit":
        os._exit(int(arg))
    elif action == "sleep":
        time.sleep(float(arg))
    elif action == "alarm":
        signal.alarm(int(arg))  # SIGALRM's default action ends the process
        time.sleep(60)
    elif action == "ignoreterm":
        with contextlib.suppress(ValueError):  # only the main thread may set a handler
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if arg == "finish":
            gunicorn_tornadofork.finish_task()


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    act(environ.get("PATH_INFO", "/"))
    data = body()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
