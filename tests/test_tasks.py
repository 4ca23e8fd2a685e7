"""The task table: ids, holders, finished tasks, restart counting, scaling."""

from __future__ import annotations

import gc
import signal
import tracemalloc

import pytest

from gunicorn_tornadofork import tasks
from gunicorn_tornadofork.exits import Ending, Exit
from gunicorn_tornadofork.tasks import Outcome, TaskTable

pytestmark = pytest.mark.compat

FINISHED = Exit(Ending.FINISHED, status=0)
RECYCLED = Exit(Ending.RECYCLED, status=0)
STOPPED = Exit(Ending.STOPPED, signal=signal.SIGTERM)
KILLED = Exit(Ending.KILLED, signal=signal.SIGKILL)
FAILED = Exit(Ending.FAILED, status=1)
TIMED_OUT = Exit(Ending.TIMED_OUT, status=1)
BOOT_FAILED = Exit(Ending.BOOT_FAILED, status=3)
APP_FAILED = Exit(Ending.APP_FAILED, status=4)
COUNTED = [KILLED, FAILED, TIMED_OUT]
NOT_COUNTED = [FINISHED, RECYCLED, STOPPED, BOOT_FAILED, APP_FAILED]


def start_all(table: TaskTable, first_pid: int = 100) -> dict[int, int]:
    """Spawn a worker for every pending id, as the arbiter does; task id -> pid."""
    pid = first_pid
    while (task := table.next_pending()) is not None:
        table.spawned(task, pid)
        pid += 1
    return table.live()


# -- ids --------------------------------------------------------------------------------


def test_ids_lowest_first() -> None:
    """A new table hands out 0 .. N-1, lowest first, and nothing more."""
    table = TaskTable(4, 10)
    assert list(table.pending()) == [0, 1, 2, 3]
    handed = []
    for pid in range(100, 104):
        task = table.next_pending()
        assert task is not None
        table.spawned(task, pid)
        handed.append(task)
    assert handed == [0, 1, 2, 3]
    assert table.next_pending() is None
    assert list(table.pending()) == []
    assert table.live() == {0: 100, 1: 101, 2: 102, 3: 103}
    assert table.running() == [0, 1, 2, 3]


def test_lookups() -> None:
    """pid <-> task id lookups follow spawns and exits."""
    table = TaskTable(2, 10)
    start_all(table)
    assert table.task_of(101) == 1
    assert table.pid_of(1) == 101
    table.exited(101, KILLED)
    assert table.task_of(101) is None
    assert table.pid_of(1) is None


@pytest.mark.parametrize("exit", [KILLED, FAILED, TIMED_OUT, RECYCLED])
def test_replacement_gets_same_id(exit: Exit) -> None:
    """A worker that must be replaced frees exactly its id, which is the next one handed out."""
    table = TaskTable(4, 10)
    start_all(table)
    outcome = table.exited(102, exit)
    assert outcome is not None
    assert outcome.task_id == 2
    assert outcome.pid == 102
    assert outcome.replaced
    assert list(table.pending()) == [2]
    assert table.next_pending() == 2
    table.spawned(2, 200)
    assert table.live() == {0: 100, 1: 101, 2: 200, 3: 103}


def test_lowest_freed_id_first() -> None:
    """Several freed ids are handed out lowest first, whatever order they died in."""
    table = TaskTable(5, 10)
    start_all(table)
    for pid in (104, 101, 103):
        table.exited(pid, KILLED)
    assert list(table.pending()) == [1, 3, 4]


def test_id_cannot_have_two_holders() -> None:
    """Spawning a second worker for a held id raises and changes nothing."""
    table = TaskTable(2, 10)
    start_all(table)
    with pytest.raises(ValueError, match="task 1 is already held by pid 101"):
        table.spawned(1, 999)
    assert table.live() == {0: 100, 1: 101}
    assert table.task_of(999) is None


def test_id_held_until_reaped_even_when_stopping() -> None:
    """A worker asked to stop still holds its id: its successor waits until it is reaped."""
    table = TaskTable(2, 10)
    start_all(table)
    table.stop_requested(101)
    assert table.is_stopping(101)
    assert table.next_pending() is None
    with pytest.raises(ValueError):
        table.spawned(1, 200)
    outcome = table.exited(101, STOPPED)
    assert outcome is not None
    assert not table.is_stopping(101)
    assert table.next_pending() == 1
    table.spawned(1, 200)


