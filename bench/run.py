"""``make bench``: every scenario, a table on stdout, and bench-results/results.json.

Writes: wrk against a real ``opencdp serve`` process, each figure paired with the
baseline (plain Starlette, same uvicorn stack) measured in the same rounds with the same
bodies: baseline, then each store, repeated, so a slow minute of the machine lands on
both sides. Reads: in-process against the loaded dataset (see ``bench.reads``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import dataset, reads, servers, stores, wrk

ROOT = servers.ROOT
TRACK_PREFIX = dataset.PREFIX


@dataclass(frozen=True)
class Plan:
    seconds: float  # per server and scenario, split over the rounds
    warmup: float
    rounds: int
    reads_size: dataset.DatasetSize
    pg_reads_size: dataset.DatasetSize
    read_samples: int
    scroll_depth: int
    stores: tuple[str, ...]
    read_budget: float = reads.BUDGET_SECONDS  # per read scenario, at least MIN_SAMPLES
    writes: bool = True
    reads: bool = True


FULL = Plan(
    seconds=15, warmup=3, rounds=3, reads_size=dataset.DatasetSize(1_000_000, 10),
    pg_reads_size=dataset.DatasetSize(200_000, 10), read_samples=1000,
    scroll_depth=100_000, stores=("sqlite", "postgres"),
)
QUICK = Plan(
    seconds=3, warmup=1, rounds=1, reads_size=dataset.DatasetSize(12_000, 10),
    pg_reads_size=dataset.DatasetSize(12_000, 10), read_samples=100,
    scroll_depth=100_000, stores=("sqlite", "postgres"), read_budget=1.0,
)
# name, wrk script, connections, events per request
WRITE_SCENARIOS = (("track", "track", 64, 1), ("batch", "batch", 16, 100), ("mix", "mix", 64, 1))


@dataclass
class Results:
    machine: dict[str, Any]
    plan: dict[str, Any]
    writes: list[dict[str, Any]] = field(default_factory=list)
    reads: dict[str, Any] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    plan = _plan(args)
    out = Path(args.out)
    workdir = out / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    wrk.ensure_wrk()
    results = Results(_machine(), {"quick": args.quick, **_plain(plan)})
    if plan.writes:
        for scenario in WRITE_SCENARIOS:
            results.writes.append(_write_scenario(scenario, plan, workdir))
            _save(results, out)
    if plan.reads:
        for kind in plan.stores:
            size = plan.reads_size if kind == "sqlite" else plan.pg_reads_size
            results.reads[kind] = asyncio.run(_read_scenarios(kind, size, plan, out / "data"))
            _save(results, out)
    print(table(_plain(results)))
    print(f"\nresults: {out / 'results.json'}")


def _save(results: Results, out: Path) -> None:
    """Written after every scenario, so an interrupted run keeps what it measured."""
    (out / "results.json").write_text(json.dumps(_plain(results), indent=2) + "\n")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small data, short runs (< 2 min)")
    parser.add_argument("--stores", default=None, help="comma-separated: sqlite,postgres")
    parser.add_argument("--only", choices=("writes", "reads"), default=None)
    parser.add_argument("--seconds", type=float, default=None,
                        help="wrk time per server and scenario, split over the rounds")
    parser.add_argument("--rounds", type=int, default=None,
                        help="baseline/store rounds per write scenario")
    parser.add_argument("--pg-profiles", type=int, default=None, help="PostgreSQL read dataset")
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    parser.add_argument("--table", metavar="RESULTS_JSON", help="only print the table of a run")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.stores:
        changes["stores"] = tuple(s.strip() for s in args.stores.split(",") if s.strip())
    if args.only:
        changes["writes"] = args.only == "writes"
        changes["reads"] = args.only == "reads"
    if args.seconds:
        changes["seconds"] = args.seconds
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.pg_profiles:
        changes["pg_reads_size"] = dataset.DatasetSize(args.pg_profiles, 10)
    return Plan(**{**plan.__dict__, **changes})


# -- writes --------------------------------------------------------------------------


def _write_scenario(
    scenario: tuple[str, str, int, int], plan: Plan, workdir: Path
) -> dict[str, Any]:
    """Every server up at once; then rounds of baseline, store, store: medians of each."""
    name, script_kind, connections, per_request = scenario
    lua = wrk.script(script_kind, TRACK_PREFIX)
    row: dict[str, Any] = {"scenario": name, "connections": connections,
                           "events_per_request": per_request}
    with ExitStack() as stack:
        targets = {"baseline": (stack.enter_context(servers.baseline()), "")}
        for kind in plan.stores:
            url = stores.fresh_url(kind, workdir)
            stack.callback(stores.drop, url)
            token = servers.create_token(url)
            targets[kind] = (stack.enter_context(servers.opencdp(url)), token)
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key in targets}
        for server, token in targets.values():  # warm-up, not counted
            _run(server, lua, plan.warmup, connections, token, workdir, per_request)
        seconds = max(1.0, plan.seconds / plan.rounds)
        for _ in range(plan.rounds):
            for key, (server, token) in targets.items():
                measured = _run(server, lua, seconds, connections, token, workdir, per_request)
                runs[key].append(measured)
    for key, each_round in runs.items():
        row[key] = _median(each_round)
    for kind in plan.stores:
        row[kind]["ratio"] = round(
            row[kind]["requests_per_s"] / row["baseline"]["requests_per_s"], 3
        )
        pairs = zip(row[kind]["rounds"], row["baseline"]["rounds"], strict=True)
        row[kind]["round_ratios"] = [round(mine / base, 3) for mine, base in pairs]
    return row


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median requests/s, and every round's requests/s beside it."""
    ordered = sorted(runs, key=lambda run: float(run["requests_per_s"]))
    return {**ordered[len(ordered) // 2], "rounds": [run["requests_per_s"] for run in runs]}


def _run(
    server: servers.Server,
    lua: str,
    seconds: float,
    connections: int,
    token: str,
    workdir: Path,
    per_request: int,
) -> dict[str, Any]:
    tag = f"r{time.time_ns() % 10**12:x}"
    cpu_before = server.cpu_seconds()
    result = wrk.run(server.url, lua, seconds=seconds, connections=connections,
                     token=token, run_id=tag, workdir=workdir)
    measured = result.as_dict()
    measured["events_per_s"] = round(result.requests_per_s * per_request, 1)
    measured["server_cpu_percent"] = round(
        100 * (server.cpu_seconds() - cpu_before) / result.seconds, 1
    )
    if result.status_errors or result.socket_errors:
        print(f"warning: {result.status_errors} error answers, {result.socket_errors} socket"
              f" errors against {server.url}")
    return measured


# -- reads ---------------------------------------------------------------------------


async def _read_scenarios(
    kind: str, size: dataset.DatasetSize, plan: Plan, datadir: Path
) -> dict[str, Any]:
    url, load_seconds = await stores.loaded(kind, size, datadir)
    store = stores.open_started(url)
    index_seconds = await dataset.index_properties(store)
    await store.start()
    try:
        latencies, follow = await reads.measure(
            store, url, size, plan.read_samples, plan.scroll_depth, plan.read_budget
        )
    finally:
        await store.stop()
    return {
        "profiles": size.profiles, "events": size.events,
        "load_seconds": None if load_seconds is None else round(load_seconds, 1),
        "load_events_per_s": None if not load_seconds else round(size.events / load_seconds),
        "index_seconds": None if index_seconds is None else round(index_seconds, 1),
        "latencies": [latency.as_dict() for latency in latencies],
        "following": follow.as_dict(),
    }


# -- output --------------------------------------------------------------------------


def _spread(ratios: list[float]) -> str:
    return f" ({', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""


def table(results: dict[str, Any]) -> str:
    lines = []
    if results["writes"]:
        kinds = [k for k in ("sqlite", "postgres") if k in results["writes"][0]]
        lines.append("## Writes (wrk -t1; ratio = requests/s over the same-run baseline,"
                     " median of the rounds; each round's ratio in brackets)\n")
        header = "| scenario | baseline req/s (p50/p99 ms) | " + " | ".join(
            f"{k} req/s · events/s (p50/p99 ms) · ratio" for k in kinds
        ) + " | wrk CPU |"
        lines += [header, "|" + "---|" * (3 + len(kinds))]
        for row in results["writes"]:
            base = row["baseline"]
            cells = [f"{row['scenario']} (c={row['connections']})", _rps(base)]
            for kind in kinds:
                r = row[kind]
                cells.append(f"{r['requests_per_s']:,.0f} · {r['events_per_s']:,.0f}"
                             f" ({r['p50_ms']:.1f}/{r['p99_ms']:.1f}) · {r['ratio']:.2f}×"
                             + _spread(r.get("round_ratios", [])))
            cpu = max(row[k]["wrk_cpu_percent"] for k in ("baseline", *kinds))
            cells.append(f"≤{cpu:.0f}% of a core")
            lines.append("| " + " | ".join(cells) + " |")
    for kind, data in results["reads"].items():
        lines.append(f"\n## Reads on {kind}: {data['profiles']:,} profiles,"
                     f" {data['events']:,} events (in-process, sequential)\n")
        if data["load_seconds"] is not None:
            lines.append(f"bulk load: {data['load_seconds']} s"
                         f" ({data['load_events_per_s']:,} events/s)\n")
        if data.get("index_seconds") is not None:
            lines.append(f"property indexes ({', '.join(dataset.INDEXED_PROPERTIES)}):"
                         f" {data['index_seconds']} s\n")
        if data.get("following"):
            follow = data["following"]
            ratio = follow["feed_events_per_s"] / max(follow["scroll_events_per_s"], 1)
            lines.append(f"a consumer following from the oldest event: change feed"
                         f" {follow['feed_events_per_s']:,.0f} events/s (pages of"
                         f" {reads.FEED_PAGE}); Events API scroll, oldest first (the same-run"
                         f" baseline) {follow['scroll_events_per_s']:,.0f} events/s;"
                         f" ratio {ratio:.2f}×\n")
        lines += ["| query | p50 ms | p99 ms | samples |", "|---|---|---|---|"]
        for lat in data["latencies"]:
            lines.append(f"| {lat['name']} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} |"
                         f" {lat.get('samples', '')} |")
    return "\n".join(lines)


def _rps(r: dict[str, Any]) -> str:
    return f"{r['requests_per_s']:,.0f} ({r['p50_ms']:.1f}/{r['p99_ms']:.1f})"


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "postgres": _pg_version(),
        "kernel": platform.release(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _pg_version() -> str:
    try:
        out = subprocess.run(["psql", stores.PG_URL, "-Atc", "SHOW server_version"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
