"""A reviewer's first-frame clicks written into a dataset: what Stage 1 then reads, and what is refused
with nothing written (a simulator's every-frame labels, bad names, bad clicks, a corrupt file)."""
from __future__ import annotations

import numpy as np
import pytest

from core.datasets import first_frame_labels as L
from core.learning.dataset import load_episodes
from core.learning.sft import keep_keypoint_labels
from tests.core.datasets.dojo_builder import write_tiny_dataset


def _dataset(root, n=3, keypoints_on=()):
    return write_tiny_dataset(root, n, keypoints_on=keypoints_on)


def test_clicks_become_frame_zero_keypoints_that_stage1_reads_and_tracks(tmp_path):
    root = _dataset(tmp_path / "d")
    eps = L.list_episodes(root)
    assert [e.kind for e in eps] == ["none"] * 3 and eps[1].n_frames == 7
    assert eps[0].instruction == "push the <b>red</b> block 0 to the top left"  # text as stored; the page escapes it
    before = {k: v for k, v in np.load(root / eps[1].file).items()}
    saved = L.save_clicks(root, eps[1].file, [(-0.5, 0.25), (0.5, -0.75)])
    assert saved.kind == "first" and saved.first == ((-0.5, 0.25), (0.5, -0.75))
    assert [e.kind for e in L.list_episodes(root)] == ["none", "first", "none"]
    after = dict(np.load(root / eps[1].file).items())
    for k, v in before.items():  # every other array byte for byte
        assert after[k].dtype == v.dtype and np.array_equal(after[k], v), k
    kp = after["keypoints"]
    assert kp.shape == (7, 2, 2) and kp.dtype == np.float32 and np.isnan(kp[1:]).all()
    _, loaded = load_episodes(root)  # Stage 1's loader accepts frame-0-only labels
    assert loaded[1].keypoints is not None and loaded[0].keypoints is None
    tracked = keep_keypoint_labels(loaded[1], "tracked")
    assert np.isfinite(tracked.keypoints).all() and np.allclose(tracked.keypoints[0], kp[0])
    L.save_clicks(root, eps[1].file, [(0.0, 0.0), (0.1, 0.1)])  # a correction replaces the clicks
    assert np.allclose(L.list_episodes(root)[1].first, ((0.0, 0.0), (0.1, 0.1)))


def test_a_simulators_every_frame_labels_are_never_overwritten(tmp_path):
    root = _dataset(tmp_path / "d", keypoints_on=(0,))
    ep = L.list_episodes(root)[0]
    assert ep.kind == "all"
    data = (root / ep.file).read_bytes()
    with pytest.raises(L.LabelError, match="every frame.*Nothing written"):
        L.save_clicks(root, ep.file, [(0, 0), (0.5, 0.5)])
    assert (root / ep.file).read_bytes() == data


@pytest.mark.parametrize("file,points,word", [
    ("episodes/ep_000000000.npz", [(0, 0)], "need 2 clicks"),
    ("episodes/ep_000000000.npz", [(0, 0), (1.5, 0)], "need 2 clicks"),
    ("episodes/ep_000000000.npz", [(0, 0), (float("nan"), 0)], "need 2 clicks"),
    ("../../etc/passwd", [(0, 0), (0, 0)], "not an episode file"),
    ("episodes/ep_000000099.npz", [(0, 0), (0, 0)], "reload the page"),
])
def test_bad_clicks_and_files_are_refused_with_nothing_written(tmp_path, file, points, word):
    root = _dataset(tmp_path / "d")
    data = {p.name: p.read_bytes() for p in (root / "episodes").iterdir()}
    with pytest.raises(L.LabelError, match=word):
        L.save_clicks(root, file, points)
    assert {p.name: p.read_bytes() for p in (root / "episodes").iterdir()} == data


def test_a_corrupt_episode_file_is_named_not_crashed_on(tmp_path):
    root = _dataset(tmp_path / "d")
    bad = root / "episodes" / "ep_000000001.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(L.LabelError, match="ep_000000001.npz: not a readable episode file"):
        L.list_episodes(root)
    with pytest.raises(L.LabelError, match="nothing written"):
        L.save_clicks(root, "episodes/ep_000000001.npz", [(0, 0), (0, 0)])
    assert bad.read_bytes() == b"not a zip"


def test_dataset_names_are_folders_directly_inside_the_datasets_dir(tmp_path):
    _dataset(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    assert L.list_datasets(tmp_path) == ["good"] and L.list_datasets(tmp_path / "missing") == []
    assert L.dataset_root(tmp_path, "good") == tmp_path / "good"
    for name in ("..", "../good", "good/episodes", "", ".hidden"):
        with pytest.raises(L.LabelError, match="not a dataset folder name"):
            L.dataset_root(tmp_path, name)
    with pytest.raises(L.LabelError, match="import the dataset on the Data page"):
        L.dataset_root(tmp_path, "empty")
    assert L.dataset_backend(tmp_path / "good") == "tabletop"


def test_pixels_and_uv_agree_with_the_simulators_convention():
    # (u, v) in [-1, 1] at the image's edges, u left to right, v top to bottom (scene.project)
    assert L.pixel_to_uv(0, 0, 320, 320) == (-1.0, -1.0) and L.pixel_to_uv(320, 160, 320, 320) == (1.0, 0.0)
    assert L.pixel_to_uv(400, -5, 320, 320) == (1.0, -1.0)  # a click on the border stays in the image
    assert L.uv_to_pixel(*L.pixel_to_uv(80, 240, 320, 320), 320, 320) == pytest.approx((80, 240))
    with pytest.raises(L.LabelError):
        L.pixel_to_uv(1, 1, 0, 320)
