"""The command line of ``benchmarks/bench.py``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchkit.boot import run_boot
from benchkit.figures import Figure
from benchkit.loadgen import load_generator
from benchkit.profiles import FIGURES, FULL, QUICK
from benchkit.reload import run_reload
from benchkit.report import machine, summary, table, write_json
from benchkit.respawn import run_respawn
from benchkit.rest import run_rest
from benchkit.servers import HERE
from benchkit.storm import run_storm
from benchkit.throughput import run_throughput

RESULTS = HERE / "results"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few repeats, short windows (development)")
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated figures among {', '.join(FIGURES)}"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip tornado's fork_processes floor")
    parser.add_argument(
        "--phases",
        action="store_true",
        help="split respawn at the pre_fork and post_fork hooks (adds those hooks to both servers)",
    )
    parser.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="throughput load generator: wrk where installed (auto), or the built-in Python client "
        "(the reload figure needs wrk)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "latest.json", help="where to write the numbers (JSON)"
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    floor = not args.no_floor
    if floor:
        try:
            import tornado  # noqa: F401
        except ImportError:
            log("tornado is not installed: no floor (pip install tornado)")
            floor = False

    info = machine()
    info["load_generator"] = load_generator(args.load)
    info["loadavg_before"] = os.getloadavg()
    log(f"{profile.name} run on {info}")
    started = time.time()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="tornadofork-bench-") as tmp:
        root = Path(tmp)
        runners: dict[str, Callable[[], list[Figure]]] = {
            "boot": lambda: run_boot(profile, root, floor, log),
            "respawn": lambda: run_respawn(profile, root, floor, args.phases, log),
            "storm": lambda: run_storm(profile, root, floor, log),
            "throughput": lambda: run_throughput(profile, root, info["load_generator"], log),
            "rest": lambda: run_rest(profile, root, log),
            "reload": lambda: run_reload(profile, root, info["load_generator"], log),
        }
        info["seconds_per_figure"] = {}
        for name in FIGURES:
            if name in chosen:
                begin = time.monotonic()
                figures += runners[name]()
                info["seconds_per_figure"][name] = round(time.monotonic() - begin, 1)
                log(f"{name}: {info['seconds_per_figure'][name]:.0f} s")
    info["loadavg_after"] = os.getloadavg()
    duration = time.time() - started

    print(table(figures))
    print()
    print(summary(profile, duration, info))
    write_json(args.out, profile, info, started, duration, figures)
    log(f"numbers written to {args.out}")
    return 0
