"""Hostile uploads: the web app's memory and time while the Data page refuses an archive bomb.

    python -m bench.hostile_upload                      # a 1 GiB-of-zeros zip (~1 MB) and tar.gz
    python -m bench.hostile_upload --size-gib 3         # a bigger bomb (zip sizes stay under 4 GiB)

The finding this answers: a 1 MB zip holding 1 GiB of zeros took the web app from 250 MB to
2.3 GB resident before it was refused, because members were decompressed whole in memory.
Each case builds the bomb on disk without ever holding it (a compressed 16 MiB segment of
zeros repeated; the zip's headers written by hand, which also lets a header lie), then a
fresh Python process does what the Data page does: holds the upload in memory (Streamlit's
UploadedFile is a BytesIO) and calls ``ui.dataio.validate_archive`` on it. A separate process,
so only the refusal's memory counts: it prints ru_maxrss after its imports (the baseline) and
at the end (the peak), the time to the refusal and the message. Cases: the zip and the tar.gz
with the header check on (the fast refusal, from the declared sizes) and off (the limits
counted while streaming refuse it alone). Last line: ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import print_result  # noqa: E402

SEG = 16 << 20  # zeros compressed once and repeated
META = {"format": "dojo-demos", "version": 1, "backend": "tabletop", "env_config": {"family": "block2block"}}


@functools.lru_cache(maxsize=1)
def _zero_segment() -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return co.compress(bytes(SEG)) + co.flush(zlib.Z_FULL_FLUSH)


def deflate_zeros(n: int) -> list[bytes]:
    """Raw deflate of ``n`` zero bytes as chunks (the same 16 MiB segment repeated, ~16 KB each):
    a full flush ends a segment byte-aligned with no reference past it, so copies can follow
    each other, and a GiB costs no compression time. The last chunk ends the stream."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    return [_zero_segment()] * (n // SEG) + [co.compress(bytes(n % SEG)) + co.flush()]


def crc_zeros(n: int, crc: int = 0) -> int:
    block = bytes(min(n, SEG))
    for _ in range(n // SEG):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(block[:n % SEG], crc)


def write_zip(path: Path, members: list[tuple[str, list[bytes], int, int, int, int]]) -> None:
    """A zip written by hand: (name, compressed chunks, method (0 stored, 8 deflate), declared
    file_size, crc, unix mode) each; the compressed size is the chunks' real length, the
    file_size whatever the caller declares (true or a lie)."""
    central = []
    with open(path, "wb") as f:
        for name, chunks, method, file_size, crc, mode in members:
            raw, offset, csize = name.encode(), f.tell(), sum(len(c) for c in chunks)
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, file_size,
                                len(raw), 0) + raw)
            for c in chunks:
                f.write(c)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, 0, method, 0, 0x21,
                                       crc, csize, file_size, len(raw), 0, 0, 0, 0, mode << 16, offset) + raw)
        start = f.tell()
        f.write(b"".join(central))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), f.tell() - start, start, 0))


def stored(name: str, data: bytes, mode: int = 0o100644) -> tuple[str, list[bytes], int, int, int, int]:
    return name, [data], 0, len(data), zlib.crc32(data), mode


def zeros_zip(path: Path, n: int, name: str = "episodes/ep_000000000.npz", *,
              declared: Optional[int] = None, crc: Optional[int] = None) -> Path:
    """dataset.json + ``name`` unpacking to ``n`` zeros (~n/1000 on disk); ``declared`` and
    ``crc``: a header that lies (the file_size, the checksum) instead of the truth."""
    write_zip(path, [stored("dataset.json", json.dumps(META).encode()),
                     (name, deflate_zeros(n), 8, n if declared is None else declared,
                      crc_zeros(n) if crc is None else crc, 0o100644)])
    return path


