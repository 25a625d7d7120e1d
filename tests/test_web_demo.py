"""The web chat demo in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright)
against a real server process on the real default model: pick a persona, send a message,
watch it stream, get the final reply with its strategy and emotion, see the memory appear.
The test saves a screenshot to test-artifacts/web-demo.png."""

import httpx
import pytest
from services import ROOT, ServerProcess, require_binary

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture()
def demo_server(tmp_path, subprocess_env, default_paths):
    env = {
        **subprocess_env,
        "COMPANION_DATA_DIR": str(tmp_path / "data"),
        "COMPANION_MAX_NEW_TOKENS": "32",
        "COMPANION_DEMO_TOKEN": "demo-token-for-the-browser-test",
    }
    env.pop("REDIS_URL", None)
    server = ServerProcess(env, tmp_path / "server.log").start(timeout=180)
    yield server
    server.stop()


@pytest.fixture()
def browser():
    chromium = require_binary("chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def test_chat_streams_replies_and_shows_memories(demo_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1360, "height": 860})
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(demo_server.http + "/")
    # the bundled personas are offered; pick the engineer, then the innkeeper
    page.wait_for_selector("[data-persona=orla]")
    assert {b.get_attribute("data-persona") for b in page.query_selector_all(".persona")} >= {
        "mira",
        "orla",
        "marlowe",
    }
    page.click("[data-persona=orla]")
    page.wait_for_function("document.getElementById('status-text').textContent.includes('Orla')")
    page.click("[data-persona=mira]")
    page.wait_for_function("document.getElementById('status-text').textContent === 'Talking to Mira'")
    assert "Come in out of the cold" in page.inner_text("#messages")

    page.fill("#composer-input", "I have a really sensitive stomach.")
    page.press("#composer-input", "Enter")
    # streamed: the bubble shows text while it is still streaming
    page.wait_for_selector(".msg.npc.streaming[data-tokens]", timeout=60_000)
    partial = page.inner_text(".msg.npc.streaming .text")
    page.wait_for_selector(".msg.npc.final", timeout=120_000)
    final = page.query_selector_all(".msg.npc.final")[-1]
    assert int(final.get_attribute("data-tokens")) >= 2
    assert final.inner_text().strip() and partial.strip()
    chips = final.query_selector(".chips").inner_text()
    assert "you seem" in chips
    # the fact becomes a memory, shown in the panel
    page.wait_for_selector("#memories li[data-type=health]", timeout=30_000)
    assert "sensitive stomach" in page.inner_text("#memories")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # the same memory through REST, under the demo key
    events = httpx.get(
        f"{demo_server.http}/v1/players/{page.inner_text('#player-id')}/memories",
        headers={"Authorization": "Bearer demo-token-for-the-browser-test"},
    ).json()["events"]
    assert [e["type"] for e in events] == ["health"]

    page.on("dialog", lambda d: d.accept())
    page.click("#forget")
    page.wait_for_selector("#memories-empty:not([hidden])")
    assert page.query_selector_all("#memories li") == []
    assert not console_errors, console_errors
