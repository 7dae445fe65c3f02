"""Resumable scripted-expert demonstration generation on the real MuJoCo tabletop (small)."""
from __future__ import annotations

import json
import shutil

import pytest

from core.learning.dataset import DatasetError, list_episode_files, load_episodes, read_meta, write_meta
from core.learning.demos import decided_seeds, generate_demos, seeds_in

ENV = {"image_size": 32}


def _snapshot(root):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in list_episode_files(root)}


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "ds"
    summary = generate_demos(root, 4, env_config=ENV, workers=1, progress=False)
    return root, summary


def test_generate_writes_n_valid_episodes(four):
    root, summary = four
    assert summary["episodes"] == 4
    assert summary["dataset"] == str(root)
    assert 0 < summary["expert_success_rate"] <= 1
    meta = read_meta(root)
    assert meta["backend"] == "tabletop" and meta["env_config"] == ENV and meta["seed0"] == 0
    _, eps = load_episodes(root)  # validates every file
    assert len(eps) == 4
    for e in eps:
        assert e.frames.shape[1:] == (32, 32, 3)
        assert e.success and e.length >= 1 and e.instruction.strip()
    # the first 4 seeds the expert succeeded on, in order from seed0
    ok, rejected = decided_seeds(root)
    assert sorted(ok) == [e.seed for e in eps]
    assert sorted(ok | rejected) == list(range(len(ok) + len(rejected)))


def test_resume_keeps_existing_episodes_and_tops_up(four, tmp_path):
    src, _ = four
    root = tmp_path / "ds"
    # work on a copy so the module fixture stays at 4 episodes
    shutil.copytree(src, root)
    before = _snapshot(root)
    assert len(before) == 4
    summary = generate_demos(root, 6, env_config=ENV, workers=1, progress=False)
    after = _snapshot(root)
    assert summary["episodes"] == 6 and len(after) == 6
    for name, (data, mtime) in before.items():
        assert after[name] == (data, mtime), f"{name} was rewritten on resume"
    assert summary["mean_length_new"] is not None  # two new episodes were made
    # asking for fewer than present does nothing
    again = generate_demos(root, 5, env_config=ENV, workers=1, progress=False)
    assert again["episodes"] == 6 and again["mean_length_new"] is None
    assert _snapshot(root) == after


def test_different_env_config_on_same_dir_raises_with_the_fix(four):
    root, _ = four
    with pytest.raises(DatasetError) as info:
        generate_demos(root, 4, env_config={"image_size": 48}, workers=1, progress=False)
    msg = str(info.value)
    assert str(root) in msg and "48" in msg and "another --out" in msg
    with pytest.raises(DatasetError, match="seed0"):
        generate_demos(root, 4, env_config=ENV, seed0=5, workers=1, progress=False)
    assert len(list_episode_files(root)) == 4


def test_interrupted_write_leftovers_do_not_break_generation(tmp_path):
    root = tmp_path / "ds"
    (root / "episodes").mkdir(parents=True)
    write_meta(root, {"backend": "tabletop", "env_config": ENV, "seed0": 0, "created": "x"})
    # a temp file from a killed atomic write, and a rejected.jsonl whose last line was cut
    stray = root / "episodes" / ".ep_000000000.npz.abc123.tmp"
    stray.write_bytes(b"half an npz")
    (root / "rejected.jsonl").write_text(json.dumps({"seed": 0, "length": 80}) + '\n{"seed": 1, "len')
    ok, rejected = decided_seeds(root)
    assert ok == set() and rejected == {0}  # the cut line is ignored: seed 1 is tried again
    summary = generate_demos(root, 2, env_config=ENV, workers=1, progress=False)
    assert summary["episodes"] == 2
    seeds = seeds_in(root)
    assert len(seeds) == 2 and 0 not in seeds  # seed 0 stays rejected
    assert min(seeds) == 1 or 1 in decided_seeds(root)[1]  # seed 1 was decided this time
    assert len(list_episode_files(root)) == 2
    _, eps = load_episodes(root)
    assert [e.seed for e in eps] == seeds


def test_callback_can_stop_generation(tmp_path):
    calls = []

    def cb(event):
        calls.append(event)
        return False  # stop after the first decided seed

    summary = generate_demos(tmp_path / "ds", 5, env_config=ENV, workers=1, progress=False, callback=cb)
    assert len(calls) == 1 and calls[0]["total"] == 5
    assert summary["episodes"] <= 1
