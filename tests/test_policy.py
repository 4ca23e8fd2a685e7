"""Supervision policy in the pure task table, driven by a controlled clock: the restart
window, the per-task cap, backoff, and the task id offset."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from gunicorn_tornadofork.exits import Ending, Exit
from gunicorn_tornadofork.options import OptionError, Options
from gunicorn_tornadofork.tasks import TaskTable

pytestmark = pytest.mark.compat

CRASH = Exit(Ending.KILLED, signal=signal.SIGKILL)
RECYCLE = Exit(Ending.RECYCLED, status=0)


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(size: int = 2, max_restarts: int = 100, **kwargs: Any) -> tuple[TaskTable, Clock]:
    clock = Clock()
    tasks = TaskTable(size, max_restarts, clock=clock, **kwargs)
    return tasks, clock


def start_all(tasks: TaskTable, pids: list[int]) -> None:
    """Spawn a worker for every pending task, taking pids from ``pids``."""
    for task_id in list(tasks.pending()):
        tasks.spawned(task_id, pids.pop(0))


def crash(tasks: TaskTable, task_id: int) -> Any:
    pid = tasks.pid_of(task_id)
    assert pid is not None
    return tasks.exited(pid, CRASH)


def test_without_window_every_restart_counts_for_ever() -> None:
    tasks, clock = table(max_restarts=2)
    pids = list(range(100, 200))
    outcomes = []
    for _ in range(3):
        start_all(tasks, pids)
        clock.now += 10_000
        outcomes.append(crash(tasks, 0))
    assert [o.restarts for o in outcomes] == [1, 2, 3]
    assert [o.give_up for o in outcomes] == [False, False, True]


def test_window_forgets_old_restarts() -> None:
    tasks, clock = table(max_restarts=2, restart_window=60)
    pids = list(range(100, 200))
    for _ in range(10):  # one crash every 31 s: never more than 2 within 60 s
        start_all(tasks, pids)
        clock.now += 31
        outcome = crash(tasks, 0)
        assert outcome.restarts <= 2 and not outcome.give_up
    assert tasks.restarts == 10
    start_all(tasks, pids)
    clock.now += 1
    assert crash(tasks, 1).give_up  # three within 60 s: 2 recent + this one


def test_window_expires_exactly_at_its_length() -> None:
    tasks, clock = table(max_restarts=1, restart_window=10)
    pids = list(range(100, 200))
    start_all(tasks, pids)
    crash(tasks, 0)
    start_all(tasks, pids)
    clock.now += 10
    assert tasks.counted_restarts() == 0
    assert not crash(tasks, 0).give_up


def test_task_cap_stops_one_failing_task_under_the_total_cap() -> None:
    tasks, _clock = table(size=4, max_restarts=100, max_task_restarts=2)
    pids = list(range(100, 200))
    for task_id in (1, 2, 3, 1, 2, 3):
        start_all(tasks, pids)
        assert not crash(tasks, task_id).give_up
    start_all(tasks, pids)
    outcome = crash(tasks, 1)
    assert outcome.give_up and outcome.task_restarts == 3 and outcome.restarts == 7


def test_task_cap_within_the_window() -> None:
    tasks, clock = table(max_task_restarts=1, restart_window=5)
    pids = list(range(100, 200))
    for _ in range(5):
        start_all(tasks, pids)
        clock.now += 6
        assert not crash(tasks, 0).give_up
    start_all(tasks, pids)
    clock.now += 1
    assert crash(tasks, 0).give_up


def test_recycles_and_stops_never_count() -> None:
    tasks, _clock = table(max_restarts=0, max_task_restarts=0)
    pids = list(range(100, 200))
    for _ in range(20):
        start_all(tasks, pids)
        pid = tasks.pid_of(0)
        assert pid is not None
        outcome = tasks.exited(pid, RECYCLE)
        assert outcome is not None and outcome.replaced and not outcome.give_up
    assert tasks.restarts == 0


def test_backoff_doubles_up_to_its_ceiling_and_holds_the_task() -> None:
    tasks, clock = table(backoff=1, backoff_max=5)
    pids = list(range(100, 200))
    delays = []
    for _ in range(5):
        start_all(tasks, pids)
        clock.now += 0.5  # up only briefly: consecutive failures
        outcome = crash(tasks, 0)
        delays.append(outcome.delay)
        assert 0 not in list(tasks.pending())
        assert tasks.next_ready() == clock.now + outcome.delay
        clock.now += outcome.delay - 0.01
        assert 0 not in tasks.pending()  # still waiting
        clock.now += 0.01
        assert 0 in tasks.pending()
    assert delays == [1, 2, 4, 5, 5]


def test_backoff_starts_again_after_staying_up_for_backoff_max() -> None:
    tasks, clock = table(backoff=1, backoff_max=8)
    pids = list(range(100, 200))
    for expected in (1, 2, 4):
        start_all(tasks, pids)
        clock.now += 1
        assert crash(tasks, 0).delay == expected
        clock.now += expected
    start_all(tasks, pids)
    clock.now += 8  # stayed up for backoff_max
    assert crash(tasks, 0).delay == 1


def test_backoff_is_per_task_and_other_tasks_start_at_once() -> None:
    tasks, clock = table(size=3, backoff=2, backoff_max=30)
    pids = list(range(100, 200))
    start_all(tasks, pids)
    crash(tasks, 1)
    crash(tasks, 2)
    clock.now += 2
    start_all(tasks, pids)
    crash(tasks, 1)
    assert crash(tasks, 0).delay == 2  # task 0's first failure
    assert tasks.next_ready() == clock.now + 2
    clock.now += 2
    assert list(tasks.pending()) == [0]  # task 1 waits 4 s
    clock.now += 2
    assert list(tasks.pending()) == [0, 1]


def test_no_backoff_means_no_wait() -> None:
    tasks, _clock = table()
    pids = list(range(100, 200))
    start_all(tasks, pids)
    assert crash(tasks, 0).delay == 0
    assert tasks.next_ready() is None
    assert list(tasks.pending()) == [0]


def test_offset_shifts_every_id_and_scaling_works_at_the_top() -> None:
    tasks, _clock = table(size=3, offset=30)
    assert list(tasks.pending()) == [30, 31, 32]
    pids = list(range(100, 200))
    start_all(tasks, pids)
    assert tasks.running() == [30, 31, 32]
    assert tasks.resize(2) == [tasks.pid_of(32)]
    tasks.resize(4)
    assert list(tasks.pending()) == [33]
    outcome = crash(tasks, 30)
    assert outcome.task_id == 30 and outcome.replaced
    assert list(tasks.pending()) == [30, 33]


def test_states_report_pid_uptime_restarts_done_and_backoff() -> None:
    tasks, clock = table(size=3, backoff=3)
    pids = list(range(100, 200))
    start_all(tasks, pids)
    clock.now += 5
    crash(tasks, 1)
    done_pid = tasks.pid_of(2)
    assert done_pid is not None
    tasks.exited(done_pid, Exit(Ending.FINISHED, status=0))
    clock.now += 1
    by_id = {s.task_id: s for s in tasks.states()}
    assert by_id[0].pid == 100 and by_id[0].uptime == 6 and by_id[0].restarts == 0
    assert by_id[1].pid is None and by_id[1].restarts == 1 and by_id[1].waiting == 2
    assert by_id[2].done


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"restart_window": 0}, "restart_window must be a number of seconds > 0 or None, got 0"),
        ({"restart_window": "1m"}, "restart_window must be a number of seconds > 0 or None, got '1m'"),
        ({"max_task_restarts": -1}, "max_task_restarts must be an integer >= 0 or None, got -1"),
        ({"backoff": -0.5}, "backoff must be a number of seconds >= 0, got -0.5"),
        ({"backoff": float("nan")}, "backoff must be a number of seconds >= 0, got nan"),
        ({"backoff_max": True}, "backoff_max must be a number of seconds >= 0, got True"),
        ({"backoff": 10, "backoff_max": 5}, "backoff_max must be >= backoff (10.0), got 5.0"),
        ({"task_id_offset": 1.0}, "task_id_offset must be an integer >= 0, got 1.0"),
    ],
)
def test_policy_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError) as excinfo:
        Options.parse(options)
    assert str(excinfo.value) == f"install() option {message}"


def test_policy_options_accept_their_documented_values() -> None:
    parsed = Options.parse(
        {"restart_window": 60, "max_task_restarts": 0, "backoff": 0.5, "backoff_max": 30, "task_id_offset": 8}
    )
    assert (parsed.restart_window, parsed.max_task_restarts, parsed.backoff) == (60.0, 0, 0.5)
    assert (parsed.backoff_max, parsed.task_id_offset) == (30.0, 8)
    assert Options.parse({}) == Options()
