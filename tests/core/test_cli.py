"""The command line's options: --help short, --help-all complete, every old option name still
parsed, defaults taken from the config dataclasses; eval refuses a checkpoint without a
detector threshold with the fix instead of exiting the process."""
from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from core import cli
from core.learning.evaluate import EvaluationRefused, evaluate_checkpoint
from core.learning.policy import PolicyConfig
from core.learning.practice import PracticeConfig
from core.learning.sft import SFTConfig

# Every option each subcommand took before the advanced ones were hidden (2026-12): scripts,
# benches and people call them, so they must all keep working.
OPTIONS_BEFORE = {
    "demos": "--out --n --backend --family --task --env-config --image-size --seed0 --workers --quiet",
    "sft": "--data --out --max-episodes --val-fraction --epochs --batch-size --lr --seed --eval-every "
           "--eval-episodes --threads --device --max-minutes --fresh --stg-select --quiet --image-encoder "
           "--text-encoder --trunk --no-proprio --unfreeze-image-encoder --d-model --n-layers --action-bins "
           "--stg-cap --stg-bin-width --stg-label-sigma --no-film --no-grounding --keypoint-query",
    "eval": "--checkpoint --reward-checkpoint --episodes --data --threshold --patience --tolerance --seed0 "
            "--backend --env-config --n-envs --device --baseline --quiet",
    "practice": "--policy --reward --out --fleet-size --backend --env-config --in-process --finish-running "
                "--plan-starts --rollout-groups --rollout-threads --gamma --c --lr --weight-decay --tuples "
                "--minibatch --train-vision --trainable --baseline --bc-weight --update-dropout --threshold "
                "--patience --no-compile --calibration-beta --ground-truth-reward --check-episodes "
                "--min-precision --min-recall --refine-episodes --refine-steps --refine-every --refine-memory "
                "--refine-keep-s --detector-tolerance --refine-frozen-vision --eval-every --eval-episodes "
                "--max-episodes --plateau-evals --stop-after-drops --seed --device --quiet",
    "pipeline": "--root --demos --epochs --select-episodes --eval-episodes --workers",
    "refine-labels": "--db --session --reward --out --steps --lr --min-labels --fail-tail --anchor",
}
MAX_SHOWN = 16  # options --help lists, besides -h and --help-all


def _sub(command: str, show_all: bool = False) -> argparse.ArgumentParser:
    ap = cli.build_parser(show_all=show_all)
    return next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.dest not in ("help", argparse.SUPPRESS)]


