"""``install(server, prometheus=True)`` with real gunicorn, real prometheus_client and real
HTTP: bounded files, counters across restarts, live gauges of dead workers, the arbiter's own
metrics, USR2 and shared directories, refusals, and links planted in the directory."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from test_compat_signals import ready

from server import Server, answer, wait_for

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Start = Callable[..., Server]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Each worker, once booted, writes every metric type (promapp.touch) where the test asks for
# it, and says it booted in the events.
BOOT = """
import os as _os

def post_worker_init(worker):
    import promapp
    {touch}
    {crash}
    with open(_os.environ["TF_EVENTS"], "a") as f:
        f.write(f"booted {{_os.getpid()}}\\n")
"""
# Each task's worker exits 1 right after its boot until its task has booted more than this.
CRASHES_PER_TASK = 100
CRASH = f"if promapp.boots() <= {CRASHES_PER_TASK}: _os._exit(1)"

KINDS = [
    pytest.param("sync", False, id="sync"),
    pytest.param("gthread", True, id="gthread-preload"),
]
ALL_KINDS = [
    *KINDS,
    pytest.param("sync", True, id="sync-preload"),
    pytest.param("gthread", False, id="gthread"),
]


def start(
    gunicorn: Start,
    metrics: Path,
    worker_class: str = "sync",
    preload: bool = False,
    *,
    options: str = "prometheus=True",
    crash: bool = False,
    touch: bool = True,
    config: str = "",
    workers: int = 2,
) -> Server:
    """A server of ``promapp`` writing its metrics into ``metrics``."""
    metrics.mkdir(exist_ok=True)
    args = ["-k", worker_class, *(["--threads", "2"] if worker_class == "gthread" else [])]
    return gunicorn(
        options=options,
        config=f"workers = {workers}\n"
        + BOOT.format(touch="promapp.touch()" if touch else "", crash=CRASH if crash else "")
        + config,
        app="promapp:wsgi",
        args=[*args, *(["--preload"] if preload else [])],
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)},
    )


def scrape(server: Server) -> Samples:
    """The samples of one ``/metrics`` answer: (name, labels) -> value."""
    status, text = server.get("/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def db_files(metrics: Path) -> set[str]:
    return {p.name for p in metrics.iterdir() if p.name.endswith(".db")}


def restart_lines(server: Server) -> dict[tuple[str, str], int]:
    """(task, cause) -> counted restarts, from the log's "restarting" lines."""
    counts: dict[tuple[str, str], int] = {}
    for task, how in re.findall(r"task (\d+) \(pid \d+\) (.+?), restarting", server.log()):
        cause = how.removeprefix("killed by signal ") if how.startswith("killed") else how
        cause = re.sub(r"exited with status (\d+)", r"status_\1", cause)
        counts[(task, cause)] = counts.get((task, cause), 0) + 1
    return counts


# -- bounded files -------------------------------------------------------------------------


def expected_files(tasks: Iterable[int]) -> set[str]:
    """The files of the workers of ``tasks`` (every type promapp writes) and of the master."""
    kinds = ("counter", "histogram", "gauge_all", "gauge_liveall", "gauge_livesum")
    return {f"{kind}_task{t}.db" for t in tasks for kind in kinds} | {
        "counter_master.db",
        "gauge_liveall_master.db",
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("worker_class", "preload"), KINDS)
def test_files_stay_bounded_over_200_restarts(
    gunicorn: Start, tmp_path: Path, worker_class: str, preload: bool
) -> None:
    """Each task's worker crashes 100 times right after writing every metric type: afterwards
    the directory holds the files of one boot of each task and no more, its counters went on
    across the restarts, and the arbiter's restart counts match the log."""
    metrics = tmp_path / "metrics"
    server = start(
        gunicorn, metrics, worker_class, preload, options="prometheus=True, max_restarts=1000", crash=True
    )
    ready(server, [0, 1], timeout=90)
    server.wait_log("(200 of max_restarts 1000)")
    # With --preload the master created the app's metrics before install(): their files carry
    # its pid, once.
    master_files = {name for name in db_files(metrics) if name.endswith(f"_{server.pid}.db")}
    assert bool(master_files) == preload
    assert db_files(metrics) - master_files == expected_files([0, 1])
    samples = scrape(server)
    assert value(samples, "app_boots_total") == 2 * (CRASHES_PER_TASK + 1)
    assert restart_lines(server) == {("0", "status_1"): 100, ("1", "status_1"): 100}
    for task in ("0", "1"):
        assert value(samples, "gunicorn_tornadofork_restarts_total", task=task, cause="status_1") == 100
    assert value(samples, "gunicorn_tornadofork_counted_restarts", pid="master") == 200
    assert value(samples, "app_live_workers") == 2


