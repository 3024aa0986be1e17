"""``/docs`` renders in headless Chromium with no request leaving the server's origin.

The real server (``opencdp serve``) answers; ``tests/browser/docs.mjs`` blocks and
records every request to any other origin, waits for Swagger UI to list the
operations, and saves a screenshot under ``test-artifacts/``. Needs what the analytics.js
browser test needs (node, ``npm ci`` in ``tests/browser``, Chromium); without them it
skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

BROWSER_DIR = Path(__file__).parent / "browser"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def missing_tool() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"Chromium is not at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "tests/browser has no node_modules (run: cd tests/browser && npm ci)"
    return None


def open_docs(url: str, screenshot: Path) -> dict[str, Any]:
    env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CHROMIUM": CHROMIUM}
    done = subprocess.run(
        ["node", "docs.mjs", url, str(screenshot)], cwd=BROWSER_DIR, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    outcome: dict[str, Any] = json.loads(lines[-1])
    return outcome


def test_docs_render_with_nothing_from_outside(tmp_path: Path) -> None:
    missing = missing_tool()
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the docs browser test cannot run: {missing}")
        pytest.skip(f"the docs browser test cannot run: {missing}")
    server = ServerProcess(f"sqlite:///{tmp_path / 'opencdp.db'}", tmp_path / "server.log")
    server.start()
    try:
        documented = httpx.get(f"{server.url}/openapi.json").json()["paths"]
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "docs.png"
        screenshot.unlink(missing_ok=True)
        outcome = open_docs(f"{server.url}/docs", screenshot)
    finally:
        server.stop()
    assert outcome["outside"] == [], outcome
    assert not [m for m in outcome["console"] if m.startswith(("error", "pageerror"))], outcome
    shown = {(op["method"].lower(), op["path"]) for op in outcome["operations"]}
    expected = {(method, path) for path, ops in documented.items() for method in ops}
    assert shown == expected and len(shown) > 20
    assert outcome["fallback"] == "/openapi.json"
    assert outcome["requests"] >= 4  # the page, its script, style and start-up, the document
    assert screenshot.stat().st_size > 10_000  # a picture of a rendered page, not a blank one


@pytest.mark.anyio
async def test_the_page_names_only_files_the_server_serves(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "//" not in page.text.replace("<!doctype", "")  # no other origin, no scheme
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/openapi.json" in links and len(links) == 5
    for link in links:
        response = await client.get(link)
        assert response.status_code == 200, link
    unknown = await client.get("/docs/assets/LICENSE")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
