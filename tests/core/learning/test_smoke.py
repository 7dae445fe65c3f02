"""A tiny end-to-end run through the CLI: demos -> sft -> eval, and CLI error handling."""
from __future__ import annotations

import json

import pytest

from core.learning.checkpoint import read_checkpoint
from core.cli import main


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    return root / "demos", root / "run"


def test_demos_sft_eval_end_to_end(run, capsys):
    data, out = run
    assert main(["demos", "--out", str(data), "--n", "6", "--workers", "1", "--image-size", "32",
                 "--quiet"]) == 0
    demos = _json_out(capsys)
    assert demos["episodes"] == 6

    assert main(["sft", "--data", str(data), "--out", str(out), "--epochs", "2", "--d-model", "32",
                 "--n-layers", "1", "--eval-episodes", "2", "--batch-size", "32", "--threads", "1",
                 "--device", "cpu", "--quiet"]) == 0
    sft = _json_out(capsys)
    for name in ("best_stg.pt", "best_policy.pt", "last.pt", "metrics.jsonl", "run.json"):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["val_stg_loss"] > 0 and "train_loss" in r for r in rows)
    assert "select_success" in rows[-1]  # the final epoch is always evaluated
    assert sft["best_policy"] == str(out / "best_policy.pt")
    ckpt = read_checkpoint(out / "best_stg.pt")
    assert ckpt["config"]["d_model"] == 32 and ckpt["config"]["image_size"] == 32
    assert ckpt["meta"]["stage"] == "sft" and ckpt["meta"]["val_seeds"]
    assert ckpt["meta"]["selected_by"] == "val_stg_mae"  # the error of d, not the cross-entropy
    assert "threshold_s" in ckpt["meta"]

    assert main(["eval", "--checkpoint", str(out / "best_policy.pt"), "--episodes", "4",
                 "--n-envs", "4", "--device", "cpu", "--quiet"]) == 0
    ev = _json_out(capsys)
    for key in ("success", "success_ci", "detector_precision", "threshold_s", "stg_mae_steps"):
        assert key in ev, key
    assert ev["episodes"] == 4 and 0.0 <= ev["success"] <= 1.0
    lo, hi = ev["success_ci"]
    assert 0.0 <= lo <= ev["success"] <= hi <= 1.0
    assert ev["reward_checkpoint"] == str(out / "best_stg.pt")  # the sibling is picked up
    assert ev["stg_mae_steps"] >= 0 and ev["threshold_s"] > 0
    assert sum(ev["end_reasons"].values()) == 4

    # --baseline: both checkpoints on the same seeds, the gain paired seed by seed.
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--baseline", str(out / "best_policy.pt"),
                 "--reward-checkpoint", str(out / "best_stg.pt"), "--episodes", "4", "--n-envs", "4",
                 "--device", "cpu", "--quiet"]) == 0
    cmp = _json_out(capsys)
    assert cmp["baseline"]["checkpoint"] == str(out / "best_policy.pt") and cmp["baseline"]["episodes"] == 4
    assert cmp["baseline"]["success"] == ev["success"]  # same checkpoint, same seeds as above
    g = cmp["paired_gain"]
    assert g["seeds"] == 4 and g["gain"] == pytest.approx(cmp["success"] - ev["success"])
    assert g["ci"][0] <= g["gain"] <= g["ci"][1] and g["gained"] - g["lost"] == round(4 * g["gain"])


