"""Checkpoints: round trip, atomic writes, and errors that name the file and the fix."""
from __future__ import annotations

import os

import pytest
import torch

from core.learning import checkpoint as C
from core.learning.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from core.learning.policy import DojoPolicy
from tests.core.learning.helpers import make_batch, tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = DojoPolicy(tiny_config())
    # make the weights differ from a fresh init with the same seed
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.01)
    return m.eval()


@pytest.fixture(scope="module")
def good_file(model, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "good.pt", model,
                           meta={"stage": "sft", "threshold_s": 1.5})


def _outputs(m, batch):
    with torch.no_grad():
        return m.predict(batch)


def test_round_trip_gives_identical_outputs(model, good_file):
    batch = make_batch(model.config, b=5, seed=3)
    loaded, meta = load_checkpoint(good_file)
    assert loaded.config == model.config
    assert not loaded.training
    assert meta == {"stage": "sft", "threshold_s": 1.5}
    a0, s0 = _outputs(model, batch)
    a1, s1 = _outputs(loaded, batch)
    assert torch.equal(a0, a1) and torch.equal(s0, s1)
    # a freshly initialised model (same config, other seed) does not give these outputs
    torch.manual_seed(123)
    a2, _ = _outputs(DojoPolicy(model.config).eval(), batch)
    assert not torch.allclose(a0, a2)


def test_round_trip_with_scratch_text_encoder(tmp_path):
    torch.manual_seed(1)
    m = DojoPolicy(tiny_config(text_encoder="scratch")).eval()
    path = save_checkpoint(tmp_path / "scratch.pt", m)
    loaded, meta = load_checkpoint(path)
    assert meta == {}
    batch = make_batch(m.config, b=3)
    for x, y in zip(_outputs(m, batch), _outputs(loaded, batch)):
        assert torch.equal(x, y)


def test_optimizer_state_is_stored(model, tmp_path):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    path = save_checkpoint(tmp_path / "with_opt.pt", model, optimizer=opt)
    payload = read_checkpoint(path)
    assert payload["format"] == C.FORMAT and payload["version"] == C.VERSION
    assert "optimizer" in payload and "param_groups" in payload["optimizer"]
    assert "optimizer" not in read_checkpoint(save_checkpoint(tmp_path / "no_opt.pt", model))


def test_save_leaves_no_temp_files_and_creates_parents(model, tmp_path):
    path = tmp_path / "deep" / "er" / "model.pt"
    save_checkpoint(path, model)
    save_checkpoint(path, model)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    assert (path.stat().st_mode & 0o777) == 0o644


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    from core import files as F

    target = tmp_path / "file.bin"
    F.atomic_write_bytes(target, b"old contents")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(F.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        F.atomic_write_bytes(target, b"new contents that never land")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


# ------------------------------------------------------------------ bad files
def _truncated(good, path):
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(good, path):
    path.write_bytes(os.urandom(4096))


def _empty(good, path):
    # a 0-byte file (e.g. a copy interrupted by a full disk): torch.load raises a bare EOFError
    path.write_bytes(b"")


def _other_dict(good, path):
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, path)


def _a_list(good, path):
    torch.save([1, 2, 3], path)


def _wrong_version(good, path):
    payload = torch.load(good, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)


def _no_state_dict(good, path):
    payload = torch.load(good, weights_only=True)
    del payload["state_dict"]
    torch.save(payload, path)


def _missing_weight(good, path):
    payload = torch.load(good, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, path)


def _bad_config_value(good, path):
    payload = torch.load(good, weights_only=True)
    payload["config"]["n_frames"] = 3
    torch.save(payload, path)