def test_pid_identifiers_grow_without_the_option(gunicorn: Start, tmp_path: Path) -> None:
    """The same crash loop without ``prometheus=True``: prometheus_client names files by pid,
    and every restart adds a set of them."""
    metrics = tmp_path / "metrics"
    server = start(gunicorn, metrics, options="max_restarts=20", crash=True)
    assert server.wait_exit(30) == 5
    # 2 first workers and 20 replacements (the 21st restart gives up), 5 files each.
    assert len(db_files(metrics)) == 5 * 22 > len(expected_files([0, 1]))


# -- counters, live gauges and the arbiter's metrics ------------------------------------------


class Client:
    """Requests to the app that count the answers it counts (every 200 but /metrics)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.answered = 0

    def get(self, path: str = "/") -> dict[str, str]:
        reply = answer(self.server, path)
        self.answered += 1
        return reply

    def answer_from(self, task: int) -> dict[str, str]:
        return wait_for(
            lambda: (a := self.get())["task"] == str(task) and a, 20, f"an answer from task {task}"
        )


@pytest.mark.parametrize(("worker_class", "preload"), ALL_KINDS)
def test_counts_and_gauges_across_restarts(
    gunicorn: Start, tmp_path: Path, worker_class: str, preload: bool
) -> None:
    """A counter incremented once per answered request equals the answers across restarts; a
    killed worker's live gauges are gone from /metrics before its replacement reports; the
    arbiter's metrics say what its log says."""
    metrics = tmp_path / "metrics"
    server = start(
        gunicorn, metrics, worker_class, preload, options="prometheus=True, max_restarts=10", touch=False
    )
    client = Client(server)
    workers = ready(server, [0, 1])
    killed_at = 0.0
    for victim in (0, 1, 0):
        for task in (0, 1):
            client.answer_from(task)
        before = scrape(server)
        assert value(before, "app_requests_total") == client.answered
        assert value(before, "app_live_workers") == 2
        old = workers[victim]
        assert value(before, "app_live_pid", pid=f"task{victim}") == old
        killed_at = time.time()
        os.kill(old, signal.SIGKILL)
        server.wait_log(f"task {victim} (pid {old}) killed by signal SIGKILL, restarting")
        workers = ready(server, [0, 1], old={victim: old})
        # The replacement has booted but not answered: the dead worker's live gauges are gone
        # (a replacement that created its metrics as it booted shows their initial 0).
        after = scrape(server)
        assert value(after, "app_live_pid", pid=f"task{victim}") in (None, 0)
        assert value(after, "app_live_pid", pid=f"task{1 - victim}") == workers[1 - victim]
        assert value(after, "app_live_workers") == 1
        # The "all" gauge keeps the dead worker's last value under its task's stable label.
        assert value(after, "app_task_pid", pid=f"task{victim}") == old
        assert value(after, "app_requests_total") == client.answered
    # Task 1 finishes with a request that is answered.
    wait_for(lambda: client.get("/finish/1")["task"] == "1", 20, "task 1 to answer /finish/1")
    wait_for(lambda: server.worker_pids().keys() == {0}, 15, "task 1 to finish")
    server.wait_log(") finished")
    client.answer_from(0)
    samples = scrape(server)
    assert value(samples, "app_requests_total") == client.answered
    assert restart_lines(server) == {("0", "SIGKILL"): 2, ("1", "SIGKILL"): 1}
    assert value(samples, "gunicorn_tornadofork_restarts_total", task="0", cause="SIGKILL") == 2
    assert value(samples, "gunicorn_tornadofork_restarts_total", task="1", cause="SIGKILL") == 1
    tasks = {
        state: value(samples, "gunicorn_tornadofork_tasks", pid="master", state=state)
        for state in ("running", "waiting", "finished", "failed")
    }
    assert tasks == {"running": 1, "waiting": 0, "finished": 1, "failed": 0}
    assert server.log().count(") finished") == 1
    assert value(samples, "gunicorn_tornadofork_max_restarts", pid="master") == 10
    assert value(samples, "gunicorn_tornadofork_gave_up", pid="master") == 0
    # Task 0's worker started after its last kill; task 1 has none.
    started = value(samples, "gunicorn_tornadofork_task_start_time_seconds", pid="master", task="0")
    assert started is not None and killed_at <= started <= time.time()
    assert value(samples, "gunicorn_tornadofork_task_start_time_seconds", pid="master", task="1") is None
