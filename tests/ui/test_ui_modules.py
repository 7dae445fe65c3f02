"""The UI process stays free of torch and MuJoCo; queries, charts and the live card alone."""
from __future__ import annotations

import ast
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage import init_db, repo
from storage.models import Episode, User
from ui import charts, queries
from ui.config import Telemetry
from ui.live import card_html

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mujoco", "core.learning", "core.worker", "core.cli", "sim_backends", "transformers")
"""What the UI process must never load; ``core.method`` (torch-free) it may."""


def test_ui_imports_no_torch_or_mujoco():
    code = ("import sys; import ui.app_state, ui.live, ui.dataio, ui.charts, ui.queries, ui.bootstrap, ui.actions, "
            "ui.keypoints; "
            f"bad = [m for m in {HEAVY!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    for path in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "ui").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert not any(n == h or n.startswith(h + ".") for h in HEAVY), f"{path.name} imports {n}"


def test_success_curve_blocks():
    rows = [{"id": i, "checkpoint_id": 1 + i // 10, "success": i % 4 == 0 or i >= 10, "gt": None, "return": 1.0,
             "task_id": 1} for i in range(20)]
    curve = queries.success_curve(rows, bucket=10)
    assert [c["episodes"] for c in curve] == [10, 20]
    assert curve[0]["success"] == 0.3 and curve[1]["success"] == 1.0 and curve[1]["checkpoint_id"] == 2
    assert charts.success_gain(curve) == 0.7
    fig = charts.success_vs_episodes(curve)
    assert len(fig.data) == 1
    assert all(c["complete"] and c["n"] == 10 for c in curve)


def test_the_block_still_filling_is_drawn_apart_from_the_trend():
    rows = [{"id": i, "checkpoint_id": 1, "success": i < 20, "gt": i < 10, "return": 2.0 if i < 20 else -1.0,
             "task_id": 1} for i in range(23)]
    curve = queries.success_curve(rows, bucket=10)
    assert [(c["episodes"], c["n"], c["complete"]) for c in curve] == [(10, 10, True), (20, 10, True), (23, 3, False)]
    fig = charts.success_vs_episodes(curve)
    trend, gt, partial = fig.data
    assert list(trend.x) == [10, 20] and list(gt.x) == [10, 20]
    assert list(partial.x) == [23] and list(partial.y) == [0.0] and partial.mode == "markers"
    assert partial.name == "block in progress (n=3)"
    ret = charts.returns(curve)
    assert list(ret.data[0].y) == [2.0, 2.0] and list(ret.data[1].y) == [-1.0]


def test_evaluations_sit_on_the_practice_episode_axis_with_intervals():
    # 30 practice episodes: 10 by checkpoint 2, 20 by checkpoint 3; checkpoint 1 is Stage 1.
    rows = [{"id": i, "checkpoint_id": 2 if i < 10 else 3, "success": True, "gt": None, "return": 1.0, "task_id": 1}
            for i in range(30)]
    pts = queries.evaluated_points(rows, {3: (0.45, 100), 1: (0.30, 50), 4: (0.5, 0)})
    assert [(p["checkpoint_id"], p["episodes"]) for p in pts] == [(1, 0), (3, 10), (4, 30)]
    assert pts[0]["lo"] < 0.30 < pts[0]["hi"] and pts[1]["hi"] - pts[1]["lo"] < pts[0]["hi"] - pts[0]["lo"]
    assert pts[2]["lo"] is None  # no episode count: no interval
    fig = charts.success_vs_episodes(queries.success_curve(rows, 10), evaluated=pts)
    line = fig.data[-1]
    assert line.name.startswith("evaluated") and list(line.x) == [0, 10, 30] and list(line.y) == [0.30, 0.45, 0.5]
    assert line.error_y.array[0] > 0 and line.error_y.array[2] == 0


def test_success_by_checkpoint_draws_the_evaluations_across_the_bars():
    from storage.queries import SuccessStats

    stats = [SuccessStats(1, 20, 8, 20, 5, 0, 0), SuccessStats(11, 20, 9, 20, 6, 0, 0)]
    fig = charts.success_by_checkpoint(stats, {11: (0.41, 100), 1: (0.30, 50)})
    assert [t.type for t in fig.data] == ["bar", "bar", "scatter"]
    line = fig.data[2]
    assert list(line.x) == ["#1", "#11"] and list(line.y) == [0.30, 0.41] and list(line.text) == ["n=50", "n=100"]
    assert len(charts.success_by_checkpoint(stats).data) == 2


def test_queries_on_seeded_db(seeded):
    db = init_db(seeded.url)
    with db.read() as s:
        running = queries.running_episodes(s)
        rows = queries.practice_outcomes(s, seeded.task_id)
        effort = queries.human_effort_per_hour(s)
        jobs = queries.job_rows(s)
    assert set(running) == set(seeded.robot_ids)
    assert len(rows) >= 60 and rows[0]["id"] < rows[-1]["id"]
    assert sum(o for _, o, _ in effort) >= 1 and sum(lab for _, _, lab in effort) >= 1
    assert {j["kind"] for j in jobs} >= {"demos", "sft", "practice"}
    hour = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    fig = charts.effort_and_gain(effort, [(hour, 10, 5)])
    assert len(fig.data) == 3
    lone = charts.effort_and_gain([], [(hour, 10, 5)])  # one hour alone: an hour-wide axis, not 1 ms
    lo, hi = lone.layout.xaxis.range
    assert hi - lo == dt.timedelta(hours=1)



def test_threshold_sweep_chart_marks_the_s_in_use_and_the_suggestion():
    from core.method.detector import sweep_judged

    out = sweep_judged([[9, 2, 0.5], [9, 0.9], [9, 8, 7]], [True, False, False], [True, True, False],
                       [0.25, 0.5, 1.0, 2.0], patience=1)
    fig = charts.threshold_sweep(out["rows"], current=1.0, best=out["best"]["threshold"])
    assert [t.name for t in fig.data] == ["precision", "recall", "share it cannot tell (ended earlier)"]
    assert list(fig.data[2].y) == [2 / 3, 1 / 3, 0.0, 0.0]  # at 0.25 both fired episodes are undecided
    assert sorted(sh.x0 for sh in fig.layout.shapes) == sorted([1.0, out["best"]["threshold"]])
    assert len(charts.threshold_sweep(out["rows"]).layout.shapes) == 0
    same = charts.threshold_sweep(out["rows"], current=1.0, best=1.0)  # one line, one label, not two on top
    assert len(same.layout.shapes) == 1 and same.layout.annotations[0].text == "in use and suggested: 1"


def test_judged_checkpoints_are_those_with_labels_or_overrides(seeded):
    db = init_db(seeded.url)
    with db.read() as s:
        ids = queries.judged_checkpoints(s, seeded.task_id)
        judged = {e.checkpoint_id for e in s.scalars(select(Episode).where(
            (Episode.label_success.is_not(None)) | (Episode.override_success.is_not(None))))}
    assert ids == sorted(judged) and ids

def test_live_card_carries_config_safely():
    html = card_html(robot_id=3, robot_name="robot-</script>", threshold=1.5,
                     telemetry=Telemetry(port=9999, host="", ticket="t0k"))
    cfg = json.loads(html.split("const CFG = ")[1].split(";\n")[0])
    assert cfg == {"name": "robot-</script>", "id": "3", "port": 9999, "host": "", "ticket": "t0k", "threshold": 1.5}
    assert html.count("</script>") == 1  # the robot name cannot end the script early


@pytest.mark.parametrize("name", ["__CFG__<img src=x onerror=alert(1)>", "__NAME__<b>x</b>", "__H__<svg onload=1>",
                                  "a&b<!--", '"><script>alert(1)</script>'])
def test_a_hostile_robot_name_never_becomes_live_html(name):
    """Placeholders are substituted in one pass: a name holding one is shown as text, and the
    card's markup is the template's own whatever the name (issue 31, item 1)."""
    html = card_html(robot_id=3, robot_name=name, threshold=1.5, telemetry=Telemetry(port=9999, host="", ticket="t"))
    benign = card_html(robot_id=3, robot_name="robot", threshold=1.5, telemetry=Telemetry(port=9999, host="", ticket="t"))
    tags = re.compile(r"<[a-zA-Z/!][^>]*>")
    assert len(tags.findall(html)) == len(tags.findall(benign))  # no tag from the name
    assert html.split('id="name">')[1].startswith("</div>")  # filled in by textContent, from the config
    cfg = json.loads(html.split("const CFG = ")[1].split(";\n")[0])
    assert cfg["name"] == name


def test_latest_paired_gain_picks_the_newest_paired_evaluation_and_judges_it():
    from types import SimpleNamespace as NS

    cks = [NS(id=3, metrics={"eval_gain": 0.1, "eval_gain_lo": -0.02, "eval_gain_hi": 0.2, "eval_gain_seeds": 100}),
           NS(id=5, metrics={"eval_success": 0.5}),  # evaluated, not paired (Stage 1)
           NS(id=4, metrics={"eval_gain": -0.2, "eval_gain_lo": -0.3, "eval_gain_hi": -0.1, "eval_gain_seeds": 100}),
           NS(id=6, metrics=None)]
    got = queries.latest_paired_gain(cks)
    assert got["checkpoint_id"] == 4 and got["verdict"] == "drop beyond noise" and got["seeds"] == 100
    assert queries.latest_paired_gain(cks[:1])["verdict"] == "within noise"
    cks[0].metrics["eval_gain_lo"] = 0.01
    assert queries.latest_paired_gain(cks[:2])["verdict"] == "rise beyond noise"
    assert queries.latest_paired_gain(cks[1:2]) is None


def test_detector_figures_name_where_precision_was_measured():
    from ui.queries import detector_figures

    check = {"threshold_s": 2.0, "precision": 0.84, "recall": 0.94, "source": "the starting policy's rollouts"}
    assert detector_figures(check) == "precision 0.84, recall 0.94, the starting policy's rollouts"
    stage1 = {"threshold_s": 1.75, "demo_precision": 0.862, "demo_recall": 0.9615}
    assert detector_figures(stage1) == "precision 0.86, recall 0.96, on held-out demonstrations"
    assert detector_figures({"threshold_s": 1.0, "precision": None, "recall": 0.5}) == "precision -, recall 0.50"
    assert "not measured yet" in detector_figures({"threshold_s": 1.0})
