"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by
Selenium through Debian's ``chromium-driver``) against a real ``loom run --dashboard``
process whose agent calls a real (scripted) OpenAI-compatible server and a sandboxed
tool.

Screenshots go to ``test-artifacts/dashboard/`` (``LOOM_TEST_ARTIFACTS`` overrides).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripted_openai import ScriptedOpenAI, text_reply, tool_call_reply

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("LOOM_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"

DESK = """
from loom.cognitive import CognitiveAgent, CognitiveConfig
from loom.llm import LLMProvider

async def on_event(ctx, topic, event):
    llm = LLMProvider.from_name(ctx, "scripted")
    agent = CognitiveAgent(ctx, llm, CognitiveConfig(max_iterations=4), tools=["fs:read_file"])
    result = await agent.run(event.payload["question"])
    await ctx.emit("desk.notes", "note", {"answer": result.answer})
    await ctx.reply(event, "answer", {"summary": result.answer})
"""

# Emits when the test asks (a file appears), and writes down when it emitted.
TICKER = """
import asyncio, os, time
from pathlib import Path

async def main(ctx):
    trigger = Path(os.environ["TRIGGER"])
    n = 0
    while True:
        if trigger.exists():
            kind = trigger.read_text() or "tick"
            trigger.unlink()
            n += 1
            await ctx.emit("ticks.now", kind, {"n": n, "secret_token": "tok-hidden-123"})
            Path(os.environ["EMITTED"]).write_text(repr(time.time()))
        await asyncio.sleep(0.02)
"""

SINK = """
async def on_event(ctx, topic, event):
    pass
"""


def script(body: dict[str, Any]) -> dict[str, Any]:
    if not any(m.get("role") == "tool" for m in body["messages"]):
        return tool_call_reply("call_read", "fs__read_file", {"path": "facts.txt"})
    return text_reply("The facts file says: agents are observable.")


def chromium_parts() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "chromium and chromium-driver are needed (Debian packages; `make test` installs "
            "them through scripts/bootstrap.sh)"
        )
    return browser, driver


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedOpenAI]:
    server = ScriptedOpenAI(script).start()
    try:
        yield server
    finally:
        server.stop()


class Project:
    def __init__(self, root: Path, proc: subprocess.Popen[bytes], url: str) -> None:
        self.root = root
        self.proc = proc
        self.url = url
        self.base = url.split("/?", 1)[0]
        self.port = int(self.base.rsplit(":", 1)[1])

    def log(self) -> str:
        return (self.root / "run.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, llm: ScriptedOpenAI) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("dash")
    (root / "agents").mkdir()
    (root / "workspace").mkdir()
    (root / "workspace" / "facts.txt").write_text("agents are observable\n")
    (root / "agents" / "desk.py").write_text(DESK)
    (root / "agents" / "ticker.py").write_text(TICKER)
    (root / "agents" / "sink.py").write_text(SINK)
    (root / "loom.toml").write_text(
        f"""
[project]
name = "dash-desk"

[llm.scripted]
base_url = "{llm.base_url}"
model = "scripted-model"
api_key = "sk-dashboard-secret-42"
max_retries = 0

[agents.desk]
code = "agents/desk.py"
topics = ["desk.ask"]

[agents.ticker]
code = "agents/ticker.py"

[agents.sink]
code = "agents/sink.py"
topics = ["ticks.>", "desk.notes"]
group = "sinks"

[job]
topic = "desk.ask"
payload = {{ question = "What does the facts file say?" }}
timeout = 60
"""
    )
    env = {
        **os.environ,
        "TRIGGER": str(root / "trigger"),
        "EMITTED": str(root / "emitted"),
        "LOOM_PROJECT": str(root / "loom.toml"),
    }
    out = (root / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", "run", "--dashboard"],
        cwd=root,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    url = None
    text = ""
    while time.monotonic() < deadline:
        text = (root / "run.log").read_text(errors="replace")
        m = re.search(r"dashboard: (http://\S+/?\?token=\S+)", text)
        if m and "stays open" in text:
            url = m.group(1)
            break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    if url is None:
        proc.kill()
        pytest.fail(f"loom run --dashboard did not come up:\n{text}")
    try:
        yield Project(root, proc, url)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        out.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_parts()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI: Chromium's own sandbox refuses to run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    service = Service(executable_path=driver, log_output=str(ARTIFACTS / "chromedriver.log"))
    b = webdriver.Chrome(service=service, options=options)
    b.set_page_load_timeout(30)
    try:
        yield b
    finally:
        b.quit()


def wait(b: Any, css: str, timeout: float = 10.0) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(b, timeout, poll_frequency=0.02).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css))
        )
    except Exception:
        b.save_screenshot(str(ARTIFACTS / "failed.png"))
        logs = b.get_log("browser") if hasattr(b, "get_log") else []
        raise AssertionError(f"{css} not shown in {timeout}s at {b.current_url}; {logs}") from None