BAD_FILES = {
    "truncated": (_truncated, "re-train"),
    "random_bytes": (_random_bytes, "not a Dojo checkpoint"),
    "empty": (_empty, "re-train"),
    "other_dict": (_other_dict, "written by Dojo"),
    "a_list": (_a_list, "written by Dojo"),
    "wrong_version": (_wrong_version, "version 99"),
    "no_state_dict": (_no_state_dict, "state_dict"),
    "missing_weight": (_missing_weight, "missing weights"),
    "bad_config_value": (_bad_config_value, "n_frames must be 1 or 2, got 3"),
}
# Kinds whose message must also say what to do (the file is unusable, not just odd).
NEEDS_FIX = {"truncated", "random_bytes", "empty", "other_dict", "a_list", "wrong_version",
             "no_state_dict"}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_raises_checkpoint_error_naming_file_and_fix(kind, good_file, tmp_path):
    make, hint = BAD_FILES[kind]
    path = tmp_path / f"{kind}.pt"
    make(good_file, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert hint in msg
    if kind in NEEDS_FIX:
        assert any(w in msg for w in ("re-train", "restore", "pass", "upgrade")), msg


def test_wrong_version_message_names_both_versions(good_file, tmp_path):
    path = tmp_path / "v.pt"
    _wrong_version(good_file, path)
    with pytest.raises(CheckpointError, match=r"version 99.*reads version 1.*upgrade"):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "best_policy.pt"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value) and "sft" in str(info.value)


def test_unknown_config_field_is_named(good_file, tmp_path):
    payload = torch.load(good_file, weights_only=True)
    payload["config"]["warp_drive"] = True
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "warp_drive" in str(info.value) and str(path) in str(info.value)


def test_checkpoint_error_is_a_runtime_error():
    # the CLI turns RuntimeError into exit code 2 with a one-line message
    assert issubclass(CheckpointError, RuntimeError)


def test_setting_changes_lists_what_differs_except_what_may_change():
    was = {"lr": 1e-4, "seed": 0, "fleet_size": 2, "env_config": {"a": 1}, "retired": 5}
    now = {"lr": 3e-4, "seed": 0, "fleet_size": 4, "env_config": {"a": 2}, "added": True}
    assert C.setting_changes(was, now, {"fleet_size"}) == ["env_config.a: 1 -> 2", "lr: 0.0001 -> 0.0003"]
    assert C.setting_changes(was, dict(was), set()) == []
    # nested settings are named key by key
    assert C.setting_changes({"policy": {"d_model": 32, "n": 1}}, {"policy": {"d_model": 64, "n": 1}}, set()) \
        == ["policy.d_model: 32 -> 64"]
    assert C.setting_changes({"env_config": {"task": "a"}}, {"env_config": {"task": "a", "goal": True}}, set()) \
        == ["env_config.goal: (absent) -> true"]
    # a key only one side has (added to Dojo since, or retired) is not a change
    assert C.setting_changes({"x": 1}, {"y": 2}, set()) == []


def test_check_run_settings_names_every_change_and_an_unreadable_record(tmp_path):
    import json

    path = tmp_path / "run.json"
    C.check_run_settings(path, "practice", {"lr": 1.0}, set(), "fix it")  # no record yet: nothing to compare
    path.write_text(json.dumps({"practice": {"lr": 1.0, "seed": 0}}))
    C.check_run_settings(path, "practice", {"lr": 1.0, "seed": 0}, set(), "fix it")
    with pytest.raises(C.ResumeConflict, match=r"run.json: lr: 1.0 -> 2.0; seed: 0 -> 1\). fix it"):
        C.check_run_settings(path, "practice", {"lr": 2.0, "seed": 1}, set(), "fix it")
    path.write_text("{not json")
    with pytest.raises(C.ResumeConflict, match="cannot read the settings this run started with"):
        C.check_run_settings(path, "practice", {"lr": 1.0}, set(), "fix it")
    assert issubclass(C.ResumeConflict, CheckpointError)


def test_file_sha256_of_a_missing_file_is_none(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    assert C.file_sha256(tmp_path / "a") == C.file_sha256(tmp_path / "a") and C.file_sha256(tmp_path / "b") is None
