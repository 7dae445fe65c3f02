"""bench.pretraining: its plans, its refusals, the arithmetic of its summary, and (slow) a tiny run."""
from __future__ import annotations

import json

import pytest

from bench import pretraining as PT
from core.method.stats import paired_gain


def test_the_full_plan_is_what_the_issue_asks_and_the_quick_one_is_smaller():
    assert PT.FULL["seeds"] >= 2 and PT.FULL["eval_episodes"] >= 300
    assert PT.FULL["real2sim"] and PT.FULL["novel"] and PT.FULL["metaworld"] and PT.FULL["mt10"]
    assert PT.QUICK["seeds"] == 1 and not (PT.QUICK["novel"] or PT.QUICK["metaworld"])
    assert PT.QUICK["practice_episodes"] < PT.FULL["practice_episodes"]
    assert set(PT.DEFAULT_ARMS) == {"scratch_kp", "scratch", "pretrained", "pretrained_kp"}
    kp = {a: PT.policy_for(a, "mobilenet_v2") for a in PT.ARMS}
    assert kp["scratch"].keypoint_aux_weight == 0 and kp["scratch_kp"].keypoint_aux_weight > 0
    assert kp["pretrained"].image_encoder == "mobilenet_v2" and kp["scratch_kp_first"].image_encoder == "scratch"


@pytest.mark.parametrize("argv,word", [(["--arms", "scratch,imagenet"], "imagenet"),
                                       (["--backbone", "resnet50"], "resnet50"),
                                       (["--real2sim-arms", "lab_kp"], "lab_kp"),
                                       (["--parts", "tabletop,atari"], "atari")])
def test_bad_choices_are_refused_before_any_work(tmp_path, capsys, argv, word):
    with pytest.raises(SystemExit):
        PT.main(argv + ["--root", str(tmp_path / "r")])
    assert word in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_partial_runs_write_their_own_result_names():
    """A run of some parts, arms or seeds on the full plan's root must not overwrite the whole plan's figures."""
    def tag(argv):
        return PT.file_tag(*PT.parse(argv))

    assert tag([]) == "" and tag(["--quick"]) == "-quick"
    assert tag(["--parts", "tabletop", "--seeds", "1"]) == "-tabletop-seeds1"
    assert tag(["--parts", "metaworld"]) == "-metaworld"
    assert tag(["--quick", "--parts", "real2sim", "--arms", "scratch"]) == "-quick-real2sim"
    assert tag(["--quick", "--arms", "scratch_kp_first"]) == "-quick-scratch_kp_first"
    assert PT.plan_parts(PT.FULL) == list(PT.PARTS) and PT.plan_parts(PT.QUICK) == ["tabletop"]


def test_the_summary_pools_training_seeds_and_pairs_on_the_same_test_seeds():
    rows = [{"bc": [0, 0, 1, 1], "si": [1, 0, 1, 1], "bc_paraphrase": [0, 0, 0, 1], "si_paraphrase": [1, 0, 0, 1],
             "detector": (0.8, 0.6), "stg_mae": 3.0, "keypoint_err": (0.1, 0.2), "si_episodes": 40, "train_minutes": 1},
            {"bc": [1, 0, 0, 0], "si": [1, 1, 0, 1], "bc_paraphrase": [0, 0, 0, 0], "si_paraphrase": [1, 0, 0, 0],
             "detector": (1.0, 0.4), "stg_mae": 5.0, "keypoint_err": (0.3, 0.4), "si_episodes": 44, "train_minutes": 3}]
    out = PT.summarise(rows)
    g = paired_gain([0, 0, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 0, 1])
    assert out["bc"] == 3 / 8 and out["si"] == 6 / 8 and out["gain"] == pytest.approx(g["gain"])
    assert (out["gain_lo"], out["gain_hi"]) == pytest.approx(g["ci"])
    assert out["detector_precision"] == pytest.approx(0.9) and out["stg_mae"] == 4.0
    assert out["si_paraphrase_ratio"] == pytest.approx((3 / 8) / (6 / 8))
    assert out["bc_per_seed"] == [0.5, 0.25] and out["si_episodes"] == [40, 44]


@pytest.mark.slow
def test_a_tiny_run_reports_every_arm_figure(tmp_path, capsys):
    result = PT.main(["--quick", "--root", str(tmp_path), "--pool", "40", "--epochs", "1", "--eval-episodes", "4",
                      "--practice-episodes", "8", "--select-episodes", "2", "--fleet", "2", "--check-episodes", "4",
                      "--arms", "scratch,pretrained_kp", "--workers", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("RESULT {") and set(json.loads(last[len("RESULT "):])) >= {"scratch", "pretrained_kp"}
    for arm in ("scratch", "pretrained_kp"):
        r = result[arm]
        for k in ("bc", "si", "gain", "gain_lo", "gain_hi", "detector_precision", "detector_recall", "stg_mae",
                  "si_episodes", "bc_paraphrase", "si_paraphrase"):
            assert k in r, (arm, k)
        assert r["gain_lo"] <= r["gain"] <= r["gain_hi"] and r["test_episodes"] == 4
    assert (tmp_path / "pretraining-quick-scratch-pretrained_kp.png").stat().st_size > 1000
    assert json.loads((tmp_path / "outcomes.json").read_text())  # kept for a rerun


@pytest.mark.slow
def test_a_tiny_run_of_the_banana_part_reports_each_arm(tmp_path, capsys):
    result = PT.main(["--parts", "novel", "--root", str(tmp_path), "--pool", "40", "--epochs", "1",
                      "--eval-episodes", "4", "--practice-episodes", "4", "--select-episodes", "2", "--fleet", "2",
                      "--check-episodes", "2", "--arms", "scratch", "--workers", "1"])
    r = result["novel"]["scratch"]
    assert set(r) >= {"novel_before", "novel_after", "novel_gain", "novel_gain_ci", "novel_episodes",
                      "novel_detector_precision", "novel_detector_recall"}
    assert 4 <= r["novel_episodes"] < 40  # the command line's small budget reached the banana's practice
    assert (tmp_path / "result-scratch-novel.json").exists()  # its own name: the whole plan's is kept
