"""The pure parts of the Prometheus support: identifiers, which live gauges to clear, the
supervision metrics of a task table's state, the metric file format, the directory checks,
and the adoption of prometheus_client's value class (in a process of its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gunicorn_tornadofork import prometheus
from gunicorn_tornadofork.exits import Ending, Exit
from gunicorn_tornadofork.options import OptionError, Options
from gunicorn_tornadofork.policy import Action, ExitPolicy, Rule
from gunicorn_tornadofork.tasks import TaskTable

pytestmark = pytest.mark.compat

KILLED = Exit(Ending.KILLED, signal=signal.SIGKILL)
FAILED = Exit(Ending.FAILED, status=1)


# -- identifiers --------------------------------------------------------------------------


def test_identifiers() -> None:
    """Slot 0 is the bare task id behind ``task``; other slots follow it; never all digits."""
    assert prometheus.task_identifier(3, 0) == "task3"
    assert prometheus.task_identifier(3, 2) == "task3-2"
    assert prometheus.master_identifier(0) == "master"
    assert prometheus.master_identifier(1) == "master-1"
    for identifier in ("task3", "task3-2", "master", "master-1", "task0"):
        assert prometheus.parse_identifier(identifier) == f"{identifier}.lock"
    # pids (prometheus_client's default), other names, and forms this module never gives out
    for foreign in ("1234", "task", "task-1", "task03", "task3-0", "master-0", "task3_1", "../task3"):
        assert prometheus.parse_identifier(foreign) is None, foreign


def test_live_files_are_the_live_gauges_of_known_identifiers() -> None:
    """Only ``gauge_live*`` files of this module's identifiers are candidates to clear."""
    names = [
        "gauge_livesum_task0.db",
        "gauge_liveall_task0.db",
        "gauge_liveall_task1-1.db",
        "gauge_liveall_master.db",
        "gauge_all_task0.db",  # not live: kept, as counters are
        "counter_task0.db",
        "gauge_livesum_4711.db",  # a pid's: prometheus_client's own rules
        "gauge_livesum_task0.db.tmp",
        "histogram_task2.db",
    ]
    assert prometheus.live_files(names) == {
        "master": ["gauge_liveall_master.db"],
        "task0": ["gauge_liveall_task0.db", "gauge_livesum_task0.db"],
        "task1-1": ["gauge_liveall_task1-1.db"],
    }
    assert "gauge_livesum_task0.db" in prometheus.live_file_names("task0")
    assert all(name.startswith("gauge_live") for name in prometheus.live_file_names("task0"))


def stat_of(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 0, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "owner", "group", "uid", "gid", "writable"),
    [
        (0o755, 0, 0, 0, 0, True),  # root writes anywhere
        (0o755, 0, 0, 65534, 65534, False),
        (0o755, 65534, 0, 65534, 65534, True),
        (0o775, 0, 65534, 65534, 65534, True),
        (0o757, 0, 0, 65534, 65534, True),
        (0o577, 65534, 0, 65534, 65534, False),  # the owner's own bits decide for the owner
        (0o773, 0, 0, 65534, 65534, True),
        (0o772, 0, 0, 65534, 65534, False),  # no search permission
    ],
)
def test_writable_by(mode: int, owner: int, group: int, uid: int, gid: int, writable: bool) -> None:
    assert prometheus.writable_by(stat_of(mode, owner, group), uid, {gid}) is writable


def test_worker_groups() -> None:
    """Only the group gunicorn sets, unless ``initgroups`` adds the user's other groups."""
    assert prometheus.worker_groups(0, 4242, False) == {4242}
    assert prometheus.worker_groups(0, 4242, True) == {4242, *os.getgrouplist("root", 4242)}
    assert prometheus.worker_groups(2**31 - 5, 4242, True) == {4242}  # no such user


@pytest.mark.parametrize(
    ("exit", "cause"),
    [
        (KILLED, "SIGKILL"),
        (FAILED, "status_1"),
        (Exit(Ending.TIMED_OUT, signal=signal.SIGKILL), "timeout"),
        (Exit(Ending.TIMED_OUT, status=1), "timeout"),
        (Exit(Ending.KILLED, signal=signal.SIGTERM, status=0), "SIGTERM"),
        (Exit(Ending.FINISHED, status=0), "status_0"),  # counted by an exit_policy rule
    ],
)
def test_restart_cause(exit: Exit, cause: str) -> None:
    assert prometheus.restart_cause(exit) == cause


# -- the supervision metrics ------------------------------------------------------------------


def gauges(samples: list[prometheus.Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name.removeprefix(prometheus.PREFIX), s.labels): s.value for s in samples}


