"""The exit policy end to end with real gunicorn: every action, first-match order, signals
versus statuses, ``task_cap_action``, ``max_failed_tasks``, failed tasks in the title, USR1,
the control socket and statsd, status 6, HUP/TTOU/TTIN with a failed task, and every refused
policy, with the sync worker, the threaded one and gevent's."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gunicorn_tornadofork import GIVE_UP_STATUS, TASKS_FAILED_STATUS
from server import Server, answer, proc_title, wait_for

# Each worker, once booted, ends with the status in <events>.status when it gets SIGUSR2, and
# notes that it is ready for it.
EXIT_ON_USR2 = """
import os, signal
def post_worker_init(worker):
    def leave(signum, frame):
        with open(os.environ["TF_EVENTS"] + ".status") as f:
            os._exit(int(f.read()))
    signal.signal(signal.SIGUSR2, leave)
    with open(os.environ["TF_EVENTS"], "a") as f:
        f.write(f"ready {worker.task_id} {os.getpid()}\\n")
"""

NO_GEVENT = importlib.util.find_spec("gevent") is None
GEVENT = pytest.param("gevent", marks=pytest.mark.skipif(NO_GEVENT, reason="gevent is not installed"))
CLASSES = pytest.mark.parametrize("worker_class", ["sync", "gthread", GEVENT])


def start(gunicorn, options: str, workers: int = 2, worker_class: str = "sync", config: str = "") -> Server:
    return gunicorn(
        options=options,
        config=f"import signal\nworkers = {workers}\nworker_class = {worker_class!r}\n"
        + EXIT_ON_USR2
        + config,
    )


def ready(server: Server, tasks: list[int]) -> dict[int, int]:
    """Wait until exactly these tasks have a worker each, ready for SIGUSR2; task id -> pid."""

    def all_ready() -> dict[int, int] | None:
        pids = server.worker_pids()
        if sorted(pids) != sorted(tasks):
            return None
        lines = set(server.event_lines())
        return pids if all(f"ready {t} {p}" in lines for t, p in pids.items()) else None

    return wait_for(all_ready, 20, f"workers ready for tasks {tasks}")


def exit_with(server: Server, pid: int, status: int) -> None:
    """Make the worker ``pid`` exit with ``status`` at once."""
    Path(f"{server.events}.status").write_text(str(status))
    os.kill(pid, signal.SIGUSR2)


def replacement(server: Server, task: int, old: int) -> int:
    """Wait for a new worker of ``task``, ready; its pid."""
    return wait_for(
        lambda: (new := ready_pids(server).get(task)) not in (None, old) and new,
        20,
        f"a new worker for task {task}",
    )


def ready_pids(server: Server) -> dict[int, int]:
    lines = set(server.event_lines())
    return {t: p for t, p in server.worker_pids().items() if f"ready {t} {p}" in lines}


def title_ends(server: Server, text: str) -> None:
    wait_for(lambda: proc_title(server.pid).endswith(text), 10, f"the master title to end with {text!r}")


# -- every action, with both worker classes ------------------------------------------------------


@CLASSES
def test_count_rule_counts_a_clean_exit(gunicorn, worker_class):
    """``({0}, "count")``: an exit 0 is a counted restart with the same id, up to the cap."""
    server = start(gunicorn, "exit_policy=[({0}, 'count')], max_restarts=1", 1, worker_class)
    pid = ready(server, [0])[0]
    exit_with(server, pid, 0)
    pid2 = replacement(server, 0, pid)
    counted = "counted (exit_policy rule 1), restarting (1 of max_restarts 1)"
    assert f"task 0 (pid {pid}) exited with status 0: {counted}" in server.log()
    title_ends(server, "tasks 1/1 restarts 1/1")
    exit_with(server, pid2, 0)
    assert server.wait_exit() == GIVE_UP_STATUS
    assert "Too many child restarts, giving up (2 restarts > max_restarts 1)" in server.log()


@CLASSES
def test_ignore_rule_restarts_without_counting(gunicorn, worker_class):
    """``({75}, "ignore")``: restarted with the same id, never counted, even with a cap of 0."""
    server = start(gunicorn, "exit_policy=[({75}, 'ignore')], max_restarts=0", 1, worker_class)
    pid = ready(server, [0])[0]
    for count in range(1, 4):
        exit_with(server, pid, 75)
        old, pid = pid, replacement(server, 0, pid)
        server.wait_log(f"task 0 (pid {old}) exited with status 75: ignored (exit_policy rule 1), restarting")
        assert server.log().count("exited with status 75: ignored") == count
    title_ends(server, "tasks 1/1 restarts 0/0")
    assert server.running()


@CLASSES
def test_finish_rule_finishes_the_task(gunicorn, worker_class):
    """``({10}, "finish")``: the task is done, not replaced; all done, the server exits 0."""
    server = start(gunicorn, "exit_policy=[({10}, 'finish')]", 2, worker_class)
    pids = ready(server, [0, 1])
    exit_with(server, pids[0], 10)
    server.wait_log(f"task 0 (pid {pids[0]}) exited with status 10: finished (exit_policy rule 1)")
    title_ends(server, "tasks 1/2 restarts 0/100")
    assert server.worker_pids() == {1: pids[1]}
    exit_with(server, pids[1], 10)
    assert server.wait_exit() == 0
    assert "All 2 tasks finished" in server.log()


@CLASSES
def test_fail_task_rule_keeps_the_others_serving_then_exits_6(gunicorn, worker_class):
    """``({42, SIGSEGV}, "fail_task")``: the task failed, its id stays reserved, the others
    serve; when no task is left and one failed, the server exits 6."""
    server = start(gunicorn, "exit_policy=[({42, signal.SIGSEGV}, 'fail_task')]", 3, worker_class)
    pids = ready(server, [0, 1, 2])
    exit_with(server, pids[1], 42)
    server.wait_log(
        f"task 1 (pid {pids[1]}) exited with status 42: failed (exit_policy rule 1), not replaced"
    )
    title_ends(server, "tasks 2/3 restarts 0/100 failed 1")
    assert server.worker_pids() == {0: pids[0], 2: pids[2]}
    assert answer(server)["task"] in ("0", "2")
    os.kill(pids[0], signal.SIGSEGV)
    server.wait_log(
        f"task 0 (pid {pids[0]}) killed by signal SIGSEGV: failed (exit_policy rule 1), not replaced"
    )
    title_ends(server, "tasks 1/3 restarts 0/100 failed 2")
    exit_with(server, pids[2], 0)  # no rule: the task finished
    assert server.wait_exit() == TASKS_FAILED_STATUS
    log = server.log()
    assert f"task 2 (pid {pids[2]}) finished" in log
    assert "No task left to run: 2 of 3 tasks failed, 1 finished" in log
    assert log.count(f"(pid {pids[1]})") == 1 and log.count(f"(pid {pids[0]})") == 1, log  # one decision each
    assert not server.pidfile.exists()


@CLASSES
def test_give_up_rule_stops_the_server(gunicorn, worker_class):
    """``({78}, "give_up")``: the server stops at once with status 5, nothing restarted."""
    server = start(gunicorn, "exit_policy=[({78}, 'give_up')]", 2, worker_class)
    pids = ready(server, [0, 1])
    exit_with(server, pids[1], 78)
    assert server.wait_exit() == GIVE_UP_STATUS
    log = server.log()
    assert f"task 1 (pid {pids[1]}) exited with status 78: giving up (exit_policy rule 1)" in log
    assert log.count("Booting worker") == 2
    assert not server.pidfile.exists()


# -- matching -------------------------------------------------------------------------------------


def test_first_matching_rule_decides(gunicorn):
    """Rules are tried in order: 42 matches rule 1 (ignore) before rule 2 (fail_task)."""
    server = start(gunicorn, "exit_policy=[({42}, 'ignore'), ({42, 43}, 'fail_task')]", 2)
    pids = ready(server, [0, 1])
    exit_with(server, pids[0], 42)
    replacement(server, 0, pids[0])
    server.wait_log(f"task 0 (pid {pids[0]}) exited with status 42: ignored (exit_policy rule 1), restarting")
    exit_with(server, pids[1], 43)
    server.wait_log(
        f"task 1 (pid {pids[1]}) exited with status 43: failed (exit_policy rule 2), not replaced"
    )
    title_ends(server, "tasks 1/2 restarts 0/100 failed 1")


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_status_and_signal_of_the_same_number_are_told_apart(gunicorn, worker_class):
    """Exit status 11 and SIGSEGV (11) match different rules; a signal no rule names follows
    the exit table (counted)."""
    options = "exit_policy=[({11}, 'ignore'), [[signal.SIGSEGV], 'fail_task']]"
    server = start(gunicorn, options, 3, worker_class)
    pids = ready(server, [0, 1, 2])
    exit_with(server, pids[0], 11)
    replacement(server, 0, pids[0])
    os.kill(pids[1], signal.SIGSEGV)
    server.wait_log(f"task 1 (pid {pids[1]}) killed by signal SIGSEGV: failed (exit_policy rule 2)")
    os.kill(pids[2], signal.SIGKILL)
    replacement(server, 2, pids[2])
    log = server.wait_log(
        f"task 2 (pid {pids[2]}) killed by signal SIGKILL, restarting (1 of max_restarts 100)"
    )
    assert f"task 0 (pid {pids[0]}) exited with status 11: ignored (exit_policy rule 1), restarting" in log
    title_ends(server, "tasks 2/3 restarts 1/100 failed 1")


def test_arbiter_caused_ends_and_recycles_are_outside_the_policy(gunicorn):
    """Rules naming status 0, 1 and SIGTERM, SIGKILL, SIGQUIT as give_up change nothing for a
    max_requests recycle, a scale-down, a reload or the shutdown."""
    options = "exit_policy=[({0, 1, signal.SIGTERM, signal.SIGKILL, signal.SIGQUIT}, 'give_up')]"
    server = start(gunicorn, options, 2, config="max_requests = 1\n")
    pids = ready(server, [0, 1])
    answer(server)  # one request: that worker recycles
    wait_for(lambda: set(ready_pids(server).values()) - set(pids.values()), 20, "a recycled worker replaced")
    server.signal(signal.SIGTTOU)
    title_ends(server, "tasks 1/1 restarts 0/100")
    old = ready(server, [0])[0]
    server.signal(signal.SIGHUP)  # re-reads workers = 2: task 1 comes back
    wait_for(
        lambda: sorted(new := ready_pids(server)) == [0, 1] and new[0] != old, 20, "tasks 0 (reloaded) and 1"
    )
    assert "giving up" not in server.log()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_timeout_abort_is_outside_the_policy(gunicorn):
    """A worker aborted for its ``timeout`` is a counted restart whatever status the abort
    left (gunicorn 27's sync worker exits 0 then): a rule on 0, 1 and SIGKILL does not apply."""
    options = "exit_policy=[({0, 1, signal.SIGKILL, signal.SIGABRT}, 'give_up')]"
    server = start(gunicorn, options, 1, config="timeout = 1\n")
    pid = ready(server, [0])[0]
    thread, _ = server.get_in_background("/sleep/30", timeout=30)
    replacement(server, 0, pid)
    server.wait_log(f"task 0 (pid {pid}) timed out and was aborted, restarting (1 of max_restarts 100)")
    assert "giving up" not in server.log()
    assert server.running()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    thread.join(timeout=30)


# -- caps ------------------------------------------------------------------------------------------


@CLASSES
def test_task_cap_action_fail_task(gunicorn, worker_class):
    """With ``task_cap_action="fail_task"``, a task over ``max_task_restarts`` fails; the
    other serves on; the last task failing leaves no task: status 6."""
    server = start(gunicorn, "max_task_restarts=1, task_cap_action='fail_task'", 2, worker_class)
    pids = ready(server, [0, 1])
    os.kill(pids[1], signal.SIGKILL)
    new1 = replacement(server, 1, pids[1])
    os.kill(new1, signal.SIGKILL)
    failed = "failed (2 restarts > max_task_restarts 1), not replaced"
    server.wait_log(f"task 1 (pid {new1}) killed by signal SIGKILL: {failed}")
    title_ends(server, "tasks 1/2 restarts 2/100 failed 1")
    assert answer(server)["task"] == "0"
    os.kill(pids[0], signal.SIGKILL)
    new0 = replacement(server, 0, pids[0])
    os.kill(new0, signal.SIGKILL)
    assert server.wait_exit() == TASKS_FAILED_STATUS
    assert "giving up" not in server.log()


def test_max_failed_tasks_gives_up(gunicorn):
    """More failed tasks than ``max_failed_tasks`` stops the server with status 5."""
    server = start(gunicorn, "exit_policy=[({42}, 'fail_task')], max_failed_tasks=1", 3)
    pids = ready(server, [0, 1, 2])
    exit_with(server, pids[0], 42)
    title_ends(server, "failed 1")
    exit_with(server, pids[2], 42)
    assert server.wait_exit() == GIVE_UP_STATUS
    log = server.log()
    assert f"task 2 (pid {pids[2]}) exited with status 42: failed (exit_policy rule 1), not replaced" in log
    assert "Too many failed tasks, giving up (2 failed tasks > max_failed_tasks 1)" in log


# -- failed tasks with HUP, TTOU, TTIN; where they are shown --------------------------------------


def test_hup_does_not_revive_a_failed_task(gunicorn):
    """A reload replaces the running task and leaves the failed one failed."""
    server = start(gunicorn, "exit_policy=[({42}, 'fail_task')]", 2)
    pids = ready(server, [0, 1])
    exit_with(server, pids[1], 42)
    title_ends(server, "failed 1")
    server.signal(signal.SIGHUP)
    wait_for(lambda: ready_pids(server).get(0) not in (None, pids[0]), 20, "task 0 reloaded")
    server.signal(signal.SIGUSR1)  # handled after the reload: its lines show the state after it
    server.wait_log("task 1: failed, 0 restarts")
    assert list(server.worker_pids()) == [0]
    title_ends(server, "tasks 1/2 restarts 0/100 failed 1")


def test_ttou_then_ttin_makes_a_failed_id_a_new_task(gunicorn):
    """TTOU retires the failed id and forgets its failure; TTIN adds it back as a new task,
    which may fail once more without passing ``max_failed_tasks=1``."""
    server = start(gunicorn, "exit_policy=[({42}, 'fail_task')], max_failed_tasks=1", 2)
    pids = ready(server, [0, 1])
    exit_with(server, pids[1], 42)
    title_ends(server, "tasks 1/2 restarts 0/100 failed 1")
    server.signal(signal.SIGTTOU)
    title_ends(server, "tasks 1/1 restarts 0/100")
    server.signal(signal.SIGTTIN)
    new1 = ready(server, [0, 1])[1]
    assert new1 != pids[1]
    title_ends(server, "tasks 2/2 restarts 0/100")
    exit_with(server, new1, 42)
    server.wait_log(f"task 1 (pid {new1}) exited with status 42: failed (exit_policy rule 1), not replaced")
    title_ends(server, "tasks 1/2 restarts 0/100 failed 1")
    assert server.running()


@pytest.mark.parametrize(("end", "status"), [(42, TASKS_FAILED_STATUS), (10, 0)])
def test_scale_down_that_retires_the_last_waiting_task_ends_the_server(gunicorn, end, status):
    """Task 0 fails (or finishes); task 1 crashes and waits out a long backoff; a TTOU that
    retires task 1 leaves no task to run or wait: the server exits 6 (or 0) at once, with no
    worker end to reap."""
    server = start(gunicorn, "exit_policy=[({42}, 'fail_task'), ({10}, 'finish')], backoff=60", 2)
    pids = ready(server, [0, 1])
    exit_with(server, pids[0], end)
    server.wait_log(f"task 0 (pid {pids[0]}) exited with status {end}:")
    exit_with(server, pids[1], 1)
    server.wait_log(f"task 1 (pid {pids[1]}) exited with status 1, restarting in 60s")
    server.signal(signal.SIGTTOU)
    assert server.wait_exit(timeout=15) == status
    expected = "No task left to run: 1 of 1 tasks failed" if end == 42 else "All 1 tasks finished"
    assert expected in server.log()
    assert not server.pidfile.exists()


def test_failed_task_in_usr1_control_socket_and_statsd(gunicorn):
    """A failed task shows in the USR1 lines, the control socket's task list (where gunicorn
    has one) and the statsd gauge ``gunicorn.tornadofork.failed``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.2)
        port = udp.getsockname()[1]
        server = start(
            gunicorn, "exit_policy=[({42}, 'fail_task')]", 2, config=f"statsd_host = '127.0.0.1:{port}'\n"
        )
        pids = ready(server, [0, 1])
        exit_with(server, pids[1], 42)
        received: list[str] = []

        def got_gauge() -> bool:
            with contextlib.suppress(TimeoutError):
                received.extend(udp.recv(65536).decode().splitlines())
            return "gunicorn.tornadofork.failed:1|g" in received

        wait_for(got_gauge, 20, "the failed gauge over statsd")
    server.signal(signal.SIGUSR1)
    server.wait_log("task 1: failed, 0 restarts")
    assert f"task 0: pid {pids[0]}, up " in server.log()
    if not _has_control_socket():
        return
    control = str(server.dir / "gunicorn.ctl")
    wait_for(lambda: os.path.exists(control), 10, "the control socket")
    gunicornc = shutil.which("gunicornc", path=os.path.dirname(sys.executable)) or "gunicornc"
    out = subprocess.run(
        [gunicornc, "-s", control, "-c", "show workers", "-j"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    tasks = json.loads(out)["tasks"]
    assert [(t["task_id"], t["pid"], t["done"], t["failed"]) for t in tasks] == [
        (0, pids[0], False, False),
        (1, None, False, True),
    ]


def _has_control_socket() -> bool:
    try:
        import gunicorn.ctl.client  # noqa: F401
    except ImportError:
        return False
    return True


# -- refused policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "exit_policy=[({78}, 'stop')]",
            "exit_policy rule 1 has an unknown action 'stop'; accepted actions: ",
        ),
        (
            "exit_policy=[({1}, 'count'), ({256}, 'count')]",
            "exit_policy rule 2 matches exit status 256, outside",
        ),
        ("exit_policy=[({-1}, 'count')]", "exit_policy rule 1 matches exit status -1, outside 0-255"),
        ("exit_policy=[({3}, 'ignore')]", "exit_policy rule 1 matches exit status 3, which gunicorn keeps"),
        ("exit_policy=[({4}, 'finish')]", "exit_policy rule 1 matches exit status 4, which gunicorn keeps"),
        (
            "exit_policy=[({'SIGSEGV'}, 'count')]",
            "exit_policy rule 1 matches 'SIGSEGV', neither an exit status",
        ),
        ("exit_policy=[(set(), 'count')]", "exit_policy rule 1 has an empty match"),
        ("exit_policy=[(42, 'count')]", "exit_policy rule 1 must match a collection of exit statuses"),
        ("exit_policy=[({42}, 'count', 1)]", "exit_policy rule 1 must be a (match, action) pair"),
        ("exit_policy={42: 'count'}", "exit_policy must be a list of (match, action) rules"),
        ("task_cap_action='fail'", "task_cap_action must be one of 'give_up', 'fail_task', got 'fail'"),
        ("max_failed_tasks=-1", "max_failed_tasks must be an integer >= 0 or None, got -1"),
    ],
)
def test_refused_policy_before_forking(gunicorn, options, message):
    """A bad policy ends the server with one line naming the rule and status 1; no worker
    boots; the pidfile is removed."""
    server = gunicorn(options=options, config="import signal\n")
    assert server.wait_exit() == 1
    log = server.log()
    lines = [line for line in log.splitlines() if "gunicorn_tornadofork: install() option" in line]
    assert len(lines) == 1 and message in lines[0], log
    assert "Booting worker" not in log
    assert not server.pidfile.exists()


# -- the README's example ---------------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_policy_runs(gunicorn):
    """The README's exit_policy example is accepted as written and logged at start-up."""
    section = README.read_text().split("\n## Exit policy\n", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    server = gunicorn(install=False, config="workers = 2\n" + example)
    server.wait_workers([0, 1])
    server.wait_log(
        "exit_policy=[({78}, 'give_up'), ({42, SIGSEGV}, 'fail_task'), ({75}, 'ignore'), ({10}, 'finish')], "
        "task_cap_action='fail_task', max_failed_tasks=2"
    )
    refusal = "install() option exit_policy rule 2 matches exit status 4, which gunicorn keeps for a worker"
    assert refusal in " ".join(section.split())
