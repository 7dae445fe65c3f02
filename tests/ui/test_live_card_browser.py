"""What a supervisor needs to judge a robot on the Live page, checked in a real browser (headless
Chromium through Playwright, as tests/security/test_live_page_browser.py): the web app (a Streamlit
server in a subprocess) logged in as a viewer, fed by a real telemetry endpoint. Each card shows
the robot's task and its running episode's instruction (from the frames; before any frame, the
one stored with the episode), and a click on the camera frame enlarges it, live.
Screenshots: data/artifacts/ui/ (git-ignored)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench.common import CHROMIUM, launch_chromium, wait_until
from tests.endpoint import log_in, web_app

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "data" / "artifacts" / "ui"
PASSWORD = "viewer-password-1"
FED, QUIET = "robot-fed", "robot-quiet"  # one gets frames, the other none (its instruction comes from the table)
FRAME_INSTRUCTION = "<b>push</b> the green star to the yellow pentagon"  # markup in it must show as text
STORED_INSTRUCTION = "push the red moon to the blue cube"


@pytest.fixture(scope="module")
def live_site(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test.sh does)")
    pytest.importorskip("playwright.sync_api", reason="playwright is pinned in requirements.txt: run scripts/setup.sh")
    from core.worker.access import ViewerAccess
    from core.worker.telemetry import TelemetryHub, WebsocketServer, encode_jpeg
    from storage import init_db, repo
    from storage.credentials import load_worker_secret
    from ui import bootstrap

    data = tmp_path_factory.mktemp("live-card")
    db = init_db(str(data / "dojo.sqlite"))
    with db.write() as s:
        task = bootstrap.seed_demo_task(s, fleet_size=2)
        task_name = task.name
        repo.create_user(s, "viewer1", PASSWORD, "viewer")
        ids = {}
        for name in (FED, QUIET):
            robot = repo.register_robot(s, name, task_id=task.id)
            robot.status, ids[name] = "online", robot.id
        repo.start_episode(s, uid="quiet-1", task_id=task.id, robot_id=ids[QUIET], instruction=STORED_INSTRUCTION)
    db.dispose()
    secret = load_worker_secret(data)
    tele = TelemetryHub(ViewerAccess(secret))
    srv = WebsocketServer({"/telemetry": tele.handler}, port=0)
    tele.attach(srv)
    srv.start()
    stop = threading.Event()

    def publish():
        img = np.zeros((64, 64, 3), np.uint8)
        img[8:24, 8:24] = (0, 200, 0)  # a green square on a grey table: something to see enlarged
        step = 0
        while not stop.is_set():
            img[32:, :] = 90 + (step * 7) % 100
            tele.publish(FED, {"robot_id": None, "step": step, "d": 12.0 - step % 12, "status": "running",
                               "instruction": FRAME_INSTRUCTION, "episode_uid": f"ep-{step // 12}",
                               "detector": {"count": 0, "patience": 2, "threshold": 2.0, "fired": False}},
                         encode_jpeg(img))
            step += 1
            time.sleep(0.1)

    feeder = threading.Thread(target=publish, daemon=True)
    feeder.start()
    try:
        with web_app(data, srv.port) as url:
            yield {"url": url, "task": task_name}
    finally:
        stop.set()
        srv.stop()


_CARD = """() => {
  const q = (s) => document.querySelector(s);
  if (!q('.card .name')) return null;
  const box = (e) => { const r = e.getBoundingClientRect(); return {w: r.width, h: r.height}; };
  return {name: q('#name').textContent, task: q('#task').textContent, instr: q('#instr').textContent,
          frames: Number(document.body.dataset.frames), zoom: document.body.dataset.zoom,
          zoomHidden: q('#zoom').hidden, frame: box(q('#frame')), big: box(q('#big')),
          bigSrc: q('#big').getAttribute('src') || '', bold: q('.card b b, #instr b') !== null};
}"""


def _cards(page) -> dict[str, tuple]:
    out = {}
    for fr in page.frames:
        try:
            info = fr.evaluate(_CARD)
        except Exception:  # noqa: BLE001 - a frame navigating away
            continue
        if info:
            out[info["name"]] = (fr, info)
    return out


def test_a_card_shows_task_and_instruction_and_enlarges_its_frame(live_site):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(30_000)
        log_in(page, live_site["url"], "viewer1", PASSWORD)
        page.get_by_role("link", name="Live").click()
        page.get_by_role("heading", name="Live").wait_for()
        wait_until(lambda: {FED, QUIET} <= set(_cards(page)), 60, "both live cards")
        wait_until(lambda: _cards(page)[FED][1]["frames"] > 3, 60, "frames on the fed card")
        cards = _cards(page)
        fed, quiet = cards[FED][1], cards[QUIET][1]
        assert fed["task"] == quiet["task"] == live_site["task"]
        assert fed["instr"] == f"\u201c{FRAME_INSTRUCTION}\u201d" and not fed["bold"]  # text, not markup
        assert quiet["instr"] == f"\u201c{STORED_INSTRUCTION}\u201d"  # no frame yet: the stored episode's
        assert fed["zoom"] == "0" and fed["zoomHidden"]
        page.screenshot(path=str(ARTIFACTS / "live_card.png"))

        frame = cards[FED][0]
        frame.click("#frame")
        wait_until(lambda: _cards(page)[FED][1]["zoom"] == "1", 10, "the enlarged frame")
        n0 = _cards(page)[FED][1]["frames"]
        wait_until(lambda: _cards(page)[FED][1]["frames"] > n0 + 2, 10, "frames while enlarged")
        fed = _cards(page)[FED][1]
        assert not fed["zoomHidden"] and fed["bigSrc"].startswith("data:image/jpeg;base64,")
        assert fed["big"]["w"] > 1.4 * fed["frame"]["w"] and fed["big"]["h"] > 1.4 * fed["frame"]["h"], fed
        page.screenshot(path=str(ARTIFACTS / "live_card_enlarged.png"))
        frame.click("#big")  # a second click closes it
        wait_until(lambda: _cards(page)[FED][1]["zoom"] == "0", 10, "the card again")
        browser.close()


def test_task_and_instruction_travel_as_script_safe_config_only():
    import json as _json

    from ui.config import Telemetry
    from ui.live import card_html

    task, instr = "T</script><img src=x onerror=alert(1)>", "__CFG__ <b>push</b> & go"
    html = card_html(robot_id=1, robot_name="r", threshold=2.0, telemetry=Telemetry(port=1, host="", ticket="t"),
                     task_name=task, instruction=instr)
    cfg = _json.loads(html.split("const CFG = ")[1].split(";\n")[0])
    assert (cfg["task"], cfg["instruction"]) == (task, instr)
    assert "<img src=x" not in html and "<b>push" not in html and html.count("</script>") == 1
