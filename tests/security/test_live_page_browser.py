"""Finding 1 (script injection on the Live page) and finding 2 (every viewer held the robot
secret), replayed where the harm was: in a real browser. Headless Chromium (Debian's, through
Playwright) logs in as a *viewer* to the real web app (a Streamlit server in a subprocess), whose
Live page shows robots named to inject markup, fed by a real telemetry endpoint publishing
frames under those names with hostile instructions. No script of theirs may run, the names
must show as text, the page must hold no worker secret, and the ticket it does hold must not
register a robot. Screenshots: data/artifacts/security/ (git-ignored)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench.common import CHROMIUM, launch_chromium, wait_until
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "data" / "artifacts" / "security"
PASSWORD = "viewer-password-1"
# Each would set window.__pwned (in its own frame or the page) if it ever became markup or script.
HOSTILE_NAMES = [
    "w1/__CFG__<img src=x onerror=\"window.__pwned='cfg'\">",
    "w1/</script><script>window.__pwned='script'</script>",
    "w1/<svg onload=\"window.__pwned='svg'\">__NAME__",
]
HOSTILE_INSTRUCTION = "<img src=x onerror=\"window.__pwned='instr'\"> push the red moon"






@pytest.fixture(scope="module")
def live_site(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test.sh does)")
    pytest.importorskip("playwright.sync_api", reason="playwright is pinned in requirements.txt: run scripts/setup.sh")
    from core.worker.access import ViewerAccess
    from core.worker.remote import RemoteHub
    from core.worker.telemetry import TelemetryHub, WebsocketServer, encode_jpeg
    from tests.endpoint import RobotTokens, web_app
    from storage import init_db, repo
    from storage.credentials import load_worker_secret
    from ui import bootstrap

    data = tmp_path_factory.mktemp("security-live")
    db = init_db(str(data / "dojo.sqlite"))
    with db.write() as s:
        task = bootstrap.seed_demo_task(s, fleet_size=len(HOSTILE_NAMES))
        repo.create_user(s, "viewer1", PASSWORD, "viewer")
        for name in HOSTILE_NAMES:
            robot = repo.register_robot(s, name, task_id=task.id)
            robot.status = "online"
    db.dispose()
    secret = load_worker_secret(data)  # the file the web app reads too (DOJO_DATA)
    tele, hub = TelemetryHub(ViewerAccess(secret)), RemoteHub(RobotTokens(data).access)
    srv = WebsocketServer({"/telemetry": tele.handler, "/robot": hub.handler}, port=0)
    tele.attach(srv)
    hub.attach(srv)
    srv.start()
    stop = threading.Event()

    def publish():
        img = np.zeros((32, 32, 3), np.uint8)
        step = 0
        while not stop.is_set():
            img[:] = (step * 9) % 255
            for name in HOSTILE_NAMES:
                tele.publish(name, {"robot_id": None, "step": step, "d": 10.0 - step % 10, "status": "running",
                                    "instruction": HOSTILE_INSTRUCTION, "episode_uid": f"<b>{step}</b>",
                                    "detector": {"count": 0, "patience": 2, "threshold": 1.0, "fired": False}},
                             encode_jpeg(img))
            step += 1
            time.sleep(0.1)

    feeder = threading.Thread(target=publish, daemon=True)
    feeder.start()
    try:
        with web_app(data, srv.port) as url:
            yield {"url": url, "secret": secret, "telemetry": srv}
    finally:
        stop.set()
        srv.stop()


def _cards(page) -> list[dict]:
    out = []
    for fr in page.frames:
        try:
            info = fr.evaluate("() => document.querySelector('.card .name') ? {name: "
                               "document.querySelector('.card .name').textContent, frames: "
                               "Number(document.body.dataset.frames), conn: document.getElementById('conn').textContent,"
                               " pwned: window.__pwned || null, html: document.documentElement.outerHTML} : null")
        except Exception:  # noqa: BLE001 - a frame navigating away
            continue
        if info:
            out.append(info)
    return out


def test_hostile_names_stay_text_and_a_viewer_holds_no_robot_credential(live_site):
    from playwright.sync_api import sync_playwright

    from tests.endpoint import log_in

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(30_000)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        log_in(page, live_site["url"], "viewer1", PASSWORD)
        page.get_by_role("link", name="Live").click()
        page.get_by_role("heading", name="Live").wait_for()
        wait_until(lambda: len(_cards(page)) >= len(HOSTILE_NAMES), 60, "the live cards")
        wait_until(lambda: all(c["frames"] > 3 for c in _cards(page)), 60, "frames on every card")
        page.screenshot(path=str(ARTIFACTS / "live_hostile_names.png"))
        cards = _cards(page)
        assert sorted(c["name"] for c in cards) == sorted(HOSTILE_NAMES)  # shown verbatim, as text
        assert all(c["conn"] == "live" for c in cards), [c["conn"] for c in cards]
        assert [c["pwned"] for c in cards] == [None] * len(cards)
        assert page.evaluate("() => window.__pwned || null") is None and not dialogs
        html = page.content() + "".join(c["html"] for c in cards)
        assert live_site["secret"] not in html
        ticket = json.loads(cards[0]["html"].split("const CFG = ")[1].split(";\n")[0])["ticket"]
        browser.close()
    # the viewer's ticket reads the feed, and cannot register a robot
    srv = live_site["telemetry"]
    with connect(srv.url("/telemetry") + "?ticket=" + ticket) as ws:
        assert json.loads(ws.recv(5))["type"] == "hello"
    with connect(srv.url("/robot") + "?token=" + ticket) as ws:
        ws.send(json.dumps({"type": "register", "protocol": 1, "name": "sneaky", "camera": {"height": 8, "width": 8},
                            "action": {"dim": 2}}))
        err = json.loads(ws.recv(5))
        assert err["code"] == "unauthorized" and "robot token" in err["message"], err
