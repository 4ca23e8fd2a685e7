"""The test matrix: ``nox`` runs it all (the README's test command); ``nox -l`` lists it."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True

NEWEST_PYTHON = "3.12"
OTHER_PYTHONS = ["3.10", "3.11", "3.13"]
# 23.0: signals handled by reaping inside the SIGCHLD handler; 24.x: every signal queued
# and handled in the main loop; 27.x: queued, plus the dirty arbiter and control socket.
GUNICORNS = ["23.0.0", "24.1.1", "27.0.1"]


def install(session: nox.Session, gunicorn: str) -> None:
    session.install("-e", ".[test]", f"gunicorn=={gunicorn}")


@nox.session(python=NEWEST_PYTHON)
@nox.parametrize("gunicorn", GUNICORNS)
def tests(session: nox.Session, gunicorn: str) -> None:
    """The whole suite on the newest Python, for each gunicorn arbiter."""
    install(session, gunicorn)
    session.run("pytest", *session.posargs)


@nox.session(python=OTHER_PYTHONS)
@nox.parametrize("gunicorn", [GUNICORNS[0], GUNICORNS[-1]])
def compat(session: nox.Session, gunicorn: str) -> None:
    """The compatibility subset on the other Pythons, oldest and newest gunicorn."""
    install(session, gunicorn)
    session.run("pytest", "-m", "compat", *session.posargs)


@nox.session(python=NEWEST_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
