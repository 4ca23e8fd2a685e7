"""The short soak: ``benchmarks/soak.py`` against real servers, a few worker classes, fixed
seeds, every kind of event; about 80 s in all. ``python benchmarks/soak.py --seconds 90
--seed 11`` is the longer run of the same mix."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
SECONDS = 20


@pytest.mark.timeout(SECONDS * 6)
@pytest.mark.parametrize(
    ("worker_class", "seed", "module"),
    [
        ("sync", 101, None),
        ("gthread", 102, None),
        ("gevent", 103, "gevent"),
        ("aiohttp.GunicornWebWorker", 104, "aiohttp"),
    ],
)
def test_short_soak(worker_class: str, seed: int, module: str | None) -> None:
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    argv = [sys.executable, str(SOAK), "--seconds", str(SECONDS), "--seed", str(seed)]
    argv += ["--worker-class", worker_class, "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS * 5)
    output = done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, output
    assert last.endswith(" 0 violations"), output
