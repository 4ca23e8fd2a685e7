"""gunicorn's signals, reload and scaling keep working under the plugin, with task ids.

HUP replaces every running task's worker with a new one of the same id while requests keep
succeeding; TTIN/TTOU and the control socket add and retire ids at the top; signals sent to
a worker from outside are counted restarts, while a shutdown of the whole process group is not;
the master's own signals (QUIT, INT, TERM, USR1, USR2, WINCH) act as in plain gunicorn.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server import Server, answer, pid_alive, proc_title, wait_for

Start = Callable[..., Server]

# A signal that reaches a worker before it has set up its own handlers is lost, with or
# without the plugin: the tests signal a worker only once it has booted.
BOOTED = """
import os as _os

def post_worker_init(worker):
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"booted {_os.getpid()}\\n")
"""

NWORKERS_HOOK = """
import os as _os

def nworkers_changed(server, new_value, old_value):
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"nworkers_changed {new_value} {old_value}\\n")
"""


RECORD_REQUESTS = """
import os as _os

def pre_request(worker, req):
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"request {_os.getpid()} {req.path}\\n")
"""


def config(workers: int, extra: str = "") -> str:
    return f"workers = {workers}\n{BOOTED}{extra}"


# -- looking at the workers ------------------------------------------------------------------


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def still_shared(task: int, pids: list[int]) -> bool:
    """Whether these workers, all seen holding ``task`` in one pass over /proc, really were
    alive together. The pass is not atomic: an old worker read early can have been reaped,
    and its successor forked, before the pass reads the successor. Reading them again newest
    first settles it: an older worker still alive after the newest one was seen alive was
    alive alongside it."""
    newest_first = sorted(pids, key=start_time, reverse=True)
    return all(pid_alive(pid) and proc_title(pid).endswith(f" task {task}") for pid in newest_first)


def live_workers(server: Server, master: int | None = None) -> dict[int, int] | None:
    """Task id -> pid of the live workers of ``master`` (default: the server's); fails if two
    live workers hold one id; None when one pass over /proc could not tell."""
    workers = server.workers(master)
    shared = {task: pids for task, pids in workers.items() if len(pids) > 1}
    if any(still_shared(task, pids) for task, pids in shared.items()):
        raise AssertionError(f"task ids held by several live workers: {shared}")
    return None if shared else {task: pids[0] for task, pids in workers.items()}


def booted(server: Server) -> set[int]:
    """The pids of the workers that have booted: their ``post_worker_init`` event, from
    :data:`BOOTED` or from ``tests/apps/hooks.py``."""
    return {
        int(line.split()[1])
        for line in server.event_lines()
        if line.startswith(("booted ", "post_worker_init "))
    }


def ready(
    server: Server,
    tasks: Iterable[int],
    *,
    old: dict[int, int] | None = None,
    master: int | None = None,
    timeout: float = 30,
) -> dict[int, int]:
    """Wait until the workers of ``master`` hold exactly ``tasks``, every one booted and none
    of them one of ``old``'s workers; task id -> pid."""
    expected, stale = sorted(tasks), set((old or {}).values())

    def check() -> dict[int, int] | None:
        workers = live_workers(server, master)
        if workers is None or sorted(workers) != expected or stale & set(workers.values()):
            return None
        return workers if set(workers.values()) <= booted(server) else None

    return wait_for(check, timeout, f"booted workers with task ids {expected}")


def requests(server: Server, path: str) -> list[int]:
    """The pids of the workers that started a request for ``path`` (:data:`RECORD_REQUESTS`)."""
    return [int(line.split()[1]) for line in server.event_lines() if line.split()[::2] == ["request", path]]


def counted_restarts(server: Server) -> list[str]:
    return re.findall(r"restarting \(\d+ of max_restarts \d+\)", server.log())


def assert_nothing_counted(server: Server) -> None:
    log = server.log()
    assert "Too many child restarts" not in log
    assert not counted_restarts(server), counted_restarts(server)


def nworkers_changes(server: Server) -> list[tuple[int, int]]:
    """(new, old) of every ``nworkers_changed`` call after the first setup."""
    changes = []
    for line in server.event_lines():
        name, *values = line.split()
        if name == "nworkers_changed" and values[1] != "None":
            changes.append((int(values[0]), int(values[1])))
    return changes


# -- background load -------------------------------------------------------------------------


@dataclass
class Traffic:
    """Requests sent one after another on new connections, from a thread."""

    server: Server
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, body = self.server.get("/", timeout=20)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failures.append(f"{status} {body!r}")


@dataclass
class Sampler:
    """Reads the workers' /proc titles in a tight loop, from a thread, and records any moment
    two live workers hold the same id."""

    server: Server
    samples: int = 0
    seen: dict[int, set[int]] = field(default_factory=dict)  # task id -> pids seen
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                workers = live_workers(self.server)
            except AssertionError as exc:
                self.errors.append(str(exc))
                continue
            if workers is None:
                continue
            self.samples += 1
            for task, pid in workers.items():
                self.seen.setdefault(task, set()).add(pid)


@contextmanager
def in_background(*jobs: Traffic | Sampler) -> Iterator[None]:
    threads = [threading.Thread(target=job.run, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for job in jobs:
            job.stop.set()
        for thread in threads:
            thread.join(30)


# -- HUP -------------------------------------------------------------------------------------


@pytest.mark.compat
def test_hup_replaces_every_worker_with_the_same_ids(gunicorn: Start) -> None:
    """HUP re-reads the config and gives every task a new worker with the same id; the old
    workers stop gracefully (a request in progress completes); no two live workers ever share
    an id and no request fails."""
    server = gunicorn(options="max_restarts=0", config=config(4, RECORD_REQUESTS))
    old = ready(server, range(4))
    # A change only a re-read config brings: the new workers' process titles.
    server.config_path.write_text(server.config_path.read_text() + "proc_name = 'reloaded'\n")
    traffic, sampler = Traffic(server), Sampler(server)
    slow: list[int] = []
    slow_request = threading.Thread(target=lambda: slow.append(server.get("/sleep/1", timeout=30)[0]))
    with in_background(traffic, sampler):
        slow_request.start()
        wait_for(lambda: traffic.ok and sampler.samples and requests(server, "/sleep/1"), 15, "requests")
        server.signal(signal.SIGHUP)
        new = ready(server, range(4), old=old)
        answered = traffic.ok
        wait_for(lambda: traffic.ok > answered, 15, "a request answered after the reload")
        slow_request.join(30)
    assert slow == [200]
    assert requests(server, "/sleep/1")[0] in old.values()
    assert not sampler.errors, sampler.errors[:3]
    assert not traffic.failures, traffic.failures[:3]
    assert sampler.samples > 10 and set(sampler.seen) == {0, 1, 2, 3}
    for task, pid in new.items():
        assert proc_title(pid) == f"gunicorn: worker [reloaded] task {task}"
    log = server.log()
    assert "Hang up: Master" in log
    for task, pid in old.items():
        assert not pid_alive(pid)
        assert f"task {task} (pid {pid}) stopped" in log  # asked to stop, not counted
    assert_nothing_counted(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_hup_cuts_a_request_longer_than_graceful_timeout(gunicorn: Start) -> None:
    """A reload waits ``graceful_timeout`` for an old worker busy with a request, then kills
    it so that its successor can take the id: the request is cut, the id gets a new worker,
    and the kill is not counted (max_restarts=0)."""
    server = gunicorn(options="max_restarts=0", config=config(2, "graceful_timeout = 1\n" + RECORD_REQUESTS))
    start = ready(server, [0, 1])
    thread, cut = server.get_in_background("/sleep/30", timeout=40)
    busy = wait_for(lambda: requests(server, "/sleep/30"), 15, "the long request to start")[0]
    server.signal(signal.SIGHUP)
    ready(server, [0, 1], old=start)
    thread.join(30)
    assert cut and cut[0] != 200
    task = next(t for t, pid in start.items() if pid == busy)
    assert f"task {task} (pid {busy}) stopped" in server.log()
    assert_nothing_counted(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_hup_applies_a_changed_worker_count(gunicorn: Start) -> None:
    """A ``workers`` change in the config file takes effect on HUP: ids are added at the top,
    or the highest ones retired; the remaining ids keep their numbers; nothing is counted."""
    server = gunicorn(options="max_restarts=0", config=config(2))
    first = ready(server, [0, 1])
    server.config_path.write_text(server.config_path.read_text().replace("workers = 2", "workers = 4"))
    server.signal(signal.SIGHUP)
    grown = ready(server, range(4), old=first)
    server.config_path.write_text(server.config_path.read_text().replace("workers = 4", "workers = 1"))
    server.signal(signal.SIGHUP)
    ready(server, [0], old=grown)
    for task in (1, 2, 3):
        server.wait_log(f"task {task} (pid {grown[task]}) stopped")
        assert not pid_alive(grown[task])
    assert answer(server)["task"] == "0"
    assert_nothing_counted(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_finished_tasks_stay_finished_across_a_reload(gunicorn: Start) -> None:
    """A task that finished is not brought back by HUP; once the other tasks finish too the
    server exits 0."""
    server = gunicorn(options="max_restarts=0", config=config(3))
    ready(server, [0, 1, 2])
    done = int(answer(server, "/finish")["task"])
    running = [task for task in range(3) if task != done]
    before = ready(server, running)
    sampler = Sampler(server)
    with in_background(sampler):
        server.signal(signal.SIGHUP)
        ready(server, running, old=before)
    assert not sampler.errors, sampler.errors[:3]
    assert sampler.samples and done not in sampler.seen
    # Finishing the others ends the server: the finished task did not come back.
    for _ in running:
        answer(server, "/finish")
    assert server.wait_exit(20) == 0
    assert "All 3 tasks finished" in server.log()
    assert_nothing_counted(server)


# -- TTIN / TTOU and the control socket ------------------------------------------------------


@pytest.mark.compat
def test_ttin_adds_the_next_id_and_ttou_retires_the_highest(gunicorn: Start) -> None:
    """TTIN starts a worker for the next id at the top; TTOU stops the highest id gracefully
    (not counted); ``nworkers_changed`` fires each time; the other workers are untouched."""
    server = gunicorn(options="max_restarts=0", config=config(2, NWORKERS_HOOK))
    start = ready(server, [0, 1])
    server.signal(signal.SIGTTIN)
    ready(server, [0, 1, 2])
    server.signal(signal.SIGTTIN)
    grown = ready(server, [0, 1, 2, 3])
    server.signal(signal.SIGTTOU)
    ready(server, [0, 1, 2])
    server.wait_log(f"task 3 (pid {grown[3]}) stopped")
    server.signal(signal.SIGTTOU)
    assert ready(server, [0, 1]) == start
    server.wait_log(f"task 2 (pid {grown[2]}) stopped")
    assert not pid_alive(grown[2]) and not pid_alive(grown[3])
    assert nworkers_changes(server) == [(3, 2), (4, 3), (3, 4), (2, 3)]
    assert_nothing_counted(server)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def gunicornc(server: Server, command: str) -> str:
    """Run one command through the control socket with gunicorn's own client; its output."""
    socket_path = server.dir / "gunicorn.ctl"
    wait_for(socket_path.exists, 15, "the control socket")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn.ctl.cli", "-s", str(socket_path), "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def test_control_socket_scales_and_kills_with_task_ids(gunicorn: Start) -> None:
    """gunicorn's control socket: ``worker add`` starts the next id, ``worker remove`` retires
    the highest one (not counted), ``worker kill`` gets a replacement with the same id
    (counted)."""
    pytest.importorskip("gunicorn.ctl")
    server = gunicorn(options="max_restarts=1", config=config(2))
    start = ready(server, [0, 1])
    gunicornc(server, "worker add 1")
    grown = ready(server, [0, 1, 2])
    gunicornc(server, "worker remove 1")
    assert ready(server, [0, 1]) == start
    server.wait_log(f"task 2 (pid {grown[2]}) stopped")
    assert not counted_restarts(server)
    gunicornc(server, f"worker kill {start[1]}")
    after = ready(server, [0, 1], old={1: start[1]})
    assert after[0] == start[0]
    log = server.wait_log("restarting (1 of max_restarts 1)")
    assert f"task 1 (pid {start[1]}) stopped by signal SIGTERM that the arbiter did not send" in log
    assert answer(server)["task"] in {"0", "1"}
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# -- signals from outside --------------------------------------------------------------------


def test_worker_signalled_from_outside_is_replaced_and_counted(gunicorn: Start) -> None:
    """A worker stopped by a SIGTERM the arbiter did not send, or killed by SIGKILL, gets a
    replacement with the same id, and both count toward ``max_restarts``."""
    server = gunicorn(options="max_restarts=2", config=config(2))
    start = ready(server, [0, 1])
    os.kill(start[1], signal.SIGTERM)
    second = ready(server, [0, 1], old={1: start[1]})
    os.kill(start[0], signal.SIGKILL)
    third = ready(server, [0, 1], old=start)
    assert third[1] == second[1]
    log = server.wait_log("restarting (2 of max_restarts 2)")
    assert f"task 1 (pid {start[1]}) stopped by signal SIGTERM that the arbiter did not send" in log
    assert f"task 0 (pid {start[0]}) killed by signal SIGKILL" in log
    assert counted_restarts(server) == [
        "restarting (1 of max_restarts 2)",
        "restarting (2 of max_restarts 2)",
    ]
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


SIGNAL_IDS = {signal.SIGINT: "INT", signal.SIGTERM: "TERM", signal.SIGQUIT: "QUIT"}


@pytest.mark.compat
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT], ids=SIGNAL_IDS.get)
def test_process_group_signal_is_a_clean_shutdown(gunicorn: Start, sig: signal.Signals) -> None:
    """Ctrl-C, Ctrl-\\ or ``systemctl stop`` signals the master and every worker at once: a
    clean shutdown, exit status 0 as plain gunicorn, no restart counted even with max_restarts=0."""
    server = gunicorn(options="max_restarts=0", config=config(3))
    workers = ready(server, [0, 1, 2])
    os.killpg(server.pid, sig)
    assert server.wait_exit() == 0
    assert not any(pid_alive(pid) for pid in workers.values())
    assert "Shutting down: Master" in server.log()
    assert_nothing_counted(server)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT], ids=SIGNAL_IDS.get)
def test_process_group_signal_while_the_master_lags(gunicorn: Start, sig: signal.Signals) -> None:
    """The same shutdown when the workers end before the master gets to run (a busy host):
    still exit status 0 and nothing counted. SIGSTOP holds the master back while the whole
    group gets the signal; SIGCONT lets it see the signal and the workers' ends together."""
    server = gunicorn(options="max_restarts=0", config=config(3))
    workers = ready(server, [0, 1, 2])
    os.kill(server.pid, signal.SIGSTOP)
    try:
        os.killpg(server.pid, sig)
        wait_for(lambda: not any(pid_alive(pid) for pid in workers.values()), 15, "the workers to end")
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert server.wait_exit() == 0
    assert "Shutting down: Master" in server.log()
    assert_nothing_counted(server)


# -- the master's own signals ----------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT, signal.SIGTERM], ids=SIGNAL_IDS.get)
def test_master_stop_signals(gunicorn: Start, sig: signal.Signals) -> None:
    """QUIT and INT (quick) and TERM (graceful) to the master stop every worker and the
    master, exit status 0, nothing counted."""
    server = gunicorn(options="max_restarts=0", config=config(2))
    workers = ready(server, [0, 1])
    server.signal(sig)
    assert server.wait_exit() == 0
    assert not any(pid_alive(pid) for pid in workers.values())
    log = server.log()
    for pid in workers.values():
        assert f"Worker exiting (pid: {pid})" in log
    assert_nothing_counted(server)


def test_usr1_reopens_logs_and_winch_is_ignored_without_daemon(gunicorn: Start) -> None:
    """USR1 makes the master and every worker reopen their log files, and leaves every worker
    running; WINCH without --daemon is ignored: same workers, same ids, nothing counted."""
    server = gunicorn(options="max_restarts=0", config=config(2))
    workers = ready(server, [0, 1])
    rotated = server.errorlog.with_suffix(".log.1")
    server.errorlog.rename(rotated)
    server.signal(signal.SIGUSR1)
    wait_for(server.errorlog.exists, 15, "the error log to be reopened")
    server.signal(signal.SIGWINCH)
    server.wait_log("SIGWINCH ignored. Not daemonized")
    assert ready(server, [0, 1]) == workers
    assert {answer(server)["task"] for _ in range(4)} <= {"0", "1"}
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    log = server.log()
    for pid in workers.values():
        # Each worker got USR1 before TERM, so it wrote its last line to the new file.
        assert f"Worker exiting (pid: {pid})" in log
    assert "Handling signal: usr1" in rotated.read_text()
    assert_nothing_counted(server)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def test_usr2_new_master_numbers_its_own_workers(gunicorn: Start) -> None:
    """USR2 starts a new master (a child of the old one) whose workers hold ids 0..N-1 of
    their own, while the old workers keep theirs; once the old master stops, the new one is
    promoted and serves with its own ids."""
    server = gunicorn(options="max_restarts=0", config=config(2))
    old_workers = ready(server, [0, 1])
    server.signal(signal.SIGUSR2)
    new_master = wait_for(lambda: read_pid(Path(f"{server.pidfile}.2")), 15, "the new master's pidfile")
    new_workers: dict[int, int] = {}
    try:
        new_workers = ready(server, [0, 1], master=new_master)
        assert proc_title(new_workers[1]).endswith(".2] task 1")
        assert ready(server, [0, 1]) == old_workers
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        wait_for(lambda: read_pid(server.pidfile) == new_master, 15, "the new master to be promoted")
        # Every answer now comes from the new master's workers, with their own ids.
        seen: dict[int, dict[str, str]] = {}
        wait_for(
            lambda: seen.update({int((a := answer(server))["task"]): a}) or len(seen) == 2, 20, "0 and 1"
        )
        for task, reply in seen.items():
            assert int(reply["pid"]) == new_workers[task]
            assert reply["env"] == str(task) and int(reply["ppid"]) == new_master
        # gunicorn titles the promoted master anew; the task state is back on it.
        wait_for(
            lambda: proc_title(new_master) == "gunicorn: master [testapp:wsgi] tasks 2/2 restarts 0/0",
            5,
            f"the promoted master's title, not {proc_title(new_master)!r}",
        )
    finally:
        if pid_alive(new_master):
            os.kill(new_master, signal.SIGTERM)
        wait_for(lambda: not pid_alive(new_master), 20, "the new master to stop")
    assert not any(pid_alive(pid) for pid in [*old_workers.values(), *new_workers.values()])
    assert "Master has been promoted" in server.log()
    assert "Too many child restarts" not in server.log()
