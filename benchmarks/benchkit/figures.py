"""A row of the table: samples per kind of server, their medians, the plugin/plain ratio
and its target."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from benchkit.servers import PLAIN, PLUGIN

Samples = dict[str, list[float]]
TARGET_KINDS = ("ratio<=", "ratio>=", "diff<=", "total<=")


def alternate(pairs: int) -> Iterator[str]:
    """A B A B ...: plugin, then plain, ``pairs`` times."""
    for _ in range(pairs):
        yield PLUGIN
        yield PLAIN


@dataclass
class Figure:
    """One row of the table."""

    name: str
    unit: str
    samples: Samples = field(default_factory=dict)
    # "ratio<=", "ratio>=", "diff<=" (plugin minus plain, in the figure's unit), or "total<="
    # (the plugin's samples added up: failed requests)
    target_kind: str = ""
    target: float | None = None
    notes: list[str] = field(default_factory=list)
    #: "median" of the samples, or their "total" (a count such as failed requests)
    stat: str = "median"

    def add(self, kind: str, value: float) -> None:
        self.samples.setdefault(kind, []).append(value)

    def median(self, kind: str) -> float | None:
        """The figure of ``kind``: the median of its samples (or their total)."""
        values = self.samples.get(kind)
        if not values:
            return None
        return float(sum(values)) if self.stat == "total" else statistics.median(values)

    def ratio(self) -> float | None:
        plugin, plain = self.median(PLUGIN), self.median(PLAIN)
        if plugin is None or plain is None or plain == 0:
            return None
        return plugin / plain

    def paired_ratios(self) -> list[float]:
        """plugin/plain of each pair of samples taken one after the other (or side by side)."""
        plugin, plain = self.samples.get(PLUGIN, []), self.samples.get(PLAIN, [])
        if len(plugin) != len(plain):
            return []
        return [a / b for a, b in zip(plugin, plain, strict=True) if b]

    def spread(self) -> tuple[float, float] | None:
        """The interquartile range of the paired ratios: how far noise moves one ratio."""
        ratios = self.paired_ratios()
        if len(ratios) < 2:
            return None
        quartiles = statistics.quantiles(ratios, n=4)
        return quartiles[0], quartiles[2]

    def met(self) -> bool | None:
        plugin, plain, ratio = self.median(PLUGIN), self.median(PLAIN), self.ratio()
        if self.target is None:
            return None
        if self.target_kind == "ratio<=" and ratio is not None:
            return ratio <= self.target
        if self.target_kind == "ratio>=" and ratio is not None:
            return ratio >= self.target
        if self.target_kind == "diff<=" and plugin is not None and plain is not None:
            return plugin - plain <= self.target
        if self.target_kind == "total<=" and plugin is not None:
            return plugin <= self.target
        return None

    def target_text(self) -> str:
        if self.target is None:
            return ""
        if self.target_kind == "diff<=":
            return f"≤ plain + {self.target:g} {self.unit}"
        if self.target_kind == "total<=":
            return f"{self.target:g}" if self.target == 0 else f"≤ {self.target:g}"
        return f"{'≤' if self.target_kind == 'ratio<=' else '≥'} {self.target:.2f}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "stat": self.stat,
            "median": {kind: self.median(kind) for kind in self.samples},
            "ratio": self.ratio(),
            "paired_ratios_iqr": self.spread(),
            "target": self.target_text() or None,
            "met": self.met(),
            "samples": self.samples,
            "notes": self.notes,
        }
