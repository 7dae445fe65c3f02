"""End to end in a real browser: from an empty task list to practice, by clicking only.

Headless Chromium (Debian's, driven by Playwright) against the real app and the real worker,
both started by the one-command launcher over a fresh SQLite database. As the admin:

1. New task (Tasks & fleet): create a Meta-World ``drawer-close-v3`` task from the catalog;
2. a Gymnasium id the backend check refuses (CartPole-v1: a discrete action space) and an id
   not in the catalog: each refused, the checker's message shown, nothing saved;
3. a bad tabletop configuration (Block2Block with one object): refused the same way;
4. a tabletop Block2Location task: created and selected;
5. Prepare it: Generate demonstrations (6), Train Stage 1 (1 epoch, 1-minute cap, the
   narrowest model), the worker runs both jobs;
6. Training: evaluate its checkpoint on a few test seeds;
7. Tasks & fleet: start a practice session and wait for its first finished practice episode.

Then steps 5-7 again for the Meta-World task (``DOJO_E2E_METAWORLD_PREP=0`` skips them; about
1.5 of the run's ~3.5 minutes on 2 cores). Screenshots go to data/artifacts/e2e-tasks/
(git-ignored); step timings to data/artifacts/e2e-tasks/timings.json. Tiny sizes keep it to a
few minutes, hence the slow marker (``scripts/test.sh -m slow``); the practice session's extra
params skip the pre-practice detector check (a tiny model would fail it) and shrink its
evaluations. Skipped, with the reason, without Chromium.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from bench.common import Launched, launch_chromium, wait_until
from tests.endpoint import log_in, playwright_or_skip

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "data" / "artifacts" / "e2e-tasks"
PASSWORD = "e2e-admin-password"
MW_NAME = "e2e drawer close"
TT_NAME = "e2e block to location"
DEMOS = 6
EVAL_SEEDS = 3
FLEET = 2
PRACTICE_EXTRA = {"check_episodes": 0, "eval_episodes": 2, "eval_every": 1000, "max_episodes": 100000}
JOB_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The launcher (worker + app) on free ports, over a fresh database (only the admin)."""
    from storage import init_db

    data = tmp_path_factory.mktemp("e2e-tasks-data")
    db_path = data / "dojo.sqlite"
    init_db(str(db_path)).dispose()
    app = Launched(data, db_path, PASSWORD, timeout_s=60)
    try:
        yield {"url": app.url, "db": str(db_path), "proc": app.proc, "log": app.log_path}
    finally:
        app.stop(30)


# --- Streamlit widgets, by their labels -----------------------------------------------------

def _select(page, label: str | re.Pattern, option: str | re.Pattern) -> None:
    """Pick ``option`` in the selectbox named ``label`` (a combobox; a string label or option
    is matched exactly). Nothing to do when it already shows the option; the dropdown
    is opened again if a rerun closed it before the click."""
    box = page.get_by_role("combobox", name=label, **({"exact": True} if isinstance(label, str) else {})).first
    box.wait_for()
    shown = box.input_value()
    if shown == option if isinstance(option, str) else option.search(shown):
        return
    item = page.get_by_role("option", name=option, **({"exact": True} if isinstance(option, str) else {})).first
    for attempt in range(4):
        box.click()
        try:
            item.wait_for(timeout=5000)
            item.click(timeout=5000)
            break
        except Exception:  # noqa: BLE001 - a rerun closed the dropdown: open it again
            if attempt == 3:
                page.screenshot(path=str(ARTIFACTS / "failed_select.png"))
                raise AssertionError(f"no option {option!r} in {label!r} (shows {box.input_value()!r}; options "
                                     f"{page.get_by_role('option').all_inner_texts()})") from None
            page.keyboard.press("Escape")
            page.wait_for_timeout(1000)
    page.wait_for_timeout(500)


def _number(page, label: str, value) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def _search(page, query: str) -> None:
    box = page.get_by_role("textbox", name="Search the catalog")
    box.fill(query)
    box.press("Enter")
    page.wait_for_timeout(800)


def _shot(page, name: str) -> None:
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _goto(page, link: str, heading: str | None = None) -> None:
    page.get_by_role("link", name=link).click()
    page.get_by_role("heading", name=heading or link).wait_for()
    page.wait_for_timeout(1500)


# --- the database -----------------------------------------------------------------------------

