"""The Data page's import of a LeRobot v3.0 dataset archive (ui/dataio.py -> core/datasets/lerobot.py):
unpacked under ui/archive.py's limits, converted, checked like any Dojo archive, written all-or-nothing."""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.datasets import lerobot_export as lrx  # noqa: E402
from storage import repo  # noqa: E402
from storage.models import Episode  # noqa: E402
from tests.core.datasets import lerobot_builder as B  # noqa: E402
from tests.ui.test_dataio import admin, count, db  # noqa: E402,F401 - the same fixtures and row count
from ui import dataio  # noqa: E402


def zip_folder(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, f"{root.name}/{p.relative_to(root).as_posix()}")
    return buf.getvalue()


def two_dim_dataset(root: Path) -> Path:
    g = np.random.default_rng(1)
    eps = [lrx.ExportEpisode(frames=g.integers(0, 255, (n + 1, 16, 16, 3), dtype=np.uint8),
                            actions=g.uniform(-3, 3, (n, 2)).astype(np.float32), instruction=f"task {i % 2}",
                            proprio=np.zeros((n + 1, 2), np.float32)) for i, n in enumerate((4, 6, 5))]
    lrx.export_lerobot_v3(eps, root, fps=10, episodes_per_file=2)
    return root


def test_a_lerobot_archive_imports_into_the_task(db, admin, seeded, tmp_path):
    before = count(db)
    blob = zip_folder(two_dim_dataset(tmp_path / "src" / "so100"))
    res = dataio.import_archive(db, blob, "so100.zip", seeded.task_id, actor=admin, datasets_dir=tmp_path / "ds")
    assert res.episodes == 3 and res.frames == 5 + 7 + 6 and count(db) == before + 3
    assert res.lerobot["dataset"]["total_frames"] == res.frames and "success" in res.lerobot["note"]
    assert (res.path / "dataset.json").exists() and len(list((res.path / "episodes").glob("*.npz"))) == 3
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["so100"]  # nothing else left
    with db.read() as s:
        ep = s.get(Episode, res.episode_ids[1])
        assert ep.source == "demo" and ep.gt_success is True and ep.length == 6 and ep.instruction == "task 1"
        assert repo.get_frame(s, ep.id, 6) is not None


def test_a_lerobot_archive_with_another_action_size_is_refused_whole(db, admin, seeded, tmp_path):
    before = count(db)
    blob = zip_folder(B.build(tmp_path / "src" / "so100"))  # action of 3 values; the task's episodes have 2
    with pytest.raises(dataio.ArchiveError, match="the dataset's action has 3 values; the task needs 2"):
        dataio.import_archive(db, blob, "so100.zip", seeded.task_id, actor=admin, datasets_dir=tmp_path / "ds")
    assert count(db) == before and list((tmp_path / "ds").iterdir()) == []


def test_a_broken_lerobot_archive_is_refused_whole(db, admin, seeded, tmp_path):
    src = two_dim_dataset(tmp_path / "src" / "so100")
    shutil.rmtree(src / "videos")
    with pytest.raises(dataio.ArchiveError, match="file-000.mp4 is missing"):
        dataio.import_archive(db, zip_folder(src), "so100.zip", seeded.task_id, actor=admin,
                              datasets_dir=tmp_path / "ds")
    assert list((tmp_path / "ds").iterdir()) == []


def test_data_page_imports_a_lerobot_archive(app, seeded, tmp_path):
    blob = zip_folder(two_dim_dataset(tmp_path / "so100"))
    at = app("data", "supervisor").run()
    at.get("file_uploader")[0].set_value(("so100.zip", blob, "application/zip"))
    at.run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    assert any("Imported 3 episodes" in s.value for s in at.success)
    assert any("LeRobot dataset" in i.value for i in at.info)
