"""The ASGI twin of ``testapp``: the same paths and the same ``task=.. pid=.. env=.. ppid=..`` answer.

``/finish`` finishes the task, ``/kill/<signal>`` signals its own worker, ``/exit/<status>``
ends the process at once, ``/sleep/<seconds>`` holds the request (without blocking the loop).
It speaks the lifespan protocol, so servers that probe for it start quietly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from testapp import act as act_now
from testapp import body

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def act(path: str) -> None:
    """testapp's actions, with ``/sleep`` awaited instead of blocking the event loop."""
    action, _, arg = path.strip("/").partition("/")
    if action == "sleep":
        await asyncio.sleep(float(arg))
    else:
        act_now(path)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    await act(scope.get("path", "/"))
    data = body()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def failing_startup(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """An app whose lifespan startup fails, as when its database cannot be reached."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await app(scope, receive, send)
