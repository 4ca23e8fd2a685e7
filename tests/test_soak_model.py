"""The soak's model of the contract, on its own: it must flag what breaks the contract (a
planted duplicate id, a miscount, an orphan, ...) and accept what the contract allows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from soakkit.model import FINISHED, RECYCLED, STOPPED, Contract, EndLine, Model, killed
from soakkit.observe import parse_log_line
from soakkit.plan import ORDERED, make_plan


def started(workers: int = 3, **contract: object) -> Model:
    """A model whose tasks 0..N-1 run as pids 100, 101, ..."""
    model = Model(Contract(workers=workers, **contract))  # type: ignore[arg-type]
    for task in range(workers):
        model.spawned(100 + task, task, 0.1)
    return model


def kill(model: Model, pid: int, now: float, count: int | None, **line: object) -> None:
    """SIGKILL worker ``pid`` at ``now``; the arbiter logs it as the ``count``-th restart."""
    task = model.workers[pid].task
    model.expect(pid, killed("SIGKILL"), now + 5, "SIGKILL sent")
    model.ended(EndLine(task, pid, "killed:SIGKILL", count=count, **line), now + 0.1)  # type: ignore[arg-type]


def test_a_clean_history_has_no_violation() -> None:
    model = started()
    kill(model, 101, 1.0, 1)
    model.spawned(201, 1, 1.2)
    model.expect(100, {RECYCLED}, 5.0, "alive cleared")
    model.ended(EndLine(0, 100, RECYCLED), 2.0)
    model.spawned(200, 0, 2.1)
    for pid, task in ((200, 0), (201, 1), (102, 2)):
        model.expect(pid, {FINISHED}, 9.0, "finish_task()")
        model.ended(EndLine(task, pid, FINISHED), 3.0)
    model.tick(4.0)
    assert model.all_finished() and model.expected_status == {0}
    model.all_finished_line(3, 4.0)
    model.master_exited(0, 4.1)
    model.orphans({})
    assert model.violations == []
    assert model.title_ok(0, 3, 1, 100, 4.0)


def test_flags_a_planted_duplicate_id() -> None:
    model = started()
    model.spawned(300, 1, 1.0, exclusive=False)  # its lock on task 1 was held
    model.duplicate(2, [102, 302])  # /proc: two live workers titled task 2
    assert len(model.violations) == 2
    assert all("duplicate task id" in v for v in model.violations)


def test_flags_a_miscount() -> None:
    model = started()
    kill(model, 100, 1.0, 1)
    model.spawned(200, 0, 1.2)
    kill(model, 200, 2.0, 3)  # the second restart logged as the third
    assert any("restart counted as 3, the model counts 2" in v for v in model.violations)


def test_flags_an_uncounted_end_counted_and_a_counted_end_uncounted() -> None:
    model = started()
    model.ended(EndLine(0, 100, "killed:SIGKILL", count=1), 1.0)  # nothing was done to it
    model.expect(101, killed("SIGKILL"), 5.0, "SIGKILL sent")
    model.ended(EndLine(1, 101, RECYCLED), 1.5)
    assert len(model.violations) == 2
    assert "nothing was done to it" in model.violations[0]


def test_flags_an_orphan() -> None:
    model = started()
    model.master_killed(1.0, -9)
    model.master_exited(-9, 1.1)
    model.orphans({101: 0.5})  # gone in time
    assert model.violations == []
    model.orphans({102: 2.6})
    assert model.violations == ["processes outlived their master by more than 2s: [102]"]


def test_gives_up_exactly_when_the_cap_is_exceeded() -> None:
    model = started(max_restarts=1)
    kill(model, 100, 1.0, 1)
    model.spawned(200, 0, 1.1)
    kill(model, 200, 2.0, None, gave_up=True, give_up_count=2)
    assert model.violations == [] and model.expected_status == {5}
    model.master_exited(5, 2.5)
    assert model.violations == []

    early = started(max_restarts=1)
    kill(early, 100, 1.0, None, gave_up=True, give_up_count=1)
    assert any("gave up at 1..1 restarts" in v for v in early.violations)

    late = started(max_restarts=1)
    kill(late, 100, 1.0, 1)
    kill(late, 101, 2.0, 2)
    assert any("did not give up at 2 restarts" in v for v in late.violations)


def test_exit_zero_only_when_every_task_finished() -> None:
    model = started()
    model.expect(100, {FINISHED}, 5.0, "finish_task()")
    model.ended(EndLine(0, 100, FINISHED), 1.0)
    model.master_exited(0, 2.0)
    assert model.violations == ["the master exited with status 0 while the contract says it keeps running"]


def test_a_finished_task_stays_ended() -> None:
    model = started()
    model.expect(100, {FINISHED}, 5.0, "finish_task()")
    model.ended(EndLine(0, 100, FINISHED), 1.0)
    model.spawned(200, 0, 1.5)
    assert model.violations == ["finished task 0 started again (pid 200)"]


def test_a_promised_end_or_restart_that_does_not_come_is_flagged() -> None:
    model = started()
    model.expect(100, killed("SIGALRM"), 2.0, "signal.alarm()")
    kill(model, 101, 1.0, 1)
    model.tick(20.0)
    assert any("pid 100" in v and "SIGALRM" in v for v in model.violations)
    assert any("task 1 was not restarted in time" in v for v in model.violations)


def test_a_worker_gone_without_its_end_logged_is_flagged() -> None:
    model = started()
    model.gone(100, 1.0)
    model.tick(2.0)
    assert model.violations == []
    model.tick(10.0)
    assert model.violations == ["task 0 (pid 100) is gone but its end was never logged"]


def test_restart_window_and_backoff() -> None:
    model = started(restart_window=5.0, backoff=0.5, backoff_max=2.0)
    kill(model, 100, 1.0, 1, delay=0.5)
    model.spawned(200, 0, 1.7)
    kill(model, 200, 2.0, 2, delay=1.0)  # a streak: doubled
    model.spawned(300, 0, 3.2)
    kill(model, 300, 10.0, 1, delay=0.5)  # older ones left the window; it stayed up > backoff_max
    assert model.violations == []
    model.spawned(400, 0, 10.7)
    kill(model, 400, 10.8, 2, delay=0.5)  # a streak again, but logged as a fresh start
    assert any("restart delayed 0.5s, the model's backoff is [1.0]" in v for v in model.violations)


def test_a_retired_id_comes_back_as_a_new_task() -> None:
    model = started(max_task_restarts=1)
    kill(model, 102, 1.0, 1)
    model.spawned(202, 2, 1.1)
    model.scale(2, 2.0, "TTOU")
    model.ended(EndLine(2, 202, STOPPED), 2.5)
    model.scale(3, 3.0, "TTIN")
    model.spawned(302, 2, 3.1)
    kill(model, 302, 4.0, 2)  # a new task: its first restart, no give-up
    assert model.violations == []
    kill(model, 101, 5.0, 3)
    model.spawned(201, 1, 5.1)
    kill(model, 201, 6.0, None, gave_up=True, give_up_task_count=2)
    assert model.violations == []


def test_reads_the_arbiters_lines() -> None:
    restart = parse_log_line(
        "[2026-12-02 15:23:29 +0000] [18273] [WARNING] task 2 (pid 4711) killed by signal SIGKILL, "
        "restarting in 0.5s (3 of max_restarts 100)"
    )
    assert restart is not None and restart.end == EndLine(2, 4711, "killed:SIGKILL", count=3, delay=0.5)
    stray = parse_log_line(
        "[x] [1] [WARNING] task 0 (pid 9) stopped by signal SIGTERM that the arbiter did not send, "
        "restarting (1 of max_restarts 6)"
    )
    assert stray is not None and stray.end == EndLine(0, 9, "killed:SIGTERM", count=1)
    give_up = parse_log_line(
        "[x] [1] [ERROR] task 1 (pid 7) exited with status 42; Too many child restarts, giving up "
        "(7 restarts > max_restarts 6)"
    )
    assert give_up is not None and give_up.end == EndLine(1, 7, "exited:42", gave_up=True, give_up_count=7)
    recycled = parse_log_line("[x] [1] [INFO] task 3 (pid 8) recycled, replacing it")
    assert recycled is not None and recycled.end == EndLine(3, 8, RECYCLED)
    finished = parse_log_line("[x] [1] [INFO] All 4 tasks finished")
    assert finished is not None and (finished.kind, finished.number) == ("finished", 4)
    usr1 = parse_log_line("[x] [1] [INFO] task 2: pid 4711, up 12.0s, 1 restarts")
    assert usr1 is not None and (usr1.kind, usr1.number) == ("usr1", 2)
    assert parse_log_line("[x] [1] [INFO] Booting worker with pid: 8") is None


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "uvicorn_worker.UvicornWorker"])
def test_the_plan_replays_from_its_seed(worker_class: str) -> None:
    def plan(seed: int, mix: str = "all") -> list[str]:
        rounds = make_plan(seed, 90, worker_class, 3, timeout=4, root=True, mix=mix)
        return [r.describe() + " " + " ".join(map(str, r.events)) for r in rounds]

    assert plan(11) == plan(11) != plan(12)
    safe = make_plan(11, 90, worker_class, 3, timeout=4, root=True, mix="safe")
    assert not any(event.bugs for r in safe for event in r.events)
    assert not any(r.bugs for r in safe)


def test_pairs_never_hold_two_signals_whose_order_matters() -> None:
    """A TTOU and a HUP sent together were once taken TTOU first (a SIGCHLD handler running
    as they arrived), and the model, which had applied them lowest number first, expected
    the other outcome: pairs hold at most one of HUP, TTIN and TTOU."""
    pairs = [
        set(event.arg.split("+"))
        for seed in range(40)
        for r in make_plan(seed, 600, "sync", 3, timeout=4, root=True, mix="all")
        for event in r.events
        if event.kind == "pair"
    ]
    assert len(pairs) > 100
    assert all(len(pair & ORDERED) <= 1 for pair in pairs)
    assert any(pair & ORDERED for pair in pairs)


def test_a_crash_that_dies_of_the_usr1_passed_on_is_still_counted() -> None:
    """A worker that calls sys.exit(2) and gets the master's USR1 (passed on to every worker
    to reopen the logs) on its way out dies of USR1: with a USR1 sent, that is the same
    counted end; without one, it is a violation."""
    for usr1 in (True, False):
        model = started()
        model.expect(100, {"exited:2"}, 5.0, "sys.exit(2)")
        if usr1:
            model.usr1_sent(1.0)
        model.ended(EndLine(0, 100, "killed:SIGUSR1", count=1), 1.1)
        assert bool(model.violations) is not usr1, model.violations
        assert len(model.counted_at) == 1
