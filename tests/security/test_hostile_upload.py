"""Hostile uploads to the Data page's import (ui/dataio.py, ui/archive.py).

The finding: a 1 MB zip holding 1 GiB of zeros took the web app from 250 MB to 2.3 GB
resident before it was refused, because members were decompressed whole in memory. Each
archive here is refused with a message naming the file and the figures, leaves nothing in
the datasets folder and the database as it was; the peak memory of a refusal is measured in a
subprocess (so this test process' own memory does not count). The bombs are built on disk
without holding them (bench/hostile_upload.py: a compressed segment of zeros repeated, zip
headers written by hand so they can lie).
"""
from __future__ import annotations

import io
import json
import tarfile
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from bench.hostile_upload import META, crc_zeros, refusal_figures, stored, write_zip, zeros_tar_gz, zeros_zip
from storage import init_db
from storage.models import AuditEntry, Episode, User
from tests.ui.seeding import seed
from ui import archive, dataio

GIB = 1 << 30
MIB = 1 << 20
EP = "episodes/ep_000000000.npz"


def npz(seed_: int = 0, T: int = 5, frames=None) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, frames=np.zeros((T + 1, 16, 16, 3), np.uint8) if frames is None else frames,
                        proprio=np.zeros((T + 1, 2), np.float32), actions=np.zeros((T, 2), np.float32),
                        instruction=np.array("push the red moon to the blue cube"), seed=np.int64(seed_),
                        success=np.bool_(True))
    return buf.getvalue()


def good_members() -> list:
    return [stored("dataset.json", json.dumps(META).encode()), stored(EP, npz())]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seed(str(tmp_path_factory.mktemp("hostile") / "dojo.sqlite"), episodes=2, robots=1)


@pytest.fixture(scope="module")
def db(seeded):
    return init_db(seeded.url)


@pytest.fixture(scope="module")
def admin(db, seeded):
    with db.read() as s:
        return s.get(User, seeded.user_ids["admin"])


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """The 1 GiB-of-zeros zip (~1 MB on disk) and tar.gz, built once."""
    d = tmp_path_factory.mktemp("bombs")
    return {"zip": zeros_zip(d / "bomb.zip", GIB), "tar.gz": zeros_tar_gz(d / "bomb.tar.gz", GIB)}


@pytest.fixture
def refused(db, admin, seeded, tmp_path):
    """``refused(source, filename)``: import it, expect ArchiveError, check nothing was kept;
    returns the message."""
    def run(source, filename: str) -> str:
        def state():
            with db.read() as s:
                return (s.scalar(select(func.count()).select_from(Episode)),
                        s.scalar(select(func.count()).select_from(AuditEntry)))
        before = state()
        datasets = tmp_path / "datasets"
        with pytest.raises(dataio.ArchiveError) as e:
            dataio.import_archive(db, source, filename, seeded.task_id, actor=admin, datasets_dir=datasets)
        message = str(e.value)
        assert "nothing was written" in message
        assert list(datasets.iterdir()) == [], "the temporary folder must be removed"
        assert state() == before, "the database must be unchanged"
        return message
    return run


def test_zip_of_1gib_of_zeros_is_refused_from_its_headers(bombs, refused):
    assert bombs["zip"].stat().st_size < 2 * MIB
    message = refused(bombs["zip"], "bomb.zip")
    assert f"{EP}: unpacks to 1.0 GiB (its header says), over the 256 MiB limit for one file" in message
    assert f"{EP}: unpacks to more than 100x its compressed size (1020 KiB -> 1.0 GiB, its header says)" in message
    assert "zip bomb" in message


def test_zip_bomb_is_refused_while_streaming_when_headers_are_not_checked(bombs, refused, monkeypatch):
    """The counts taken while unpacking refuse it on their own (a header is never trusted alone)."""
    monkeypatch.setattr(archive, "CHECK_HEADERS", False)
    message = refused(bombs["zip"].read_bytes(), "bomb.zip")  # bytes, as the old API took them
    assert (f"{EP}: unpacks to more than 100x its compressed size (1020 KiB -> over 99.6 MiB); a dataset "
            "archive of images compresses far less; this looks like a zip bomb and was refused") in message


@pytest.mark.parametrize("crc, expected", [
    ("true", f"{EP}: cannot be read from the archive (Bad CRC-32 for file '{EP}'; 0 B read of the 10.0 KiB "
             "its header declares); the archive is corrupt, encrypted or its header does not match its data"),
    ("of the lie", f"{EP}: not a readable numpy .npz file"),
], ids=["true-checksum", "checksum-of-the-lie"])
def test_zip_whose_header_lies_about_its_size(tmp_path, refused, crc, expected):
    """The header says 10 KiB; the data is 64 MiB of zeros. Nothing past the declared size is
    ever unpacked: with the real checksum the read fails after 10 KiB, with a checksum of what
    the header claims the file is cut to 10 KiB (and is then no episode)."""
    path = zeros_zip(tmp_path / "liar.zip", 64 * MIB, declared=10 * 1024,
                     crc=None if crc == "true" else crc_zeros(10 * 1024))
    assert expected in refused(path, "liar.zip")


