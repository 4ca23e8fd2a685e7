"""The exit policy in the pure core: the options ``exit_policy``, ``task_cap_action`` and
``max_failed_tasks`` as ``install()`` checks them, :func:`judge`, and what the task table does
with each action, driven without forking."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from gunicorn_tornadofork import GIVE_UP_STATUS, TASKS_FAILED_STATUS
from gunicorn_tornadofork.exits import REPORT_FINISHED, REPORT_RECYCLED, Ending, Exit, classify
from gunicorn_tornadofork.options import OptionError, Options
from gunicorn_tornadofork.policy import NO_POLICY, Action, ExitPolicy, judge
from gunicorn_tornadofork.tasks import TaskTable

pytestmark = pytest.mark.compat

ISSUE_EXAMPLE = [
    ({78}, "give_up"),
    ({42, signal.SIGSEGV}, "fail_task"),
    ({75}, "ignore"),
    ({10}, "finish"),
]


def policy(rules: Any) -> ExitPolicy:
    return Options.parse({"exit_policy": rules}).exit_policy


def exited(code: int) -> Exit:
    return classify(code << 8)


def killed(signum: int) -> Exit:
    return classify(int(signum))


# -- the options ------------------------------------------------------------------------------


def test_statuses_and_signals_stay_distinct() -> None:
    """Status 11 and SIGSEGV (11) are different matches; rules keep their 1-based number."""
    parsed = policy(ISSUE_EXAMPLE)
    assert [rule.number for rule in parsed.rules] == [1, 2, 3, 4]
    assert parsed.rules[1].statuses == {42}
    assert parsed.rules[1].signals == {signal.SIGSEGV}
    assert [rule.action for rule in parsed.rules] == [
        Action.GIVE_UP,
        Action.FAIL_TASK,
        Action.IGNORE,
        Action.FINISH,
    ]


@pytest.mark.parametrize("rules", [None, [], ()])
def test_no_rules_is_the_exit_table(rules: Any) -> None:
    assert policy(rules) == NO_POLICY
    assert Options.parse({}).exit_policy == NO_POLICY


@pytest.mark.parametrize(
    "rules",
    [
        [([0, 255, 1], "count")],
        [((signal.SIGKILL,), "count")],
        [(frozenset({signal.SIGTERM, 0}), "finish")],
        [[{2}, "ignore"]],
    ],
)
def test_accepted_matches(rules: Any) -> None:
    """A match is any collection (set, list, tuple, frozenset) of statuses and signals; a rule
    is any pair."""
    assert len(policy(rules).rules) == 1


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({78: "give_up"}, "exit_policy must be a list of (match, action) rules, got {78: 'give_up'}"),
        (({78}, "give_up"), "exit_policy rule 1 must be a (match, action) pair, got {78}"),
        ([({1}, "count"), ({78}, "stop")], "exit_policy rule 2 has an unknown action 'stop'; accepted"),
        ([({78}, "GIVE_UP")], "exit_policy rule 1 has an unknown action 'GIVE_UP'"),
        ([({78}, None)], "exit_policy rule 1 has an unknown action None"),
        ([({78}, "count", "x")], "exit_policy rule 1 must be a (match, action) pair"),
        ([(78, "count")], "exit_policy rule 1 must match a collection of exit statuses (0-255)"),
        ([("78", "count")], "exit_policy rule 1 must match a collection of exit statuses (0-255)"),
        ([({}, "count")], "exit_policy rule 1 must match a collection"),
        ([(set(), "count")], "exit_policy rule 1 has an empty match"),
        ([({256}, "count")], "exit_policy rule 1 matches exit status 256, outside 0-255"),
        ([({-1}, "count")], "exit_policy rule 1 matches exit status -1, outside 0-255"),
        ([({3}, "count")], "exit_policy rule 1 matches exit status 3, which gunicorn keeps"),
        ([({1}, "count"), ({2, 4}, "count")], "exit_policy rule 2 matches exit status 4, which gunicorn"),
        ([({"42"}, "count")], "exit_policy rule 1 matches '42', neither an exit status (int 0-255)"),
        ([({True}, "count")], "exit_policy rule 1 matches True, neither"),
        ([({4.2}, "count")], "exit_policy rule 1 matches 4.2, neither"),
        ([({None}, "count")], "exit_policy rule 1 matches None, neither"),
    ],
)
def test_refused_policies(rules: Any, message: str) -> None:
    """A bad policy is refused with one line naming the rule and what is accepted."""
    with pytest.raises(OptionError) as caught:
        Options.parse({"exit_policy": rules})
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("install() option exit_policy")
    assert message in text


def test_unknown_action_names_the_accepted_ones() -> None:
    with pytest.raises(OptionError) as caught:
        Options.parse({"exit_policy": [({1}, "restart")]})
    assert str(caught.value).endswith("accepted actions: 'count', 'ignore', 'finish', 'fail_task', 'give_up'")


@pytest.mark.parametrize("value", ["fail", "FAIL_TASK", "count", None, 1, Action.FAIL_TASK])
def test_refused_task_cap_actions(value: Any) -> None:
    with pytest.raises(OptionError) as caught:
        Options.parse({"task_cap_action": value})
    assert str(caught.value) == (
        f"install() option task_cap_action must be one of 'give_up', 'fail_task', got {value!r}"
    )


@pytest.mark.parametrize(("value", "action"), [("give_up", Action.GIVE_UP), ("fail_task", Action.FAIL_TASK)])
def test_accepted_task_cap_actions(value: str, action: Action) -> None:
    assert Options.parse({"task_cap_action": value}).task_cap_action is action
    assert Options.parse({}).task_cap_action is Action.GIVE_UP


@pytest.mark.parametrize("value", [-1, "2", 1.0, True])
def test_refused_max_failed_tasks(value: Any) -> None:
    with pytest.raises(OptionError, match="option max_failed_tasks must be an integer >= 0 or None"):
        Options.parse({"max_failed_tasks": value})


def test_changed_options_shown_for_the_log() -> None:
    parsed = Options.parse(
        {"exit_policy": ISSUE_EXAMPLE, "task_cap_action": "fail_task", "max_failed_tasks": 2}
    )
    assert parsed.changed() == [
        "exit_policy=[({78}, 'give_up'), ({42, SIGSEGV}, 'fail_task'), ({75}, 'ignore'), ({10}, 'finish')]",
        "task_cap_action='fail_task'",
        "max_failed_tasks=2",
    ]


# -- judge --------------------------------------------------------------------------------------


def test_first_match_decides() -> None:
    rules = policy([({1, 2}, "ignore"), ({2, 3 + 2}, "fail_task"), ({2}, "give_up")])
    assert judge(exited(2), rules).action is Action.IGNORE
    assert judge(exited(2), rules).rule == rules.rules[0]
    assert judge(exited(5), rules).rule == rules.rules[1]


def test_signal_and_status_of_the_same_number_are_told_apart() -> None:
    rules = policy([({11}, "finish"), ({signal.SIGSEGV}, "fail_task")])
    assert judge(exited(11), rules).action is Action.FINISH
    assert judge(killed(signal.SIGSEGV), rules).action is Action.FAIL_TASK
    assert judge(killed(signal.SIGSEGV | 0x80), rules).action is Action.FAIL_TASK  # core dumped


def test_stop_signal_from_a_stranger_matches_the_signal_not_its_status() -> None:
    """A worker stopped by a SIGTERM the arbiter did not send exits 0 after reporting it:
    a rule on SIGTERM matches it, one on status 0 does not."""
    stranger = classify(0, b"S15")
    assert judge(stranger, policy([({0}, "finish")])).action is Action.COUNT
    assert judge(stranger, policy([({signal.SIGTERM}, "finish")])).action is Action.FINISH


def test_unmatched_ends_follow_the_exit_table() -> None:
    rules = policy(ISSUE_EXAMPLE)
    assert judge(exited(1), rules) == judge(exited(1), NO_POLICY)
    assert judge(exited(1), rules).action is Action.COUNT
    assert judge(exited(0), rules).action is Action.FINISH
    assert judge(killed(signal.SIGKILL), rules).action is Action.COUNT
    assert judge(exited(1), rules).rule is None


@pytest.mark.parametrize(
    ("status", "report", "requested", "aborted", "action"),
    [
        (15, b"", True, False, Action.IGNORE),  # the arbiter's stop: reload, scale-down
        (0, b"", True, False, Action.IGNORE),
        (1 << 8, b"", True, False, Action.IGNORE),
        (0, REPORT_RECYCLED, False, False, Action.IGNORE),  # max_requests
        (9, b"", False, True, Action.COUNT),  # timeout abort
        (1 << 8, b"", False, True, Action.COUNT),
        (0, REPORT_FINISHED, False, False, Action.FINISH),  # finish_task()
        (15, REPORT_FINISHED, False, False, Action.FINISH),
        (3 << 8, b"", False, False, Action.HALT),
        (4 << 8, b"", False, False, Action.HALT),
    ],
)
def test_arbiter_caused_ends_recycles_and_reports_are_outside_the_policy(
    status: int, report: bytes, requested: bool, aborted: bool, action: Action
) -> None:
    """Rules that name every status and signal change nothing for the arbiter's own stops,
    recycles, timeout aborts, finish_task() and gunicorn's 3 and 4."""
    every = [
        (set(range(256)) - {3, 4}, "give_up"),
        (set(signal.Signals), "give_up"),
    ]
    verdict = judge(classify(status, report, requested=requested, aborted=aborted), policy(every))
    assert verdict.action is action
    assert verdict.rule is None


