"""The exit policy: rules that say what a worker's own end means, after Kubernetes
``podFailurePolicy`` and systemd's ``SuccessExitStatus=`` / ``RestartPreventExitStatus=``.

Pure decisions, no processes (``options`` checks the option ``exit_policy`` and builds the
:class:`ExitPolicy`): :func:`judge` turns a judged :class:`~gunicorn_tornadofork.exits.Exit`
into the action that the task table carries out.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass

from .exits import APP_LOAD_ERROR, WORKER_BOOT_ERROR, Ending, Exit

#: The server's exit status when it gives up: a restart cap exceeded, a ``give_up`` rule, or
#: more failed tasks than ``max_failed_tasks``.
GIVE_UP_STATUS = 5
#: The server's exit status when no task is left running or waiting and at least one failed.
TASKS_FAILED_STATUS = 6


class Action(enum.Enum):
    """What a worker's end does to its task and to the server."""

    COUNT = "count"  # restart with the same id, counted toward the caps
    IGNORE = "ignore"  # restart with the same id, not counted
    FINISH = "finish"  # the task is done: not replaced
    FAIL_TASK = "fail_task"  # the task failed: not replaced, its id stays reserved
    GIVE_UP = "give_up"  # stop the server now, status 5
    HALT = "halt"  # gunicorn's own rule for statuses 3 and 4 (never a policy action)


#: The actions a rule of ``exit_policy`` may name, by name.
POLICY_ACTIONS = {a.value: a for a in Action if a is not Action.HALT}
#: The actions ``task_cap_action`` accepts.
TASK_CAP_ACTIONS = {a.value: a for a in (Action.GIVE_UP, Action.FAIL_TASK)}
# Ends judged by the policy: the worker's own exit status or the signal that ended it. The
# rest (arbiter-requested stops, recycles, timeout aborts, a finish_task() report, statuses
# 3 and 4) keep the exit table's judgment.
_POLICY_ENDINGS = frozenset({Ending.FINISHED, Ending.FAILED, Ending.KILLED})
_TABLE_ACTIONS = {
    Ending.STOPPED: Action.IGNORE,
    Ending.RECYCLED: Action.IGNORE,
    Ending.FINISHED: Action.FINISH,
    Ending.KILLED: Action.COUNT,
    Ending.FAILED: Action.COUNT,
    Ending.TIMED_OUT: Action.COUNT,
    Ending.BOOT_FAILED: Action.HALT,
    Ending.APP_FAILED: Action.HALT,
}
#: Exit statuses a rule may not name: gunicorn halts on them.
GUNICORN_STATUSES = (WORKER_BOOT_ERROR, APP_LOAD_ERROR)


@dataclass(frozen=True)
class Rule:
    """One rule of the policy: the statuses and signals it matches and its action."""

    number: int  # 1-based position in exit_policy, as the log names it
    statuses: frozenset[int]
    signals: frozenset[int]
    action: Action

    def matches(self, exit: Exit) -> bool:
        """Whether this rule matches the end ``exit`` (a signal, else an exit status)."""
        if exit.signal is not None:
            return exit.signal in self.signals
        return exit.status is not None and exit.status in self.statuses


@dataclass(frozen=True)
class Verdict:
    """The action an end gets, and the rule that chose it (None: the exit table did)."""

    action: Action
    rule: Rule | None = None

    def why(self) -> str:
        """``exit_policy rule 2``, or an empty string for the exit table's own judgment."""
        return f"exit_policy rule {self.rule.number}" if self.rule is not None else ""


@dataclass(frozen=True)
class ExitPolicy:
    """The rules of ``exit_policy``, in order; the first match decides."""

    rules: tuple[Rule, ...] = ()

    def match(self, exit: Exit) -> Rule | None:
        """The first rule that matches ``exit``, if the policy judges that kind of end."""
        if exit.ending not in _POLICY_ENDINGS or exit.reported:
            return None
        return next((rule for rule in self.rules if rule.matches(exit)), None)

    def describe(self) -> str:
        """The rules as the start-up log line shows them: ``[({78}, 'give_up'), ...]``."""
        shown = []
        for rule in self.rules:
            names = [str(s) for s in sorted(rule.statuses)]
            names += [signal.Signals(s).name for s in sorted(rule.signals)]
            shown.append(f"({{{', '.join(names)}}}, {rule.action.value!r})")
        return f"[{', '.join(shown)}]"


#: The policy without rules: every end follows the exit table.
NO_POLICY = ExitPolicy()


def judge(exit: Exit, policy: ExitPolicy) -> Verdict:
    """The action for the end ``exit``: the first matching rule's, else the exit table's."""
    rule = policy.match(exit)
    if rule is not None:
        return Verdict(rule.action, rule)
    return Verdict(_TABLE_ACTIONS[exit.ending])