def _task_names(db) -> list[str]:
    from storage import repo

    with db.read() as s:
        return sorted(t.name for t in repo.list_tasks(s))


def _task_id(db, name: str) -> int:
    from storage import repo

    with db.read() as s:
        return repo.get_task(s, name).id


def _click_queues(page, button, db, task_id: int, kind: str) -> None:
    """Click ``button`` until a ``kind`` job is queued for the task (a click that lands while
    the page is still re-running after the last input is lost; the page's toast is too brief
    to wait on)."""
    from storage.models import Job

    def queued():
        with db.read() as s:
            return s.query(Job.id).filter(Job.task_id == task_id, Job.kind == kind).first()
    for attempt in range(3):
        page.wait_for_timeout(1000)
        button.click()
        try:
            wait_until(queued, 15, f"a {kind} job queued for task {task_id}")
            return
        except TimeoutError:
            if attempt == 2:
                page.screenshot(path=str(ARTIFACTS / f"failed_{kind}_click.png"))
                raise


def _wait_job(db, task_id: int, kind: str, log: Path, timeout: float = JOB_TIMEOUT_S):
    """The task's newest ``kind`` job, once done; fails with its error if it failed."""
    from storage.models import Job

    def finished():
        with db.read() as s:
            j = s.query(Job).filter(Job.task_id == task_id, Job.kind == kind).order_by(Job.id.desc()).first()
            if j is not None and j.status in ("done", "failed", "cancelled"):
                return {"id": j.id, "status": j.status, "error": j.error, "result": j.result or {},
                        "seconds": (j.finished_at - j.started_at).total_seconds() if j.started_at and j.finished_at
                        else None}
    job = wait_until(finished, timeout, f"the {kind} job of task {task_id} (worker log: {log})", every=1.0)
    assert job["status"] == "done", f"{kind} job {job['id']} {job['status']}: {(job['error'] or '')[-2000:]}"
    return job


def _refused(page, db, before: list[str], *, needle: str | re.Pattern, shot: str) -> str:
    """The Create click was refused: an error with the checker's message, nothing saved."""
    err = page.locator("[data-testid='stAlert']").filter(has_text="Not created:").first
    err.wait_for(timeout=180_000)
    text = err.inner_text()
    assert (re.search(needle, text) if isinstance(needle, re.Pattern) else needle in text), text
    err.scroll_into_view_if_needed()
    _shot(page, shot)
    assert _task_names(db) == before
    return text


# --- the flow ----------------------------------------------------------------------------------

def _create(page, db, query: str, option: str | re.Pattern, name: str, *, backend: str,
            family: str | None = None, image_size: int | None = None, shot: str) -> int:
    _search(page, query)
    _select(page, re.compile(r"^Start from"), option)
    if family:
        _select(page, "Family", family)
    page.get_by_role("textbox", name="Name", exact=True).fill(name)
    if image_size:
        _number(page, "Image size (pixels, square)", image_size)
    page.get_by_role("button", name="Create", exact=True).click()
    page.locator("[data-testid='stAlert']").filter(has_text=f"created ({backend})").first.wait_for(timeout=300_000)
    _shot(page, shot)
    assert name in _task_names(db)
    return _task_id(db, name)