# -- the task table ------------------------------------------------------------------------------


def table(size: int = 2, rules: Any = (), **kwargs: Any) -> TaskTable:
    tasks = TaskTable(size, kwargs.pop("max_restarts", 100), policy=policy(list(rules)), **kwargs)
    start(tasks)
    return tasks


def start(tasks: TaskTable) -> None:
    for task_id in list(tasks.pending()):
        tasks.spawned(task_id, 1000 + task_id + 10 * tasks.restarts + 100 * len(tasks.live()))


def end(tasks: TaskTable, task_id: int, exit: Exit) -> Any:
    pid = tasks.pid_of(task_id)
    assert pid is not None
    outcome = tasks.exited(pid, exit)
    assert outcome is not None
    return outcome


def test_count_rule_counts_an_exit_zero() -> None:
    tasks = table(rules=[({0}, "count")], backoff=1.0)
    outcome = end(tasks, 0, exited(0))
    assert (outcome.action, outcome.rule, outcome.counted, outcome.replaced) == (Action.COUNT, 1, True, True)
    assert (outcome.restarts, outcome.delay) == (1, 1.0)
    assert tasks.done() == set()


def test_ignore_rule_restarts_without_counting_or_backoff() -> None:
    """({0}, "ignore"): plain gunicorn's "always restart" for clean exits."""
    tasks = table(rules=[({0, 75}, "ignore")], max_restarts=0, backoff=5.0)
    for code in (0, 75, 0):
        outcome = end(tasks, 1, exited(code))
        assert (outcome.action, outcome.counted, outcome.replaced, outcome.delay) == (
            Action.IGNORE,
            False,
            True,
            0.0,
        )
        assert not outcome.give_up
        assert tasks.next_pending() == 1
        start(tasks)
    assert tasks.restarts == 0