def test_multi_task_sft_on_two_datasets_and_eval_per_task(run, tmp_path, capsys):
    """Two datasets of different tasks train one model; eval cycles through both tasks and
    reports success per task; --env-config evaluates on a task it never saw."""
    data, _ = run
    if not data.exists():
        assert main(["demos", "--out", str(data), "--n", "6", "--workers", "1", "--image-size", "32",
                     "--quiet"]) == 0
    b2l = tmp_path / "b2l"
    assert main(["demos", "--out", str(b2l), "--n", "4", "--workers", "1", "--image-size", "32",
                 "--family", "block2location", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "mt"
    assert main(["sft", "--data", f"{data},{b2l}", "--out", str(out), "--epochs", "1", "--d-model", "32",
                 "--n-layers", "1", "--eval-episodes", "2", "--batch-size", "32", "--threads", "1",
                 "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    meta = read_checkpoint(out / "best_stg.pt")["meta"]
    assert meta["backend"] == "multitask"
    assert [t["env_config"]["family"] for t in meta["env_config"]["tasks"]] == ["block2block", "block2location"]
    assert all(len(k) == 2 for k in meta["val_keys"])
    assert main(["eval", "--checkpoint", str(out / "best_policy.pt"), "--episodes", "4", "--n-envs", "2",
                 "--device", "cpu", "--quiet"]) == 0
    ev = _json_out(capsys)
    assert set(ev["per_task"]) == {"block2block", "block2location"}
    assert all(v["episodes"] == 2 for v in ev["per_task"].values())
    banana = '{"family": "block2location", "blocks": [], "objects": ["banana"], "image_size": 32}'
    assert main(["eval", "--checkpoint", str(out / "best_policy.pt"), "--episodes", "2", "--n-envs", "2",
                 "--device", "cpu", "--quiet", "--env-config", banana]) == 0
    ev = _json_out(capsys)
    assert ev["env_config"]["objects"] == ["banana"] and ev["episodes"] == 2


def test_eval_of_a_corrupt_checkpoint_exits_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00garbage, not a checkpoint" * 50)
    assert main(["eval", "--checkpoint", str(bad), "--episodes", "1", "--device", "cpu",
                 "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert str(bad) in captured.err and "re-train" in captured.err
    assert captured.out == ""


def test_eval_of_a_missing_checkpoint_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert main(["eval", "--checkpoint", str(missing), "--device", "cpu", "--quiet"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_sft_on_a_missing_dataset_exits_2(tmp_path, capsys):
    assert main(["sft", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"),
                 "--device", "cpu", "--quiet"]) == 2
    assert "dataset.json" in capsys.readouterr().err


def test_resuming_sft_with_a_different_model_names_the_file_and_the_fix(run, capsys):
    data, out = run  # trained above with --d-model 32
    assert main(["sft", "--data", str(data), "--out", str(out), "--epochs", "3", "--d-model", "64",
                 "--n-layers", "1", "--eval-episodes", "0", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and "policy.d_model: 32 -> 64" in err and "--fresh" in err


def test_resuming_sft_with_another_learning_rate_is_refused_and_touches_nothing(run, capsys):
    """The same model and data but another learning rate and seed: the weights would load and
    train on as a run neither setting describes. Refused, naming both, with the fix."""
    data, out = run
    before = [(out / n).read_bytes() for n in ("last.pt", "run.json", "metrics.jsonl")]
    args = ["sft", "--data", str(data), "--out", str(out), "--d-model", "32", "--n-layers", "1",
            "--eval-episodes", "0", "--batch-size", "32", "--device", "cpu", "--quiet", "--epochs", "3"]
    assert main(args + ["--lr", "0.002", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.001 -> 0.002; seed: 0 -> 1)" in err and "--fresh" in err and str(out) in err
    assert "epochs" not in err and "eval_episodes" not in err  # settings a resume may change
    assert [(out / n).read_bytes() for n in ("last.pt", "run.json", "metrics.jsonl")] == before


def test_resuming_sft_on_other_demonstrations_names_both_and_the_fix(run, tmp_path, capsys):
    """Same model, other data (here larger frames): the weights would load, so the run
    must refuse by what it was trained on, not by a shape error."""
    _data, out = run
    other = tmp_path / "demos-48px"
    assert main(["demos", "--out", str(other), "--n", "4", "--workers", "1", "--image-size", "48", "--quiet"]) == 0
    capsys.readouterr()
    before = [(out / n).read_bytes() for n in ("last.pt", "run.json")]
    assert main(["sft", "--data", str(other), "--out", str(out), "--epochs", "3", "--d-model", "32",
                 "--n-layers", "1", "--eval-episodes", "0", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "different dataset" in err and "demos-48px" in err and "--fresh" in err
    assert [(out / n).read_bytes() for n in ("last.pt", "run.json")] == before  # nothing stored was touched


def test_resuming_sft_on_regenerated_demonstrations_of_the_same_name_is_refused(run, tmp_path, capsys):
    """Same directory name, same env config, other content (an episode re-recorded): the
    name check cannot see it, the data's fingerprint does."""
    import shutil

    from core.learning.dataset import episode_path, read_episode, write_episode

    data, _out = run
    copy, out = tmp_path / data.name, tmp_path / "run-copy"
    shutil.copytree(data, copy)
    args = ["sft", "--data", str(copy), "--out", str(out), "--d-model", "32", "--n-layers", "1",
            "--eval-episodes", "0", "--device", "cpu", "--quiet"]
    assert main(args + ["--epochs", "1"]) == 0
    capsys.readouterr()
    first = sorted((copy / "episodes").glob("*.npz"))[0]
    ep = read_episode(first)
    ep.actions = ep.actions[::-1].copy()  # the same episode recorded again, other actions
    assert write_episode(copy, ep) == first and episode_path(copy, ep.seed) == first
    before = [(out / n).read_bytes() for n in ("last.pt", "run.json")]
    assert main(args + ["--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "changed since it was trained" in err and str(copy) in err and "--fresh" in err
    assert [(out / n).read_bytes() for n in ("last.pt", "run.json")] == before
    assert main(args + ["--epochs", "1", "--fresh"]) == 0  # the fix the message names works


def test_resuming_sft_after_a_reviewers_clicks_is_refused(run, tmp_path, capsys):
    """Clicks saved on the Keypoints page change a dataset's labels in place: a run trained before
    them must not resume past them (its episodes' other content is unchanged)."""
    import dataclasses
    import shutil

    from core.datasets.first_frame_labels import save_clicks
    from core.learning.dataset import read_episode, write_episode

    data, _out = run
    copy, out = tmp_path / data.name, tmp_path / "run-clicks"
    shutil.copytree(data, copy)
    files = sorted((copy / "episodes").glob("*.npz"))
    for f in files:  # a lab's data: no labels yet
        write_episode(copy, dataclasses.replace(read_episode(f), keypoints=None))
    args = ["sft", "--data", str(copy), "--out", str(out), "--d-model", "32", "--n-layers", "1",
            "--eval-episodes", "0", "--device", "cpu", "--quiet", "--keypoint-labels", "tracked"]
    assert main(args + ["--epochs", "1"]) == 0
    capsys.readouterr()
    save_clicks(copy, f"episodes/{files[0].name}", [(-0.2, 0.1), (0.3, 0.4)])
    before = [(out / n).read_bytes() for n in ("last.pt", "run.json")]
    assert main(args + ["--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "keypoint labels" in err and "changed since it was trained" in err and "--fresh" in err
    assert [(out / n).read_bytes() for n in ("last.pt", "run.json")] == before
    assert main(args + ["--epochs", "1", "--fresh"]) == 0


def test_sft_refuses_an_unknown_reward_model_selection():
    from core.learning.sft import SFTConfig

    with pytest.raises(ValueError, match="stg_select must be 'mae' or 'loss'"):
        SFTConfig(data="d", out="o", stg_select="f1")


def test_resuming_sft_continues_from_the_last_epoch_without_scheduler_warnings(run, capsys, recwarn):
    data, out = run  # trained above for 2 epochs with --d-model 32
    assert main(["sft", "--data", str(data), "--out", str(out), "--epochs", "3", "--d-model", "32",
                 "--n-layers", "1", "--eval-episodes", "0", "--batch-size", "32", "--threads", "1",
                 "--device", "cpu", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # epochs 1-2 kept, only epoch 3 trained
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("cmd", ["sft", "practice", "eval"])
def test_asking_for_cuda_without_a_gpu_exits_2_with_the_fix(run, cmd, capsys):
    _, out = run  # paths only: the device is checked before any file is read
    argv = {"sft": ["sft", "--data", str(run[0]), "--out", str(out.parent / "cuda-run")],
            "practice": ["practice", "--policy", str(out / "best_policy.pt"), "--reward", str(out / "best_stg.pt"),
                         "--out", str(out.parent / "cuda-si")],
            "eval": ["eval", "--checkpoint", str(out / "best_policy.pt"), "--episodes", "1"]}[cmd]
    assert main(argv + ["--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu" in err
