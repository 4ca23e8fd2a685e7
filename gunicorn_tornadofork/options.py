"""The options of ``install()``, checked before anything is forked."""

from __future__ import annotations

import os
import signal
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .policy import GUNICORN_STATUSES, NO_POLICY, POLICY_ACTIONS, TASK_CAP_ACTIONS, Action, ExitPolicy, Rule

#: tornado's default cap on restarts.
DEFAULT_MAX_RESTARTS = 100

#: The largest count or id option (int64): larger ints cannot be shown in a process title
#: or passed as GUNICORN_TASK_ID once beyond Python's limit on digits in a string.
MAX_INTEGER = 2**63 - 1
#: The longest time option, in seconds (about 31 years): a backoff ends with a SIGALRM from
#: signal.setitimer(), which refuses anything beyond about 9.2e9 seconds (OverflowError).
MAX_SECONDS = 10**9
_SHOWN_CHARS = 80


class OptionError(ValueError):
    """An option given to ``install()`` that it cannot accept; the message is one line."""


@dataclass(frozen=True)
class Options:
    """The plugin's settings, validated. The defaults are tornado's behaviour."""

    max_restarts: int = DEFAULT_MAX_RESTARTS
    restart_window: float | None = None
    max_task_restarts: int | None = None
    backoff: float = 0.0
    backoff_max: float = 30.0
    task_id_offset: int = 0
    exit_policy: ExitPolicy = NO_POLICY
    task_cap_action: Action = Action.GIVE_UP
    max_failed_tasks: int | None = None
    prometheus: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Options:
        """Validate keyword options; raise :class:`OptionError` naming the first bad one."""
        known = [f.name for f in fields(cls)]
        for name in options:
            if name not in known:
                raise OptionError(
                    f"install() got an unknown option {name!r}; accepted options: {', '.join(known)}"
                )
        parsed = cls(
            max_restarts=_integer(options, "max_restarts", DEFAULT_MAX_RESTARTS),
            restart_window=_seconds(options, "restart_window", None, positive=True),
            max_task_restarts=_integer(options, "max_task_restarts", None),
            backoff=(backoff := _seconds(options, "backoff", 0.0)),
            # Unset, the ceiling is 30 s, or the first delay if that is longer.
            backoff_max=_seconds(options, "backoff_max", max(30.0, backoff)),
            task_id_offset=_integer(options, "task_id_offset", 0),
            exit_policy=_exit_policy(options.get("exit_policy")),
            task_cap_action=_task_cap_action(options.get("task_cap_action", "give_up")),
            max_failed_tasks=_integer(options, "max_failed_tasks", None),
            prometheus=_boolean(options, "prometheus", False),
        )
        if parsed.backoff_max < parsed.backoff:
            raise OptionError(
                f"install() option backoff_max must be >= backoff ({parsed.backoff}), "
                f"got {parsed.backoff_max!r}"
            )
        return parsed

    def changed(self) -> list[str]:
        """``name=value`` for every option that differs from its default, for the log."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, ExitPolicy):
                shown.append(f"{f.name}={value.describe()}")
            elif isinstance(value, Action):
                shown.append(f"{f.name}={value.value!r}")
            else:
                shown.append(f"{f.name}={value!r}")
        return shown


def _exit_policy(value: Any) -> ExitPolicy:
    """Check the option ``exit_policy``: a list of ``(match, action)`` rules."""
    if value is None:
        return ExitPolicy()
    if not isinstance(value, (list, tuple)):
        raise OptionError(
            f"install() option exit_policy must be a list of (match, action) rules, got {_shown(value)}"
        )
    return ExitPolicy(tuple(_rule(number, rule) for number, rule in enumerate(value, 1)))


def _rule(number: int, rule: Any) -> Rule:
    where = f"install() option exit_policy rule {number}"
    if not isinstance(rule, (list, tuple)) or len(rule) != 2:
        raise OptionError(f"{where} must be a (match, action) pair, got {_shown(rule)}")
    match, action_name = rule
    action = POLICY_ACTIONS.get(action_name) if isinstance(action_name, str) else None
    if action is None:
        raise OptionError(
            f"{where} has an unknown action {_shown(action_name)}; accepted actions: "
            f"{', '.join(map(repr, POLICY_ACTIONS))}"
        )
    if isinstance(match, (str, bytes, Mapping)) or not isinstance(match, Collection):
        raise OptionError(
            f"{where} must match a collection of exit statuses (0-255) and signal.Signals members, "
            f"got {_shown(match)}"
        )
    if not match:
        raise OptionError(f"{where} has an empty match; name at least one exit status or signal")
    statuses: set[int] = set()
    signals: set[int] = set()
    for item in match:
        if isinstance(item, signal.Signals):
            signals.add(int(item))
        elif isinstance(item, bool) or not isinstance(item, int):
            raise OptionError(
                f"{where} matches {_shown(item)}, neither an exit status (int 0-255) "
                "nor a signal.Signals member"
            )
        elif not 0 <= item <= 255:
            raise OptionError(f"{where} matches exit status {_shown(item)}, outside 0-255")
        elif item in GUNICORN_STATUSES:
            raise OptionError(
                f"{where} matches exit status {item}, which gunicorn keeps for a worker that failed "
                "to boot (3) or to load the app (4)"
            )
        else:
            statuses.add(item)
    return Rule(number, frozenset(statuses), frozenset(signals), action)


def _task_cap_action(value: Any) -> Action:
    action = TASK_CAP_ACTIONS.get(value) if isinstance(value, str) else None
    if action is None:
        raise OptionError(
            "install() option task_cap_action must be one of "
            f"{', '.join(map(repr, TASK_CAP_ACTIONS))}, got {_shown(value)}"
        )
    return action


def _boolean(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise OptionError(f"install() option {name} must be True or False, got {_shown(value)}")
    return value


def _integer(options: Mapping[str, Any], name: str, default: int | None) -> Any:
    value = options.get(name, default)
    if value is None and default is None:
        return None
    none = " or None" if default is None else ""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionError(f"install() option {name} must be an integer >= 0{none}, got {_shown(value)}")
    if value > MAX_INTEGER:
        raise OptionError(
            f"install() option {name} must be an integer >= 0 and <= {MAX_INTEGER}{none}, got {_shown(value)}"
        )
    return value


def _seconds(options: Mapping[str, Any], name: str, default: float | None, positive: bool = False) -> Any:
    value = options.get(name, default)
    if value is None and default is None:
        return None
    accepted = "a number of seconds " + ("> 0" if positive else ">= 0")
    none = " or None" if default is None else ""
    bad = (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value != value  # NaN
        or value < 0
        or (positive and value == 0)
    )
    if bad:
        raise OptionError(f"install() option {name} must be {accepted}{none}, got {_shown(value)}")
    # Compared before float(): an int too large for a float must not raise OverflowError.
    if value > MAX_SECONDS:
        raise OptionError(
            f"install() option {name} must be {accepted} and <= {MAX_SECONDS}{none}, got {_shown(value)}"
        )
    return float(value)


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message, kept short and on one line, never raising."""
    try:
        shown = repr(value)
    except ValueError:  # an int beyond Python's limit on digits in a string
        return f"an int of {value.bit_length()} bits"
    except Exception:
        return f"a {type(value).__name__}"
    shown = " ".join(shown.split("\n"))
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "..."


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
