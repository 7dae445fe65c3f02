"""End to end in a real browser: headless Chromium (Debian's, driven by Playwright) against
the real app and the real worker, both started by the one-command launcher on localhost.

Flow: log in -> start a practice session of 8 robots -> the live feeds' frames change (frames/s
per robot measured in the browser) -> override one robot's detector -> label one episode in
the review queue -> see those actions in the audit log -> Ctrl-C stops app and worker.
Screenshots go to data/artifacts/e2e/ (git-ignored); the measured frame rates to
data/artifacts/e2e/live_fps.json.

The Stage-1 checkpoint the robots start from is a tiny one trained here (6 demonstrations,
one epoch, ~15 s) so the run stays short (~2 min in all, hence the slow marker:
``scripts/test.sh -m slow``); the job's extra params skip the pre-practice detector
check (a tiny model would fail it) and fix s. Skipped, with the reason, without Chromium.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.common import Launched, free_port, launch_chromium, wait_until
from tests.endpoint import playwright_or_skip

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "data" / "artifacts" / "e2e"
PASSWORD = "e2e-admin-password"
ROBOTS = 8
FPS_WINDOW_S = 6.0






@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-stage1")
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    for argv in (["demos", "--out", str(root / "demos"), "--n", "6", "--workers", "1", "--image-size", "32", "--quiet"],
                 ["sft", "--data", str(root / "demos"), "--out", str(root / "sft"), "--epochs", "1", "--d-model", "32",
                  "--n-layers", "1", "--eval-episodes", "0", "--batch-size", "32", "--threads", "1", "--device", "cpu",
                  "--quiet"]):
        subprocess.run([sys.executable, "-m", "core.cli", *argv], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=300)
    return root / "sft"


@pytest.fixture(scope="module")
def served(stage1, tmp_path_factory):
    """The launcher (worker + app) on free ports, over a database that already holds the demo
    task, the tiny checkpoint (promoted) and a few finished episodes to review."""
    from storage import init_db, repo
    from tests.ui.seeding import tiny_jpeg
    from ui import bootstrap

    data = tmp_path_factory.mktemp("e2e-data")
    db_path = data / "dojo.sqlite"
    db = init_db(str(db_path))
    with db.write() as s:
        task = bootstrap.seed_demo_task(s, fleet_size=ROBOTS)
        repo.update_task(s, task.id, detector_threshold=1.0, detector_patience=2)
        ck = repo.add_checkpoint(s, "sft", str(stage1 / "best_policy.pt"), task_id=task.id,
                                 metrics={"reward_checkpoint": str(stage1 / "best_stg.pt")})
        repo.promote(s, ck.id, require_not_worse=False)
        for i in range(3):
            repo.finish_episode(s, uid=f"e2e-review-{i}", task_id=task.id, checkpoint_id=ck.id,
                                instruction="push the red moon to the blue cube", source="practice",
                                steps=repo.steps_from_arrays(d=[8.0 - t * 0.5 for t in range(12)]),
                                frames=[tiny_jpeg(100 * i + t) for t in range(12)],
                                detector_success=i == 0, gt_success=i != 0, detector_threshold=1.0)
        task_id = task.id
    db.dispose()
    app = Launched(data, db_path, PASSWORD)
    try:
        yield {"url": app.url, "db": str(db_path), "task_id": task_id, "proc": app.proc, "log": app.log_path}
    finally:
        app.stop(30)


def _frame_counts(page) -> dict[str, tuple[int, float]]:
    """Per live card: (frames drawn so far, its own frames/s estimate)."""
    out = {}
    for fr in page.frames:
        try:
            info = fr.evaluate("() => document.getElementById('frame') && document.querySelector('.name') ? "
                               "[document.querySelector('.name').textContent, document.body.dataset.frames, "
                               "document.body.dataset.fps] : null")
        except Exception:  # noqa: BLE001 - a frame navigating away
            continue
        if info:
            out[info[0]] = (int(info[1]), float(info[2]))
    return out


@pytest.mark.slow
def test_supervise_practice_in_a_browser(served):
    from storage import init_db
    from storage.models import AuditEntry, Episode, PracticeSession, Robot

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    db = init_db(served["db"])
    t_start = time.monotonic()
    with playwright_or_skip() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1600, "height": 1300})
        page.set_default_timeout(30_000)
        page.goto(served["url"])

        # 1. log in
        page.get_by_label("Username", exact=True).fill("admin")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.screenshot(path=str(ARTIFACTS / "01_login.png"))
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Tasks & fleet").wait_for()

        # 2. start a practice session of 8 robots
        fleet = page.get_by_role("spinbutton", name="Robots (fleet size)")
        fleet.fill(str(ROBOTS))
        fleet.press("Tab")
        page.get_by_role("textbox", name="Extra practice params (JSON, optional)").fill(json.dumps(
            {"check_episodes": 0, "eval_every": 1000, "max_episodes": 100000, "tuples_per_iteration": 100000}))
        page.get_by_role("button", name="Start practice session").click()
        page.get_by_text(re.compile(r"Practice session \d+ started")).wait_for()
        with db.read() as s:
            ps = s.query(PracticeSession).order_by(PracticeSession.id.desc()).first()
        assert ps.created_by == "admin" and ps.status == "running"
        page.screenshot(path=str(ARTIFACTS / "02_tasks_session_started.png"))

        # the worker claims the job and registers its robots
        def robots_online():
            with db.read() as s:
                return s.query(Robot).filter(Robot.status == "online").count() >= ROBOTS
        wait_until(robots_online, 150, f"{ROBOTS} robots online (worker log: {served['log']})")

        # 3. the live grid: frames change; frames/s per robot measured in the browser
        page.get_by_role("link", name="Live").click()
        page.get_by_role("heading", name="Live").wait_for()
        wait_until(lambda: len(_frame_counts(page)) >= ROBOTS, 60, f"{ROBOTS} live cards")
        wait_until(lambda: all(n > 0 for n, _ in _frame_counts(page).values()), 120, "frames on every card")
        c0, t0 = _frame_counts(page), time.monotonic()
        time.sleep(FPS_WINDOW_S)
        c1, t1 = _frame_counts(page), time.monotonic()
        fps = {name: (c1[name][0] - c0[name][0]) / (t1 - t0) for name in c1 if name in c0}
        page.screenshot(path=str(ARTIFACTS / "03_live_grid.png"))
        (ARTIFACTS / "live_fps.json").write_text(json.dumps(
            {"robots": len(fps), "window_s": round(t1 - t0, 2), "fps_per_robot": {k: round(v, 2) for k, v in fps.items()},
             "min_fps": round(min(fps.values()), 2), "mean_fps": round(sum(fps.values()) / len(fps), 2)}, indent=2))
        print(f"\nlive feed frames/s per robot ({len(fps)} robots): {sorted(round(v, 1) for v in fps.values())}")
        assert len(fps) == ROBOTS and all(v > 0 for v in fps.values()), fps

        # 4. override one robot's detector (its running episode). The cards also stream the
        # session's greedy evaluation (not practice, nothing to override), so wait until
        # every robot is in a practice episode.
        def practising():
            with db.read() as s:
                return s.query(Episode).filter(Episode.status == "running").count() >= ROBOTS
        wait_until(practising, 300, f"{ROBOTS} practice episodes running (worker log: {served['log']})")
        page.get_by_role("button", name="✓ Success").first.click()

        def overridden():
            with db.read() as s:
                return s.query(Episode).filter(Episode.override_by == "admin").first()
        ep = wait_until(overridden, 30, "the override in the database")
        assert ep.override_success is True
        page.screenshot(path=str(ARTIFACTS / "04_live_override.png"))

        # 5. label one episode in the review queue
        page.get_by_role("link", name="Review").click()
        page.get_by_role("heading", name="Review queue").wait_for()
        page.get_by_role("button", name=re.compile(r"^Success \(S\)")).wait_for()
        page.locator("[data-testid='stPlotlyChart'] .main-svg").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / "05_review.png"))
        page.get_by_role("button", name=re.compile(r"^Success \(S\)")).click()

        def labelled():
            with db.read() as s:
                return s.query(Episode).filter(Episode.label_by == "admin").first()
        ep = wait_until(labelled, 30, "the label in the database")
        assert ep.label_success is True and ep.label_at is not None
        page.get_by_text(re.compile(r"labelled success")).wait_for()

        # 6. the audit log shows who did what
        page.get_by_role("link", name="Users").click()
        page.get_by_role("heading", name="Audit log").wait_for()
        table = page.locator("[data-testid='stTable']")
        table.wait_for()
        text = table.inner_text()
        for action in ("start_session", "override", "label", "login"):
            assert action in text, f"{action} missing from the audit log"
        page.screenshot(path=str(ARTIFACTS / "06_audit_log.png"))
        # the remaining pages render without an exception
        for name, shot in (("Training", "07_training.png"), ("Data", "08_data.png"),
                           ("Tasks & fleet", "09_tasks.png")):
            page.get_by_role("link", name=name).click()
            page.get_by_role("heading", name=name).wait_for()
            page.wait_for_timeout(2500)
            assert page.locator("[data-testid='stException']").count() == 0, name
            page.screenshot(path=str(ARTIFACTS / shot))
        browser.close()
    with db.read() as s:
        assert s.query(AuditEntry).filter(AuditEntry.action == "override", AuditEntry.username == "admin").count() >= 1

    # 7. Ctrl-C stops the worker and the app
    proc = served["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(40) == 0
    log = served["log"].read_text()
    assert "[dojo] stopped" in log, log[-2000:]
    print(f"e2e total {time.monotonic() - t_start:.0f} s")


@pytest.mark.slow
@pytest.mark.parametrize("page_name", ["Training", "Review"])
def test_a_chart_page_renders_on_a_fresh_servers_first_visit(page_name, tmp_path):
    """The first page a fresh server renders with plotly, right after log-in. It once failed
    with "partially initialized module 'pandas'" (plotly saw pandas half-imported by another
    thread); the flow above visits other pages first and did not catch it."""
    import urllib.request

    from tests.ui.seeding import PASSWORD as SEED_PASSWORD
    from tests.ui.seeding import seed

    db_path = tmp_path / "dojo.sqlite"
    seed(str(db_path), episodes=20, robots=2)
    port = free_port()
    env = {**os.environ, "DOJO_DATA": str(tmp_path), "DOJO_DB": str(db_path)}
    env.pop("DATABASE_URL", None)
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200
            except OSError:
                return False

        wait_until(up, 60, "the web app to answer")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with playwright_or_skip() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(30_000)
            page.goto(f"http://127.0.0.1:{port}")
            page.get_by_label("Username", exact=True).fill("admin")
            page.get_by_label("Password", exact=True).fill(SEED_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_role("heading", name="Tasks & fleet").wait_for()
            page.get_by_role("link", name=page_name).click()
            page.get_by_role("heading", name=page_name).wait_for()
            page.wait_for_timeout(3000)
            page.screenshot(path=str(ARTIFACTS / f"fresh_{page_name.lower()}.png"))
            errors = page.locator("[data-testid='stException']")
            assert errors.count() == 0, errors.first.inner_text()[:500]
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert "partially initialized" not in (tmp_path / "streamlit.log").read_text()