def _help(command: str, flag: str, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args([command, flag])
    assert e.value.code == 0
    return capsys.readouterr().out


def _shown(text: str) -> list[str]:
    flags = [m.group(1) for m in re.finditer(r"^  (-[-\w]+)", text, re.M)]
    return [f for f in flags if f not in ("-h", "--help-all")]


@pytest.mark.parametrize("command", sorted(OPTIONS_BEFORE))
def test_help_is_short_help_all_is_complete_and_every_old_option_still_parses(command, capsys):
    p = _sub(command)
    known = set(p._option_string_actions)
    assert set(OPTIONS_BEFORE[command].split()) <= known
    shown = _shown(_help(command, "--help", capsys))
    assert len(shown) <= MAX_SHOWN, shown
    full = _help(command, "--help-all", capsys)
    listed = _shown(full)
    assert set(listed) == {a.option_strings[0] for a in _options(p)}
    blocks = {b.split()[0]: " ".join(b.split()) for b in re.split(r"\n(?=  -)", full)[1:]}
    for a in _options(p):
        if a.default is not None and a.nargs != 0:
            assert f"(default: {a.default})" in blocks[a.option_strings[0]], a.option_strings


def test_practice_and_sft_hide_their_advanced_options_from_help(capsys):
    practice = _shown(_help("practice", "--help", capsys))
    for hidden in ("--finish-running", "--plan-starts", "--baseline", "--bc-weight", "--update-dropout",
                   "--calibration-beta", "--refine-memory", "--refine-every", "--rollout-groups",
                   "--rollout-threads", "--no-compile", "--trainable", "--weight-decay", "--c", "--gamma",
                   "--detector-tolerance", "--ground-truth-reward", "--calibrate-on-demos"):
        assert hidden not in practice
    sft = _shown(_help("sft", "--help", capsys))
    assert "--d-model" not in sft and "--stg-select" not in sft and "--epochs" in sft
    # hidden, not gone: an advanced option still sets its field
    args = cli.build_parser().parse_args(["practice", "--policy", "p", "--reward", "r", "--out", "o",
                                          "--finish-running", "--no-compile", "--bc-weight", "0.5"])
    cfg = cli.practice_config(args)
    assert cfg.finish_running_episodes and not cfg.compile and cfg.bc_weight == 0.5


@pytest.mark.parametrize("command, classes", [("sft", (SFTConfig, PolicyConfig)), ("practice", (PracticeConfig,))])
def test_option_defaults_are_the_config_dataclass_defaults(command, classes):
    mapped = 0
    for a in _options(_sub(command, show_all=True)):
        for cls in classes:
            if a.dest in {f.name for f in dataclasses.fields(cls)} and not a.required:
                assert a.default == cli.field_default(cls, a.dest), (command, a.option_strings)
                mapped += 1
    assert mapped >= {"sft": 25, "practice": 40}[command]
    for a in _options(_sub(command, show_all=True)):
        # the number is printed from the default, never restated in the help text
        assert not re.search(r"default:? [\d.]", a.help or ""), a.option_strings


def test_defaults_build_the_dataclass_defaults():
    parse = cli.build_parser().parse_args
    assert cli.sft_config(parse(["sft", "--data", "d", "--out", "o"])) == SFTConfig(data="d", out="o")
    args = parse(["practice", "--policy", "p", "--reward", "r", "--out", "o"])
    assert cli.practice_config(args) == PracticeConfig(policy_checkpoint="p", reward_checkpoint="r", out="o")


def test_practice_chooses_where_its_robots_run():
    parse = cli.build_parser().parse_args
    base = ["practice", "--policy", "p", "--reward", "r", "--out", "o"]
    cfg = cli.practice_config(parse(base + ["--fleet", "ray", "--ray-address", "auto"]))
    assert (cfg.fleet_kind, cfg.ray_address) == ("ray", "auto")
    assert cli.practice_config(parse(base + ["--in-process"])).fleet_kind == "local"
    with pytest.raises(SystemExit):
        parse(base + ["--fleet", "cloud"])


def test_eval_and_pipeline_defaults_and_the_ones_kept_apart_from_a_dataclass():
    ev = {a.dest: a.default for a in _options(_sub("eval", show_all=True))}
    for name in ("patience", "tolerance", "seed0", "n_envs", "device"):
        assert ev[name] == cli.param_default(evaluate_checkpoint, name), name
    assert ev["patience"] == 1 != cli.field_default(PracticeConfig, "patience")  # see _eval_options
    pipe = {a.dest: a.default for a in _options(_sub("pipeline"))}
    assert pipe["select_episodes"] == cli.field_default(SFTConfig, "eval_episodes")
    assert pipe["epochs"] == 15 != cli.field_default(SFTConfig, "epochs")  # see _pipeline_options


@pytest.fixture
def unthresholded_checkpoint(tmp_path):
    """A policy checkpoint that stores no detector threshold and names no dataset."""
    from core.learning.checkpoint import save_checkpoint
    from core.learning.policy import DojoPolicy
    from tests.core.learning.helpers import tiny_config

    return save_checkpoint(tmp_path / "bare.pt", DojoPolicy(tiny_config(text_encoder="scratch")),
                           meta={"stage": "sft", "backend": "tabletop", "env_config": {"image_size": 32}})


def test_a_checkpoint_without_threshold_or_held_out_demos_is_refused_with_the_fix(unthresholded_checkpoint):
    with pytest.raises(EvaluationRefused) as e:
        evaluate_checkpoint(str(unthresholded_checkpoint), 2, device="cpu", progress=False)
    msg = str(e.value)
    assert str(unthresholded_checkpoint) in msg and "no detector threshold" in msg
    assert "--threshold S" in msg and "--data DATASET" in msg and "held-out" in msg
    assert isinstance(e.value, ValueError)  # callers that catch Exception (the worker) survive it


def test_eval_prints_the_refusal_and_exits_2(unthresholded_checkpoint, capsys):
    assert cli.main(["eval", "--checkpoint", str(unthresholded_checkpoint), "--episodes", "2",
                     "--device", "cpu", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: no detector threshold") and "--threshold S" in captured.err
    assert captured.out == ""
