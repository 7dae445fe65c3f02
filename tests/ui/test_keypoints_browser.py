"""The Keypoints page in a real browser (headless Chromium through Playwright, the real Streamlit
server over a real SQLite file): a reviewer clicks the object and its target on a first frame, the
rings appear where clicked, Save writes them into the episode file as frame 0's keypoints and moves
on to the next episode without labels; the instruction shows as text. Screenshots:
data/artifacts/ui/keypoints*.png (git-ignored)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.common import free_port, launch_chromium, wait_until
from tests.core.datasets.dojo_builder import write_tiny_dataset
from tests.endpoint import log_in, playwright_or_skip, shown_on_failure, web_app

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "data" / "artifacts" / "ui"
PASSWORD = "reviewer-password-1"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from storage import init_db, repo
    from ui import bootstrap

    data = tmp_path_factory.mktemp("keypoints")
    root = write_tiny_dataset(data / "datasets" / "lab-demos", 3, keypoints_on=(0,), size=64)
    db = init_db(str(data / "dojo.sqlite"))
    with db.write() as s:
        bootstrap.seed_demo_task(s, fleet_size=1)
        repo.create_user(s, "rev1", PASSWORD, "reviewer")
    db.dispose()
    with web_app(data, free_port()) as url:
        yield {"url": url, "root": root, "db": str(data / "dojo.sqlite")}


def _status(page) -> str:
    return page.get_by_test_id("stMainBlockContainer").inner_text()


def test_a_reviewer_clicks_object_and_target_and_they_land_in_the_episode_file(site):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_or_skip() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        with shown_on_failure(page, ARTIFACTS / "keypoints_failure.png"):
            log_in(page, site["url"], "rev1", PASSWORD)
            page.get_by_role("link", name="Keypoints").click()
            page.get_by_role("heading", name="Keypoints").wait_for()
            wait_until(lambda: "0 of 3 episodes clicked" in _status(page), 30, "the progress line")
            wait_until(lambda: "push the <b>red</b> block 1 to the top left" in _status(page), 30,
                       "the instruction, its markup shown as text")
            assert page.locator("b", has_text="red").count() == 0
            img = page.frame_locator("iframe[title*='streamlit_image_coordinates']").locator("img")
            img.wait_for()
            box = img.bounding_box()
            assert box and box["width"] > 300, box  # the 64-px frame shown large enough to click on
            w, h = box["width"], box["height"]
            img.click(position={"x": w * 0.25, "y": h * 0.25})  # the object: (u, v) = (-0.5, -0.5)
            wait_until(lambda: "1. object: (-0.50, -0.50)" in _status(page), 20, "the first click")
            img.click(position={"x": w * 0.75, "y": h * 0.625})  # its target: (0.5, 0.25)
            wait_until(lambda: "2. target: (+0.50, +0.25)" in _status(page), 20, "the second click")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "keypoints.png"))
            before = dict(np.load(site["root"] / "episodes" / "ep_000000001.npz"))
            page.get_by_role("button", name="Save and next").click()
            wait_until(lambda: "1 of 3 episodes clicked" in _status(page), 20, "the saved click")
            wait_until(lambda: "block 2 to the top left" in _status(page), 20, "the next episode without labels")
            frames = page.locator("iframe[title*='streamlit_image_coordinates']")  # the last episode's goes stale
            wait_until(lambda: frames.count() == 1 and (frames.first.bounding_box() or {}).get("height", 0) > 300, 20,
                       "the next first frame alone on the page")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "keypoints_next.png"))
        browser.close()
    after = dict(np.load(site["root"] / "episodes" / "ep_000000001.npz"))
    kp = after.pop("keypoints")
    assert kp.shape == (7, 2, 2) and np.isnan(kp[1:]).all()
    assert np.allclose(kp[0], [[-0.5, -0.5], [0.5, 0.25]], atol=0.02), kp[0]  # within a shown pixel or two
    assert all(np.array_equal(after[k], v) for k, v in before.items())
    from storage import init_db, repo

    with init_db(site["db"]).read() as s:
        entry = repo.audit_log(s, action="label_keypoints")[0]
    assert entry.username == "rev1" and entry.details["file"] == "episodes/ep_000000001.npz"
