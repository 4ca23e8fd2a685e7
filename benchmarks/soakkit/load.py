"""A bounded HTTP load: a few client threads, one request at a time each, every request
recorded (its id, when it started and ended, and whether it failed)."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from dataclasses import dataclass

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def next_id() -> int:
    with _ids_lock:
        return next(_ids)


@dataclass
class Request:
    id: int
    path: str
    start: float
    end: float = 0.0
    status: int | None = None
    error: str = ""
    body: str = ""

    @property
    def failed(self) -> bool:
        return self.status is None


def get(port: int, path: str, timeout: float, request: Request | None = None) -> Request:
    """One GET on a new connection, tagged with a request id the app records (``request``'s,
    when given, else a new one); the request, with its answer or error."""
    if request is None:
        request = Request(next_id(), path, time.monotonic())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "X-Soak-Id": str(request.id)})
        response = conn.getresponse()
        request.body = response.read().decode(errors="replace")
        request.status = response.status
    except (OSError, http.client.HTTPException) as exc:
        request.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
        request.end = time.monotonic()
    return request


class Load:
    """``clients`` threads looping ``GET /`` until stopped (a short pause between requests
    keeps the load bounded on a small machine)."""

    def __init__(self, port: int, clients: int = 3, pause: float = 0.03, timeout: float = 15.0) -> None:
        self.port = port
        self.pause = pause
        self.timeout = timeout
        self.done: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            request = get(self.port, "/", self.timeout)
            with self._lock:
                self.done.append(request)
            self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def take(self) -> list[Request]:
        with self._lock:
            done, self.done = self.done, []
        return done


class Background:
    """One request made in a thread (a hang, a slow request to kill mid-way)."""

    def __init__(self, port: int, path: str, timeout: float) -> None:
        self.id = next_id()
        self.request = Request(self.id, path, time.monotonic())
        self._thread = threading.Thread(target=self._run, args=(port, path, timeout), daemon=True)
        self._thread.start()

    def _run(self, port: int, path: str, timeout: float) -> None:
        self.request = get(port, path, timeout, Request(self.id, path, self.request.start))

    def finished(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
