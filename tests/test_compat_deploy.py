"""How gunicorn is deployed keeps working under the plugin, with task ids: ``--daemon`` (and
WINCH, which only acts on a daemon), ``--preload``, ``--pid``, ``graceful_timeout``,
``--reuse-port`` and systemd socket activation.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_compat_signals import (
    BOOTED,
    RECORD_REQUESTS,
    assert_nothing_counted,
    counted_restarts,
    read_pid,
    ready,
    requests,
)

from server import APPS, Server, answer, pid_alive, proc_title, wait_for

Start = Callable[..., Server]


def config(workers: int, extra: str = "") -> str:
    return f"workers = {workers}\n{BOOTED}{extra}"


def answers_by_task(server: Server, tasks: int) -> dict[int, dict[str, str]]:
    """Send requests until each of ``tasks`` task ids has answered; task id -> last answer."""
    seen: dict[int, dict[str, str]] = {}

    def all_answered() -> bool:
        reply = answer(server)
        seen[int(reply["task"])] = reply
        return len(seen) == tasks

    wait_for(all_answered, 20, f"answers from {tasks} task ids")
    return seen


# -- --daemon and WINCH ------------------------------------------------------------------------


def test_daemon_with_task_ids_and_winch(gunicorn: Start) -> None:
    """``--daemon``: the master detaches (found through its pidfile) and numbers its workers
    0..N-1; WINCH stops every worker gracefully (nothing counted) while the master stays;
    TTIN then starts id 0 again; TERM stops it all and removes the pidfile."""
    server = gunicorn(options="max_restarts=0", config=config(2), args=["--daemon"])
    assert server.wait_exit() == 0  # the process that was started detaches and exits
    master = wait_for(lambda: (pid := read_pid(server.pidfile)) and pid_alive(pid) and pid, 15, "the master")
    workers: dict[int, int] = {}
    try:
        assert master != server.pid
        workers = ready(server, [0, 1], master=master)
        assert proc_title(master).startswith("gunicorn: master [")
        for task, reply in answers_by_task(server, 2).items():
            assert reply["pid"] == str(workers[task]) and reply["env"] == str(task)
            assert reply["ppid"] == str(master)
        os.kill(master, signal.SIGWINCH)
        server.wait_log("graceful stop of workers")
        wait_for(lambda: not any(pid_alive(pid) for pid in workers.values()), 15, "the workers to stop")
        # the two ends may be reaped in two passes: each line comes when its own is judged
        server.wait_log(f"task 0 (pid {workers[0]}) stopped")
        server.wait_log(f"task 1 (pid {workers[1]}) stopped")
        assert pid_alive(master) and server.workers(master) == {}
        os.kill(master, signal.SIGTTIN)
        workers.update(ready(server, [0], master=master))
        assert_nothing_counted(server)
    finally:
        if pid_alive(master):
            os.kill(master, signal.SIGTERM)
        wait_for(lambda: not pid_alive(master), 20, "the daemon to stop")
        assert not any(pid_alive(pid) for pid in workers.values())
    assert not server.pidfile.exists()
    assert "Shutting down: Master" in server.log()


# -- --preload -------------------------------------------------------------------------------


def test_preload_with_task_ids(gunicorn: Start) -> None:
    """``--preload`` loads the app in the master; the workers forked from it still get their
    task ids (in ``task_id()`` and the environment), and a replacement keeps its id."""
    server = gunicorn(options="max_restarts=1", config=config(2), args=["--preload"])
    workers = ready(server, [0, 1])
    for task, reply in answers_by_task(server, 2).items():
        assert reply["pid"] == str(workers[task]) and reply["env"] == str(task)
    os.kill(workers[1], signal.SIGKILL)
    after = ready(server, [0, 1], old={1: workers[1]})
    assert after[0] == workers[0]
    assert answers_by_task(server, 2)[1]["pid"] == str(after[1])
    assert counted_restarts(server) == ["restarting (1 of max_restarts 1)"]
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not any(pid_alive(pid) for pid in after.values())


# -- --pid -----------------------------------------------------------------------------------


def test_pid_option_pidfile_removed_on_give_up(gunicorn: Start, tmp_path: Path) -> None:
    """``--pid`` names the pidfile the master writes (over the config file's); when the
    master gives up after too many restarts it exits 5 and removes that pidfile, as on any
    other shutdown."""
    pidfile = tmp_path / "custom.pid"
    server = gunicorn(options="max_restarts=0", config=config(2), args=["--pid", str(pidfile)])
    workers = ready(server, [0, 1])
    assert read_pid(pidfile) == server.pid
    assert not server.pidfile.exists()
    os.kill(workers[0], signal.SIGKILL)
    assert server.wait_exit() == 5
    assert "Too many child restarts, giving up" in server.log()
    assert not pidfile.exists()
    assert not any(pid_alive(pid) for pid in workers.values())


# -- graceful_timeout ------------------------------------------------------------------------


def test_graceful_timeout_on_shutdown(gunicorn: Start) -> None:
    """On TERM a request in progress completes within ``graceful_timeout``; a worker still
    busy after it is killed; the master exits 0 long before the slow request would end, and
    nothing is counted."""
    server = gunicorn(
        options="max_restarts=0",
        config=config(2, "graceful_timeout = 2\n" + RECORD_REQUESTS),
    )
    ready(server, [0, 1])
    results: dict[str, object] = {}

    def request(path: str) -> None:
        try:
            results[path] = server.get(path, timeout=40)[0]
        except OSError as exc:
            results[path] = exc

    threads = [threading.Thread(target=request, args=(path,)) for path in ("/sleep/1", "/sleep/30")]
    for thread in threads:
        thread.start()
    wait_for(lambda: requests(server, "/sleep/1") and requests(server, "/sleep/30"), 15, "both requests")
    server.signal(signal.SIGTERM)
    # Well before the 30 s request could end: the worker holding it was killed.
    assert server.wait_exit(20) == 0
    for thread in threads:
        thread.join(30)
    assert results["/sleep/1"] == 200
    assert results["/sleep/30"] != 200
    assert_nothing_counted(server)


# -- --reuse-port ----------------------------------------------------------------------------


def test_reuse_port_with_task_ids(gunicorn: Start) -> None:
    """``--reuse-port``: the workers serve with their task ids, and a replacement keeps its
    id and serves again."""
    server = gunicorn(options="max_restarts=1", config=config(2), args=["--reuse-port"])
    workers = ready(server, [0, 1])
    for task, reply in answers_by_task(server, 2).items():
        assert reply["pid"] == str(workers[task])
    os.kill(workers[0], signal.SIGKILL)
    after = ready(server, [0, 1], old={0: workers[0]})
    assert answers_by_task(server, 2)[0]["pid"] == str(after[0])
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not any(pid_alive(pid) for pid in after.values())


def listening_sockets(pid: int, port: int) -> set[str]:
    """The inodes of the sockets listening on ``port`` that the process ``pid`` holds."""
    listening = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(fields[9])
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            held.add(target[8:-1])
    return held


def test_reuse_port_worker_lets_go_of_its_socket_as_its_loop_ends(gunicorn: Start, tmp_path: Path) -> None:
    """``--reuse-port``: a worker whose loop is over holds no listening socket any more, also
    while a slow ``worker_exit`` runs, so that the kernel hands no connection to a worker
    that will never accept it (on gunicorn 24 and later each worker has a socket of its own
    in the group, and a reload stops the workers one after the other)."""
    flag = tmp_path / "slow-exit"
    extra = f"import sys\nsys.path.insert(0, {str(APPS)!r})\nfrom slowexit import worker_exit\n"
    server = gunicorn(
        options="max_restarts=1",
        config=config(2, extra),
        args=["--reuse-port"],
        env={"TF_SLOW_EXIT": str(flag)},
    )
    workers = ready(server, [0, 1])
    assert listening_sockets(workers[1], server.port), "a serving worker holds its listening socket"
    flag.write_text("20")
    server.signal(signal.SIGTTOU)
    server.wait_log(f"Worker exiting (pid: {workers[1]})")
    wait_for(lambda: not listening_sockets(workers[1], server.port), 5, "the socket to be closed")
    assert pid_alive(workers[1]), "still in its slow worker_exit"
    answers_by_task(server, 1)
    flag.unlink()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0


# -- systemd socket activation ---------------------------------------------------------------

# Stands in for systemd: listens on the server's port, passes the socket as fd 3 with
# LISTEN_FDS/LISTEN_PID, notes the socket's inode, then execs the gunicorn command line.
SYSTEMD_LAUNCHER = """
import os, socket, sys

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(os.environ["TF_LISTEN_PORT"])))
sock.listen(64)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
with open(os.environ["TF_EVENTS"], "a") as f:
    f.write(f"launcher {os.getpid()} {os.fstat(3).st_ino}\\n")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