def _prepare(page, db, served, name: str, task_id: int, prefix: str) -> dict:
    """Generate demonstrations, Train Stage 1, evaluate, practise: every step a click."""
    from storage import repo
    from storage.models import Episode

    times = {}
    _goto(page, "Tasks & fleet")
    _select(page, "Task", name)
    page.get_by_text("Prepare: demonstrations and Stage 1").first.wait_for()
    form = page.locator("[data-testid='stForm']").filter(has_text="Demonstrations (the task")
    if not form.get_by_role("spinbutton", name="Episodes", exact=True).is_visible():
        page.get_by_text("Prepare: demonstrations and Stage 1").first.click()
    _number(page, "Episodes", DEMOS)
    t0 = time.monotonic()
    _click_queues(page, page.get_by_role("button", name="Generate demonstrations"), db, task_id, "demos")
    _shot(page, f"{prefix}_1_demos_queued.png")
    demos = _wait_job(db, task_id, "demos", served["log"])
    times["demos_s"] = round(time.monotonic() - t0, 1)
    assert demos["result"].get("episodes") == DEMOS, demos["result"]

    # the Stage-1 form lists the finished demonstrations after a rerun: leave the page and come back
    # (the Task select does not survive the page switch: pick the task again)
    _goto(page, "Training")
    _goto(page, "Tasks & fleet")
    _select(page, "Task", name)
    if not page.get_by_role("spinbutton", name="Epochs", exact=True).is_visible():
        page.get_by_text("Prepare: demonstrations and Stage 1").first.click()
    _select(page, "Demonstrations", re.compile(rf"job {demos['id']}: {DEMOS} episodes"))
    _number(page, "Epochs", 1)
    _number(page, "Time cap (minutes)", 1)
    _select(page, "Model width", "64")
    t0 = time.monotonic()
    _click_queues(page, page.get_by_role("button", name="Train Stage 1"), db, task_id, "sft")
    _shot(page, f"{prefix}_2_stage1_queued.png")
    sft = _wait_job(db, task_id, "sft", served["log"])
    times["sft_s"] = round(time.monotonic() - t0, 1)
    ck_id = sft["result"]["checkpoint_id"]
    with db.read() as s:
        ck = repo.get_checkpoint(s, ck_id)
        assert ck.task_id == task_id and ck.stage == "sft"
        assert ck.promoted, f"the Stage-1 checkpoint {ck_id} was not promoted: {ck.metrics}"
    page.wait_for_timeout(4000)  # the Prepare section's fragment refreshes every 3 s
    _shot(page, f"{prefix}_3_prepared.png")

    # Training: evaluate the checkpoint on a few test seeds
    _goto(page, "Training")
    _select(page, "Task", name)
    page.get_by_role("heading", name="Evaluate a checkpoint").wait_for()
    _select(page, "Checkpoint", f"#{ck_id}")
    _number(page, "Test seeds", EVAL_SEEDS)
    t0 = time.monotonic()
    _click_queues(page, page.get_by_role("button", name=f"Evaluate #{ck_id} on {EVAL_SEEDS} test seeds"), db, task_id,
                  "eval")
    _wait_job(db, task_id, "eval", served["log"])
    times["eval_s"] = round(time.monotonic() - t0, 1)
    with db.read() as s:
        ck = repo.get_checkpoint(s, ck_id)
        assert ck.eval_success is not None and ck.eval_episodes == EVAL_SEEDS, (ck.eval_success, ck.eval_episodes)
    _goto(page, "Tasks & fleet")
    _goto(page, "Training")  # re-render with the evaluation landed
    _select(page, "Task", name)
    page.get_by_role("heading", name="Compare evaluated checkpoints").wait_for()
    page.get_by_role("heading", name="Evaluate a checkpoint").scroll_into_view_if_needed()
    _shot(page, f"{prefix}_4_evaluated.png")

    # Tasks & fleet: start a practice session, wait for its first finished practice episode
    _goto(page, "Tasks & fleet")
    _select(page, "Task", name)
    _number(page, "Robots (fleet size)", FLEET)
    page.get_by_role("textbox", name="Extra practice params (JSON, optional)").fill(json.dumps(PRACTICE_EXTRA))
    t0 = time.monotonic()
    page.get_by_role("button", name="Start practice session").click()
    page.get_by_text(re.compile(r"Practice session \d+ started")).wait_for()
    _shot(page, f"{prefix}_5_practice_started.png")

    def first_episode():
        with db.read() as s:
            return s.query(Episode).filter(Episode.task_id == task_id, Episode.source == "practice",
                                           Episode.status == "finished").order_by(Episode.id).first()

    def practice_failed():
        from storage.models import Job
        with db.read() as s:
            j = s.query(Job).filter(Job.task_id == task_id, Job.kind == "practice").order_by(Job.id.desc()).first()
            return j is not None and j.status == "failed" and (j.error or "failed")

    def episode_or_failure():
        err = practice_failed()
        assert not err, f"the practice job failed: {str(err)[-2000:]}"
        return first_episode()
    ep = wait_until(episode_or_failure, JOB_TIMEOUT_S, f"the first practice episode (worker log: {served['log']})",
                    every=1.0)
    times["practice_first_episode_s"] = round(time.monotonic() - t0, 1)
    assert ep.length and ep.length > 0 and ep.checkpoint_id is not None
    page.wait_for_timeout(3000)
    _shot(page, f"{prefix}_6_practice_episode.png")
    # stop it (frees the worker for the next task)
    page.get_by_role("button", name="Stop", exact=True).first.click()
    page.wait_for_timeout(2000)
    return times


