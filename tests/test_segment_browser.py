"""Segment's analytics.js, unchanged, in headless Chromium on another origin (SPEC §8).

``@segment/analytics-next`` from npm is bundled with esbuild into a website's tag;
a page served from a second local server (another port: another origin) loads it
with only ``cdnURL`` pointed at opencdp. Its page, identify and track calls must
land on the profile, with the browser's anonymous id linked.

Needs node, ``npm ci`` in ``tests/browser`` and Chromium at ``/usr/bin/chromium``
(or ``$CHROMIUM``); ``.ci/run`` installs them. Without them the test skips, except
under ``CI=true``, where it fails.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ServerProcess, cli

pytestmark = pytest.mark.slow

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WORKSPACE = "/track/shop/web/uk/v1"


def missing_tool() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"Chromium is not at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
    if not (BROWSER_DIR / "node_modules" / "@segment" / "analytics-next").is_dir():
        return "tests/browser has no node_modules (run: cd tests/browser && npm ci)"
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The website: index.html and the bundled tag, served on its own port."""
    missing = missing_tool()
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser test cannot run: {missing}")
        pytest.skip(f"the browser test cannot run: {missing}")
    root = tmp_path_factory.mktemp("site")
    esbuild = BROWSER_DIR / "node_modules" / ".bin" / "esbuild"
    subprocess.run(
        [str(esbuild), "tag.js", "--bundle", "--format=iife", "--log-level=warning",
         "--define:process.env.NODE_ENV=\"production\"", f"--outfile={root / 'tag.js'}"],
        cwd=BROWSER_DIR, check=True, timeout=60,
    )
    shutil.copy(BROWSER_DIR / "index.html", root / "index.html")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def run_page(url: str) -> dict[str, Any]:
    env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CHROMIUM": CHROMIUM}
    done = subprocess.run(
        ["node", "drive.mjs", url], cwd=BROWSER_DIR, env=env,
        capture_output=True, text=True, timeout=90, check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    outcome: dict[str, Any] = json.loads(lines[-1])
    return outcome


def wait_for_events(url: str, token: str, profile: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        response = httpx.get(
            f"{url}{WORKSPACE}/profiles/{profile}/events", headers={"auth-token": token}
        )
        events: list[dict[str, Any]] = response.json().get("data", [])
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_analytics_js_on_another_origin(site: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'opencdp.db'}"
    write_key = cli("tokens", "create", "--client", "shop", "--account", "web", "--brand", "uk",
                    "--scope", "write", db=db).strip()
    read_token = cli("tokens", "create", "--client", "shop", "--account", "web", "--brand", "uk",
                     "--scope", "read", db=db).strip()
    opencdp = ServerProcess(db, tmp_path / "server.log")
    opencdp.start()
    try:
        outcome = run_page(f"{site}/index.html?key={write_key}&cdn={opencdp.url}")
        assert "result" in outcome, outcome
        assert outcome["result"]["failed"] == [], outcome
        anonymous_id = outcome["result"]["anonymousId"]
        events = wait_for_events(opencdp.url, read_token, "userId:browser-user", 3)
        meta = httpx.get(
            f"{opencdp.url}{WORKSPACE}/profiles/userId:browser-user/meta",
            headers={"auth-token": read_token},
        ).json()
    finally:
        opencdp.stop()
    actions = Counter(event["eventAction"] for event in events)
    assert actions == Counter(["page", "identify", "signed_up"]), outcome["console"]
    assert meta["anonymousIds"] == [anonymous_id]
    assert meta["email"] == "browser@example.com"
    for event in events:
        assert event["rawData"]["anonymousId"] == anonymous_id
        assert "writeKey" not in event["rawData"]