@pytest.fixture
def systemd_server(tmp_path: Path) -> Iterator[Server]:
    """A server started the way systemd socket activation starts it; at the end, stopped,
    and checked to leave no process behind."""
    (tmp_path / "systemd").mkdir()
    server = Server(tmp_path / "systemd", options="max_restarts=1", config=config(2))
    server.argv = [sys.executable, "-c", SYSTEMD_LAUNCHER, *server.argv[1:]]
    server.env["TF_LISTEN_PORT"] = str(server.port)
    server.start()
    yield server
    left = server.cleanup()
    assert not left, f"processes that outlived their master: {left}"


def test_systemd_socket_activation_with_task_ids(systemd_server: Server) -> None:
    """Socket activation (``LISTEN_FDS``/``LISTEN_PID``): the master serves on the inherited
    socket, its workers hold ids 0..N-1, and a replacement keeps its id."""
    server = systemd_server
    workers = ready(server, [0, 1])
    (launcher,) = [line.split() for line in server.event_lines() if line.startswith("launcher ")]
    assert int(launcher[1]) == server.pid
    assert f"socket:[{launcher[2]}]" in {os.readlink(fd) for fd in Path(f"/proc/{server.pid}/fd").iterdir()}
    for task, reply in answers_by_task(server, 2).items():
        assert reply["pid"] == str(workers[task]) and reply["env"] == str(task)
    os.kill(workers[1], signal.SIGKILL)
    after = ready(server, [0, 1], old={1: workers[1]})
    assert answers_by_task(server, 2)[1]["pid"] == str(after[1])
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not any(pid_alive(pid) for pid in after.values())
