"""What runs: gunicorn's config file, the same for the plugin and plain gunicorn but for the
plugin's ``on_starting``; tornado's floor is ``benchmarks/tornado_floor.py``."""

from __future__ import annotations

import textwrap
from pathlib import Path

#: ``benchmarks/``: the app, the hooks and tornado's floor live there.
HERE = Path(__file__).resolve().parent.parent
PLUGIN, PLAIN, TORNADO = "plugin", "plain", "tornado"
#: A cap so high that the crash storm never reaches it.
HUGE_MAX_RESTARTS = 10**9


def gunicorn_config(
    kind: str,
    workers: int,
    port: int,
    directory: Path,
    worker_class: str,
    threads: int,
    max_restarts: int,
    *,
    phases: bool = False,
    reaps: bool = False,
    graceful_timeout: int = 5,
) -> str:
    """The config file: identical for both kinds but for the plugin's ``on_starting``.

    ``phases`` adds the ``pre_fork`` and ``post_fork`` hooks, ``reaps`` the ``child_exit`` hook
    (the master reports each worker it reaped)."""
    hooks = "post_worker_init, when_ready"
    hooks += ", pre_fork, post_fork" if phases else ""
    hooks += ", child_exit" if reaps else ""
    text = f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from benchhooks import {hooks}

        bind = "127.0.0.1:{port}"
        workers = {workers}
        worker_class = {worker_class!r}
        threads = {threads}
        errorlog = {str(directory / "error.log")!r}
        loglevel = "info"
        graceful_timeout = {graceful_timeout}
        # gunicorn >= 24 serves a control socket; 27 stops and restarts its thread around
        # every fork. Off, and at a path of its own in case it is not (23 ignores both).
        control_socket_disable = True
        control_socket = {str(directory / "gunicorn.ctl")!r}
        """
    if kind == PLUGIN:
        text += f"""
        import gunicorn_tornadofork

        def on_starting(server):
            gunicorn_tornadofork.install(server, max_restarts={max_restarts})
        """
    return textwrap.dedent(text)
