"""The test app with prometheus_client metrics: every answered request counts once.

``/metrics`` is the ordinary multiprocess view (a MultiProcessCollector over the directory);
``/finish/<task>`` finishes the task if the worker holds that one; any other path acts as
the test app does (``/exit/1``, ``/kill/9``, ``/finish`` ...). Every answer but /metrics's
counts the request and sets the worker's gauges to its pid.
:func:`touch` writes every metric type, as a worker's hooks may.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from testapp import act, body

import gunicorn_tornadofork

REQUESTS = Counter("app_requests", "Requests answered.")
BOOTS = Counter("app_boots", "Workers booted (touch() calls).")
LATENCY = Histogram("app_latency_seconds", "A histogram, to have one.")
LIVE_PID = Gauge("app_live_pid", "The worker's pid, while it lives.", multiprocess_mode="liveall")
LIVE_SUM = Gauge("app_live_workers", "1 per live worker.", multiprocess_mode="livesum")
TASK_PID = Gauge("app_task_pid", "The pid of the last worker of each task.", multiprocess_mode="all")


def touch() -> None:
    """Write every metric type once: a boot."""
    BOOTS.inc()
    LATENCY.observe(0.01)
    LIVE_SUM.set(1)
    LIVE_PID.set(os.getpid())
    TASK_PID.set(os.getpid())


def boots() -> float:
    """This process's own count of boots (its file's value)."""
    return next(s.value for s in next(iter(BOOTS.collect())).samples if s.name == "app_boots_total")


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/finish/"):
            if path == f"/finish/{gunicorn_tornadofork.task_id()}":
                gunicorn_tornadofork.finish_task()
        else:
            act(path)
        REQUESTS.inc()
        LIVE_SUM.set(1)
        LIVE_PID.set(os.getpid())
        TASK_PID.set(os.getpid())
        data = body()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
