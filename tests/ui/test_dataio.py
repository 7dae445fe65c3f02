"""Dataset import (all-or-nothing, every file checked) and the LeRobot-style export."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
from sqlalchemy import func, select

from storage import init_db, repo
from storage.models import Episode, User
from ui import dataio


def npz(T=5, **over) -> bytes:
    arrays = dict(frames=np.zeros((T + 1, 16, 16, 3), np.uint8), proprio=np.zeros((T + 1, 2), np.float32),
                  actions=np.zeros((T, 2), np.float32), instruction=np.array("push the red moon to the blue cube"),
                  seed=np.int64(over.pop("seed", 7)), success=np.bool_(True))
    arrays.update(over)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


META = {"format": "dojo-demos", "version": 1, "backend": "tabletop", "env_config": {"family": "block2block"},
        "seed0": 0, "created": "2026-11-24T00:00:00"}


def zip_of(files: dict[str, bytes], top: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(top + name, data)
    return buf.getvalue()


def good_files(n=3):
    files = {"dataset.json": json.dumps(META).encode()}
    for i in range(n):
        files[f"episodes/ep_{i:09d}.npz"] = npz(seed=i)
    return files


@pytest.fixture
def db(seeded):
    return init_db(seeded.url)


@pytest.fixture
def admin(db, seeded):
    with db.read() as s:
        return s.get(User, seeded.user_ids["admin"])


def count(db):
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Episode))


def test_good_zip_imports_everything(db, admin, seeded, tmp_path):
    before = count(db)
    res = dataio.import_archive(db, zip_of(good_files(), top="mydemos/"), "mydemos.zip", seeded.task_id,
                                actor=admin, datasets_dir=tmp_path)
    assert res.episodes == 3 and res.frames == 18 and count(db) == before + 3
    assert (res.path / "dataset.json").exists() and len(list((res.path / "episodes").glob("*.npz"))) == 3
    with db.read() as s:
        ep = s.get(Episode, res.episode_ids[0])
        assert ep.source == "demo" and ep.gt_success is True and ep.length == 5
        assert repo.get_frame(s, ep.id, 5) is not None and len(repo.episode_curve(s, ep.id)) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".import-")]


def test_demos_that_hold_the_goal_import_with_steps_to_go_zero_from_the_goal(db, admin, seeded, tmp_path):
    files = {"dataset.json": json.dumps(META).encode(),
             "episodes/ep_000000004.npz": npz(seed=4, goal_step=np.int64(3))}
    res = dataio.import_archive(db, zip_of(files), "held.zip", seeded.task_id, actor=admin, datasets_dir=tmp_path)
    with db.read() as s:
        curve = repo.episode_curve(s, res.episode_ids[0])
    assert [d for _, d in curve] == [3.0, 2.0, 1.0, 0.0, 0.0, 0.0]


def test_tar_gz_works_too(db, admin, seeded, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in good_files(2).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    res = dataio.import_archive(db, buf.getvalue(), "demos.tar.gz", seeded.task_id, actor=admin, datasets_dir=tmp_path)
    assert res.episodes == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.pop("dataset.json"), "dataset.json is missing"),
    (lambda f: f.update({"dataset.json": b"{not json"}), "dataset.json: not valid JSON"),
    (lambda f: f.update({"dataset.json": json.dumps({**META, "format": "other"}).encode()}), "format is 'other'"),
    (lambda f: f.update({"episodes/ep_000000001.npz": b"garbage"}), "ep_000000001.npz: not a readable numpy"),
    (lambda f: f.update({"episodes/ep_000000002.npz": npz(seed=2, actions=np.zeros((3, 2), np.float32))}),
     "6 frames for 3 actions"),
    (lambda f: f.update({"episodes/ep_000000002.npz": npz(seed=2, actions=np.full((5, 2), 3.0, np.float32))}),
     "within [-1, 1]"),
    (lambda f: f.update({"episodes/ep_000000002.npz": npz(seed=2, frames=np.zeros((6, 16, 16), np.uint8))}),
     "frames must be uint8 [T+1, H, W, 3]"),
    (lambda f: f.update({"notes.txt": b"hi"}), "notes.txt: not part of the dataset format"),
    (lambda f: f.update({"episodes/ep_000000002.npz": npz(seed=2, goal_step=np.int64(9))}),
     "goal_step must be an integer frame index 0..T"),
    (lambda f: f.update({"episodes/ep_000000009.npz": npz(seed=0)}), "seed 0 repeats"),
    (lambda f: [f.pop(k) for k in list(f) if k.startswith("episodes/")], "no episode files"),
])
def test_bad_archives_are_refused_whole(db, admin, seeded, tmp_path, mutate, message):
    files = good_files()
    mutate(files)
    before = count(db)
    with pytest.raises(dataio.ArchiveError) as e:
        dataio.import_archive(db, zip_of(files), "bad.zip", seeded.task_id, actor=admin, datasets_dir=tmp_path)
    assert message in str(e.value) and "nothing was written" in str(e.value)
    assert count(db) == before
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_not_an_archive_and_unsafe_paths(db, admin, seeded, tmp_path):
    with pytest.raises(dataio.ArchiveError, match="neither a zip nor a tar"):
        dataio.validate_archive(b"hello world" * 100, "x.zip")
    with pytest.raises(dataio.ArchiveError, match="empty"):
        dataio.validate_archive(b"", "x.zip")
    files = good_files(1)
    files["../evil.npz"] = b"x"
    with pytest.raises(dataio.ArchiveError, match="'..' paths are not allowed"):
        dataio.validate_archive(zip_of(files), "x.zip")


def test_backend_mismatch_and_roles(db, admin, seeded, tmp_path):
    files = good_files(1)
    files["dataset.json"] = json.dumps({**META, "backend": "metaworld"}).encode()
    with pytest.raises(dataio.ArchiveError, match="does not match task"):
        dataio.import_archive(db, zip_of(files), "mw.zip", seeded.task_id, actor=admin, datasets_dir=tmp_path)
    with db.read() as s:
        viewer = s.get(User, seeded.user_ids["viewer"])
    with pytest.raises(repo.PermissionDenied):
        dataio.import_archive(db, zip_of(good_files(1)), "ok.zip", seeded.task_id, actor=viewer, datasets_dir=tmp_path)


def test_a_database_failure_leaves_no_files(db, admin, seeded, tmp_path, monkeypatch):
    before = count(db)

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(dataio.repo, "audit", boom)  # fails inside the write transaction, after the episodes
    with pytest.raises(RuntimeError):
        dataio.import_archive(db, zip_of(good_files()), "x.zip", seeded.task_id, actor=admin, datasets_dir=tmp_path)
    assert count(db) == before and list(tmp_path.iterdir()) == []


def test_export_is_lerobot_v3(db, seeded):
    import pyarrow.parquet as pq

    blob, summary = dataio.export_lerobot(db, task_id=seeded.task_id, source="practice", limit=3)
    assert summary["episodes"] == 3 and summary["frames"] == 60 and summary["format"] == "lerobot v3.0"
    zf = zipfile.ZipFile(io.BytesIO(blob))
    names = set(zf.namelist())
    assert {"meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
            "data/chunk-000/file-000.parquet", "videos/observation.images.camera/chunk-000/file-000.mp4",
            "README.md"} <= names
    info = json.loads(zf.read("meta/info.json"))
    assert info["codebase_version"] == "v3.0" and info["features"]["observation.images.camera"]["dtype"] == "video"
    assert info["features"]["action"]["shape"] == [2] and info["total_frames"] == 60
    table = pq.read_table(io.BytesIO(zf.read("data/chunk-000/file-000.parquet")))
    assert table.num_rows == 60 and table.column("action")[0].as_py() == pytest.approx([0.1, -0.2])
    assert table.column("dojo.action_valid").to_pylist()[19] is False
    assert table.column("dojo.d")[0].as_py() > 0
    eps = pq.read_table(io.BytesIO(zf.read("meta/episodes/chunk-000/file-000.parquet"))).to_pylist()
    assert len(eps) == 3 and "dojo/episode_id" in eps[0] and eps[0]["length"] == 20


def test_export_with_nothing_matching(db):
    with pytest.raises(ValueError, match="no finished episodes"):
        dataio.export_lerobot(db, source="eval")


def test_data_page_upload_good_and_bad(app, seeded):
    at = app("data", "supervisor").run()
    assert not at.exception
    at.get("file_uploader")[0].set_value(("bad.zip", zip_of({"dataset.json": b"{}"}), "application/zip"))
    at.run()
    next(b for b in at.button if b.label == "Import").click().run()
    errors = "\n".join(e.value for e in at.error)
    assert "nothing was written" in errors and "format is None" in errors
    at.get("file_uploader")[0].set_value(("good.zip", zip_of(good_files(2)), "application/zip"))
    at.run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception
    assert any("Imported 2 episodes" in s.value for s in at.success)
    next(b for b in at.button if b.label.startswith("Train Stage 1 on")).click().run()
    assert not at.exception
    db = init_db(seeded.url)
    with db.read() as s:
        job = repo.list_jobs(s, kind="sft", limit=1)[0]
    assert job.created_by == "supervisor" and job.params["data"].endswith("good")
