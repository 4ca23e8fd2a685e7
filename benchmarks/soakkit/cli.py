"""The soak's command line: plan the rounds from the seed, run them, print the summary."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import tempfile
import time
from pathlib import Path

from .plan import KNOWN_BUGS, make_plan
from .runner import Result, RoundRun
from .server import TIMEOUT


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="soak.py", description=(__doc__ or "").strip())
    parser.add_argument("--seconds", type=float, default=90.0, help="planned length of the soak")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--worker-class", default="sync")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--mix", choices=["all", "safe"], default="all", help="safe: leave out known bugs")
    parser.add_argument("--only", default="", help="comma-separated event kinds to keep")
    parser.add_argument("--exclude", default="", help="comma-separated event kinds to leave out")
    parser.add_argument("--plan", action="store_true", help="print the planned events and exit")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories")
    parser.add_argument("--quiet", action="store_true", help="print only the summary (and violations)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rounds = make_plan(
        args.seed,
        args.seconds,
        args.worker_class,
        args.workers,
        timeout=TIMEOUT,
        root=os.geteuid() == 0,
        mix=args.mix,
        only=_names(args.only),
        exclude=_names(args.exclude),
    )
    if args.plan:
        for rnd in rounds:
            print(rnd.describe())
            for event in rnd.events:
                print(f"  {event}" + (f"  [{', '.join(event.bugs)}]" if event.bugs else ""))
        return 0
    gunicorn = importlib.metadata.version("gunicorn")
    try:
        from gunicorn.util import load_class

        load_class(args.worker_class, section="gunicorn.workers")
    except Exception as exc:  # gunicorn raises RuntimeError, ImportError, ...
        why = str(exc).splitlines()[0]
        print(f"soak: worker class {args.worker_class!r} is not available on gunicorn {gunicorn}: {why}")
        return 2
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    os.chmod(root, 0o755)
    start = time.monotonic()
    total = Result()
    logs: list[str] = []
    ran = dropped = 0
    for rnd in rounds:
        if rnd.index and time.monotonic() - start > args.seconds:
            break
        ran += 1
        dropped += rnd.privdrop
        run = RoundRun(
            rnd,
            root / f"round{rnd.index}",
            args.worker_class,
            gunicorn=gunicorn,
            mix=args.mix,
            deadline=start + args.seconds,
        )
        result = run.run()
        for name in ("events", "requests", "failed", "explained", "restarts"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        total.violations += [f"round {rnd.index}: {v}" for v in result.violations]
        total.notes += [f"round {rnd.index}: {n}" for n in result.notes]
        logs += result.log
        if not args.quiet:
            for line in result.log:
                print(f"  {line}")
            print(
                f"round {rnd.index}: {result.events} events, {result.requests} requests, "
                f"{result.failed} failed {result.reasons}, {result.restarts} restarts, "
                f"{len(result.violations)} violations",
                flush=True,
            )
        if not args.keep and not result.violations:
            run.server.remove()
    command = (
        f"python benchmarks/soak.py --seconds {args.seconds:g} --seed {args.seed} "
        f"--worker-class {shlex.quote(args.worker_class)} --workers {args.workers} --mix {args.mix}"
        + (f" --only {args.only}" if args.only else "")
        + (f" --exclude {args.exclude}" if args.exclude else "")
    )
    if total.notes and not args.quiet:
        print("known bugs tolerated (--mix safe):")
        for note in total.notes:
            print(f"  {note}")
    if total.violations:
        print(f"VIOLATIONS (seed {args.seed}; replay: {command}; servers' files in {root}):")
        for v in total.violations:
            print(f"  {v}")
        print("event log:")
        for line in logs:
            print(f"  {line}")
        print("known bugs under way:", "; ".join(f"{k}: {v}" for k, v in KNOWN_BUGS.items()))
    elif not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print(
        f"soak: seed {args.seed}, gunicorn {gunicorn}, {args.worker_class}, "
        f"{time.monotonic() - start:.0f}s, {ran} rounds ({dropped} with privilege drop): "
        f"{total.events} events injected, {total.requests} requests sent, "
        f"{total.failed} failed ({total.explained} explained), {total.restarts} restarts counted, "
        f"{len(total.violations)} violations",
        flush=True,
    )
    return 1 if total.violations else 0


def _names(text: str) -> frozenset[str]:
    return frozenset(name for name in text.split(",") if name)