def test_tar_gz_bomb_is_refused_from_its_header_and_by_the_ratio_of_the_whole_stream(bombs, refused, monkeypatch):
    message = refused(bombs["tar.gz"], "bomb.tar.gz")
    assert f"{EP}: unpacks to 1.0 GiB (its header says), over the 256 MiB limit for one file" in message
    # A gz stream has no per-member compressed size: the whole archive's bytes read vs unpacked.
    monkeypatch.setattr(archive, "CHECK_HEADERS", False)
    with open(bombs["tar.gz"], "rb") as upload:  # a file object, like Streamlit's UploadedFile
        message = refused(upload, "bomb.tar.gz")
    assert "bomb.tar.gz: unpacks to more than 100x its compressed size (" in message
    assert f"KiB read -> over 1.0 MiB, while unpacking {EP}); a dataset archive of images" in message


def test_a_bomb_under_every_size_limit_is_still_refused_by_the_ratio(tmp_path, refused):
    path = zeros_tar_gz(tmp_path / "small.tar.gz", 200 * MIB)  # under the per-file and total limits
    assert "unpacks to more than 100x its compressed size" in refused(path, "small.tar.gz")


def test_size_limits_hold_while_streaming(tmp_path, refused, monkeypatch):
    rnd = np.random.default_rng(0).bytes(3 * MIB)  # incompressible: the ratio is ~1
    path = tmp_path / "big.zip"
    write_zip(path, [stored("dataset.json", json.dumps(META).encode()), stored(EP, rnd),
                     stored("episodes/ep_000000001.npz", rnd)])
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 2 * MIB)
    message = refused(path, "big.zip")
    assert f"{EP}: unpacks to 3.0 MiB (its header says), over the 2.0 MiB limit for one file" in message
    monkeypatch.setattr(archive, "CHECK_HEADERS", False)
    assert (f"{EP}: unpacks to more than 2.0 MiB (the limit for one file) although its header says 3.0 MiB"
            in refused(path, "big.zip"))
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 256 * MIB)
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 5 * MIB)
    assert "big.zip: unpacks to more than 5.0 MiB (the limit for one archive)" in refused(path, "big.zip")
    monkeypatch.setattr(archive, "CHECK_HEADERS", True)
    message = refused(path, "big.zip")
    assert "big.zip: unpacks to more than 5.0 MiB (its headers say; the limit for one archive)" in message


def test_an_episode_whose_arrays_would_unpack_to_gigabytes_is_refused_before_np_load(tmp_path, refused):
    """An .npz is a zip too: a tiny episode file whose .npy header declares a 1.2 GB frames array."""
    inner = io.BytesIO()
    np.lib.format.write_array_header_1_0(inner, {"descr": "|u1", "fortran_order": False,
                                                 "shape": (100_000, 64, 64, 3)})
    inner.write(bytes(1024))
    ep = io.BytesIO()
    with zipfile.ZipFile(ep, "w") as zf:
        zf.writestr("frames.npy", inner.getvalue())
    path = tmp_path / "nested.zip"
    write_zip(path, [stored("dataset.json", json.dumps(META).encode()), stored(EP, ep.getvalue())])
    assert (f"{EP}: its arrays unpack to 1.1 GiB (largest: frames uint8 [100000, 64, 64, 3]), over the 256 MiB "
            "limit for one episode") in refused(path, "nested.zip")