# -- finished tasks -----------------------------------------------------------------------


def test_finished_task_is_never_pending_again() -> None:
    """A finished task is not replaced and its id is never handed out again."""
    table = TaskTable(3, 10)
    start_all(table)
    outcome = table.exited(101, FINISHED)
    assert outcome is not None
    assert not outcome.replaced
    assert outcome.restarts == 0
    assert table.done() == {1}
    assert table.next_pending() is None
    # other tasks dying and being replaced does not revive it
    table.exited(100, KILLED)
    table.exited(102, FAILED)
    assert list(table.pending()) == [0, 2]
    start_all(table, 200)
    assert sorted(table.live()) == [0, 2]
    assert table.next_pending() is None


def test_finished_stays_done_across_resizes_that_keep_it() -> None:
    """Scaling that keeps a finished id in range keeps it finished."""
    table = TaskTable(3, 10)
    start_all(table)
    table.exited(100, FINISHED)
    table.resize(2)
    table.resize(5)
    assert table.done() == {0}
    assert 0 not in table.pending()


# -- restarts and giving up ----------------------------------------------------------------


@pytest.mark.parametrize("max_restarts", [0, 1, 3])
@pytest.mark.parametrize("exit", COUNTED)
def test_give_up_exactly_when_restarts_first_exceed_cap(max_restarts: int, exit: Exit) -> None:
    """Each counted end adds one restart; give_up is set on the one that first exceeds
    max_restarts, and that worker is not replaced."""
    table = TaskTable(1, max_restarts)
    pid = 100
    table.spawned(0, pid)
    for n in range(1, max_restarts + 1):
        outcome = table.exited(pid, exit)
        assert outcome is not None
        assert (outcome.restarts, outcome.give_up, outcome.replaced) == (n, False, True)
        pid += 1
        table.spawned(table.next_pending() or 0, pid)
    outcome = table.exited(pid, exit)
    assert outcome is not None
    assert outcome.restarts == max_restarts + 1
    assert outcome.give_up
    assert not outcome.replaced
    assert table.restarts == max_restarts + 1


def test_zero_cap_gives_up_on_first_counted_failure() -> None:
    """max_restarts=0: the first counted end gives up."""
    table = TaskTable(3, 0)
    start_all(table)
    outcome = table.exited(101, KILLED)
    assert outcome is not None
    assert outcome.give_up
    assert outcome.restarts == 1


@pytest.mark.parametrize("exit", NOT_COUNTED)
def test_uncounted_ends_never_give_up(exit: Exit) -> None:
    """Stops, recycles, finishes and halting ends add nothing to the count, even with a
    cap of 0."""
    table = TaskTable(50, 0)
    start_all(table)
    for pid in list(table.live().values()):
        outcome = table.exited(pid, exit)
        assert outcome is not None
        assert not outcome.give_up
        assert outcome.restarts == 0
    assert table.restarts == 0


def test_restarts_count_across_tasks() -> None:
    """The count is for the whole server, not per task, and only counted ends add to it."""
    table = TaskTable(3, 2)
    start_all(table)
    seen = []
    for pid, exit in ((100, KILLED), (101, FAILED), (102, RECYCLED)):
        outcome = table.exited(pid, exit)
        assert outcome is not None
        seen.append((outcome.restarts, outcome.give_up))
    assert seen == [(1, False), (2, False), (2, False)]
    start_all(table, 200)
    outcome = table.exited(202, TIMED_OUT)
    assert outcome is not None
    assert (outcome.task_id, outcome.restarts, outcome.give_up) == (2, 3, True)


@pytest.mark.parametrize("exit", [BOOT_FAILED, APP_FAILED])
def test_halting_end_is_not_replaced(exit: Exit) -> None:
    """A worker whose end halts the arbiter is not replaced."""
    table = TaskTable(2, 10)
    start_all(table)
    outcome = table.exited(100, exit)
    assert outcome is not None
    assert not outcome.replaced
    assert not outcome.give_up


def test_stopped_in_range_frees_its_id_for_a_successor() -> None:
    """A reload stops a worker whose id stays in range: the id is pending again at once."""
    table = TaskTable(3, 10)
    start_all(table)
    table.stop_requested(101)
    assert table.running() == [0, 2]
    outcome = table.exited(101, STOPPED)
    assert outcome is not None
    assert outcome.replaced
    assert outcome.restarts == 0
    assert table.next_pending() == 1


