"""Misuse of ``install()``, end to end with real gunicorn: it works only in ``on_starting``.

Every misuse is one line in gunicorn's error log and no traceback. In the master it ends the
server with status 1 before any worker exists (or, once workers run, after stopping them), and
the master removes its pidfile; in a worker it ends that worker with gunicorn's boot-failure
status 3, which makes the master halt (status 3), and the worker never touches the pidfile.
"""

from __future__ import annotations

import os
import signal
import textwrap

import pytest
from gunicorn.arbiter import Arbiter

import gunicorn_tornadofork
from gunicorn_tornadofork import _calling_arbiter, _Phase, _phase
from server import Server, all_pids, proc_ppid, wait_for

pytestmark = pytest.mark.compat

PREFIX = "gunicorn_tornadofork: install()"
NEEDS_ARBITER = "install() needs the gunicorn arbiter that on_starting gets"

# A worker records, as it exits, whether the master's pidfile is still there.
WORKER_EXIT = """
def worker_exit(server, worker):
    with open(os.environ["TF_EVENTS"], "a") as f:
        f.write(f"worker_exit {os.getpid()} pidfile={os.path.exists(server.pidfile.fname)}\\n")
"""


def config(hooks: str, workers: int = 1) -> str:
    return f"import os\nworkers = {workers}\n" + textwrap.dedent(hooks)


def refusal(server: Server) -> str:
    """The one line of the refusal; fails unless there is exactly one and no traceback."""
    lines = [line for line in server.log().splitlines() if PREFIX in line]
    assert len(lines) == 1, server.log()
    assert "[ERROR]" in lines[0]
    assert "Traceback" not in server.log()
    assert "Traceback" not in server.output_text()
    return lines[0]


def test_twice_in_on_starting(gunicorn):
    """A second ``install()`` on the same arbiter: status 1, pidfile removed, no worker."""
    server = gunicorn(
        install=False,
        config=config("""
            def on_starting(server):
                gunicorn_tornadofork.install(server)
                gunicorn_tornadofork.install(server)
            """),
    )
    assert server.wait_exit() == 1
    assert "install() was already called on this arbiter" in refusal(server)
    assert "Booting worker" not in server.log()
    assert not server.pidfile.exists()


def test_non_arbiter_argument(gunicorn):
    """``install(server.app)`` is refused in gunicorn's error log, and the arbiter it was
    called under removes its pidfile and exits 1."""
    server = gunicorn(
        install=False,
        config=config("""
            def on_starting(server):
                gunicorn_tornadofork.install(server.app)
            """),
    )
    assert server.wait_exit() == 1
    line = refusal(server)
    assert "install() needs the gunicorn arbiter that on_starting gets, got WSGIApplication" in line
    assert "Booting worker" not in server.log()
    assert not server.pidfile.exists()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("install()", f"{NEEDS_ARBITER}, got NoneType"),
        ("install(copy.copy(server))", f"{NEEDS_ARBITER}, got Arbiter"),
        ("install(server, 5)", "install() takes the arbiter and keyword options only, got 1 more positional"),
    ],
    ids=["no-argument", "a-copy", "positional-option"],
)
def test_wrong_arguments_in_on_starting(gunicorn, call, message):
    """No argument, a copy of the arbiter, a positional option: one line, exit 1, pidfile
    removed, no worker, no traceback."""
    server = gunicorn(
        install=False,
        config=config(f"""
            import copy

            def on_starting(server):
                gunicorn_tornadofork.{call}
            """),
    )
    assert server.wait_exit() == 1
    assert message in refusal(server)
    assert "Booting worker" not in server.log()
    assert not server.pidfile.exists()


def test_nworkers_changed_before_start(gunicorn):
    """``nworkers_changed`` runs first while the arbiter is being built, before its pidfile
    exists: refused with status 1, no pidfile, no worker."""
    server = gunicorn(
        install=False,
        config=config("""
            def nworkers_changed(server, new_value, old_value):
                gunicorn_tornadofork.install(server)
            """),
    )
    assert server.wait_exit() == 1
    assert "install() must be called from on_starting, not before the arbiter starts" in refusal(server)
    assert "Booting worker" not in server.log()
    assert not server.pidfile.exists()


