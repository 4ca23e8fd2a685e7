"""The test matrix: ``nox`` runs it all (the README's test command); ``nox -l`` lists it."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "compat", "lint"]

# 23.0: signals handled by reaping inside the SIGCHLD handler; 24.x: every signal queued
# and handled in the main loop; 27.x: queued, plus the dirty arbiter and control socket.
OLDEST, MIDDLE, NEWEST = "23.0.0", "24.1.1", "27.0.1"


def install(session: nox.Session, gunicorn: str, extras: str = "test") -> None:
    session.install("-e", f".[{extras}]", f"gunicorn=={gunicorn}")


@nox.session(python="3.12")
@nox.parametrize("gunicorn", [OLDEST, NEWEST])
def tests(session: nox.Session, gunicorn: str) -> None:
    """The whole suite, every worker class included, on the oldest and newest gunicorn."""
    install(session, gunicorn, "test,workers")
    session.run("pytest", *session.posargs)


@nox.session
@nox.parametrize(
    ("python", "gunicorn"),
    [("3.12", MIDDLE), ("3.10", OLDEST), ("3.11", NEWEST), ("3.13", OLDEST), ("3.13", NEWEST)],
)
def compat(session: nox.Session, gunicorn: str) -> None:
    """The compatibility subset on the other Pythons and the middle gunicorn."""
    install(session, gunicorn)
    session.run("pytest", "-m", "compat", *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