def zeros_tar_gz(path: Path, n: int, name: str = "episodes/ep_000000000.npz") -> Path:
    """A .tar.gz of dataset.json + ``name`` holding ``n`` zeros, gzipped without holding it."""
    meta = json.dumps(META).encode()
    head = io.BytesIO()
    for member, size in (("dataset.json", len(meta)), (name, n)):
        info = tarfile.TarInfo(member)
        info.size, info.mode = size, 0o644
        head.write(info.tobuf(format=tarfile.GNU_FORMAT))
        if member == "dataset.json":
            head.write(meta + bytes(-len(meta) % 512))
    prefix = head.getvalue()
    zeros = n + (-n % 512) + 1024  # the member, its padding, the two end-of-archive blocks
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip header, no name, no mtime
        f.write(co.compress(prefix) + co.flush(zlib.Z_FULL_FLUSH))
        for chunk in deflate_zeros(zeros):
            f.write(chunk)
        f.write(struct.pack("<II", crc_zeros(zeros, zlib.crc32(prefix)), (len(prefix) + zeros) & 0xFFFFFFFF))
    return path


SNIPPET = r"""
import io, json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from ui import archive, dataio
archive.CHECK_HEADERS = {check}
upload = io.BytesIO(Path({path!r}).read_bytes())  # what Streamlit's UploadedFile holds
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    dataio.validate_archive(upload, {filename!r}, tmp_dir=Path({tmp!r}) if {tmp!r} else None)
    message = None
except dataio.ArchiveError as e:
    message = str(e)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"baseline_mb": base / 1024, "peak_mb": peak / 1024, "seconds": seconds, "message": message}}))
"""


def refusal_figures(path: Path, filename: Optional[str] = None, *, check_headers: bool = True,
                    tmp_dir: Optional[Path] = None) -> dict:
    """Validate ``path`` as an upload in a fresh process: baseline_mb (ru_maxrss after imports
    and the upload read), peak_mb, seconds, message (None if it was accepted)."""
    code = SNIPPET.format(root=str(ROOT), check=bool(check_headers), path=str(path),
                          filename=filename or path.name, tmp=str(tmp_dir) if tmp_dir else "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["increase_mb"] = out["peak_mb"] - out["baseline_mb"]
    return out


def cases(tmp: Path, n: int) -> Iterator[tuple[str, Path, bool]]:
    z = zeros_zip(tmp / "bomb.zip", n)
    t = zeros_tar_gz(tmp / "bomb.tar.gz", n)
    for label, path in (("zip", z), ("tar.gz", t)):
        for check in (True, False):
            yield f"{label}, header check {'on' if check else 'off'}", path, check


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=1.0, help="zeros in the bomb (under 4 for the zip)")
    args = ap.parse_args(argv)
    n = int(args.size_gib * 2**30)
    results = {}
    with tempfile.TemporaryDirectory(prefix="dojo-hostile-") as tmp:
        for label, path, check in cases(Path(tmp), n):
            r = refusal_figures(path, check_headers=check, tmp_dir=Path(tmp))
            problems = (r["message"] or "\n- ACCEPTED (a failure of this bench)").split("\n- ")[1:]
            print(f"[hostile_upload] {label}: {args.size_gib:g} GiB of zeros in a {path.stat().st_size / 1e6:.1f} MB "
                  f"upload: baseline {r['baseline_mb']:.0f} MB after imports, peak {r['peak_mb']:.0f} MB "
                  f"(+{r['increase_mb']:.1f} MB), refused in {r['seconds']:.2f} s", flush=True)
            for problem in problems:
                print(f"    - {problem}", flush=True)
            results[label] = {k: r[k] for k in ("baseline_mb", "peak_mb", "increase_mb", "seconds")}
            results[label]["refused"] = r["message"] is not None
            results[label]["upload_mb"] = path.stat().st_size / 1e6
    result = {"bench": "hostile_upload", "unpacked_gib": args.size_gib, "cases": results,
              "max_increase_mb": max(r["increase_mb"] for r in results.values()),
              "all_refused": all(r["refused"] for r in results.values())}
    print_result(result)
    return result


if __name__ == "__main__":
    main()