@pytest.mark.parametrize("installed", [False, True], ids=["alone", "after-on_starting"])
@pytest.mark.parametrize("hook", ["when_ready", "pre_fork"])
def test_master_hook_before_any_worker(gunicorn, tmp_path, hook, installed):
    """From ``when_ready`` or ``pre_fork`` (with ``backoff``, whose alarm handler is set up
    only by ``on_starting``): status 1 before any worker is forked, the pidfile and the unix
    socket removed."""
    sock = tmp_path / "g.sock"
    args = "(server, worker)" if hook == "pre_fork" else "(server)"
    on_starting = (
        "def on_starting(server):\n    gunicorn_tornadofork.install(server, backoff=1)\n" if installed else ""
    )
    server = gunicorn(
        install=False,
        config=config(
            on_starting
            + f"bind = ['127.0.0.1:0', 'unix:{sock}']\n"
            + f"def {hook}{args}:\n    gunicorn_tornadofork.install(server, backoff=1)\n"
        ),
    )
    assert server.wait_exit() == 1
    line = refusal(server)
    assert "install() must be called from on_starting, not after the arbiter has started" in line
    assert "Booting worker" not in server.log()
    assert not server.pidfile.exists()
    assert not sock.exists()


@pytest.mark.parametrize("installed", [False, True], ids=["alone", "after-on_starting"])
@pytest.mark.parametrize("hook", ["post_fork", "post_worker_init"])
def test_worker_hook(gunicorn, hook, installed):
    """From a worker: that worker exits 3 without touching the master's pidfile, and the
    master halts with gunicorn's boot-failure status 3 and removes the pidfile itself."""
    on_starting = "def on_starting(server):\n    gunicorn_tornadofork.install(server)\n" if installed else ""
    # post_worker_init gets only the worker: install() finds the arbiter it runs under.
    call = (
        "def post_fork(server, worker):\n    gunicorn_tornadofork.install(server)\n"
        if hook == "post_fork"
        else "def post_worker_init(worker):\n    gunicorn_tornadofork.install(worker)\n"
    )
    server = gunicorn(install=False, config=config(on_starting + call + WORKER_EXIT))
    assert server.wait_exit() == 3
    line = refusal(server)
    assert "install() must be called from on_starting in the arbiter, not in a worker (pid " in line
    assert server.log().count("Booting worker") == 1
    # After its refusal, the worker still saw the master's pidfile. (gunicorn 23's master
    # also runs worker_exit for a worker reaped before it halts: the master's own line.)
    worker = line.rsplit("(pid ", 1)[1].rstrip(")")
    assert f"worker_exit {worker} pidfile=True" in server.event_lines()
    assert all(event.endswith("pidfile=True") for event in server.event_lines())
    assert not server.pidfile.exists()


HOOKS_WITH_WORKERS = {
    "on_reload": ("def on_reload(server):\n    gunicorn_tornadofork.install(server)\n", signal.SIGHUP),
    # nworkers_changed also runs while the arbiter is built: only the later calls refuse.
    "nworkers_changed": (
        "def nworkers_changed(server, new_value, old_value):\n"
        "    if old_value is not None:\n"
        "        gunicorn_tornadofork.install(server)\n",
        signal.SIGTTIN,
    ),
}


@pytest.mark.parametrize("installed", [False, True], ids=["alone", "after-on_starting"])
@pytest.mark.parametrize("hook", sorted(HOOKS_WITH_WORKERS))
def test_master_hook_with_workers(gunicorn, tmp_path, hook, installed):
    """From ``on_reload`` (HUP) or ``nworkers_changed`` (TTIN), once workers run: gunicorn's
    halt stops them gracefully, removes the unix socket and the pidfile; status 1."""
    sock = tmp_path / "g.sock"
    hook_text, sig = HOOKS_WITH_WORKERS[hook]
    on_starting = "def on_starting(server):\n    gunicorn_tornadofork.install(server)\n" if installed else ""
    server = gunicorn(
        install=False,
        config=config(on_starting + f"bind = ['127.0.0.1:0', 'unix:{sock}']\n" + hook_text, workers=2),
    )
    wait_for(lambda: server.log().count("Booting worker") == 2, 15, "two workers")
    workers = wait_for(lambda: [p for p in all_pids() if proc_ppid(p) == server.pid], 10, "workers")
    server.signal(sig)
    assert server.wait_exit() == 1
    line = refusal(server)
    assert "install() must be called from on_starting, not after the arbiter has started" in line
    assert not server.pidfile.exists()
    assert not sock.exists()
    log = server.log()
    for pid in workers:
        assert f"Worker exiting (pid: {pid})" in log  # stopped by the halt, not orphaned
    assert "Parent changed" not in log
    assert "Booting worker" not in log.split(PREFIX, 1)[1]


