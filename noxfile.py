"""The test matrix: ``nox`` runs it all (the README's test command); ``nox -l`` lists it.

On CI (``CI`` set to anything but ``0``/``false``, as ``.ci/run`` runs) every Python of the matrix
must be there. Elsewhere a session whose Python cannot be found, or does not run (a pyenv shim
for a version that pyenv has not selected), is skipped, and nox names the missing interpreter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

try:
    import tomllib
except ImportError:  # Python 3.10: nox itself depends on tomli there
    import tomli as tomllib

# Interpreter discovery that runs each candidate, so that a pyenv shim which cannot run counts
# as absent.
nox.needs_version = ">=2026.10.20"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lowest", "compat", "lint"]
ON_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
nox.options.error_on_missing_interpreters = ON_CI
nox.options.download_python = "never"  # the matrix runs on the interpreters at hand, or says so

# 23.0: signals handled by reaping inside the SIGCHLD handler; 24.x: every signal queued
# and handled in the main loop; 27.x: queued, plus the dirty arbiter and control socket.
OLDEST, MIDDLE, NEWEST = "23.0.0", "24.1.1", "27.0.1"
HERE = Path(__file__).parent
# The tests mostly wait on real servers: three at a time keep two CPUs busy.
PARALLEL = ("-n", "3")


def install(session: nox.Session, gunicorn: str, extras: str, *args: str) -> None:
    session.install("-e", f".[{extras}]", f"gunicorn=={gunicorn}", *args)
    session.run("python", "-m", "pip", "freeze", "--exclude-editable")  # what this session tests


@nox.session(python="3.12")
@nox.parametrize("gunicorn", [OLDEST, NEWEST])
def tests(session: nox.Session, gunicorn: str) -> None:
    """The whole suite, every worker class and prometheus_client newest, on gunicorn 23.0.0 and 27.0.1."""
    install(session, gunicorn, "test,workers,prometheus")
    session.run("pytest", *PARALLEL, *session.posargs)


# The tests of the README's Guarantees, options and signal, life-cycle and deployment tables:
# the whole of them on every gunicorn of the matrix.
ON_EVERY_GUNICORN = [
    "tests/test_faults.py",
    "tests/test_security.py",
    "tests/test_load_changes.py",
    "tests/test_compat_signals.py",
    "tests/test_compat_lifecycle.py",
    "tests/test_compat_deploy.py",
    "tests/test_supervision.py",
    "tests/test_exit_policy_server.py",
    "tests/test_worker_signals.py",
    "tests/test_finish_in_post_fork.py",
    "tests/test_reload_roll.py",
]


def lower_bounds(*extras: str) -> dict[str, str]:
    """Name -> version for every ``name>=version`` requirement of the package and these extras
    (the highest bound where several name one package)."""
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    bounds: dict[str, str] = {}
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9.]*)\s*", requirement)
        if match:
            name, version = match[1].lower(), match[2]
            if name not in bounds or _key(version) > _key(bounds[name]):
                bounds[name] = version
    return bounds


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@nox.session(python="3.10")
def lowest(session: nox.Session) -> None:
    """Python 3.10, gunicorn 23.0.0, the rest at its declared lower bound: compat, worker classes, Prometheus.

    The lower bounds are read from pyproject.toml (the package and its extras test, workers and
    prometheus)."""
    bounds = lower_bounds("test", "workers", "prometheus")
    bounds.pop("gunicorn")
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(bounds.items())))
    install(session, OLDEST, "test,workers,prometheus", "-c", str(constraints))
    session.run("pytest", *PARALLEL, "-m", "compat", *session.posargs)
    session.run(
        "pytest",
        *PARALLEL,
        "-m",
        "not compat",
        "tests/test_compat_workers.py",
        "tests/test_prometheus_server.py",
        *session.posargs,
    )


@nox.session
@nox.parametrize(
    ("python", "gunicorn"),
    # With lowest (3.10, gunicorn 23.0.0) and tests (3.12), every Python and every gunicorn of
    # the matrix; .ci/run stays under 15 minutes on 2 cores.
    [("3.11", MIDDLE), ("3.13", NEWEST)],
)
def compat(session: nox.Session, gunicorn: str) -> None:
    """The compatibility subset (pytest -m compat); on gunicorn 24.1.1 also the Guarantees and tables."""
    # gevent: the Guarantees' exit-policy tests run it as their async class.
    install(
        session, gunicorn, "test,aiohttp,prometheus", *(["gevent>=24.10.1"] if gunicorn == MIDDLE else [])
    )
    session.run("pytest", *PARALLEL, "-m", "compat", *session.posargs)
    if gunicorn == MIDDLE:
        session.run("pytest", *PARALLEL, "-m", "not compat", *ON_EVERY_GUNICORN, *session.posargs)


@nox.session(python="3.12")
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
