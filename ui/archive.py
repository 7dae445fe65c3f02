"""Unpacking an uploaded archive safely: streamed to disk member by member, under limits.

An upload is hostile input. A zip or tar can hold a "bomb" (a 1 MB zip of 1 GiB of zeros
took the web app from 250 MB to 2.3 GB resident when members were read whole into memory),
paths that climb out of the folder (``../``), links and device files, or headers that lie
about their sizes. So ``extract`` never holds more than one ``CHUNK`` of a member in memory:
it copies each member to a file under a fresh folder, counting the bytes it actually
produces against the limits below while it goes (a header's declared sizes are checked
first, for a fast refusal, but never trusted alone), and removes the folder on any refusal.
Every refusal names the file and the figures. Validation of the dataset's content then
reads the extracted files one at a time (``ui/dataio.py``).
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Union

import numpy as np

CHUNK = 1 << 20  # bytes read and written at a time: the most of a member ever held in memory
# 2 GiB unpacked per archive (was 4 GiB): a demo dataset of a few hundred 64-128 px episodes
# is tens to hundreds of MB, so 2 GiB is ample; every upload is unpacked to disk before it is
# checked and uploads can run concurrently, so this bounds the disk a few of them can take.
MAX_TOTAL_BYTES = 2 << 30
# 256 MiB per file: validation loads one episode's arrays in memory at a time, so this bounds
# the web app's extra memory per import (a 500-step episode at 224x224 px is ~75 MB). It also
# bounds the arrays inside an episode's .npz, which is itself a zip (see npz_unpacked_size).
MAX_MEMBER_BYTES = 256 << 20
# 10,000 entries: a dataset is dataset.json + one file per episode (hundreds, rarely
# thousands); each entry costs memory to list and an inode to write, so a zip of a million
# empty entries is refused before its directory is even parsed.
MAX_MEMBERS = 10_000
# 100x unpacked/compressed: zip bombs compress ~1000:1, while a dataset's .npz files are
# already deflate-compressed images (~1:1 inside an archive) and even uncompressed npz of
# rendered frames rarely reaches ~20:1, so 100 leaves 5x headroom and still refuses any bomb
# after at most 1% of what it would unpack.
MAX_RATIO = 100
# The ratio is only enforced past 1 MiB unpacked: a small file (dataset.json, a tiny episode
# of constant frames) may compress far better than 100:1 and is harmless at that size.
RATIO_GRACE_BYTES = 1 << 20
# Header-declared sizes are checked before anything is unpacked; the bench and the tests turn
# this off to show that the counts taken while streaming refuse a bomb on their own.
CHECK_HEADERS = True
MAX_PROBLEMS = 20
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: the magic bytes
_BOMB = "a dataset archive of images compresses far less; this looks like a zip bomb and was refused"

# What a corrupt, truncated or doctored archive raises while it is read.
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError)

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]


class ArchiveError(ValueError):
    """A bad archive; ``problems`` lists each issue, naming the file."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_PROBLEMS]
        more = f"\n... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__("the archive was not imported (nothing was written):\n- " + "\n- ".join(shown) + more)


def size(n: float) -> str:
    """1536 -> '1.5 KiB'; whole figures past 100 without decimals ('100 MiB')."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"


@contextmanager
def open_source(source: Source) -> Iterator[IO[bytes]]:
    """A seekable binary file for bytes, a path, or a file-like upload (Streamlit's
    UploadedFile), without copying the upload's bytes again."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)  # shares a bytes object's buffer rather than copying it
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield f
    else:
        source.seek(0)  # the page may have read it already
        yield source


def source_size(f: IO[bytes]) -> int:
    end = f.seek(0, io.SEEK_END)
    f.seek(0)
    return end


@dataclass
class Extracted:
    root: Path  # the dataset's folder: ``dest``, or the archive's one top folder inside it
    files: list[str]  # paths of the regular files, relative to root
    problems: list[str] = field(default_factory=list)  # refused names (paths, links); not fatal


