"""The README as a newcomer reads it: every setting listed, every command runnable as written."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from opencdp.config import Settings
from opencdp.ingest import parse_call

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def code_lines() -> list[str]:
    """The lines of the shell blocks (fenced as sh, bash or nothing)."""
    lines: list[str] = []
    language: str | None = None
    for line in README.splitlines():
        if line.startswith("```"):
            language = line[3:].strip() if language is None else None
        elif language in ("sh", "bash", ""):
            lines.append(line.strip())
    return lines


def test_the_configuration_table_lists_every_setting() -> None:
    table = section("Configuration")
    for f in fields(Settings):
        assert f"| `OPENCDP_{f.name.upper()}` |" in table, f.name


def test_every_command_line_runs_the_installed_command() -> None:
    for line in code_lines():
        command = line.split("#", 1)[0]
        assert not re.search(r"(^|[\s(|;&])opencdp\s", command), line


def test_every_make_target_named_exists() -> None:
    named = set(re.findall(r"(?m)(?:^|`)make ([a-z][a-z-]*)", README))
    assert {"run", "test", "lock", "test-latest", "bench"} <= named
    for target in named:
        assert re.search(rf"(?m)^{re.escape(target)}:", MAKEFILE), target


def test_the_first_lines_are_make_run_and_make_test() -> None:
    first_block = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "run"], ["make", "test"]]


def test_every_tracking_call_in_the_tour_is_valid() -> None:
    """The tour's ``curl -d`` bodies are accepted as the calls they are posted as."""
    tour = section("A five-minute tour")
    examples = re.findall(r"/v1/(\w+) \\\n.*?-d '(\{.*?\n  \})'", tour, re.S)
    assert [action for action, _ in examples] == ["identify", "track", "page", "group"]
    for action, body in examples:
        call = parse_call(action, json.loads(body), received_time=0, client_ip=None)
        assert call.action == action