def test_gauges_of_a_task_table() -> None:
    """Running, waiting, finished and failed tasks, start times of running workers, caps."""
    now = [100.0]
    policy = ExitPolicy((Rule(1, frozenset({7}), frozenset(), Action.FAIL_TASK),))
    table = TaskTable(4, 5, backoff=2.0, max_task_restarts=3, policy=policy, clock=lambda: now[0])
    for pid, task in enumerate([0, 1, 2, 3], 100):
        table.spawned(task, pid)
    table.exited(100, KILLED)  # task 0 waits 2 s
    table.exited(101, Exit(Ending.FINISHED, status=0))  # task 1 finished
    table.exited(102, Exit(Ending.FAILED, status=7))  # task 2 failed (rule 1)
    options = Options(max_restarts=5, max_task_restarts=3, backoff=2.0)
    samples = gauges(prometheus.gauge_samples(table, options, False, {3: 1700000000.5, 0: 1.0}))
    assert samples == {
        ("tasks", (("state", "running"),)): 1,
        ("tasks", (("state", "waiting"),)): 1,
        ("tasks", (("state", "finished"),)): 1,
        ("tasks", (("state", "failed"),)): 1,
        ("task_start_time_seconds", (("task", "3"),)): 1700000000.5,  # task 0 runs no worker
        ("gave_up", ()): 0,
        ("counted_restarts", ()): 1,
        ("max_restarts", ()): 5,
        ("max_task_restarts", ()): 3,
    }
    now[0] += 3  # the backoff is over: task 0 is no longer waiting, only pending
    table.spawned(0, 104)
    samples = gauges(prometheus.gauge_samples(table, Options(restart_window=60.0), True, {0: 2.0, 3: 1.0}))
    assert samples[("tasks", (("state", "running"),))] == 2
    assert samples[("tasks", (("state", "waiting"),))] == 0
    assert samples[("gave_up", ())] == 1
    assert samples[("restart_window_seconds", ())] == 60
    assert ("max_task_restarts", ()) not in samples


def test_counter_samples() -> None:
    samples = prometheus.counter_samples({(1, "SIGKILL"): 2, (0, "status_1"): 1})
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("gunicorn_tornadofork_restarts_total", (("cause", "status_1"), ("task", "0")), 1),
        ("gunicorn_tornadofork_restarts_total", (("cause", "SIGKILL"), ("task", "1")), 2),
    ]
    assert all(s.metric == "gunicorn_tornadofork_restarts" for s in samples)


# -- the file format, read by prometheus_client ------------------------------------------------


def test_encoded_files_read_by_prometheus_client(tmp_path: Path) -> None:
    """The master's files, in the installed prometheus_client's format: its reader and its
    collector see every sample, with keys of every length (padding)."""
    mmap_dict = pytest.importorskip("prometheus_client.mmap_dict")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.parser import text_string_to_metric_families

    restarts = {(task, "SIGKILL"): task + 1 for task in range(9)}  # labels of several lengths
    counters = prometheus.counter_samples(restarts)
    table = TaskTable(2, 10)
    table.spawned(0, 100)
    gauge_list = prometheus.gauge_samples(table, Options(), False, {0: 1234.5})
    (tmp_path / "counter_master.db").write_bytes(prometheus.encode(counters))
    (tmp_path / "gauge_liveall_master.db").write_bytes(prometheus.encode(gauge_list))
    read = list(mmap_dict.MmapedDict.read_all_values_from_file(str(tmp_path / "counter_master.db")))
    assert [(key, value) for key, value, *_ in read] == [(s.key(), s.value) for s in counters]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    for task in range(9):
        key = ("gunicorn_tornadofork_restarts_total", (("cause", "SIGKILL"), ("task", str(task))))
        assert samples[key] == task + 1
    start_time = ("gunicorn_tornadofork_task_start_time_seconds", (("pid", "master"), ("task", "0")))
    assert samples[start_time] == 1234.5
    assert samples[("gunicorn_tornadofork_tasks", (("pid", "master"), ("state", "running")))] == 1
    assert prometheus.encode([]) == b"\x08\0\0\0\0\0\0\0"


# -- the value class, in a process of its own --------------------------------------------------

ADOPTION = """
import os, sys
from prometheus_client import Counter, Gauge
from gunicorn_tornadofork import prometheus

# Created before the adoption, as --preload does: files named by this process's pid.
requests = Counter("requests", "Requests.")
requests.inc(5)
live = Gauge("live", "Live.", multiprocess_mode="livesum")
live.set(1)
prometheus.adopt_value_class()
assert prometheus.process_identifier() == os.getpid()
# A worker of task 7 in slot 1, as the at-fork hook sets it.
prometheus._identity = ("task7-1", os.getpid())
requests.inc(2)
later = Counter("later", "Created after.")
later.inc()
live.set(1)
print(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
print(requests._value.get())
"""