# -- scaling --------------------------------------------------------------------------------


def test_resize_up_adds_top_ids() -> None:
    """Scaling up adds the next ids at the top, nothing to retire."""
    table = TaskTable(2, 10)
    start_all(table)
    assert table.resize(5) == []
    assert list(table.pending()) == [2, 3, 4]
    start_all(table, 200)
    assert table.live() == {0: 100, 1: 101, 2: 200, 3: 201, 4: 202}


def test_resize_down_retires_highest_ids() -> None:
    """Scaling down returns the pids of the highest ids, which stop running at once but
    hold their ids until reaped, and are not replaced."""
    table = TaskTable(5, 10)
    start_all(table)
    assert table.resize(2) == [102, 103, 104]
    assert table.running() == [0, 1]
    assert list(table.pending()) == []
    assert sorted(table.live()) == [0, 1, 2, 3, 4]
    for pid in (102, 103, 104):
        table.stop_requested(pid)
    outcome = table.exited(103, STOPPED)
    assert outcome is not None
    assert outcome.task_id == 3
    assert not outcome.replaced
    assert table.next_pending() is None


def test_resize_down_skips_workers_already_stopping() -> None:
    """Pids already asked to stop are not returned again."""
    table = TaskTable(4, 10)
    start_all(table)
    assert table.resize(2) == [102, 103]
    table.stop_requested(102)
    assert table.resize(1) == [101, 103]
    table.stop_requested(101)
    table.stop_requested(103)
    assert table.resize(1) == []
    assert table.resize(0) == [100]


def test_resize_down_with_free_ids() -> None:
    """Only live workers are returned; free ids above the new size just disappear."""
    table = TaskTable(4, 10)
    start_all(table)
    table.exited(103, KILLED)
    table.exited(102, FINISHED)
    assert table.resize(1) == [101]
    assert list(table.pending()) == []


def test_replacement_after_scale_down_and_up_waits_for_old_holder() -> None:
    """An id retired and added back while its old worker is still stopping is handed out
    only once that worker is reaped."""
    table = TaskTable(3, 10)
    start_all(table)
    (pid,) = table.resize(2)
    table.stop_requested(pid)
    assert table.resize(3) == []
    assert table.next_pending() is None
    assert table.running() == [0, 1]
    outcome = table.exited(pid, STOPPED)
    assert outcome is not None
    assert outcome.replaced
    assert table.next_pending() == 2


def test_retired_then_readded_id_is_new() -> None:
    """A finished id that is scaled away and added back is a new task, pending again."""
    table = TaskTable(3, 10)
    start_all(table)
    table.exited(102, FINISHED)
    table.resize(2)
    table.resize(3)
    assert table.done() == set()
    assert list(table.pending()) == [2]


def test_id_finishing_while_retired_is_new_when_readded() -> None:
    """An id that finishes while it is being retired is not done once it is added back."""
    table = TaskTable(3, 10)
    start_all(table)
    (pid,) = table.resize(2)
    table.stop_requested(pid)
    outcome = table.exited(pid, FINISHED)  # finish_task() raced with the scale-down
    assert outcome is not None
    assert not outcome.replaced
    table.resize(3)
    assert 2 not in table.done()
    assert list(table.pending()) == [2]


def test_id_finishing_while_retired_does_not_count_toward_all_done() -> None:
    """A task that was retired and added back has not run: the server is not all done
    when the other tasks finish."""
    table = TaskTable(3, 10)
    start_all(table)
    table.exited(100, FINISHED)
    assert table.resize(2) == [102]
    table.stop_requested(102)
    table.exited(102, FINISHED)  # finish_task() raced with the scale-down
    table.resize(3)
    table.exited(101, FINISHED)
    assert not table.all_done()
    assert list(table.pending()) == [2]


def test_negative_sizes_refused() -> None:
    """Sizes and caps below zero are refused."""
    with pytest.raises(ValueError):
        TaskTable(-1, 10)
    with pytest.raises(ValueError):
        TaskTable(1, -1)
    with pytest.raises(ValueError):
        TaskTable(1, 10).resize(-1)


# -- all done --------------------------------------------------------------------------------


