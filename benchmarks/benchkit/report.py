"""The results: the Markdown table, the machine they were taken on, and the JSON file."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchkit.figures import Figure
from benchkit.profiles import Profile
from benchkit.servers import PLAIN, PLUGIN, TORNADO


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 0.1:
            return f"{value * 1000:.2f} ms"
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "CPU s":
        return f"{value * 1000:.2f} ms"
    if unit == "CPU µs":
        return f"{value:.0f} µs" if value >= 100 else f"{value:.1f} µs"
    if unit == "%":
        return f"{value * 100:.0f} %"
    if unit == "MiB":
        return f"{value:.2f} MiB"
    return f"{value:,.0f} {unit}"


def table(figures: list[Figure]) -> str:
    lines = [
        "| figure | plugin | plain | plugin/plain | paired ratios, IQR | target | met | tornado floor |",
        "|---|---:|---:|---:|---:|---|:---:|---:|",
    ]
    for figure in figures:
        ratio, spread = figure.ratio(), figure.spread()
        met = {True: "yes", False: "**no**", None: ""}[figure.met()]
        lines.append(
            f"| {figure.name} | {fmt(figure.median(PLUGIN), figure.unit)} "
            f"| {fmt(figure.median(PLAIN), figure.unit)} "
            f"| {'-' if ratio is None else f'{ratio:.2f}'} "
            f"| {'' if spread is None else f'{spread[0]:.2f} to {spread[1]:.2f}'} "
            f"| {figure.target_text()} | {met} "
            f"| {fmt(figure.median(TORNADO), figure.unit) if TORNADO in figure.samples else ''} |"
        )
    return "\n".join(lines)


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "gunicorn_tornadofork": version("gunicorn-tornadofork"),
        "tornado": version("tornado"),
    }


def summary(profile: Profile, duration: float, info: dict[str, Any]) -> str:
    return (
        f"{profile.name} run, {duration:.0f} s: {info['nproc']} CPUs ({info['cpu']}), "
        f"Python {info['python']}, gunicorn {info['gunicorn']}, tornado {info['tornado']}, "
        f"load generator {info['load_generator']}"
    )


def write_json(
    path: Path, profile: Profile, info: dict[str, Any], started: float, duration: float, figures: list[Figure]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "profile": profile.name,
                "settings": profile.__dict__,
                "machine": info,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "duration_s": round(duration, 1),
                "figures": [figure.as_json() for figure in figures],
                "markdown": table(figures),
            },
            indent=2,
        )
        + "\n"
    )
