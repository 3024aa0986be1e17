"""``python -m bench.flood``: what anonymous gzip floods on ``/v1/*`` cost tracking.

Authenticated ``/v1/track`` calls (HTTP Basic) under wrk, alone and while flooder
processes post ~6 MiB (inflated) gzip batches without any token, against one
``opencdp serve`` on SQLite. Prints both rates and their ratio (flooded / alone, the
alone figure the mean of a run before and after the flooded one).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import servers, wrk

_TRACK_LUA = """wrk.method = "POST"
wrk.body = '{"userId":"flood-bench","event":"Paid","properties":{"amount":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic %s"
"""


def flood_body() -> bytes:
    """A batch close to the 6 MiB limit once inflated, hard to compress, with no key."""
    blob = os.urandom(3000).hex()
    message = {"type": "track", "userId": "u", "event": "e", "properties": {"blob": blob}}
    return gzip.compress(json.dumps({"batch": [message] * 950}).encode())


def flooder(port: int, body: bytes, until: float) -> int:
    """Post ``body`` without a token until ``until``, one connection a request; how many."""
    head = (
        "POST /v1/batch HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sent = 0
    while time.time() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(head + body)
                sock.recv(65536)
                sent += 1
        except OSError:
            time.sleep(0.01)
    return sent


def write_token(db_url: str) -> str:
    """A write token for one workspace, as an SDK's write key is."""
    command = [
        sys.executable, "-m", "opencdp", "tokens", "create", "--db", db_url,
        "--client", "bench", "--account", "web", "--brand", "shop", "--scope", "write",
    ]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def track_rate(url: str, lua: Path, seconds: int) -> float:
    command = [wrk.ensure_wrk(), "-t1", "-c32", f"-d{seconds}s", "-s", str(lua), url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise RuntimeError(f"wrk printed no rate:\n{output}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="wrk time per measurement")
    parser.add_argument("--flooders", type=int, default=4, help="anonymous flooder processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        db_url = f"sqlite:///{work}/flood.db"
        key = base64.b64encode(f"{write_token(db_url)}:".encode()).decode()
        lua = Path(work) / "track.lua"
        lua.write_text(_TRACK_LUA % key)
        body = flood_body()
        with servers.opencdp(db_url) as server:
            url = server.url + "/v1/track"
            port = int(server.url.rsplit(":", 1)[1])
            before = track_rate(url, lua, args.seconds)
            with multiprocessing.Pool(args.flooders) as pool:
                until = time.time() + args.seconds + 1
                floods = pool.starmap_async(flooder, [(port, body, until)] * args.flooders)
                time.sleep(0.5)
                flooded = track_rate(url, lua, args.seconds)
                anonymous = sum(floods.get())
            after = track_rate(url, lua, args.seconds)
    alone = (before + after) / 2
    print(json.dumps({
        "alone_rps": round(alone), "flooded_rps": round(flooded),
        "ratio": round(flooded / alone, 3), "anonymous_requests": anonymous,
    }))


if __name__ == "__main__":
    main()