def test_all_done_when_every_task_finished() -> None:
    """all_done turns true with the last task's finish, not before."""
    table = TaskTable(3, 10)
    start_all(table)
    for pid in (100, 101):
        table.exited(pid, FINISHED)
        assert not table.all_done()
    table.exited(102, FINISHED)
    assert table.all_done()


def test_all_done_needs_no_live_worker() -> None:
    """A retired worker still stopping keeps the server from being all done."""
    table = TaskTable(2, 10)
    start_all(table)
    table.exited(100, FINISHED)
    (pid,) = table.resize(1)
    table.stop_requested(pid)
    assert not table.all_done()
    table.exited(pid, STOPPED)
    assert table.all_done()


def test_size_zero_is_never_all_done() -> None:
    """A server scaled to zero tasks is idle, not finished."""
    table = TaskTable(0, 10)
    assert not table.all_done()
    assert list(table.pending()) == []
    table = TaskTable(1, 10)
    start_all(table)
    table.exited(100, FINISHED)
    assert table.all_done()
    table.resize(0)
    assert not table.all_done()


def test_not_all_done_with_a_failed_task() -> None:
    """A task that failed (and waits for its replacement) is not done."""
    table = TaskTable(2, 10)
    start_all(table)
    table.exited(100, FINISHED)
    table.exited(101, KILLED)
    assert not table.all_done()


# -- unknown pids and running() -------------------------------------------------------------


def test_unknown_pid() -> None:
    """Exits and stop requests for pids the table does not know change nothing."""
    table = TaskTable(2, 0)
    start_all(table)
    assert table.exited(999, KILLED) is None
    table.stop_requested(999)
    assert not table.is_stopping(999)
    assert table.restarts == 0
    assert table.live() == {0: 100, 1: 101}
    outcome = table.exited(100, STOPPED)
    assert outcome is not None
    assert table.exited(100, KILLED) is None  # reaped twice
    assert table.restarts == 0


def test_running_excludes_stopping_and_out_of_range() -> None:
    """running() lists live workers that are in range and not asked to stop."""
    table = TaskTable(5, 10)
    start_all(table)
    table.stop_requested(101)
    assert table.running() == [0, 2, 3, 4]
    table.resize(4)  # 104 is out of range but not yet asked to stop
    assert table.running() == [0, 2, 3]
    table.exited(102, KILLED)
    assert table.running() == [0, 3]


def test_counts_match_the_lists() -> None:
    """running_count() and failed_count() count what running() and failed() list, through
    stops, scale-down, offsets and exits."""
    table = TaskTable(5, 10, offset=3)
    start_all(table)
    assert table.running_count() == len(table.running()) == 5
    table.stop_requested(101)
    assert table.running_count() == len(table.running()) == 4
    table.resize(4)  # the worker of id 7 is out of range, not yet asked to stop
    assert table.running_count() == len(table.running()) == 3
    table.exited(102, KILLED)
    assert table.running_count() == len(table.running()) == 2
    assert table.failed_count() == len(table.failed()) == 0


def test_resize_to_the_same_size_still_lists_unstopped_retired_workers() -> None:
    """Asked again at the same size, resize() returns the out-of-range workers that were not
    asked to stop, and keeps the in-range tasks' state."""
    table = TaskTable(3, 10)
    start_all(table)
    table.exited(100, FINISHED)
    assert table.resize(2) == [102]
    assert table.resize(2) == [102]
    table.stop_requested(102)
    assert table.resize(2) == []
    assert table.done() == {0}
    assert table.next_pending() is None
    assert table.next_ready() is None


# -- a retired id that comes back is a new task ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def crash(table: TaskTable, task: int) -> Outcome:
    """The worker of ``task`` is killed; its replacement starts once it is due."""
    pid = table.pid_of(task)
    assert pid is not None
    outcome = table.exited(pid, KILLED)
    assert outcome is not None
    return outcome


def respawn(table: TaskTable, task: int, pid: int) -> None:
    assert table.next_pending() == task
    table.spawned(task, pid)


def retire_and_readd(table: TaskTable, size: int) -> None:
    """Scale down by one (the retired worker stops) and back up."""
    for pid in table.resize(size - 1):
        table.stop_requested(pid)
        table.exited(pid, STOPPED)
    assert table.resize(size) == []


