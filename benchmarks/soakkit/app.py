"""The soak's app, WSGI (``wsgi``), ASGI (``asgi``) and aiohttp (``aiohttp_app``, a factory
for aiohttp's gunicorn workers): answers ``task=<id> pid=<pid>``.

A request with an ``X-Soak-Id`` header is recorded as ``B <id> <pid> <task>`` in
``$SOAK_DIR/requests.log`` before anything else. Paths act on the serving worker:
``/sleep/S`` (cooperative), ``/block/S`` (blocks the worker's loop: a hang), ``/kill/SIG``,
``/exit/STATUS/os|sys``, ``/finish``, ``/recycle`` (clears the worker's ``alive`` flag),
``/slowexit/S/finish|recycle`` (that, with a ``worker_exit`` of S seconds), ``/ignoreterm``
(main thread only), ``/alarm/S`` (``signal.alarm`` with no handler of its own).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import gunicorn_tornadofork

from . import hooks

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _blocking_sleep(seconds: float) -> None:
    """Sleep without yielding to a gevent/eventlet hub: the worker's loop stops too."""
    hooks.original_sleep()(seconds)


def begin(request: str | None) -> None:
    if request:
        hooks.record("requests.log", f"B {request} {os.getpid()} {gunicorn_tornadofork.task_id()}\n")
    command()


def command() -> None:
    """Take a command the soak left for this worker's task (``$SOAK_DIR/cmd/<task>``): the
    soak cannot choose which worker serves a request, but every worker serves some."""
    path = os.path.join(os.environ[hooks.ENV_DIR], "cmd", str(gunicorn_tornadofork.task_id()))
    if not os.path.exists(path):
        return
    taken = f"{path}.{os.getpid()}"
    try:
        os.rename(path, taken)  # one worker takes it
    except OSError:
        return
    with open(taken) as f:
        action = f.read().strip()
    if action == "ignoreterm":
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except ValueError:
            return  # not the main thread
        hooks.record("requests.log", f"I 0 {os.getpid()} {gunicorn_tornadofork.task_id()}\n")


def act(path: str) -> tuple[int, str]:
    """Do what ``path`` asks; (status, note)."""
    action, _, arg = path.strip("/").partition("/")
    if action == "sleep":
        time.sleep(float(arg))
    elif action == "block":
        _blocking_sleep(float(arg))
    elif action == "kill":
        os.kill(os.getpid(), int(arg))
    elif action == "exit":
        status, _, how = arg.partition("/")
        if how == "sys":
            sys.exit(int(status))
        os._exit(int(status))
    elif action == "finish":
        gunicorn_tornadofork.finish_task()
    elif action == "recycle":
        if hooks.WORKER is None:
            return 409, "no worker object"
        hooks.WORKER.alive = False
    elif action == "slowexit":
        seconds, _, then = arg.partition("/")
        hooks.SLOW_EXIT = float(seconds)
        return act(f"/{then}")
    elif action == "ignoreterm":
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except ValueError:
            return 409, "not the main thread"
    elif action == "alarm":
        signal.alarm(int(arg))
    return 200, "ok"


def body(note: str) -> bytes:
    return f"task={gunicorn_tornadofork.task_id()} pid={os.getpid()} {note}\n".encode()


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    begin(environ.get("HTTP_X_SOAK_ID"))
    status, note = act(environ.get("PATH_INFO", "/"))
    data = body(note)
    start_response(f"{status} X", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    headers = dict(scope.get("headers", []))
    request = headers.get(b"x-soak-id")
    begin(request.decode() if request else None)
    path = scope.get("path", "/")
    if path.startswith("/sleep/"):
        await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        status, note = 200, "ok"
    else:
        status, note = act(path)
    data = body(note)
    headers_out = [(b"content-type", b"text/plain"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers_out})
    await send({"type": "http.response.body", "body": data})


async def aiohttp_app() -> Any:
    """The app for aiohttp's workers (``aiohttp.GunicornWebWorker``), which take an async
    factory: aiohttp is imported only in a worker of those classes."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        begin(request.headers.get("X-Soak-Id"))
        path = request.path
        if path.startswith("/sleep/"):
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
            status, note = 200, "ok"
        else:
            status, note = act(path)
        return web.Response(status=status, body=body(note), content_type="text/plain")

    app = web.Application()
    app.router.add_route("GET", "/{path:.*}", handle)
    return app