def test_too_many_members(tmp_path, refused, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(archive.MAX_MEMBERS + 1):
            zf.writestr(f"episodes/ep_{i:09d}.npz", b"")
    # A zip's count is read from its end record, before any entry is parsed or written.
    assert "many.zip: holds 10,001 entries, over the limit of 10,000" in refused(buf.getvalue(), "many.zip")
    # A tar stream is counted as it is read; the limit is lowered so the test does not create
    # 10,000 files first (~1 ms each on this disk).
    monkeypatch.setattr(archive, "MAX_MEMBERS", 100)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(101):
            tf.addfile(tarfile.TarInfo(f"episodes/ep_{i:09d}.npz"), io.BytesIO(b""))
    assert "many.tar.gz: holds 101 entries, over the limit of 100" in refused(buf.getvalue(), "many.tar.gz")


EVIL = f"dojo-evil-{uuid.uuid4().hex[:8]}.npz"
TRAVERSALS = [f"../{EVIL}", f"/tmp/{EVIL}", f"episodes/../../{EVIL}", f"..\\..\\{EVIL}", f"C:/{EVIL}"]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_path_traversal_names_are_refused_and_nothing_lands_outside(tmp_path, refused, kind):
    evil = npz(seed_=1)
    if kind == "zip":
        path = tmp_path / "evil.zip"
        write_zip(path, good_members() + [stored(name, evil) for name in TRAVERSALS])
    else:
        path = tmp_path / "evil.tar"
        with tarfile.open(path, "w") as tf:
            for name, data in [("dataset.json", json.dumps(META).encode()), (EP, npz())] + \
                    [(n, evil) for n in TRAVERSALS]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    message = refused(path, path.name)
    for name in TRAVERSALS:
        assert f"{name}: absolute or '..' paths are not allowed in a dataset archive" in message
    assert not list(tmp_path.parent.rglob(EVIL)) and not Path("/tmp", EVIL).exists()


def test_links_and_device_files_are_refused(tmp_path, refused):
    path = tmp_path / "links.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in (("dataset.json", json.dumps(META).encode()), (EP, npz())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind in (("episodes/ep_000000001.npz", tarfile.SYMTYPE), ("rejected.jsonl", tarfile.LNKTYPE),
                           ("episodes/ep_000000002.npz", tarfile.FIFOTYPE), ("episodes/dev", tarfile.CHRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tf.addfile(info)
    message = refused(path, "links.tar.gz")
    for name in ("episodes/ep_000000001.npz", "rejected.jsonl", "episodes/ep_000000002.npz", "episodes/dev"):
        assert f"{name}: links and device files are not allowed in a dataset archive" in message
    zpath = tmp_path / "links.zip"
    write_zip(zpath, good_members() + [stored("episodes/ep_000000001.npz", b"/etc/passwd", mode=0o120777)])
    assert ("episodes/ep_000000001.npz: links and device files are not allowed in a dataset archive"
            in refused(zpath, "links.zip"))


def test_a_good_archive_imports_from_a_path_and_from_a_file_object(db, admin, seeded, tmp_path):
    path = tmp_path / "good.zip"
    write_zip(path, good_members())
    for source in (path, io.BytesIO(path.read_bytes())):
        res = dataio.import_archive(db, source, "good.zip", seeded.task_id, actor=admin,
                                    datasets_dir=tmp_path / "datasets")
        assert res.episodes == 1 and (res.path / EP).exists()
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["good", "good-2"]


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_good_tars_import_whatever_their_compression(db, admin, seeded, tmp_path, mode):
    """A plain .tar ending with an episode .npz (itself a zip) has a zip's end record near its
    end; it is still read as the tar it is."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in (("dataset.json", json.dumps(META).encode()), (EP, npz())):
            info = tarfile.TarInfo("demos/" + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    res = dataio.import_archive(db, buf.getvalue(), "demos.tar", seeded.task_id, actor=admin,
                                datasets_dir=tmp_path)
    assert res.episodes == 1 and (res.path / EP).exists() and [p.name for p in tmp_path.iterdir()] == ["demos"]


# --- peak memory, in a subprocess -------------------------------------------------------------

@pytest.mark.parametrize("kind, check_headers", [("zip", True), ("zip", False), ("tar.gz", False)])
def test_refusing_a_1gib_bomb_costs_almost_no_memory(bombs, tmp_path, kind, check_headers):
    r = refusal_figures(bombs[kind], check_headers=check_headers, tmp_dir=tmp_path)
    assert r["message"] and "zip bomb" in r["message"], r
    assert r["increase_mb"] < 100, f"peak {r['peak_mb']:.0f} MB over a baseline of {r['baseline_mb']:.0f} MB"
    assert list(tmp_path.iterdir()) == []


def test_a_valid_archive_is_checked_one_episode_at_a_time(tmp_path):
    """20 episodes of 4.3 MB (86 MB unpacked): the check's peak is about one episode, not the archive."""
    frames = np.zeros((100, 120, 120, 3), np.uint8)
    members = [stored("dataset.json", json.dumps(META).encode())]
    for i in range(20):
        buf = io.BytesIO()
        np.savez(buf, frames=frames, proprio=np.zeros((100, 2), np.float32), actions=np.zeros((99, 2), np.float32),
                 instruction=np.array("push"), seed=np.int64(i), success=np.bool_(True))
        members.append(stored(f"episodes/ep_{i:09d}.npz", buf.getvalue()))
    path = tmp_path / "valid.zip"
    write_zip(path, members)
    del members
    work = tmp_path / "work"
    work.mkdir()
    r = refusal_figures(path, tmp_dir=work)
    assert r["message"] is None, r["message"]
    assert r["increase_mb"] < 30, f"peak {r['peak_mb']:.0f} MB over a baseline of {r['baseline_mb']:.0f} MB"
    assert list(work.iterdir()) == []
