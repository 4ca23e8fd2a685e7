"""The benchmark's WSGI app: the smallest answer, so that the server's own costs show."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b"ok\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer ``ok`` to every request."""
    start_response("200 OK", HEADERS)
    return [BODY]
