"""The on-disk demonstration format and the flattened frame table used for training."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from core.learning import policy as P
from core.learning.dataset import (DatasetError, Episode, FrameTable, episode_path, list_episode_files,
                          load_episodes, read_episode, read_meta, validate_episode, write_episode,
                          write_meta)
from tests.core.learning.helpers import INSTRUCTIONS, make_episode


# ------------------------------------------------------------------ episode files
def test_write_read_round_trip(tmp_path):
    ep = make_episode(seed=7, T=5, size=16)
    path = write_episode(tmp_path, ep)
    assert path == episode_path(tmp_path, 7) == tmp_path / "episodes" / "ep_000000007.npz"
    back = read_episode(path)
    np.testing.assert_array_equal(back.frames, ep.frames)
    np.testing.assert_array_equal(back.proprio, ep.proprio)
    np.testing.assert_array_equal(back.actions, ep.actions)
    assert back.frames.dtype == np.uint8 and back.actions.dtype == np.float32
    assert (back.instruction, back.seed, back.success) == (ep.instruction, 7, True)
    assert back.length == 5
    assert list_episode_files(tmp_path) == [path]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_goal_step_round_trips_and_sets_the_steps_to_go_labels(tmp_path):
    ep = dataclasses.replace(make_episode(seed=8, T=5, size=16), goal_step=3)
    back = read_episode(write_episode(tmp_path, ep))
    assert back.goal_step == 3 and back.goal_index == 3
    assert back.steps_to_go().tolist() == [3, 2, 1, 0, 0, 0]  # frames 3-5 hold the goal
    plain = make_episode(seed=9, T=5, size=16)
    assert read_episode(write_episode(tmp_path, plain)).goal_step is None
    assert plain.steps_to_go().tolist() == [5, 4, 3, 2, 1, 0]
    table = FrameTable.from_episodes([ep, plain])
    assert table.stg.tolist() == [3, 2, 1, 0, 0, 0, 5, 4, 3, 2, 1, 0]


def test_write_stores_float64_inputs_as_float32(tmp_path):
    ep = make_episode(seed=1)
    ep = dataclasses.replace(ep, actions=ep.actions.astype(np.float64),
                             proprio=ep.proprio.astype(np.float64))
    back = read_episode(write_episode(tmp_path, ep))
    assert back.actions.dtype == np.float32 and back.proprio.dtype == np.float32


def _nan_action():
    ep = make_episode(seed=42)
    a = ep.actions.copy()
    a[1, 0] = np.nan
    return dataclasses.replace(ep, actions=a)


def _inf_proprio():
    ep = make_episode(seed=42)
    p = ep.proprio.copy()
    p[0, 1] = np.inf
    return dataclasses.replace(ep, proprio=p)


def _out_of_range():
    ep = make_episode(seed=42)
    a = ep.actions.copy()
    a[0, 1] = 1.5
    return dataclasses.replace(ep, actions=a)


def _float_frames():
    ep = make_episode(seed=42)
    return dataclasses.replace(ep, frames=ep.frames.astype(np.float32))


def _gray_frames():
    ep = make_episode(seed=42)
    return dataclasses.replace(ep, frames=ep.frames[..., 0])


def _one_action_too_many():
    ep = make_episode(seed=42, T=3)
    return dataclasses.replace(ep, actions=np.zeros((4, 2), np.float32))


def _proprio_mismatch():
    ep = make_episode(seed=42, T=3)
    return dataclasses.replace(ep, proprio=np.zeros((3, 2), np.float32))


def _no_actions():
    ep = make_episode(seed=42, T=3)
    return dataclasses.replace(ep, frames=ep.frames[:1], proprio=ep.proprio[:1],
                               actions=np.zeros((0, 2), np.float32))


def _goal_after_the_end():
    return dataclasses.replace(make_episode(seed=42, T=5), goal_step=6)


def _blank_instruction():
    return dataclasses.replace(make_episode(seed=42), instruction="   ")


INVALID = {
    "float_frames": (_float_frames, "uint8"),
    "gray_frames": (_gray_frames, "uint8"),
    "frame_action_mismatch": (_one_action_too_many, "one more frame than actions"),
    "proprio_mismatch": (_proprio_mismatch, "proprio"),
    "no_actions": (_no_actions, "at least one action"),
    "nan_action": (_nan_action, "NaN"),
    "inf_proprio": (_inf_proprio, "NaN/inf"),
    "out_of_range": (_out_of_range, "1.500"),
    "blank_instruction": (_blank_instruction, "empty instruction"),
    "goal_after_the_end": (_goal_after_the_end, "goal_step 6 must be a frame index 0..5"),
}


@pytest.mark.parametrize("kind", sorted(INVALID))
def test_validate_episode_rejects(kind, tmp_path):
    make, needle = INVALID[kind]
    ep = make()
    with pytest.raises(DatasetError) as info:
        validate_episode(ep, "somewhere/ep_x.npz")
    assert "somewhere/ep_x.npz" in str(info.value) and needle in str(info.value)
    # write_episode validates too, naming the episode, and writes nothing
    with pytest.raises(DatasetError, match="seed 42"):
        write_episode(tmp_path, ep)
    assert not episode_path(tmp_path, 42).exists()


def test_validate_accepts_boundary_actions():
    ep = make_episode()
    a = ep.actions.copy()
    a[0] = [-1.0, 1.0]
    validate_episode(dataclasses.replace(ep, actions=a), "x")


def _raw_npz(path, ep: Episode, **override):
    arrays = dict(frames=ep.frames, proprio=ep.proprio, actions=ep.actions,
                  instruction=np.array(ep.instruction), seed=np.int64(ep.seed),
                  success=np.bool_(ep.success))
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def test_read_episode_validates_contents_and_names_the_file(tmp_path):
    ep = make_episode(seed=3)
    bad = ep.actions.copy()
    bad[0, 0] = np.nan
    path = tmp_path / "episodes" / "ep_000000003.npz"
    _raw_npz(path, ep, actions=bad)
    with pytest.raises(DatasetError) as info:
        read_episode(path)
    assert str(path) in str(info.value) and "NaN" in str(info.value)


def test_read_episode_missing_arrays(tmp_path):
    path = tmp_path / "ep_000000003.npz"
    _raw_npz(path, make_episode(seed=3), proprio=None)
    with pytest.raises(DatasetError) as info:
        read_episode(path)
    assert str(path) in str(info.value) and "proprio" in str(info.value)


def test_truncated_npz_raises_dataset_error_naming_the_file(tmp_path):
    path = write_episode(tmp_path, make_episode(seed=5, T=6, size=16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as info:
        read_episode(path)
    assert str(path) in str(info.value) and "regenerate" in str(info.value)


def test_garbage_npz_raises_dataset_error(tmp_path):
    path = tmp_path / "ep_000000001.npz"
    path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(DatasetError, match="unreadable"):
        read_episode(path)


def test_corrupted_npz_body_raises_dataset_error_naming_the_file(tmp_path):
    # Bit rot inside the compressed data (not a truncation): the file is still a zip,
    # but inflating it fails. That must be a DatasetError naming the file, like truncation.
    path = write_episode(tmp_path, make_episode(seed=5, T=6, size=16))
    data = bytearray(path.read_bytes())
    for i in range(100, 120):  # inside the first member's deflate stream
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as info:
        read_episode(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ dataset.json
def test_meta_round_trip(tmp_path):
    write_meta(tmp_path, {"backend": "tabletop", "env_config": {"image_size": 32}, "seed0": 0})
    meta = read_meta(tmp_path)
    assert meta["format"] == "dojo-demos" and meta["version"] == 1
    assert meta["env_config"] == {"image_size": 32}


def test_read_meta_missing_dir(tmp_path):
    root = tmp_path / "no_such_dataset"
    with pytest.raises(DatasetError) as info:
        read_meta(root)
    msg = str(info.value)
    assert str(root / "dataset.json") in msg and "core.cli demos" in msg


def test_read_meta_missing_dir_hint_is_a_runnable_command(tmp_path):
    root = tmp_path / "no_such_dataset"
    with pytest.raises(DatasetError) as info:
        read_meta(root)
    # the suggested command must name the actual directory, not a "{root}" placeholder
    assert f"--out {root}" in str(info.value)


def test_read_meta_bad_json(tmp_path):
    (tmp_path / "dataset.json").write_text('{"format": "dojo-demos", ')
    with pytest.raises(DatasetError) as info:
        read_meta(tmp_path)
    assert str(tmp_path / "dataset.json") in str(info.value) and "JSON" in str(info.value)


@pytest.mark.parametrize("meta, needle", [
    ({"format": "something-else", "version": 1, "backend": "t", "env_config": {}}, "something-else"),
    ({"format": "dojo-demos", "version": 7, "backend": "t", "env_config": {}}, "version 7"),
    ({"format": "dojo-demos", "version": 1, "env_config": {}}, "backend"),
    ({"format": "dojo-demos", "version": 1, "backend": "t"}, "env_config"),
])
def test_read_meta_wrong_format(tmp_path, meta, needle):
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as info:
        read_meta(tmp_path)
    assert needle in str(info.value) and str(tmp_path / "dataset.json") in str(info.value)


@pytest.mark.parametrize("text", ["[1, 2]", "null", '"dojo-demos"'])
def test_read_meta_json_that_is_not_an_object(tmp_path, text):
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(DatasetError):
        read_meta(tmp_path)


def test_load_episodes_sorted_limited_and_empty(tmp_path):
    write_meta(tmp_path, {"backend": "tabletop", "env_config": {}})
    with pytest.raises(DatasetError, match="no episodes"):
        load_episodes(tmp_path)
    for seed in (12, 3, 7):
        write_episode(tmp_path, make_episode(seed=seed))
    meta, eps = load_episodes(tmp_path)
    assert meta["backend"] == "tabletop" and [e.seed for e in eps] == [3, 7, 12]
    _, eps = load_episodes(tmp_path, limit=2)
    assert [e.seed for e in eps] == [3, 7]


# ------------------------------------------------------------------ FrameTable
@pytest.fixture
def table():
    e0 = make_episode(seed=0, T=3, instruction=INSTRUCTIONS[1])
    e1 = make_episode(seed=1, T=2, instruction=INSTRUCTIONS[0])
    return FrameTable.from_episodes([e0, e1]), (e0, e1)


def test_frame_table_indices_and_labels(table):
    t, (e0, e1) = table
    assert len(t) == 4 + 3
    np.testing.assert_array_equal(t.prev, [0, 0, 1, 2, 4, 4, 5])  # first frame's prev is itself
    np.testing.assert_array_equal(t.stg, [3, 2, 1, 0, 2, 1, 0])  # T - t
    np.testing.assert_array_equal(t.action_mask, [1, 1, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(t.episode_id, [0, 0, 0, 0, 1, 1, 1])
    assert t.instructions == sorted(INSTRUCTIONS)
    assert [t.instructions[i] for i in t.instr_id] == [e0.instruction] * 4 + [e1.instruction] * 3
    np.testing.assert_array_equal(t.frames[4:], e1.frames)
    np.testing.assert_array_equal(t.actions[:3], e0.actions)
    np.testing.assert_array_equal(t.actions[3], [0, 0])  # no action at the last frame
    assert t.actions.dtype == np.float32 and t.stg.dtype == np.int64


def test_frame_table_batch_two_frames(table):
    t, _ = table
    idx = np.array([4, 0, 5, 3])
    b = t.batch(idx, n_frames=2, action_bins=9)
    assert tuple(b[P.FRAMES].shape) == (4, 2, 8, 8, 3) and b[P.FRAMES].dtype == torch.uint8
    assert tuple(b[P.PROPRIO].shape) == (4, 2, 2)
    assert torch.equal(b[P.FRAMES][:, 0], torch.from_numpy(t.frames[idx]))
    assert torch.equal(b[P.FRAMES][:, 1], torch.from_numpy(t.frames[[4, 0, 4, 2]]))  # previous frames
    assert torch.equal(b[P.PROPRIO][:, 1], torch.from_numpy(t.proprio[[4, 0, 4, 2]]))
    assert tuple(b[P.ACTION_BINS].shape) == (4, 2) and b[P.ACTION_BINS].dtype == torch.int64
    assert int(b[P.ACTION_BINS].min()) >= 0 and int(b[P.ACTION_BINS].max()) <= 8
    assert b[P.ACTION_MASK].tolist() == [True, True, True, False]
    assert b[P.STG].tolist() == [2, 3, 1, 0]
    assert b[P.INSTRUCTION] == [INSTRUCTIONS[0], INSTRUCTIONS[1], INSTRUCTIONS[0], INSTRUCTIONS[1]]


def test_frame_table_batch_one_frame(table):
    t, _ = table
    b = t.batch(np.array([1, 2]), n_frames=1, action_bins=5)
    assert tuple(b[P.FRAMES].shape) == (2, 1, 8, 8, 3)
    assert tuple(b[P.PROPRIO].shape) == (2, 1, 2)
    assert torch.equal(b[P.FRAMES][:, 0], torch.from_numpy(t.frames[[1, 2]]))
    assert int(b[P.ACTION_BINS].max()) <= 4


# ------------------------------------------------------------------ several datasets
def _dataset(root, backend_cfg, seeds, size=16):
    write_meta(root, {"backend": "tabletop", "env_config": backend_cfg, "seed0": 0})
    for s in seeds:
        write_episode(root, make_episode(seed=s, T=4, size=size))


def test_load_datasets_same_task_concatenates_and_limits_each(tmp_path):
    from core.learning.dataset import load_datasets

    _dataset(tmp_path / "a", {"family": "block2block"}, [0, 1, 2])
    _dataset(tmp_path / "b", {"family": "block2block"}, [0, 1])
    meta, eps = load_datasets(f"{tmp_path / 'a'},{tmp_path / 'b'}", limit=2)
    assert meta["backend"] == "tabletop" and meta["env_config"] == {"family": "block2block"}
    assert [(e.source, e.seed) for e in eps] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_load_datasets_of_different_tasks_define_a_multitask_backend(tmp_path):
    from core.learning.dataset import held_out_episodes, load_datasets

    _dataset(tmp_path / "a", {"family": "block2block"}, [0, 1])
    _dataset(tmp_path / "b", {"family": "block2location"}, [0, 1])
    spec = [str(tmp_path / "a"), str(tmp_path / "b")]
    meta, eps = load_datasets(spec)
    assert meta["backend"] == "multitask"
    assert meta["env_config"] == {"tasks": [
        {"backend": "tabletop", "env_config": {"family": "block2block"}},
        {"backend": "tabletop", "env_config": {"family": "block2location"}}]}
    # held-out episodes are named by (dataset, seed): seed 1 of the second dataset only
    held = held_out_episodes({"dataset": ",".join(spec), "val_keys": [[1, 1]]})
    assert [(e.source, e.seed) for e in held] == [(1, 1)]
    # older checkpoints name them by seed alone
    assert len(held_out_episodes({"dataset": ",".join(spec), "val_seeds": [1]})) == 2


def test_load_datasets_with_different_image_sizes_is_refused(tmp_path):
    from core.learning.dataset import load_datasets

    _dataset(tmp_path / "a", {"family": "block2block"}, [0], size=16)
    _dataset(tmp_path / "b", {"family": "block2location"}, [0], size=24)
    with pytest.raises(DatasetError, match="disagree on .*image shape"):
        load_datasets(f"{tmp_path / 'a'},{tmp_path / 'b'}")
    with pytest.raises(DatasetError, match="no dataset directory"):
        load_datasets(" , ")