def test_finish_rule_is_a_finished_task() -> None:
    tasks = table(rules=[({10}, "finish")])
    outcome = end(tasks, 0, exited(10))
    assert (outcome.action, outcome.replaced, outcome.counted) == (Action.FINISH, False, False)
    assert tasks.done() == {0}
    end(tasks, 1, exited(10))
    assert tasks.all_done() and tasks.exit_status() == 0


def test_fail_task_rule_keeps_the_id_reserved() -> None:
    tasks = table(size=3, rules=[({42, signal.SIGSEGV}, "fail_task")])
    outcome = end(tasks, 1, killed(signal.SIGSEGV))
    assert (outcome.action, outcome.rule, outcome.why) == (Action.FAIL_TASK, 1, "exit_policy rule 1")
    assert not (outcome.replaced or outcome.counted or outcome.give_up)
    assert outcome.failed_tasks == 1
    assert tasks.failed() == {1}
    assert list(tasks.pending()) == []
    assert tasks.running() == [0, 2]
    assert tasks.settled()
    assert [s.failed for s in tasks.states()] == [False, True, False]
    assert tasks.exit_status() is None


def test_give_up_rule_stops_the_server() -> None:
    tasks = table(rules=[({78}, "give_up")])
    outcome = end(tasks, 0, exited(78))
    assert (outcome.action, outcome.give_up, outcome.replaced) == (Action.GIVE_UP, True, False)
    assert outcome.give_up_why == "exit_policy rule 1"
    assert not outcome.counted


def test_task_cap_action_fail_task_fails_only_that_task() -> None:
    tasks = table(max_task_restarts=1, task_cap_action=Action.FAIL_TASK)
    crash = killed(signal.SIGKILL)
    assert end(tasks, 0, crash).replaced
    start(tasks)
    outcome = end(tasks, 0, crash)
    assert (outcome.action, outcome.give_up, outcome.replaced, outcome.counted) == (
        Action.FAIL_TASK,
        False,
        False,
        True,
    )
    assert outcome.why == "2 restarts > max_task_restarts 1"
    assert outcome.rule is None
    assert tasks.failed() == {0} and tasks.running() == [1]