@pytest.mark.parametrize("window", [None, 60.0])
def test_readded_id_starts_with_no_task_restarts(window: float | None) -> None:
    """max_task_restarts=1: one crash, retire, add back, one more crash: not over the cap."""
    table = TaskTable(2, 100, max_task_restarts=1, restart_window=window, clock=Clock())
    start_all(table)
    assert not crash(table, 1).give_up
    respawn(table, 1, 200)
    retire_and_readd(table, 2)
    assert table.states()[1].restarts == 0
    respawn(table, 1, 201)
    outcome = crash(table, 1)
    assert (outcome.give_up, outcome.task_restarts, outcome.restarts) == (False, 1, 2)


def test_readded_id_starts_with_no_backoff_streak() -> None:
    """The backoff of a re-added id starts again from ``backoff``."""
    clock = Clock()
    table = TaskTable(2, 100, backoff=1, backoff_max=60, clock=clock)
    start_all(table)
    assert crash(table, 1).delay == 1
    clock.now += 1
    respawn(table, 1, 200)
    assert crash(table, 1).delay == 2
    clock.now += 2
    respawn(table, 1, 201)
    retire_and_readd(table, 2)
    respawn(table, 1, 202)
    assert crash(table, 1).delay == 1


def test_readded_id_does_not_wait_out_the_old_backoff() -> None:
    """A task retired while it waits out its backoff is pending at once when added back."""
    clock = Clock()
    table = TaskTable(2, 100, backoff=30, backoff_max=30, clock=clock)
    start_all(table)
    assert crash(table, 1).delay == 30
    assert table.next_pending() is None
    table.resize(1)
    assert table.next_ready() is None
    table.resize(2)
    assert table.next_pending() == 1
    assert table.states()[1].waiting is None


def test_retired_workers_crash_counts_for_the_server_only() -> None:
    """A worker that crashes while its id is out of range counts toward ``max_restarts``, but
    its task no longer exists: no task cap, no backoff, and the id added back is new."""
    table = TaskTable(2, 100, max_task_restarts=0, backoff=5, clock=Clock())
    start_all(table)
    (pid,) = table.resize(1)
    outcome = table.exited(pid, KILLED)
    assert outcome is not None
    assert (outcome.give_up, outcome.replaced, outcome.delay, outcome.restarts) == (False, False, 0.0, 1)
    table.resize(2)
    assert table.next_pending() == 1
    assert table.states()[1].restarts == 0


# -- memory stays flat in a long crash loop ---------------------------------------------------


def traced_growth(table: TaskTable, clock: Clock, step: float, exits: int) -> int:
    """Bytes the table holds more after ``exits`` further crash-and-respawn cycles of
    task 0 than after a warm-up of 10,000."""
    pid = 1000

    def cycle(count: int) -> None:
        nonlocal pid
        for _ in range(count):
            crash(table, 0)
            clock.now += step
            pid += 1
            table.spawned(0, pid)

    start_all(table)
    cycle(10_000)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        cycle(exits)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    tasks_py = tracemalloc.Filter(True, tasks.__file__)
    stats = after.filter_traces([tasks_py]).compare_to(before.filter_traces([tasks_py]), "filename")
    return sum(stat.size_diff for stat in stats)


@pytest.mark.parametrize(
    ("window", "step"),
    [(None, 1 / 1024), (1.0, 1 / 1024)],
    ids=["no-window", "window"],
)
def test_memory_is_flat_over_30k_restarts(window: float | None, step: float) -> None:
    """30,000 counted restarts under a cap they never reach: the table holds no more memory
    at the end than after the first 10,000 (without a window it keeps counts only; with
    one, the times inside it: here 1,023). 50 bytes kept per restart would show as 1 MB."""
    clock = Clock()
    table = TaskTable(2, 10**9, restart_window=window, clock=clock)
    assert traced_growth(table, clock, step, 20_000) < 16 * 1024
    assert table.restarts == 30_000
    assert table.counted_restarts() == (30_000 if window is None else 1023)
    assert table.states()[0].restarts == table.counted_restarts()


def test_restart_inside_a_window_below_the_clocks_resolution_counts() -> None:
    """A window shorter than the clock's resolution still counts the restart that just
    happened: with ``max_restarts=0`` the first crash gives up."""
    table = TaskTable(1, 0, restart_window=1e-300, clock=Clock())
    start_all(table)
    outcome = crash(table, 0)
    assert (outcome.restarts, outcome.give_up) == (1, True)
