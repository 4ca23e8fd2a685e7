"""The aiohttp twin of ``testapp``: the same paths and the same ``task=.. pid=.. env=.. ppid=..``
answer, for aiohttp's gunicorn workers (``aiohttp.GunicornWebWorker``).

``/finish`` finishes the task, ``/kill/<signal>`` signals its own worker, ``/exit/<status>``
ends the process at once, ``/sleep/<seconds>`` holds the request (without blocking the loop).
"""

from __future__ import annotations

from aiohttp import web
from asgiapp import act
from testapp import body


async def handle(request: web.Request) -> web.Response:
    await act(request.path)
    return web.Response(body=body(), content_type="text/plain")


app = web.Application()
app.router.add_route("GET", "/{path:.*}", handle)