def test_task_cap_action_give_up_is_the_default() -> None:
    tasks = table(max_task_restarts=0)
    outcome = end(tasks, 0, exited(1))
    assert outcome.give_up and outcome.give_up_why == "task 0: 1 restarts > max_task_restarts 0"


def test_total_cap_still_gives_up_with_fail_task() -> None:
    tasks = table(max_restarts=0, max_task_restarts=0, task_cap_action=Action.FAIL_TASK)
    outcome = end(tasks, 0, exited(1))
    assert outcome.give_up and outcome.give_up_why == "1 restarts > max_restarts 0"


def test_max_failed_tasks() -> None:
    tasks = table(size=3, rules=[({42}, "fail_task")], max_failed_tasks=1)
    assert not end(tasks, 0, exited(42)).give_up
    outcome = end(tasks, 2, exited(42))
    assert outcome.give_up and outcome.action is Action.FAIL_TASK
    assert outcome.give_up_why == "2 failed tasks > max_failed_tasks 1"


def test_max_failed_tasks_zero_gives_up_on_the_first() -> None:
    tasks = table(rules=[({42}, "fail_task")], max_failed_tasks=0)
    assert end(tasks, 1, exited(42)).give_up


def test_exit_status_six_once_no_task_is_left() -> None:
    """Finished and failed tasks, nothing running or waiting: status 6; while one runs or
    waits out a backoff: none yet."""
    tasks = table(size=3, rules=[({42}, "fail_task")], backoff=10.0)
    end(tasks, 0, exited(42))
    end(tasks, 1, classify(0, REPORT_FINISHED))
    assert tasks.exit_status() is None
    end(tasks, 2, exited(1))  # waits out its backoff
    assert tasks.exit_status() is None
    assert tasks.next_ready() is not None
    assert TASKS_FAILED_STATUS == 6 and GIVE_UP_STATUS == 5
    tasks2 = table(size=2, rules=[({42}, "fail_task")])
    end(tasks2, 0, exited(42))
    end(tasks2, 1, exited(0))
    assert tasks2.ended() and not tasks2.all_done()
    assert tasks2.exit_status() == TASKS_FAILED_STATUS


def test_retired_failed_id_comes_back_as_a_new_task() -> None:
    tasks = table(size=2, rules=[({42}, "fail_task")], max_failed_tasks=1)
    end(tasks, 1, exited(42))
    assert tasks.resize(1) == []
    assert tasks.failed() == set()
    tasks.resize(2)
    assert tasks.next_pending() == 1
    start(tasks)
    assert not end(tasks, 1, exited(42)).give_up  # the old failure is forgotten
    assert tasks.failed() == {1}


def test_retired_id_neither_fails_nor_finishes() -> None:
    """A worker whose id left the range and that ends on its own before its stop is neither
    failed nor done: the id is no task any more."""
    tasks = table(size=2, rules=[({42}, "fail_task"), ({10}, "finish")])
    tasks.resize(1)
    outcome = end(tasks, 1, exited(42))
    assert (outcome.action, outcome.replaced, outcome.failed_tasks) == (Action.FAIL_TASK, False, 0)
    assert tasks.failed() == set() and tasks.done() == set()


def test_rules_leave_finish_task_alone() -> None:
    """({0}, "ignore") restarts a bare exit 0, never a finish_task()."""
    tasks = table(rules=[({0}, "ignore")])
    assert end(tasks, 0, exited(0)).replaced
    assert not end(tasks, 1, classify(0, REPORT_FINISHED)).replaced
    assert tasks.done() == {1}


def test_only_a_finish_report_is_reported() -> None:
    assert classify(0, REPORT_FINISHED).reported
    assert classify(int(signal.SIGTERM), REPORT_FINISHED).reported
    assert not exited(0).reported
    assert not classify(0, REPORT_RECYCLED).reported
    assert classify(0, REPORT_FINISHED) == exited(0)  # the same judgment, whoever said it


def test_exit_cause_for_the_log() -> None:
    assert exited(0).cause() == "exited with status 0"
    assert exited(42).cause() == "exited with status 42"
    assert killed(signal.SIGSEGV).cause() == "killed by signal SIGSEGV"
    assert classify(0, REPORT_FINISHED).cause() == "finished"
    assert Exit(Ending.FINISHED, status=0).describe() == "finished"