@pytest.mark.slow
def test_new_tasks_to_practice_in_a_browser(served):
    from storage import init_db

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    db = init_db(served["db"])
    t_start = time.monotonic()
    timings = {}
    with playwright_or_skip() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.set_default_timeout(60_000)
        log_in(page, served["url"], "admin", PASSWORD)
        _shot(page, "01_tasks_empty.png")

        # New task: the catalog loads in a subprocess (Meta-World and Gymnasium imported once)
        page.get_by_text("New task", exact=True).first.click()
        page.get_by_role("textbox", name="Search the catalog").wait_for(timeout=180_000)

        # 1. Meta-World drawer-close-v3
        t0 = time.monotonic()
        mw_id = _create(page, db, "drawer-close-v3", re.compile(r"^\[Meta-World\] Meta-World drawer-close-v3"),
                        MW_NAME, backend="metaworld", shot="02_metaworld_created.png")
        timings["create_metaworld_s"] = round(time.monotonic() - t0, 1)

        # 2. Gymnasium: an id not in the catalog cannot be picked; one the check refuses is not saved
        before = _task_names(db)
        _search(page, "NoSuchEnv-v0")
        page.get_by_text("Nothing in the catalog matches.").wait_for()
        _shot(page, "03_gym_unknown_id.png")
        _search(page, "CartPole-v1")
        _select(page, re.compile(r"^Start from"), re.compile(r"^\[Gymnasium\] .*CartPole-v1"))
        page.get_by_role("textbox", name="Name", exact=True).fill("e2e cartpole")
        page.get_by_role("textbox", name=re.compile(r"^Instruction phrasings")).fill("balance the pole")
        page.get_by_role("button", name="Create", exact=True).click()
        gym_err = _refused(page, db, before, needle=re.compile(r"(?i)action space|Discrete|refused"),
                           shot="04_gym_refused.png")

        # 3. tabletop: Block2Block with one object
        _search(page, "block2location lone red moon")
        _select(page, re.compile(r"^Start from"), "[tabletop] Tabletop lone object: the red moon alone")
        _select(page, "Family", "block2block")
        page.get_by_role("textbox", name="Name", exact=True).fill("e2e one block")
        page.get_by_role("button", name="Create", exact=True).click()
        cfg_err = _refused(page, db, before, needle="needs at least 2 objects", shot="05_config_refused.png")

        # 4. tabletop Block2Location (small images keep the jobs short)
        t0 = time.monotonic()
        tt_id = _create(page, db, "block2location", "[tabletop] Tabletop Block2Location: push a block to a place",
                        TT_NAME, backend="tabletop", family="block2location", image_size=32,
                        shot="06_tabletop_created.png")
        timings["create_tabletop_s"] = round(time.monotonic() - t0, 1)
        # the new task is selected
        assert page.get_by_role("combobox", name="Task", exact=True).input_value() == TT_NAME

        # 5-7. prepare, evaluate, practise
        timings["tabletop"] = _prepare(page, db, served, TT_NAME, tt_id, "07_tabletop")
        if os.environ.get("DOJO_E2E_METAWORLD_PREP", "1") != "0":
            timings["metaworld"] = _prepare(page, db, served, MW_NAME, mw_id, "08_metaworld")
        _goto(page, "Tasks & fleet")
        _select(page, "Task", TT_NAME)
        page.get_by_role("heading", name="Jobs").scroll_into_view_if_needed()
        _shot(page, "09_jobs.png")
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()

    from storage import repo
    with db.read() as s:
        # (the launcher seeds the demo task too; the refused ones left no entry)
        by_target = {e.target_id: e.username for e in repo.audit_log(s, action="create_task", limit=20)}
        assert by_target.get(str(mw_id)) == "admin" and by_target.get(str(tt_id)) == "admin", by_target
        assert len(_task_names(db)) == len(by_target), (_task_names(db), by_target)
    timings["total_s"] = round(time.monotonic() - t_start, 1)
    (ARTIFACTS / "timings.json").write_text(json.dumps(
        {**timings, "gym_refusal": gym_err, "config_refusal": cfg_err}, indent=2))
    print("\n" + json.dumps(timings, indent=2))
