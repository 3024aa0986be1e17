"""wrk, the load generator: its Lua scripts, running it, and reading its results.

Every request carries a unique ``messageId`` (``<run>-<thread>-<n>``), so each one is
a new event, never an idempotent repeat. ``done()`` prints one JSON line with the
counts and latency percentiles. wrk's own CPU time comes from ``wait4``'s rusage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import payloads

_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

_COMMON = r"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  run = args[1] or "r"
  n = 0
  math.randomseed(tid * 7919)
  headers = {["content-type"] = "application/json", ["auth-token"] = args[2] or ""}
end
local function mid() return run .. "-" .. tid .. "-" .. n end
"""

_TRACK = r"""
function request()
  n = n + 1
  local user = "user-" .. run .. "-" .. tid .. "-" .. (n % 10000)
  return wrk.format("POST", prefix .. "/track", headers,
    TRACK[1] .. user .. TRACK[2] .. mid() .. TRACK[3])
end
"""

_BATCH = r"""
function request()
  local items = {}
  for i = 1, BATCH_SIZE do
    n = n + 1
    local user = "user-" .. run .. "-" .. tid .. "-" .. (n % 10000)
    items[i] = ITEM[1] .. user .. ITEM[2] .. mid() .. ITEM[3]
  end
  return wrk.format("POST", prefix .. "/batch", headers,
    '{"batch":[' .. table.concat(items, ",") .. ']}')
end
"""

# 20% identify (half of them carrying the anonymousId of an earlier anonymous page
# view, which merges that anonymous profile into the customer's), 60% track, 20% page.
_MIX = r"""
local last_anon = nil
function request()
  n = n + 1
  local r = math.random(100)
  local user = "user-" .. run .. "-" .. tid .. "-" .. (n % 10000)
  if r <= 20 then
    local anon = ""
    if last_anon and r <= 10 then anon = '","anonymousId":"' .. last_anon; last_anon = nil end
    return wrk.format("POST", prefix .. "/identify", headers,
      IDENTIFY[1] .. user .. anon .. IDENTIFY[2] .. mid() .. IDENTIFY[3])
  elseif r <= 80 then
    return wrk.format("POST", prefix .. "/track", headers,
      TRACK[1] .. user .. TRACK[2] .. mid() .. TRACK[3])
  else
    local anon = "anon-" .. run .. "-" .. tid .. "-" .. n
    last_anon = anon
    return wrk.format("POST", prefix .. "/page", headers,
      PAGE[1] .. anon .. PAGE[2] .. mid() .. PAGE[3])
  end
end
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def _lua_parts(name: str, parts: tuple[str, str, str]) -> str:
    return f"{name} = {{{', '.join(_lua_string(p) for p in parts)}}}\n"


def script(kind: str, prefix: str, batch_size: int = 100) -> str:
    """The Lua script for ``kind`` (track, batch, mix) posting under ``prefix``."""
    head = f"prefix = {_lua_string(prefix)}\nBATCH_SIZE = {batch_size}\n"
    head += _lua_parts("TRACK", payloads.track_parts())
    head += _lua_parts("ITEM", payloads.track_parts(batch_item=True))
    head += _lua_parts("IDENTIFY", payloads.identify_parts())
    head += _lua_parts("PAGE", payloads.page_parts())
    body = {"track": _TRACK, "batch": _BATCH, "mix": _MIX}[kind]
    return head + _COMMON + body + _DONE


@dataclass
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int
    socket_errors: int
    wrk_cpu_percent: float  # of one core

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def ensure_wrk() -> str:
    """wrk's path, installing the Debian package if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return found


def run(
    url: str,
    lua: str,
    *,
    seconds: float,
    connections: int,
    token: str,
    run_id: str,
    workdir: Path,
) -> WrkResult:
    """Run wrk (one thread) against ``url`` with ``lua`` and return what it measured."""
    script_path = workdir / f"{run_id}.lua"
    script_path.write_text(lua)
    command = [
        ensure_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
        "-s", str(script_path), url, "--", run_id, token,
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    line = next((x for x in output.splitlines() if x.startswith("BENCH_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    duration = data["duration_us"] / 1e6
    return WrkResult(
        requests=data["requests"],
        seconds=round(duration, 2),
        requests_per_s=round(data["requests"] / duration, 1),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        status_errors=data["status_errors"],
        socket_errors=data["socket_errors"],
        wrk_cpu_percent=round(100 * (usage.ru_utime + usage.ru_stime) / elapsed, 1),
    )
