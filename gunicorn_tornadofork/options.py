"""The options of ``install()``, checked before anything is forked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: tornado's default cap on restarts.
DEFAULT_MAX_RESTARTS = 100


class OptionError(ValueError):
    """An option given to ``install()`` that it cannot accept; the message is one line."""


@dataclass(frozen=True)
class Options:
    """The plugin's settings, validated."""

    max_restarts: int = DEFAULT_MAX_RESTARTS

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Options:
        """Validate keyword options; raise :class:`OptionError` naming the first bad one."""
        known = ("max_restarts",)
        for name in options:
            if name not in known:
                raise OptionError(
                    f"install() got an unknown option {name!r}; accepted options: {', '.join(known)}"
                )
        max_restarts = options.get("max_restarts", DEFAULT_MAX_RESTARTS)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise OptionError(f"install() option max_restarts must be an integer >= 0, got {max_restarts!r}")
        return cls(max_restarts=max_restarts)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