class _Counter:
    """A read-only file wrapper that counts the (compressed) bytes read from the upload."""

    def __init__(self, f: IO[bytes]):
        self.f, self.n = f, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.n += len(data)
        return data


class _Sink:
    """Writes members under ``dest`` in CHUNK pieces, counting what is produced."""

    def __init__(self, filename: str, dest: Path):
        self.filename, self.dest = filename, dest
        self.total = 0  # bytes unpacked so far, all members
        self.declared = 0  # bytes the headers declared so far
        self.written: dict[tuple[str, ...], str] = {}  # parts -> the name in the archive
        self.problems: list[str] = []

    def place(self, name: str) -> Optional[tuple[str, ...]]:
        """The member's path parts, or None if it is skipped or refused (a problem noted)."""
        p = name.replace("\\", "/")
        parts = tuple(x for x in p.split("/") if x not in ("", "."))
        if p.startswith("/") or (len(p) > 1 and p[1] == ":") or ".." in parts or "\x00" in p:
            self.problems.append(f"{name}: absolute or '..' paths are not allowed in a dataset archive")
            return None
        if not parts or any(x.startswith("__MACOSX") or x == ".DS_Store" for x in parts):
            return None  # macOS Finder's extras, silently left out
        if parts in self.written:
            self.problems.append(f"{name}: appears twice in the archive; keep one copy")
            return None
        return parts

    def copy(self, name: str, src: IO[bytes], parts: Optional[tuple[str, ...]], declared: int,
             ratio: Callable[[int], Optional[str]]) -> None:
        """Stream ``src`` to dest/parts (or drain it when parts is None), refusing past a limit."""
        out = None
        if parts is not None:
            target = self.dest.joinpath(*parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = open(target, "xb")  # x: never through an existing file or link
            except OSError as e:
                self.problems.append(f"{name}: cannot be unpacked here ({e.strerror or e}); "
                                     "a file and a folder of the same name, or a name the disk refuses")
                parts = None
        produced = 0
        try:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except (*_READ_ERRORS, NotImplementedError, RuntimeError) as e:  # Runtime: encrypted
                    raise ArchiveError([f"{name}: cannot be read from the archive ({e}; {size(produced)} read of "
                                        f"the {size(declared)} its header declares); the archive is corrupt, "
                                        "encrypted or its header does not match its data"]) from None
                if not chunk:
                    break
                produced += len(chunk)
                self.total += len(chunk)
                if produced > MAX_MEMBER_BYTES:
                    raise ArchiveError([f"{name}: unpacks to more than {size(MAX_MEMBER_BYTES)} (the limit for one "
                                        f"file) although its header says {size(declared)}; split long episodes"])
                if self.total > MAX_TOTAL_BYTES:
                    raise ArchiveError([f"{self.filename}: unpacks to more than {size(MAX_TOTAL_BYTES)} (the limit "
                                        "for one archive); split the dataset into several archives"])
                bomb = ratio(produced)
                if bomb:
                    raise ArchiveError([bomb])
                if out is not None:
                    try:
                        out.write(chunk)
                    except OSError as e:  # the server's disk, not the archive: say so
                        raise ArchiveError([f"{name}: the server could not write it ({e}); free disk space "
                                            "under the data folder and upload again"]) from None
        finally:
            if out is not None:
                out.close()
        if parts is not None:
            self.written[parts] = name


def _ratio_problem(name: str, compressed: int, produced: int) -> Optional[str]:
    limit = max(MAX_RATIO * compressed, RATIO_GRACE_BYTES)
    if produced <= limit:
        return None
    return (f"{name}: unpacks to more than {MAX_RATIO}x its compressed size ({size(compressed)} -> over "
            f"{size(limit)}); {_BOMB}")


def _declared_problems(sink: _Sink, name: str, declared: int, compressed: Optional[int]) -> list[str]:
    """The header checks of one member (a fast refusal before any byte is unpacked)."""
    if not CHECK_HEADERS:
        return []
    sink.declared += declared
    out = []
    if declared > MAX_MEMBER_BYTES:
        out.append(f"{name}: unpacks to {size(declared)} (its header says), over the {size(MAX_MEMBER_BYTES)} "
                   "limit for one file; split long episodes or lower the image size")
    if compressed is not None and declared > max(MAX_RATIO * compressed, RATIO_GRACE_BYTES):
        out.append(f"{name}: unpacks to more than {MAX_RATIO}x its compressed size ({size(compressed)} -> "
                   f"{size(declared)}, its header says); {_BOMB}")
    if sink.declared > MAX_TOTAL_BYTES and sink.declared - declared <= MAX_TOTAL_BYTES:
        out.append(f"{sink.filename}: unpacks to more than {size(MAX_TOTAL_BYTES)} (its headers say; the limit "
                   "for one archive); split the dataset into several archives")
    return out


def _too_many(filename: str, n: int) -> ArchiveError:
    return ArchiveError([f"{filename}: holds {n:,} entries, over the limit of {MAX_MEMBERS:,}; a dataset is "
                         "dataset.json plus one file per episode, split it into several archives"])


def _zip(f: IO[bytes], sink: _Sink) -> None:
    try:
        # The entry count from the end record, before ZipFile parses (and holds) every entry.
        end = zipfile._EndRecData(f)  # private, but unchanged since Python 2
        if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:
            raise _too_many(sink.filename, end[zipfile._ECD_ENTRIES_TOTAL])
    except (AttributeError, IndexError, TypeError, OSError):
        pass
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise ArchiveError([f"{sink.filename}: not a readable zip archive ({e})"]) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _too_many(sink.filename, len(infos))
        files = [i for i in infos if not i.is_dir()]
        fatal = [p for i in files for p in _declared_problems(sink, i.filename, i.file_size, i.compress_size)]
        if fatal:
            raise ArchiveError(fatal)
        for info in files:
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0  # 3: unix modes
            if kind not in (0, stat.S_IFREG):
                sink.problems.append(f"{info.filename}: links and device files are not allowed in a dataset archive")
                continue
            parts = sink.place(info.filename)
            try:
                src = zf.open(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as e:
                raise ArchiveError([f"{info.filename}: cannot be read from the archive ({e})"]) from None
            with src:
                # Per member: zip knows each member's compressed size (the header's, which is
                # also the most zipfile reads; it never yields more than the declared file_size).
                sink.copy(info.filename, src, parts, info.file_size,
                          lambda produced, i=info: _ratio_problem(i.filename, i.compress_size, produced))


def _decompressed(f: IO[bytes], counter: _Counter) -> IO[bytes]:
    """The tar stream inside a .gz/.bz2/.xz (or the .tar itself). These readers decompress
    only as much as each read asks for; tarfile's own "r|gz" inflates whole 10 KB input blocks
    (~10 MB each for a bomb) and joins them, three times the memory for nothing."""
    magic = f.read(6)
    f.seek(0)
    gz, bz, xz = _COMPRESSED
    if magic.startswith(gz):
        return gzip.GzipFile(fileobj=counter, mode="rb")  # type: ignore[arg-type]
    if magic.startswith(bz):
        return bz2.BZ2File(counter)  # type: ignore[arg-type]
    if magic.startswith(xz):
        return lzma.LZMAFile(counter)  # type: ignore[arg-type]
    return counter  # type: ignore[return-value]


def _tar(f: IO[bytes], sink: _Sink) -> None:
    counter = _Counter(f)
    stream = _decompressed(f, counter)
    try:
        _tar_members(stream, counter, sink)
    finally:
        if stream is not counter:
            stream.close()


def _tar_members(stream: IO[bytes], counter: _Counter, sink: _Sink) -> None:
    try:
        # Stream mode ("r|"): one pass, member by member, nothing seeked or listed ahead.
        tf = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]
    except _READ_ERRORS as e:
        raise ArchiveError([f"{sink.filename}: neither a zip nor a tar archive ({e}); upload a .zip, .tar or "
                            ".tar.gz of a dataset folder (dataset.json + episodes/ep_*.npz)"]) from None

    def ratio(_produced: int) -> Optional[str]:
        # A gz stream has no per-member compressed size: compare everything unpacked so far
        # with the bytes read from the upload so far (an uncompressed tar is always ~1:1).
        limit = max(MAX_RATIO * counter.n, RATIO_GRACE_BYTES)
        if sink.total <= limit:
            return None
        return (f"{sink.filename}: unpacks to more than {MAX_RATIO}x its compressed size ({size(counter.n)} read "
                f"-> over {size(limit)}, while unpacking {info.name}); {_BOMB}")

    with tf:
        n = 0
        try:
            for info in tf:
                n += 1
                if n > MAX_MEMBERS:
                    raise _too_many(sink.filename, n)
                if info.isdir():
                    continue
                if not info.isfile():
                    sink.problems.append(f"{info.name}: links and device files are not allowed in a dataset archive")
                    continue
                fatal = _declared_problems(sink, info.name, info.size, None)
                if fatal:
                    raise ArchiveError(fatal)
                parts = sink.place(info.name)
                src = tf.extractfile(info)
                if src is not None:
                    sink.copy(info.name, src, parts, info.size, ratio)
        except _READ_ERRORS as e:
            raise ArchiveError([f"{sink.filename}: the tar archive is truncated or corrupt ({e})"]) from None


def _is_zip(f: IO[bytes]) -> bool:
    """A zip, judged by its start first: zipfile.is_zipfile looks for a zip's end record near
    the end of the file, and a plain .tar whose last member is an episode .npz (a zip) has one."""
    head = f.read(512)
    f.seek(0)
    if head.startswith(_COMPRESSED) or head[257:262] == b"ustar":
        return False
    found = zipfile.is_zipfile(f)  # also a zip with data before it (a self-extracting one)
    f.seek(0)
    return found


def extract(source: Source, filename: str, dest: Path) -> Extracted:
    """Unpack every regular file of a zip or tar(.gz/.bz2/.xz) into ``dest`` (created here;
    it must not exist). ArchiveError on an unreadable archive or a limit; ``dest`` is removed
    then. Refused names (bad paths, links) are returned as problems, not written."""
    dest.mkdir(parents=True)
    try:
        with open_source(source) as f:
            if source_size(f) == 0:
                raise ArchiveError([f"{filename}: the file is empty"])
            sink = _Sink(filename, dest)
            (_zip if _is_zip(f) else _tar)(f, sink)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    names = sorted(sink.written)
    # One top folder holding everything (how a folder is usually zipped) is the dataset's root.
    prefix: tuple[str, ...] = ()
    if names and all(len(p) > 1 for p in names) and len({p[0] for p in names}) == 1:
        prefix = names[0][:1]
    return Extracted(root=dest.joinpath(*prefix), files=["/".join(p[len(prefix):]) for p in names],
                     problems=sink.problems)


def npz_unpacked_size(path: Path) -> tuple[int, str]:
    """What loading an .npz would allocate, from its headers only: (bytes, the largest array
    as 'name dtype [shape]'). An .npz is a zip too, so a 1 MB episode could hold a 1 GiB array;
    np.load allocates an array's full size from its .npy header before reading it."""
    total, largest, largest_n = 0, "", -1
    with zipfile.ZipFile(path) as zf:
        if len(zf.infolist()) > 64:  # an episode holds fewer than 10 arrays
            return MAX_MEMBER_BYTES + 1, f"{len(zf.infolist())} arrays"
        for info in zf.infolist():
            n = info.file_size  # the most zipfile will read of it
            desc = info.filename
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version in ((1, 0), (2, 0)):
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                    n = max(n, int(np.prod(shape, dtype=object)) * dtype.itemsize)
                    desc = f"{info.filename.removesuffix('.npy')} {dtype} {list(shape)}"
            total += n
            if n > largest_n:
                largest, largest_n = desc, n
    return total, largest