def test_adopted_value_class_writes_under_the_task_identifier(tmp_path: Path) -> None:
    """Metrics created before the adoption and after it both move to the task's files, and a
    counter continues from the file it finds there, not from the pid's."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    pytest.importorskip("prometheus_client")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    code = textwrap.dedent(ADOPTION)
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    files, value = first.stdout.splitlines()
    assert "counter_task7-1.db" in files and "gauge_livesum_task7-1.db" in files
    assert value == "2.0"  # the task's file started empty: the pid's 5 stayed in the pid's
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[1] == "4.0"  # continued from the task's file


def test_adoption_refused_without_multiprocess_mode(tmp_path: Path) -> None:
    """prometheus_client imported while the directory was unset chose its single-process
    class: the option is refused."""
    pytest.importorskip("prometheus_client")
    code = (
        "import prometheus_client\n"
        "from gunicorn_tornadofork import prometheus, OptionError\n"
        "try:\n    prometheus.adopt_value_class()\n"
        "except OptionError as exc:\n    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set" in out.stdout


def test_option_checked() -> None:
    assert Options.parse({"prometheus": True}).prometheus is True
    assert "prometheus=True" in Options.parse({"prometheus": True}).changed()
    for bad in (1, "yes", None):
        with pytest.raises(OptionError, match="option prometheus must be True or False"):
            Options.parse({"prometheus": bad})


def test_a_slot_that_cannot_be_taken_leaves_the_pid(tmp_path: Path) -> None:
    """When the master cannot create a task's lock file, that worker keeps prometheus_client's
    pid identifier instead of failing the fork; the others are unaffected."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    top = os.open(metrics, os.O_RDONLY | os.O_DIRECTORY)
    private = prometheus._open_private(top, str(metrics))
    exporter = prometheus.Exporter(str(metrics), top, private, Options(prometheus=True))
    try:
        with exporter.forking(0):
            assert prometheus._forking is not None and prometheus._forking[0] == "task0"
        # A symbolic link where task 1's lock file belongs: O_NOFOLLOW refuses it.
        (metrics / prometheus.PRIVATE_DIR / "task1.lock").symlink_to(tmp_path / "nowhere")
        with exporter.forking(1):
            assert prometheus._forking is None
        exporter.spawned(4711, 1)
        assert 4711 not in exporter.live
    finally:
        for fd in (top, private, *(lock for _, lock in exporter.held.values())):
            os.close(fd)
        prometheus._master_fds.clear()


def test_dead_pid_live_files() -> None:
    """Live gauges named after a pid whose process is gone are the ones to clear; a live
    pid's, a task's, and files that are not live gauges stay."""
    names = [
        "gauge_livesum_4711.db",
        "gauge_liveall_4711.db",
        "gauge_livesum_4712.db",  # alive
        "gauge_all_4711.db",  # not live
        "counter_4711.db",
        "gauge_livesum_task0.db",
        "gauge_livesum_04711.db",  # not a pid's name
    ]
    assert prometheus.dead_pid_live_files(names, lambda pid: pid == 4712) == [
        "gauge_liveall_4711.db",
        "gauge_livesum_4711.db",
    ]
    assert prometheus.pid_alive(os.getpid())


@pytest.mark.parametrize(
    ("mode", "owner", "group", "uid", "gid", "searchable"),
    [
        (0o700, 0, 0, 65534, 65534, False),
        (0o701, 0, 0, 65534, 65534, True),
        (0o710, 0, 65534, 65534, 65534, True),
        (0o700, 65534, 0, 65534, 65534, True),
        (0o700, 0, 0, 0, 0, True),
    ],
)
def test_searchable_by(mode: int, owner: int, group: int, uid: int, gid: int, searchable: bool) -> None:
    assert prometheus.searchable_by(stat_of(mode, owner, group), uid, {gid}) is searchable


def test_closed_ancestor(tmp_path: Path) -> None:
    """The first directory above the path that the user cannot pass through."""
    closed = tmp_path / "closed"
    inner = closed / "metrics"
    inner.mkdir(parents=True)
    closed.chmod(0o700)
    uid, gids = os.stat(closed).st_uid + 1, {os.stat(closed).st_gid + 1}
    assert prometheus.closed_ancestor(str(inner), os.stat(closed).st_uid, {0}) is None
    found = prometheus.closed_ancestor(str(inner), uid, gids)
    assert found is not None and Path(closed).is_relative_to(found)
