"""The reload's rolling replacement as pure bookkeeping: who is stopped when, without processes."""

from __future__ import annotations

import random

import pytest

from gunicorn_tornadofork.roll import Roll

pytestmark = pytest.mark.timeout(10)


def workers(count: int, base: int = 100) -> dict[int, int]:
    """Task id -> pid for ``count`` running workers."""
    return {task: base + task for task in range(count)}


def test_a_quarter_of_the_tasks_at_a_time_lowest_id_first() -> None:
    running = workers(8)
    roll = Roll.start(running, 8)
    assert roll.width == 2
    alive = set(running.values())
    assert roll.due(running, alive) == [100, 101]
    # Nothing more while both are still alive, however often the loop asks.
    remaining = {task: pid for task, pid in running.items() if task >= 2}
    assert roll.due(remaining, alive) == []
    assert not roll.done


def test_the_next_one_is_due_as_soon_as_one_is_gone() -> None:
    running = workers(8)
    roll = Roll.start(running, 8)
    alive = set(running.values())
    roll.due(running, alive)
    alive.discard(100)  # reaped; its successor (pid 200) runs task 0 now
    now = {0: 200, **{task: pid for task, pid in running.items() if task >= 2}}
    assert roll.due(now, alive | {200}) == [102]
    assert roll.stopping == {101, 102}


def test_the_roll_is_done_when_every_old_worker_is_gone() -> None:
    running = workers(5)
    roll = Roll.start(running, 5)
    assert roll.width == 2
    alive = set(running.values())
    stopped: list[int] = []
    for _ in range(10):
        now = {t: p for t, p in running.items() if p in alive and p not in roll.stopping}
        due = roll.due(now, alive)
        stopped += due
        if roll.done:
            break
        alive -= set(due)  # each stopped worker is reaped before the next turn
    assert stopped == [100, 101, 102, 103, 104]
    assert roll.done
    assert roll.stopped == 5


def test_a_worker_that_crashed_or_was_retired_is_passed_over() -> None:
    running = workers(4)
    roll = Roll.start(running, 4)
    assert roll.width == 1
    alive = set(running.values())
    assert roll.due(running, alive) == [100]
    # Task 1's worker crashed: its replacement (pid 201) already runs the new configuration.
    # Task 2 was retired by a scale-down: it is no longer in range.
    alive -= {100, 101}
    now = {0: 200, 1: 201, 3: 103}
    assert roll.due(now, alive | {200, 201}) == [103]
    assert roll.stopped == 2


def test_a_worker_reaped_before_its_turn_is_passed_over() -> None:
    """Still in the table (not yet judged) but already reaped: not signalled, since a stop
    request would judge its crash as an arbiter-requested stop."""
    running = workers(2)
    roll = Roll.start(running, 2)
    assert roll.due(running, {101}) == [101]


def test_a_second_reload_starts_again_with_every_running_worker() -> None:
    running = workers(4)
    first = Roll.start(running, 4)
    alive = set(running.values())
    assert first.due(running, alive) == [100]
    alive.discard(100)
    now = {0: 200, 1: 101, 2: 102, 3: 103}
    alive.add(200)
    assert first.due(now, alive) == [101]
    # HUP again: 101 is still stopping; task 0's successor (200) ran the previous config.
    running_now = {0: 200, 2: 102, 3: 103}
    second = Roll.start(running_now, 4, first)
    assert second.stopping == {101}
    assert list(second.waiting) == [(0, 200), (2, 102), (3, 103)]
    assert second.due(running_now, alive) == []  # width 1, taken by 101 until it is gone
    alive.discard(101)
    assert second.due({**running_now, 1: 201}, alive | {201}) == [200]


def test_a_roll_over_nothing_is_done_at_once() -> None:
    roll = Roll.start({}, 0)
    assert roll.width == 1
    assert roll.due({}, set()) == []
    assert roll.done


@pytest.mark.parametrize(("tasks", "width"), [(1, 1), (3, 1), (4, 1), (5, 2), (16, 4), (17, 5), (256, 64)])
def test_width_is_a_quarter_rounded_up(tasks: int, width: int) -> None:
    assert Roll.start(workers(tasks), tasks).width == width


def test_never_more_than_the_width_between_old_and_new() -> None:
    """Whatever order the old workers go in, at most ``width`` are asked to stop and alive,
    and every old worker is asked once."""
    rng = random.Random(7)
    for _ in range(200):
        count = rng.randint(1, 40)
        running = workers(count)
        roll = Roll.start(running, count)
        alive = set(running.values())
        current = dict(running)
        seen: list[int] = []
        while not roll.done:
            now = {t: p for t, p in current.items() if p not in roll.stopping}
            seen += roll.due(now, alive)
            assert len(roll.stopping) <= roll.width
            if roll.stopping:
                gone = rng.choice(sorted(roll.stopping))
                alive.discard(gone)
                task = gone - 100
                current[task] = 1000 + task
                alive.add(1000 + task)
        assert sorted(seen) == sorted(running.values())
