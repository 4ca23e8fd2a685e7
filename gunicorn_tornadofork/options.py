"""The options of ``install()``, checked before anything is forked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

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
        )
        if parsed.backoff_max < parsed.backoff:
            raise OptionError(
                f"install() option backoff_max must be >= backoff ({parsed.backoff}), "
                f"got {parsed.backoff_max!r}"
            )
        return parsed


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
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "..."


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
