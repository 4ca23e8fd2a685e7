"""The test app's answer plus ``child_env=<GUNICORN_TASK_ID>`` as a subprocess of the worker
sees it in its own ``/proc/self/environ`` (what ``ps e`` and ``/proc`` show for it)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any

from testapp import act, body

CHILD = (
    "items = open('/proc/self/environ', 'rb').read().split(bytes(1))\n"
    "env = dict(item.split(b'=', 1) for item in items if b'=' in item)\n"
    "print(env.get(b'GUNICORN_TASK_ID', b'-').decode())\n"
)


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    act(environ.get("PATH_INFO", "/"))
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    data = body().rstrip(b"\n") + f" child_env={child.stdout.strip()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
