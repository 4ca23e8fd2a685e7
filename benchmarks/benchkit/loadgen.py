"""Load on one server: ``wrk`` where installed, else a small Python client."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time

from benchkit.runner import BenchError

WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_COUNT = re.compile(r"(\d+) requests in")
WRK_ERRORS = re.compile(r"Socket errors:.*|Non-2xx or 3xx responses:.*")


def load_generator(choice: str) -> str:
    """``wrk`` where installed (or asked for), else ``python``."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    return choice


def parse_wrk(out: str) -> tuple[float, int, str]:
    """Requests per second, requests answered, and the errors wrk reported, from its output."""
    rate, count = WRK_RATE.search(out), WRK_COUNT.search(out)
    if rate is None or count is None:
        raise BenchError(f"no rate in wrk's output:\n{out}")
    return float(rate.group(1)), int(count.group(1)), "; ".join(WRK_ERRORS.findall(out))


def load(url: str, connections: int, seconds: int, generator: str) -> tuple[float, int, str]:
    """Requests per second on ``url``, requests answered, and any errors reported: with wrk,
    or with the Python client."""
    if generator == "python":
        done = python_load(url, connections, seconds)
        return done / seconds, done, ""
    wrk = shutil.which("wrk") or "wrk"
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    return parse_wrk(out)


def python_load(url: str, connections: int, seconds: float) -> int:
    """The fallback load generator: Python is slow enough that more than two client processes
    would take the CPUs from the server, so at most two, each one request at a time."""
    connections = min(connections, 2)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    reader, writer = os.pipe()
    pids = []
    deadline = time.monotonic() + seconds
    try:
        for _ in range(connections):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 1
                try:
                    os.close(reader)
                    os.write(writer, f"{python_client(port, deadline)}\n".encode())
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(writer)
        writer = -1
        with os.fdopen(reader, "rb") as f:
            reader = -1
            total = sum(int(line) for line in f.read().split())
    finally:
        for fd in (reader, writer):
            if fd >= 0:
                os.close(fd)
        for pid in pids:
            os.waitpid(pid, 0)
    return total


def python_client(port: int, deadline: float) -> int:
    """Requests completed until ``deadline``, keeping the connection while the server does."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    done = 0
    sock: socket.socket | None = None
    while time.monotonic() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except OSError:
            data = b""
        else:
            if head.startswith(b"HTTP/1.1 200") and len(body) >= length:
                done += 1
        if sock is not None and (not data or re.search(rb"(?i)connection:\s*close", head)):
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return done
