"""tornado's ``fork_processes`` semantics for gunicorn's arbiter.

Every worker holds a task id ``0 .. N-1`` that its replacement inherits; a crash loop stops
the server once more than ``max_restarts`` workers have had to be restarted; a worker that
exits 0 of its own accord is not replaced, and the server exits 0 once every task is done.
Turn it on from a gunicorn config file::

    import gunicorn_tornadofork

    def on_starting(server):
        gunicorn_tornadofork.install(server, max_restarts=100)
"""

from __future__ import annotations

import sys
from dataclasses import fields
from typing import Any

from gunicorn.arbiter import Arbiter

from . import arbiter as _arbiter
from .arbiter import GIVE_UP_STATUS
from .options import DEFAULT_MAX_RESTARTS, OptionError, Options
from .worker import ENV_VAR, finish_task, task_id

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_RESTARTS",
    "ENV_VAR",
    "GIVE_UP_STATUS",
    "OptionError",
    "finish_task",
    "install",
    "on_starting",
    "task_id",
]


def install(server: Any, **options: Any) -> None:
    """Activate the plugin on ``server``, the arbiter that gunicorn's ``on_starting`` hook gets.

    Accepted options: ``max_restarts`` (int >= 0, default 100), ``restart_window``
    (seconds or None), ``max_task_restarts`` (int >= 0 or None), ``backoff`` (seconds, default
    0), ``backoff_max`` (seconds, default 30), ``task_id_offset`` (int >= 0, default 0).
    A bad option, or a call anywhere but ``on_starting``, is logged as one line in gunicorn's
    error log; the pidfile is removed and the arbiter exits with status 1 before any worker
    is forked.
    """
    try:
        parsed = Options.parse(options)
        if not isinstance(server, Arbiter):
            raise OptionError(
                f"install() needs the gunicorn arbiter passed to on_starting, got {type(server).__name__}"
            )
        if isinstance(server, _arbiter.TornadoForkArbiter):
            raise OptionError("install() was already called on this arbiter")
        if server.WORKERS:
            raise OptionError("install() must be called from on_starting, before any worker exists")
    except OptionError as exc:
        _refuse(server, exc)
    _arbiter.install(server, parsed)
    changed = [
        f"{f.name}={getattr(parsed, f.name)!r}"
        for f in fields(parsed)
        if getattr(parsed, f.name) != f.default
    ]
    server.log.info(
        "gunicorn_tornadofork: %d tasks%s", server.num_workers, "".join(", " + c for c in changed)
    )


def on_starting(server: Any) -> None:
    """gunicorn's ``on_starting`` hook that installs the plugin with default options."""
    install(server)


def _refuse(server: Any, exc: OptionError) -> None:
    log = getattr(server, "log", None)
    if log is not None:
        log.error("gunicorn_tornadofork: %s", exc)
    else:
        print(f"gunicorn_tornadofork: {exc}", file=sys.stderr)
    pidfile = getattr(server, "pidfile", None)
    if pidfile is not None:
        pidfile.unlink()
    raise SystemExit(1)
