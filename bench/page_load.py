"""Page load time of every web app page with 10,000 stored episodes.

    python -m bench.page_load [--episodes 10000] [--runs 3] [--target 1.0]

Seeds a temporary SQLite file (tests/ui/seeding.py: 10,000 finished practice episodes with
20 steps each, JPEG frames for the newest 300, checkpoints, metrics, audit entries), then runs
each page with Streamlit's AppTest, logged in as the admin: one warm-up run (imports, the
cached engine) and ``--runs`` timed runs from a fresh session each. A page's load time is
the server side of a page view: the whole script run that produces what the browser shows
(the browser adds its own rendering). Last line: ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import print_result  # noqa: E402

PAGES = ("tasks", "live", "review", "training", "data", "users")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--target", type=float, default=1.0, help="seconds a page may take")
    args = ap.parse_args(argv)

    from streamlit.testing.v1 import AppTest

    from tests.ui.seeding import seed

    with tempfile.TemporaryDirectory(prefix="dojo-page-load-") as tmp:
        url = str(Path(tmp) / "dojo.sqlite")
        t0 = time.perf_counter()
        seeded = seed(url, episodes=args.episodes, robots=8, steps=20, frames_for=300)
        seed_s = time.perf_counter() - t0
        print(f"[page_load] seeded {args.episodes} episodes in {seed_s:.1f} s", flush=True)
        os.environ["DOJO_DB"] = url
        os.environ.pop("DATABASE_URL", None)
        os.environ["DOJO_DATA"] = tmp
        pages: dict[str, dict[str, float]] = {}
        for page in PAGES:
            times = []
            for i in range(args.runs + 1):
                at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=60)
                at.session_state["dojo_user_id"] = seeded.user_ids["admin"]
                start = time.perf_counter()
                at.run()
                elapsed = time.perf_counter() - start
                if at.exception:
                    raise RuntimeError(f"page {page} raised: {[e.value for e in at.exception]}")
                if i:  # the first run pays imports and the engine, once per process
                    times.append(elapsed)
            pages[page] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}
            print(f"[page_load] {page:9s} median {pages[page]['median_s']:.3f} s, max {pages[page]['max_s']:.3f} s",
                  flush=True)
    worst = max(p["median_s"] for p in pages.values())
    result = {"bench": "page_load", "episodes": args.episodes, "runs": args.runs, "seed_s": round(seed_s, 1),
              "pages": pages, "worst_median_s": worst, "target_s": args.target, "ok": worst <= args.target,
              "method": "streamlit AppTest script run per page, admin session, warm process"}
    print_result(result)
    return result


if __name__ == "__main__":
    r = main()
    raise SystemExit(0 if r["ok"] else 1)