def click(b: Any, css: str, timeout: float = 10.0) -> Any:
    """Clicks the element ``css`` names, finding it again if the page re-rendered it
    between finding and clicking (lists refresh while the page is open)."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            element = wait(b, css, timeout)
            element.click()
            return element
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def shot(b: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    b.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def test_the_page_shows_every_agent_and_trades_the_token_for_a_cookie(
    project: Project, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(project.url)
    # The token left the address bar: it is a cookie now.
    assert "token=" not in browser.current_url
    for agent in ("desk", "ticker", "sink"):
        wait(browser, f'#agents tr[data-agent="{agent}"]')
    rows = browser.find_elements(By.CSS_SELECTOR, "#agents tbody tr")
    shown = {r.get_attribute("data-agent") for r in rows}
    assert {"desk", "ticker", "sink"} <= shown
    sink = browser.find_element(By.CSS_SELECTOR, '#agents tr[data-agent="sink"]').text
    assert "ticks.>" in sink and "group sinks" in sink and "reliable" in sink
    assert browser.find_element(By.ID, "project-name").text == "dash-desk"
    # The topology draws the agents and the topics.
    wait(browser, '#topology g.node[data-node="sink"]')
    wait(browser, '#topology g.node[data-node^="desk.ask"]')
    # Who sent what: the job's sender, from the run's spans, before any page listened.
    wait(browser, '#topology g.node.agent[data-node="loom.run"]')
    cookies = {c["name"]: c for c in browser.get_cookies()}
    cookie = cookies[f"loom_dashboard_{project.port}"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    shot(browser, "topology")


def test_an_emitted_event_appears_within_a_second(project: Project, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(project.base + "/")
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="events"]').click()
    deadline = time.monotonic() + 10
    while browser.find_element(By.ID, "status").text != "live":  # the stream is open
        assert time.monotonic() < deadline, browser.find_element(By.ID, "status").text
        time.sleep(0.02)
    emitted = project.root / "emitted"
    emitted.unlink(missing_ok=True)
    (project.root / "trigger").write_text("tick")
    row = wait(browser, 'tr.event[data-topic="ticks.now"]', timeout=10)
    seen = time.time()
    deadline = time.monotonic() + 5
    while not emitted.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    emitted_at = float(emitted.read_text())
    assert seen - emitted_at < 1.0, f"shown {seen - emitted_at:.3f}s after ctx.emit"
    assert "tick" in row.text and "ticker" in row.text
    # Content capture is off by default: no payload, so no secret either.
    assert "tok-hidden-123" not in browser.page_source
    assert "n" not in [p.text for p in row.find_elements(By.CSS_SELECTOR, ".preview")]
    shot(browser, "events")


def test_markup_in_an_event_is_shown_as_text_and_never_runs(project: Project, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(project.base + "/")
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="events"]').click()
    deadline = time.monotonic() + 10
    while browser.find_element(By.ID, "status").text != "live":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    (project.root / "trigger").write_text(evil)
    deadline = time.monotonic() + 10
    while not any(
        r.get_attribute("data-type") == evil
        for r in browser.find_elements(By.CSS_SELECTOR, 'tr.event[data-topic="ticks.now"]')
    ):
        assert time.monotonic() < deadline, "the event did not appear"
        time.sleep(0.05)
    assert evil in browser.find_element(By.ID, "event-list").text  # shown, literally
    time.sleep(0.3)
    assert browser.execute_script("return window.__pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#event-list img, #event-list script")


def test_a_runs_waterfall_shows_its_chat_and_tool_spans(project: Project, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(project.base + "/")
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="traces"]').click()
    wait(browser, "#runs li.run", timeout=15)
    # The newest run is this process's own, marked live, selected first.
    first = click(browser, "#runs li.run")
    assert "live" in first.text
    wait(browser, '#waterfall .span[data-name^="chat"]', timeout=15)
    wait(browser, '#waterfall .span[data-name="execute_tool fs:read_file"]')
    wait(browser, '#waterfall .span[data-name^="invoke_agent desk"]')
    click(browser, '#waterfall .span[data-name^="chat"]')
    detail = wait(browser, "#span-detail h3")
    assert detail.text.startswith("chat")
    text = browser.find_element(By.ID, "span-detail").text
    assert "scripted-model" in text and "gen_ai.usage.input_tokens" in text
    export = browser.find_element(By.ID, "jaeger-export")
    assert "/jaeger?trace=" in export.get_attribute("href")
    shot(browser, "waterfall")
    # Searching by tool finds the trace; a tool no span used finds none.
    box = browser.find_element(By.ID, "trace-query")
    box.clear()
    box.send_keys("tool:fs:read_file")
    browser.find_element(By.ID, "trace-search").click()
    status = wait(browser, "#trace-status")
    deadline = time.monotonic() + 10
    while "match" not in status.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.match(r"[1-9]\d* trace", status.text), status.text
    box.clear()
    box.send_keys("tool:no-such-tool")
    browser.find_element(By.ID, "trace-search").click()
    deadline = time.monotonic() + 10
    while not status.text.startswith("0 trace") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status.text.startswith("0 trace"), status.text


def test_tools_and_models_show_usage_and_no_secret(project: Project, browser: Any) -> None:
    browser.get(project.base + "/")
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="tools"]').click()
    wait(browser, '#tools tr[data-tool="fs:read_file"]')
    deadline = time.monotonic() + 5
    while "scripted" not in browser.find_element(By.ID, "usage-provider").text:
        assert time.monotonic() < deadline, "no LLM usage shown"
        time.sleep(0.1)
    assert "sk-dashboard-secret-42" not in browser.page_source
    shot(browser, "tools")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_without_the_token_nothing_is_served(project: Project) -> None:
    for path in ("/", "/static/app.js", "/api/overview", "/api/runs", "/api/events"):
        status, body = _get(project.base + path)
        assert status == 401, (path, status)
        assert "desk" not in body
    status, _ = _get(project.base + "/?token=wrong-token")
    assert status == 401
    # Everything the project's API returns, with the token, holds no secret.
    token = project.url.split("token=", 1)[1]
    auth = {"Authorization": f"Bearer {token}"}
    for path in ("/api/overview", "/api/bus", "/api/tools", "/api/runs", "/api/durable"):
        status, body = _get(project.base + path, auth)
        assert status == 200, path
        assert "sk-dashboard-secret-42" not in body
    runs = json.loads(_get(project.base + "/api/runs", auth)[1])
    live = next(r for r in runs if r["live"])
    status, body = _get(project.base + f"/api/runs/{live['run_id']}/jaeger", auth)
    assert status == 200 and "sk-dashboard-secret-42" not in body
    assert any(s["operationName"].startswith("chat") for s in json.loads(body)["data"][0]["spans"])
    assert "sk-dashboard-secret-42" not in project.log()


def _non_loopback_address() -> str | None:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for addr in out:
        if ":" not in addr and not addr.startswith("127."):
            return addr
    return None


def test_it_listens_on_loopback_only(project: Project) -> None:
    # The kernel's table of listening sockets: the dashboard's port is bound to 127.0.0.1.
    port_hex = f"{project.port:04X}"
    bound = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(f":{port_hex}") and line.split()[3] == "0A"
    ]
    assert bound == [f"0100007F:{port_hex}"], bound
    assert not any(
        line.split()[1].endswith(f":{port_hex}") and line.split()[3] == "0A"
        for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]
    )
    addr = _non_loopback_address()
    if addr is not None:
        with pytest.raises(OSError), socket.create_connection((addr, project.port), timeout=2):
            pass