def test_refusal_is_not_repeated_by_exit_hooks(gunicorn):
    """A refusal runs gunicorn's halt, whose ``on_exit`` calls ``install()`` again: that call
    adds nothing, and the server still exits 1 with one line."""
    server = gunicorn(
        install=False,
        config=config("""
            def when_ready(server):
                gunicorn_tornadofork.install(server)
            def on_exit(server):
                gunicorn_tornadofork.install(server)
            """),
    )
    assert server.wait_exit() == 1
    assert "not after the arbiter has started" in refusal(server)
    assert not server.pidfile.exists()


# -- the phase, unit by unit ---------------------------------------------------------------------


def bare_arbiter(**attributes: object) -> Arbiter:
    """An Arbiter object that gunicorn never set up, with just the given attributes."""
    arbiter: Arbiter = object.__new__(Arbiter)
    arbiter.LISTENERS = []
    for name, value in attributes.items():
        setattr(arbiter, name, value)
    return arbiter


def test_phase_follows_what_the_arbiter_has_set_up() -> None:
    """No pid yet: being built; another pid: a child; own pid: starting until its SIGCHLD
    handler or a listener exists, running after."""
    assert _phase(None) is _Phase.NO_ARBITER
    assert _phase(bare_arbiter()) is _Phase.BUILDING
    assert _phase(bare_arbiter(pid=os.getppid())) is _Phase.CHILD
    assert _phase(bare_arbiter(pid=os.getpid())) is _Phase.STARTING
    assert _phase(bare_arbiter(pid=os.getpid(), LISTENERS=[object()])) is _Phase.RUNNING
    arbiter = bare_arbiter(pid=os.getpid())
    previous = signal.signal(signal.SIGCHLD, arbiter.signal)
    try:
        assert _phase(arbiter) is _Phase.RUNNING
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert _phase(arbiter) is _Phase.STARTING


def test_calling_arbiter_is_found_up_the_stack() -> None:
    """install() given something else finds the arbiter whose method called the hook."""

    class Probe(Arbiter):  # type: ignore[misc]
        def __init__(self) -> None:
            pass

        def hook(self) -> Arbiter | None:
            return outer()

    def outer() -> Arbiter | None:
        return _calling_arbiter()

    probe = Probe()
    assert probe.hook() is probe
    assert outer() is None


def test_no_arbiter_anywhere(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside gunicorn there is no error log: the line goes to stderr, status 1."""
    monkeypatch.setattr(gunicorn_tornadofork, "_refusing", False)  # restored after the test
    with pytest.raises(SystemExit) as exited:
        gunicorn_tornadofork.install(object())
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert (
        err
        == "gunicorn_tornadofork: install() needs the gunicorn arbiter that on_starting gets, got object\n"
    )


def test_pre_fork_after_a_worker_exists(gunicorn):
    """From ``pre_fork`` of the second worker, with the plugin installed: the first worker is
    stopped and reaped at once (gunicorn 23 reaps in its SIGCHLD handler, which the plugin
    holds blocked around a fork), the pidfile removed; status 1."""
    server = gunicorn(
        config=config(
            """
            def pre_fork(server, worker):
                if worker.age == 2:
                    gunicorn_tornadofork.install(server)
            """,
            workers=2,
        ),
    )
    # Reaped by the halt at once, not waited for until graceful_timeout (5 s) ran out.
    assert server.wait_exit(timeout=4) == 1
    assert "not after the arbiter has started" in refusal(server)
    assert server.log().count("Booting worker") <= 1
    assert not server.pidfile.exists()
