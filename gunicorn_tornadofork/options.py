"""The options of ``install()``, checked before anything is forked."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

#: tornado's default cap on restarts.
DEFAULT_MAX_RESTARTS = 100


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
            backoff=_seconds(options, "backoff", 0.0),
            backoff_max=_seconds(options, "backoff_max", 30.0),
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
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        accepted = "an integer >= 0" + (" or None" if default is None else "")
        raise OptionError(f"install() option {name} must be {accepted}, got {value!r}")
    return value


def _seconds(options: Mapping[str, Any], name: str, default: float | None, positive: bool = False) -> Any:
    value = options.get(name, default)
    if value is None and default is None:
        return None
    bad = (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    )
    if bad:
        accepted = "a number of seconds " + ("> 0" if positive else ">= 0")
        accepted += " or None" if default is None else ""
        raise OptionError(f"install() option {name} must be {accepted}, got {value!r}")
    return float(value)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
