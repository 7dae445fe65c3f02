"""LeRobot v3.0 in and out (core/datasets/lerobot.py): a hand-built dataset is read and imported
with its own meta counts, frames and actions; refusals leave nothing; Dojo episodes exported
and imported again keep their counts, lengths, instructions, frames and actions."""
from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import numpy as np
import pytest

import pyarrow.parquet as pq  # noqa: E402

from core.datasets import lerobot as lr  # noqa: E402
from core.datasets import lerobot_export as lrx  # noqa: E402
from tests.core.datasets import lerobot_builder as B  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TOL = 10  # colour error of a solid frame through yuv420p and lossy coding


@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> Path:
    return B.build(tmp_path_factory.mktemp("lerobot") / "so100_demo")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_the_module_imports_no_torch_and_nothing_of_learning_or_the_ui():
    for name in ("lerobot.py", "from_db.py", "__init__.py"):
        tree = ast.parse((ROOT / "core" / "datasets" / name).read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = [m for m in mods if m.split(".")[0] in ("torch", "mujoco", "ui", "pages", "sim_backends")
               or m.startswith(("core.learning", "core.worker", "core.cli"))]
        assert not bad, (name, bad)


def test_import_matches_the_datasets_meta_and_frames_actions_tasks(handmade, tmp_path):
    t0 = time.perf_counter()
    out = tmp_path / "imported"
    s = lr.import_lerobot(handmade, out, image_size=16)
    seconds = time.perf_counter() - t0
    print(f"\nimport: {s['imported']['episodes']} episodes, {s['imported']['frames']} frames in {seconds:.2f} s")
    assert s["dataset"]["total_episodes"] == s["imported"]["episodes"] == len(B.LENGTHS)
    assert s["dataset"]["total_frames"] == s["imported"]["frames"] == sum(B.LENGTHS)
    assert s["dataset"]["lengths"] == s["imported"]["lengths"] == B.LENGTHS
    assert s["camera"] == "observation.images.top"  # the first video feature
    assert s["frame_shape"] == [16, 16, 3] and s["action_bounds_from"] == "meta/stats.json"
    assert "demonstration" in s["note"] and "success" in s["note"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "dojo-demos" and meta["version"] == 1
    low, high = np.array(meta["action_low"]), np.array(meta["action_high"])
    allact = np.concatenate([B.raw_actions(e) for e in range(len(B.LENGTHS))])
    np.testing.assert_allclose(low, allact.min(0), rtol=1e-6)
    np.testing.assert_allclose(high, allact.max(0), rtol=1e-6)
    files = sorted((out / "episodes").glob("ep_*.npz"))
    assert len(files) == len(B.LENGTHS)
    for e, f in enumerate(files):
        with np.load(f) as z:
            frames, actions, proprio = z["frames"], z["actions"], z["proprio"]
            n = B.LENGTHS[e]
            assert frames.shape == (n, 16, 16, 3) and frames.dtype == np.uint8
            assert actions.shape == (n - 1, 3) and proprio.shape == (n, 4)
            assert np.abs(actions).max() <= 1.0
            back = low + (actions + 1) / 2 * (high - low)
            np.testing.assert_allclose(back, B.raw_actions(e)[:-1], atol=1e-4)
            np.testing.assert_allclose(proprio, B.states(e), atol=1e-6)
            assert str(z["instruction"]) == B.TASKS[B.EP_TASK[e]] and bool(z["success"]) and int(z["seed"]) == e
            for t in range(n):  # the right frame of the right episode, out of files holding several
                assert np.abs(frames[t].reshape(-1, 3).mean(0) - B.colour(0, e, t)).max() < TOL, (e, t)


def test_the_imported_dataset_passes_dojos_own_reader(handmade, tmp_path):
    from core.learning.dataset import load_episodes

    lr.import_lerobot(handmade, tmp_path / "d", image_size=16, backend="tabletop", env_config={"image_size": 16})
    meta, eps = load_episodes(tmp_path / "d")
    assert meta["backend"] == "tabletop" and [len(e.frames) for e in eps] == B.LENGTHS


@pytest.mark.parametrize("camera, shape, cam_id", [("observation.images.wrist", (16, 16), 1),  # AV1 video
                                                    ("observation.images.side", (8, 8), 2)])  # parquet PNG
def test_another_camera_at_its_own_size(handmade, camera, shape, cam_id):
    eps = list(lr.read_lerobot(handmade, camera=camera))
    assert [len(e.frames) for e in eps] == B.LENGTHS
    for e, ep in enumerate(eps):
        assert ep.frames.shape[1:] == (*shape, 3)
        for t in range(len(ep.frames)):
            assert np.abs(ep.frames[t].reshape(-1, 3).mean(0) - B.colour(cam_id, e, t)).max() < TOL, (e, t)


def test_the_native_size_is_kept_without_image_size(handmade):
    ep = next(lr.read_lerobot(handmade))
    assert ep.frames.shape == (B.LENGTHS[0], 24, 32, 3)


def test_a_wrong_action_size_is_refused_and_leaves_nothing(handmade, tmp_path):
    with pytest.raises(lr.LeRobotError, match="the dataset's action has 3 values; the task needs 2"):
        lr.import_lerobot(handmade, tmp_path / "x", expect_action_dim=2)
    assert _leftovers(tmp_path) == []


def test_an_unknown_camera_names_the_cameras(handmade, tmp_path):
    with pytest.raises(lr.LeRobotError, match="observation.images.wrist"):
        lr.import_lerobot(handmade, tmp_path / "x", camera="front")
    assert _leftovers(tmp_path) == []


def test_a_dataset_without_camera_is_refused_and_leaves_nothing(tmp_path):
    src = B.build(tmp_path / "src", cameras=())
    with pytest.raises(lr.LeRobotError, match="no camera"):
        lr.import_lerobot(src, tmp_path / "out" / "x")
    assert not (tmp_path / "out").exists() or _leftovers(tmp_path / "out") == []


def test_a_missing_video_fails_midway_and_leaves_nothing(handmade, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(handmade, src)
    (src / "videos/observation.images.top/chunk-000/file-001.mp4").unlink()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(lr.LeRobotError, match="file-001.mp4 is missing"):
        lr.import_lerobot(src, out / "x")
    assert _leftovers(out) == []


def test_an_older_version_is_refused_with_the_conversion_hint(handmade, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(handmade, src)
    info = json.loads((src / "meta/info.json").read_text())
    (src / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(lr.LeRobotError, match="v2.1.*convert"):
        lr.import_lerobot(src, tmp_path / "x")


def _dojo_episodes(lengths=(5, 7, 3, 9, 4), size=(24, 32)):
    g = np.random.default_rng(0)
    instr = ["push the red moon to the blue cube", "move the green star to the top left corner", "stack the cubes"]
    eps = []
    for i, n in enumerate(lengths):
        frames = np.stack([np.broadcast_to(B.colour(0, i, t), (*size, 3)) for t in range(n + 1)]).copy()
        eps.append(lrx.ExportEpisode(frames=frames, actions=g.uniform(-1, 1, (n, 2)).astype(np.float32),
                                    instruction=instr[i % 3], proprio=g.normal(size=(n + 1, 3)).astype(np.float32),
                                    d=[float(n - t) for t in range(n + 1)], reward=[0.5] * n + [None],
                                    detector_fired=[False] * n + [True], gt_success=True,
                                    override_success=None if i else False, meta={"episode_id": 100 + i}))
    return eps


def test_export_writes_the_v3_layout_lerobot_loads(tmp_path):
    eps = _dojo_episodes()
    s = lrx.export_lerobot_v3(eps, tmp_path / "out", fps=10, episodes_per_file=2)
    root = tmp_path / "out"
    assert s["episodes"] == 5 and s["frames"] == sum(len(e.frames) for e in eps) and s["tasks"] == 3
    assert s["data_files"] == 3 and s["codec"] == lrx.pick_codec()
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 5 and info["total_frames"] == s["frames"]
    assert info["total_tasks"] == 3 and info["splits"] == {"train": "0:5"} and info["chunks_size"] == 1000
    f = info["features"]
    assert f["action"] == {"dtype": "float32", "shape": [2], "names": ["a0", "a1"]}
    assert f["observation.state"]["shape"] == [3]
    cam = f[lr.CAMERA_KEY]
    assert cam["dtype"] == "video" and cam["shape"] == [24, 32, 3]
    assert cam["info"]["video.codec"] == {"libsvtav1": "av1", "libx264": "h264"}[s["codec"]]
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index", "dojo.d", "dojo.reward",
              "dojo.detector_fired", "dojo.gt_success", "dojo.override_success", "dojo.action_valid"):
        assert f[k]["shape"] == [1], k
    for i in range(3):
        assert (root / f"data/chunk-000/file-{i:03d}.parquet").exists()
        assert (root / f"videos/{lr.CAMERA_KEY}/chunk-000/file-{i:03d}.mp4").exists()
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")  # episodes 0 and 1
    assert set(data.column("episode_index").to_pylist()) == {0, 1}
    assert data.schema.field("action").type.list_size == 2
    assert data.column("index").to_pylist() == list(range(data.num_rows))
    valid = data.column("dojo.action_valid").to_pylist()
    assert valid[5] is False and valid[:5] == [True] * 5  # Dojo's last frame has no action of its own
    em = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["length"] for r in em] == [len(e.frames) for e in eps]
    assert [r["dataset_from_index"] for r in em] == [0, 6, 14, 18, 28]
    assert [r[f"videos/{lr.CAMERA_KEY}/from_timestamp"] for r in em] == [0.0, 0.6, 0.0, 0.4, 0.0]
    assert em[0]["dojo/episode_id"] == 100 and em[2]["tasks"] == ["stack the cubes"]
    import pandas as pd

    tasks = pd.read_parquet(root / "meta/tasks.parquet")  # how LeRobot reads it: the text is the index
    assert tasks.index.name == "task" and tasks.loc["stack the cubes"].task_index == 2
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats["action"]) >= {"min", "max", "mean", "std", "count", "q01", "q99"}
    assert np.array(stats[lr.CAMERA_KEY]["mean"]).shape == (3, 1, 1)
    assert not list(tmp_path.glob(".out.*"))


def test_round_trip_dojo_to_lerobot_and_back(tmp_path):
    eps = _dojo_episodes()
    lrx.export_lerobot_v3(eps, tmp_path / "lr", fps=10, episodes_per_file=2)
    s = lr.import_lerobot(tmp_path / "lr", tmp_path / "dojo")
    assert s["dataset"]["total_episodes"] == s["imported"]["episodes"] == 5
    assert s["imported"]["lengths"] == [len(e.frames) for e in eps] == s["dataset"]["lengths"]
    meta = json.loads((tmp_path / "dojo/dataset.json").read_text())
    low, high = np.array(meta["action_low"]), np.array(meta["action_high"])
    for i, (ep, f) in enumerate(zip(eps, sorted((tmp_path / "dojo/episodes").glob("*.npz")))):
        with np.load(f) as z:
            assert str(z["instruction"]) == ep.instruction
            assert z["frames"].shape == ep.frames.shape and z["actions"].shape == ep.actions.shape
            back = low + (z["actions"] + 1) / 2 * (high - low)
            np.testing.assert_allclose(back, ep.actions, atol=1e-5)
            np.testing.assert_allclose(z["proprio"], ep.proprio, atol=1e-6)
            assert np.abs(z["frames"].astype(int) - ep.frames).mean() < TOL


def test_export_refuses_mixed_shapes_and_leaves_nothing(tmp_path):
    eps = _dojo_episodes(lengths=(3,)) + _dojo_episodes(lengths=(3,), size=(16, 16))
    with pytest.raises(lr.LeRobotError, match="one camera feature has one shape"):
        lrx.export_lerobot_v3(eps, tmp_path / "out")
    assert _leftovers(tmp_path) == []


def test_cli_imports_lerobot_and_dojo_folders_and_exports(handmade, tmp_path, capsys):
    from core.cli import main

    assert main(["data", "import", str(handmade), "--out", str(tmp_path / "a"), "--image-size", "16",
                 "--camera", "observation.images.wrist"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["imported"]["frames"] == out["dataset"]["total_frames"] == sum(B.LENGTHS)
    assert main(["data", "import", str(handmade), "--out", str(tmp_path / "b"), "--action-dim", "2"]) == 2
    assert "the task needs 2" in capsys.readouterr().err and not (tmp_path / "b").exists()
    # a Dojo folder: checked by Dojo's reader, exported to LeRobot, zipped, imported back
    assert main(["data", "import", str(tmp_path / "a"), "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["data", "export", "--format", "lerobot", "--data", str(tmp_path / "c"),
                 "--out", str(tmp_path / "lr")]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == len(B.LENGTHS)
    import shutil

    archive = shutil.make_archive(str(tmp_path / "lr_zip"), "zip", tmp_path, "lr")
    assert main(["data", "import", archive, "--out", str(tmp_path / "d")]) == 0
    assert json.loads(capsys.readouterr().out)["imported"]["lengths"] == B.LENGTHS


def test_stage1_trains_on_an_imported_dataset(handmade, tmp_path):
    from core.learning.sft import SFTConfig, train_sft
    from tests.core.learning.helpers import tiny_config

    lr.import_lerobot(handmade, tmp_path / "d", image_size=32, backend="tabletop", env_config={"image_size": 32})
    cfg = SFTConfig(data=str(tmp_path / "d"), out=str(tmp_path / "run"), epochs=1, batch_size=8, eval_every=0,
                    threads=1, device="cpu", policy=tiny_config(action_dim=3, proprio_dim=4), val_fraction=0.2)
    res = train_sft(cfg, progress=False)
    assert res["last"]["epoch"] == 1
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert run["train_episodes"] + run["val_episodes"] == len(B.LENGTHS)
    # The dataset's bounds travel into the checkpoint, so its actions go back to the robot in its units.
    from core.learning.checkpoint import load_checkpoint

    meta = json.loads((tmp_path / "d/dataset.json").read_text())
    policy, _ = load_checkpoint(res["best_policy"])
    assert list(policy.config.action_low) == pytest.approx(meta["action_low"])
    assert list(policy.config.action_high) == pytest.approx(meta["action_high"])
    np.testing.assert_allclose(policy.config.to_robot_units(np.ones(3)), meta["action_high"])


def test_cli_exports_stored_episodes_from_the_database(tmp_path, capsys):
    from core.cli import main
    from tests.ui.seeding import seed

    seeded = seed(str(tmp_path / "dojo.sqlite"), episodes=6, robots=1, steps=5)
    assert main(["data", "export", "--format", "lerobot", "--db", seeded.url, "--out", str(tmp_path / "lr"),
                 "--task", str(seeded.task_id), "--limit", "4"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["episodes"] == 4 and s["frames"] == 20
    back = lr.import_lerobot(tmp_path / "lr", tmp_path / "dojo", expect_action_dim=2)
    assert back["imported"]["lengths"] == [5] * 4 == back["dataset"]["lengths"]
    assert main(["data", "export", "--db", seeded.url, "--out", str(tmp_path / "none"), "--source", "eval"]) == 2
    assert "nothing to export" in capsys.readouterr().err


def test_without_stats_the_action_bounds_come_from_the_data(handmade, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(handmade, src)
    (src / "meta/stats.json").unlink()
    s = lr.import_lerobot(src, tmp_path / "x", image_size=8)
    allact = np.concatenate([B.raw_actions(e) for e in range(len(B.LENGTHS))])
    assert s["action_bounds_from"].startswith("the data")
    np.testing.assert_allclose(s["action_low"], allact.min(0), rtol=1e-6)
    np.testing.assert_allclose(s["action_high"], allact.max(0), rtol=1e-6)
