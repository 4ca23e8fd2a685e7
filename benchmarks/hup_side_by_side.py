"""HUP under load, with the plugin and with plain gunicorn, side by side.

    python benchmarks/hup_side_by_side.py --worker-class uvicorn_worker.UvicornWorker --hups 10

Starts the same server twice on loopback (tests/server.py: the same config, app and worker
class; only ``install()`` in ``on_starting`` differs), keeps client threads looping requests
on new connections, sends ``--hups`` reloads one after the other (each once every worker has
been replaced) and counts the requests that failed, with their errors. The plugin promises
that no request fails because of a reload (README, Guarantees); where plain gunicorn fails
requests too, the failures belong to the worker class, not to the plugin.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from server import WORKER_PREFIX, Server, all_pids, proc_ppid, proc_title, wait_for  # type: ignore[import-not-found]

APPS = {"uvicorn": "asgiapp:app", "asgi": "asgiapp:app", "aiohttp": "aiohttpapp:app"}


def app_for(worker_class: str) -> str:
    return next((app for key, app in APPS.items() if key in worker_class.lower()), "testapp:wsgi")


def workers_of(server: Server) -> set[int]:
    """The pids of the master's live workers (with or without the plugin)."""
    return {
        pid
        for pid in all_pids()
        if proc_ppid(pid) == server.pid and proc_title(pid).startswith(WORKER_PREFIX)
    }


def run(plugin: bool, args: argparse.Namespace, directory: Path) -> tuple[int, collections.Counter[str]]:
    """One server under load through ``args.hups`` reloads; (requests, errors of the failed)."""
    config = f"workers = {args.workers}\nworker_class = {args.worker_class!r}\ngraceful_timeout = 10\n"
    server = Server(directory, config=config, app=app_for(args.worker_class), install=plugin).start()
    done: list[tuple[float, str]] = []  # (when, error or "")
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _ = server.get("/", timeout=10)
                done.append((time.monotonic(), "" if status == 200 else f"status {status}"))
            except OSError as exc:
                done.append((time.monotonic(), type(exc).__name__))

    try:
        wait_for(lambda: len(workers_of(server)) == args.workers, 30, "the workers")
        server.wait_serving()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        for _ in range(args.hups):
            old = workers_of(server)
            server.signal(signal.SIGHUP)
            wait_for(
                lambda old=old: len(now := workers_of(server)) == args.workers and not now & old,
                60,
                "every worker to be replaced",
            )
            time.sleep(args.pause)
        stop.set()
        for thread in threads:
            thread.join(15)
    finally:
        stop.set()
        server.cleanup()
    return len(done), collections.Counter(error for _, error in done if error)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--worker-class", default="uvicorn_worker.UvicornWorker")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--hups", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds after each reload")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating")
    args = parser.parse_args()
    gunicorn = importlib.metadata.version("gunicorn")
    requests = {True: 0, False: 0}
    errors: dict[bool, collections.Counter[str]] = {True: collections.Counter(), False: collections.Counter()}
    with tempfile.TemporaryDirectory(prefix="hup-") as tmp:
        for i in range(args.rounds):
            for plugin in (True, False):
                directory = Path(tmp) / f"{'plugin' if plugin else 'plain'}{i}"
                directory.mkdir()
                sent, failed = run(plugin, args, directory)
                requests[plugin] += sent
                errors[plugin].update(failed)
    for plugin in (True, False):
        side = "with the plugin" if plugin else "plain gunicorn "
        print(
            f"{side}: gunicorn {gunicorn}, {args.worker_class}, {args.hups * args.rounds} HUPs: "
            f"{requests[plugin]} requests, {errors[plugin].total()} failed {dict(errors[plugin])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
