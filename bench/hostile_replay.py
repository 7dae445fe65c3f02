"""The seven security findings of issue 31 re-tried, as an attacker would, against a running Dojo
(scripts/launch.py: worker + web app, on free ports) while practice runs on N simulated robots.

    python -m bench.hostile_replay [--robots 4] [--keep DIR] [--flood 500]

Set-up as tests/e2e (a tiny Stage-1 checkpoint, a fresh SQLite database). Log-in throttling
goes last so the other log-ins work. Then: same worker pid, practice still recording, no stored
count down, health answers. One table row per hostile input; last line ``RESULT {json}``.
Needs Chromium (DOJO_CHROMIUM) and Playwright."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from bench.common import CHROMIUM, Launched, cmdline, descendants, launch_chromium, print_result, wait_until  # noqa: E402
from storage.credentials import mint_viewer_ticket  # noqa: E402
from storage.models import AuditEntry, Checkpoint, Episode, Frame, Step  # noqa: E402

PW = {"admin": "replay-admin-password", "viewer1": "replay-viewer-password", "guesser": "replay-guesser-password"}
EXTRA = {"check_episodes": 0, "eval_every": 1000, "max_episodes": 100000, "tuples_per_iteration": 100000}
SUB5 = json.dumps({"type": "subscribe", "robots": 5})
RSS_TARGET_MB = 300
ROWS: list[dict] = []


def deep(n: int) -> str:
    return "[" * n + "]" * n






def row(finding: str, given: str, got: str, ok: bool) -> None:
    got = " ".join(str(got).split())
    ROWS.append({"finding": finding, "input": given, "got": got[:100] + ("..." if len(got) > 100 else ""),
                 "ok": bool(ok)})
    print(f"  [{'yes' if ok else 'NO '}] {finding} | {given} | {ROWS[-1]['got']}", flush=True)


def mem_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def sample_rss(pid: int, halt: threading.Event, out: dict) -> None:
    """VmRSS of ``pid`` every 50 ms until ``halt``: out["peak"], out["samples"]."""
    while not halt.is_set():
        try:
            out["peak"], out["samples"] = max(out.get("peak", 0.0), mem_mb(pid)["VmRSS"]), out.get("samples", 0) + 1
        except (OSError, KeyError):
            pass
        time.sleep(0.05)


class Dojo:
    def __init__(self, root: Path, robots: int):
        self.root, self.robots = root, robots
        self.data, self.env = root / "data", {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        for k in ("DATABASE_URL", "DOJO_WORKER_SECRET", "DOJO_WORKER_SECRET_FILE"):
            self.env.pop(k, None)
        self.db_path, self.proc, self.db = self.data / "dojo.sqlite", None, None
        self.log_path = self.data / "launcher.log"

    def cli(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> None:
        from storage import init_db, repo
        from ui import actions, bootstrap

        stage1 = self.root / "stage1"
        for argv in (["demos", "--out", str(stage1 / "demos"), "--n", "6", "--workers", "1", "--image-size", "32",
                      "--quiet"],
                     ["sft", "--data", str(stage1 / "demos"), "--out", str(stage1 / "sft"), "--epochs", "1",
                      "--d-model", "32", "--n-layers", "1", "--eval-episodes", "0", "--batch-size", "32",
                      "--threads", "1", "--device", "cpu", "--quiet"]):
            done = self.cli("core.cli", *argv)
            if done.returncode:
                raise RuntimeError(f"core.cli {argv[0]} failed: {done.stderr[-2000:]}")
        self.data.mkdir(parents=True)
        self.db = init_db(str(self.db_path))
        with self.db.write() as s:
            task = bootstrap.seed_demo_task(s, fleet_size=self.robots)
            ck = repo.add_checkpoint(s, "sft", str(stage1 / "sft" / "best_policy.pt"), task_id=task.id,
                                     metrics={"reward_checkpoint": str(stage1 / "sft" / "best_stg.pt")})
            repo.promote(s, ck.id, require_not_worse=False)
            for name, role in (("admin", "admin"), ("viewer1", "viewer"), ("guesser", "admin")):
                repo.create_user(s, name, PW[name], role)
            self.task_id = task.id
        self.app = Launched(self.data, self.db_path, PW["admin"], env=self.env)
        self.proc, self.log, self.port, self.tport, self.url, self.ws = (
            self.app.proc, self.app.log, self.app.port, self.app.tport, self.app.url, self.app.ws)
        self.secret = (self.data / "worker.secret").read_text().strip()
        self.worker_pid = wait_until(lambda: self.child("core.worker"), 30, "the worker process")
        self.app_pid = wait_until(lambda: self.child("streamlit"), 30, "the web app process")
        with self.db.write() as s:
            # (actor=None is refused: start_session needs a supervisor; the admin starts it, as in the e2e test)
            actions.start_practice(s, self.task_id, fleet_size=self.robots, actor=repo.get_user(s, "admin"),
                                   extra=dict(EXTRA))
        wait_until(lambda: self.practice()[0] > 0 or self.practice()[1] >= self.robots, 600,
             f"practice episodes being recorded (log: {self.log_path})", every=2)

    def child(self, needle: str):
        return next((p for p in descendants(self.proc.pid) if needle in cmdline(p)
                     and "launch.py" not in cmdline(p)), None)

    def healthy(self) -> bool:
        return self.app.healthy()

    def practice(self) -> tuple[int, int]:
        q = select(func.count()).select_from(Episode).where(Episode.source == "practice")
        with self.db.read() as s:
            return s.scalar(q.where(Episode.status == "finished")), s.scalar(q.where(Episode.status == "running"))

    def counts(self) -> dict[str, int]:
        with self.db.read() as s:
            return {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                    for m in (Episode, Step, Frame, Checkpoint, AuditEntry)}

    def audit_actions(self, *actions: str) -> Counter:
        with self.db.read() as s:
            return Counter(dict(s.execute(select(AuditEntry.action, func.count()).where(
                AuditEntry.action.in_(actions)).group_by(AuditEntry.action)).all()))

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self) -> int | None:
        """Ctrl-C to the launcher (it stops the worker and the app); its exit code."""
        return None if self.proc is None else self.app.stop(40)


def ws_connect(url: str):
    return connect(url, max_size=None, open_timeout=10, close_timeout=2, legacy=True)


def recv_json(ws, types=("error",), timeout: float = 5.0) -> dict:
    """The next message of one of ``types`` (frames of the feed are skipped)."""
    end = time.monotonic() + timeout
    while True:
        m = json.loads(ws.recv(max(0.01, end - time.monotonic())))
        if types is None or m.get("type") in types:
            return m


def close_code(ws, timeout: float = 5.0):
    try:
        while True:
            ws.recv(timeout)
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None
    except TimeoutError:
        return "still open"


def register(ws, name: str, token) -> dict:
    msg = {"type": "register", "protocol": 1, "name": name, "camera": {"height": 16, "width": 16},
           "action": {"dim": 2, "low": -1, "high": 1}, "proprio_dim": 2, "max_steps": 20, "tasks": []}
    if token is not None:
        msg["token"] = token
    ws.send(json.dumps(msg))
    return recv_json(ws, ("error", "registered"))


def said(m: dict) -> str:
    return f"{m.get('code') or m.get('type')}: {m.get('message', '')}"


def obs(rid, **over) -> dict:
    """A well-formed observation (docs/remote_protocol.md) with ``over`` replacing fields."""
    import numpy as np

    from sim_backends.remote.client import encode_image
    m = {"type": "observation", "image": encode_image(np.full((16, 16, 3), 7, np.uint8), "png"),
         "proprio": [0.25, 0.5], "instruction": "push the red moon to the blue cube", "success": None,
         "terminated": False, "truncated": False, "reward": 0.0, "info": {}, "request_id": rid}
    return {k: v for k, v in {**m, **over}.items() if v is not None or k == "success"}


def flood(url: str, n: int, *, first=None, keepalive=None) -> dict:
    """``n`` hostile messages (2,000-deep JSON and a bad subscribe, alternately), reconnecting
    whenever the server closes; the error codes and close codes that came back."""
    codes, closes, ws, i, conns, t0 = Counter(), Counter(), None, 0, 0, time.monotonic()
    while i < n:
        if ws is None:
            ws, conns = ws_connect(url), conns + 1
            if first:
                first(ws)
        try:
            ws.send(deep(2000) if i % 2 == 0 else SUB5)
            codes[recv_json(ws).get("code")] += 1
            i += 1
            if keepalive and i % 50 == 0:
                ws.send(keepalive)
        except ConnectionClosed as e:
            closes[e.rcvd.code if e.rcvd else None] += 1
            ws = None
        except TimeoutError:  # no answer within 5 s: counted, and the flood goes on
            codes["no answer"] += 1
            i += 1
    if ws is not None:
        ws.close()
    return {"errors": dict(codes), "closes": dict(closes), "connections": conns, "seconds": time.monotonic() - t0}


def new_page(browser, dojo: Dojo):
    page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
    page.set_default_timeout(90_000)
    page.goto(dojo.url)
    return page


def login(page, user: str, password: str) -> None:
    page.get_by_label("Username", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def live_cards(page) -> list[str]:
    out = []
    for fr in page.frames:
        try:
            html = fr.evaluate("() => document.querySelector('.card .name') ? document.documentElement.outerHTML : null")
        except Exception:  # noqa: BLE001 - a frame navigating away
            continue
        if html and "const CFG = " in html:
            out.append(html)
    return out


def f1_names(dojo: Dojo, token: str):
    ws = ws_connect(dojo.ws + "/robot")
    for name in ("__CFG__<img src=x onerror=alert(1)>", "<script>alert(1)</script>"):
        m = register(ws, name, token)
        row("1 script injection", f"register name {name!r}", said(m),
            m.get("code") == "bad_register" and "register.name must be 1 to 64 characters" in m.get("message", ""))
    m = register(ws, "hostile-arm-1", token)  # the same connection may retry with a valid name
    row("1 script injection", "then register 'hostile-arm-1' (valid)", said(m), m.get("type") == "registered")
    return ws


def f2_credentials(dojo: Dojo, browser, robot_token: str) -> dict:
    procs = [dojo.proc.pid] + descendants(dojo.proc.pid)
    leaked = [p for p in procs if dojo.secret in cmdline(p)]
    row("2 credentials", f"/proc/PID/cmdline of launcher, worker ({dojo.worker_pid}), app ({dojo.app_pid}) and "
        f"{len(procs) - 3} more", f"secret found in {len(leaked)} of {len(procs)} command lines", not leaked)
    page = new_page(browser, dojo)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, "viewer1", PW["viewer1"])
    page.get_by_role("heading", name="Tasks & fleet").wait_for()
    page.get_by_role("link", name="Live").click()
    page.get_by_role("heading", name="Live").wait_for()
    cards = wait_until(lambda: live_cards(page), 90, "live cards")
    page.wait_for_timeout(3000)  # let the feeds draw (and any injected script run)
    cards = live_cards(page)
    html = page.content() + "".join(cards)
    ticket = json.loads(cards[0].split("const CFG = ")[1].split(";\n")[0])["ticket"]
    row("1 script injection", f"Live page as viewer ({len(cards)} cards)", f"{len(dialogs)} dialogs {dialogs[:2]}",
        not dialogs)
    row("2 credentials", "viewer's Live page HTML (page + card frames)",
        f"worker secret in page: {dojo.secret in html}; ticket {ticket[:12]}... ({len(ticket)} chars)",
        dojo.secret not in html)
    page.context.close()
    ws = ws_connect(dojo.ws + "/telemetry?ticket=" + ticket)
    hello = recv_json(ws, ("hello", "error"))
    ws.close()
    row("2 credentials", "viewer ticket on /telemetry (its own door)", hello.get("type"), hello.get("type") == "hello")
    for how, url, tok in (("viewer ticket as ?token=", dojo.ws + "/robot?token=" + ticket, None),
                          ("viewer ticket as register.token", dojo.ws + "/robot", ticket),
                          ("worker secret as register.token", dojo.ws + "/robot", dojo.secret)):
        ws = ws_connect(url)
        m = register(ws, "sneaky-1", tok)
        code = close_code(ws)
        row("2 credentials", f"{how} on /robot", f"close {code}; {said(m)}",
            m.get("code") == "unauthorized" and code == 4401)
    for how, url, first in (("?token=", dojo.ws + "/telemetry?token=" + robot_token, None),
                            ("first-message ticket", dojo.ws + "/telemetry", json.dumps({"ticket": robot_token}))):
        ws = ws_connect(url)
        if first:
            ws.send(first)
        m = recv_json(ws)
        code = close_code(ws)
        row("2 credentials", f"robot token as {how} on /telemetry", f"close {code}; {said(m)}",
            m.get("code") == "unauthorized" and code == 4401)
    return {"dialogs": dialogs}


def f4_robot(ws) -> None:
    def ping() -> bool:
        ws.send(json.dumps({"type": "ping"}))
        return recv_json(ws, ("pong", "error")).get("type") == "pong"

    cases = [("observation request_id 1 (not open), reward \"abc\"", json.dumps(obs(1, reward="abc")),
              {"unexpected", "bad_observation"}),
             ("observation without request_id, reward \"abc\"", json.dumps(obs(None, reward="abc")), {"unexpected"}),
             ("observation request_id 1, reward {\"x\": 1}", json.dumps(obs(1, reward={"x": 1})),
              {"unexpected", "bad_observation"}),
             ("observation, reward NaN", json.dumps(obs(1)).replace('"reward": 0.0', '"reward": NaN'), {"bad_number"}),
             ("observation, info = 2,000-deep JSON", '{"type": "observation", "request_id": 1, "info": %s}'
              % deep(2000), {"too_deep"}),
             ("2,000-deep JSON alone", deep(2000), {"too_deep"})]
    for label, raw, want in cases:
        ws.send(raw)
        m = recv_json(ws)
        alive = ping()
        row("4 hostile robot", label, f"ping->{'pong' if alive else 'no pong'}; {said(m)}",
            m.get("code") in want and alive)
    ws.close()


def f5_flood(dojo: Dojo, ticket: str, n: int) -> dict:
    before, t0 = len(dojo.log_lines()), time.monotonic()
    sub_none = json.dumps({"type": "subscribe", "robots": ["nobody"]})  # a good message: no frames, count reset
    out = {"telemetry_no_ticket": flood(dojo.ws + "/telemetry", n),
           "telemetry_ticket": flood(dojo.ws + "/telemetry?ticket=" + ticket, n, keepalive=sub_none,
                                     first=lambda ws: (recv_json(ws, ("hello",)), ws.send(sub_none))),
           "robot_unregistered": flood(dojo.ws + "/robot", n)}
    time.sleep(2)
    added = dojo.log_lines()[before:]
    conn_lines = [x for x in added if " INFO connection " in x]  # a library's per-connection lines
    dojo_lines = [x for x in added if re.match(r"\S+ \S+ dojo", x)]
    for key, r in out.items():
        row("5 log flooding", f"{n} msgs (deep JSON / subscribe robots:5) on {key}",
            f"errors {r['errors']}, closes {r['closes']}, {r['connections']} conns, {r['seconds']:.1f} s",
            sum(r["errors"].values()) == n)
    tb = sum("Traceback" in x for x in added)
    row("5 log flooding", f"worker log during the {3 * n}-message flood: tracebacks, dojo failure lines",
        f"{tb} Traceback lines, {len(dojo_lines)} dojo.* lines {dojo_lines[:1]}", tb == 0 and len(dojo_lines) <= 11)
    conns = sum(r["connections"] for r in out.values())
    row("5 log flooding", f"worker log: lines per unauthenticated connection ({conns} connections)",
        f"{len(added)} lines added in {time.monotonic() - t0:.0f} s, {len(conn_lines)} of them per-connection "
        f"'connection open/closed' lines", len(added) <= 11)
    return {**out, "log_lines_added": len(added), "connection_log_lines": len(conn_lines), "tracebacks": tb,
            "dojo_log_lines": dojo_lines[:20], "other_lines": [x for x in added if x not in conn_lines][:20]}


def f3_upload(dojo: Dojo, browser, tmp: Path) -> dict:
    from bench.hostile_upload import zeros_zip
    bomb = zeros_zip(tmp / "bomb.zip", 1 << 30)
    datasets = dojo.data / "datasets"
    before = sorted(p.name for p in datasets.iterdir()) if datasets.exists() else []
    page = new_page(browser, dojo)
    login(page, "admin", PW["admin"])
    page.get_by_role("heading", name="Tasks & fleet").wait_for()
    page.get_by_role("link", name="Data").click()
    page.get_by_role("heading", name="Data").wait_for()
    page.wait_for_timeout(1500)
    base = mem_mb(dojo.app_pid)
    halt, rss = threading.Event(), {"peak": base["VmRSS"], "samples": 0}
    sampler = threading.Thread(target=sample_rss, args=(dojo.app_pid, halt, rss), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    page.locator("input[type=file]").set_input_files(str(bomb))
    page.get_by_role("button", name="Import", exact=True).click()
    alert = page.locator("[data-testid='stAlert']").filter(has_text="nothing was written")
    alert.first.wait_for(timeout=300_000)
    seconds = time.monotonic() - t0
    time.sleep(1.0)
    halt.set()
    sampler.join()
    after, message = mem_mb(dojo.app_pid), alert.first.inner_text()
    page.context.close()
    left = sorted(p.name for p in datasets.iterdir()) if datasets.exists() else []
    row("3 uploads", f"Data page import: 1 GiB of zeros in a {bomb.stat().st_size / 1e6:.1f} MB zip", message,
        "zip bomb" in message and left == before)
    row("3 uploads", "web app resident memory while refusing",
        f"RSS {base['VmRSS']:.0f} -> peak {rss['peak']:.0f} MB (VmHWM {base['VmHWM']:.0f} -> "
        f"{after['VmHWM']:.0f}), {seconds:.1f} s", max(rss["peak"], after["VmHWM"]) < RSS_TARGET_MB)
    return {"upload_mb": bomb.stat().st_size / 1e6, "rss_before_mb": base["VmRSS"], "hwm_before_mb": base["VmHWM"],
            "rss_peak_sampled_mb": rss["peak"], "hwm_after_mb": after["VmHWM"], "rss_after_mb": after["VmRSS"],
            "samples": rss["samples"], "seconds_to_refusal": seconds, "message": message, "datasets_after": left}


def f7_commands(dojo: Dojo, tmp: Path) -> None:
    x, y = tmp / "giraffe-demos", tmp / "missing-sft"
    for label, argv, out in (
            ("demos --env-config blocks ['purple giraffe','red moon']",
             ["core.cli", "demos", "--out", str(x), "--n", "2", "--env-config",
              '{"blocks":["purple giraffe","red moon"]}'], x),
            ("sft --data MISSING", ["core.cli", "sft", "--data", str(tmp / "MISSING"), "--out", str(y)], y)):
        done = dojo.cli(*argv, timeout=300)
        err = done.stderr.strip().splitlines()
        left = sorted(p.name for p in out.parent.glob(out.name + "*"))
        row("7 commands", label, f"exit {done.returncode}; {err[-1] if err else ''}; left behind: {left or 'nothing'}",
            done.returncode == 2 and bool(err) and err[-1].startswith("error:") and not left)


def f6_login(dojo: Dojo, browser, n: int = 20) -> dict:
    acts = ("login_failed", "login_throttled", "login")
    page = new_page(browser, dojo)
    page.get_by_label("Username", exact=True).wait_for()

    def submit(password: str) -> Counter:  # through the real form; returns once the app has judged it
        seen = sum(dojo.audit_actions(*acts).values())
        login(page, "guesser", password)
        wait_until(lambda: sum(dojo.audit_actions(*acts).values()) > seen, 30, "the log-in to be judged", every=0.02)
        return dojo.audit_actions(*acts)

    c0, t0 = dojo.audit_actions(*acts), time.monotonic()
    c1 = [submit(f"wrong-guess-{i}") for i in range(n)][-1]
    seconds = time.monotonic() - t0
    judged, refused = c1["login_failed"] - c0["login_failed"], c1["login_throttled"] - c0["login_throttled"]
    page.wait_for_timeout(500)
    shown = page.locator("[data-testid='stAlert']").first.inner_text()
    row("6 log-in", f"{n} wrong passwords for 'guesser' (admin) in the real form",
        f"{judged} judged, {refused} refused in {seconds:.1f} s; page: {shown}", refused > 0 and judged < n)
    c2 = submit(PW["guesser"])
    page.wait_for_timeout(1500)
    shown2 = page.locator("[data-testid='stAlert']").first.inner_text()
    in_app = page.get_by_role("heading", name="Tasks & fleet").count() > 0
    ok = c2["login"] == c1["login"] and c2["login_throttled"] > c1["login_throttled"] and not in_app
    row("6 log-in", "then the right password at once", f"{shown2}; logged in: {in_app}", ok)
    page.context.close()
    return {"attempts": n, "judged": judged, "refused": refused, "seconds": seconds, "message": shown,
            "right_password_refused": ok, "right_password_message": shown2}


def attempt(finding: str, fn, *a):
    """Run one finding; a failure of the replay itself becomes a row and the others go on."""
    try:
        return fn(*a) or {}
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        row(finding, f"(the replay of {fn.__name__} itself)", f"FAILED: {type(e).__name__}: {e}", False)
        return {}


def after(dojo: Dojo, base: dict) -> dict:
    t0, at_end = time.monotonic(), dojo.practice()[0]  # more episodes must finish after the replay, too
    try:
        more = wait_until(lambda: dojo.practice()[0] > at_end and dojo.practice()[0], 240, "more practice episodes",
                    every=2)
    except TimeoutError:
        more = dojo.practice()[0]
    lines, counts = dojo.log_lines(), dojo.counts()
    return {"worker_pid": dojo.worker_pid, "practice_finished_before": base["practice_finished"],
            "practice_finished_at_end_of_replay": at_end,
            "worker_same_pid": "core.worker" in cmdline(dojo.worker_pid) and dojo.child("core.worker") == dojo.worker_pid,
            "restarts": [x for x in lines if "exited with code" in x or "restarting" in x],
            "practice_finished_after": more, "waited_for_practice_s": round(time.monotonic() - t0, 1),
            "counts_before": base["counts"], "counts_after": counts, "app_healthy": dojo.healthy(),
            "no_loss": all(counts[k] >= v for k, v in base["counts"].items()),
            "tracebacks_added": sum("Traceback" in x for x in lines) - base["log_tracebacks"]}


def report(sv: dict, up: dict, fl: dict) -> None:
    print("\n| # | finding | hostile input | what came back | refused as expected |\n|---|---|---|---|---|")
    for i, r in enumerate(ROWS, 1):
        print(f"| {i} | {r['finding']} | {r['input']} | {r['got'].replace('|', '/')} | {'yes' if r['ok'] else 'NO'} |")
    print(f"\nworker pid {sv['worker_pid']}: same process after the replay: {sv['worker_same_pid']}; launcher "
          f"restarts: {sv['restarts'] or 'none'}; web app /_stcore/health: {'ok' if sv['app_healthy'] else 'NOT OK'}")
    print(f"practice: {sv['practice_finished_before']} finished practice episodes at baseline, "
          f"{sv['practice_finished_at_end_of_replay']} when the replay ended, {sv['practice_finished_after']} "
          f"{sv['waited_for_practice_s']:.0f} s later")
    print("stored rows before -> after: " + ", ".join(f"{k} {v} -> {sv['counts_after'][k]}" + (
        "" if sv["counts_after"][k] >= v else " (WENT DOWN)") for k, v in sv["counts_before"].items()))
    if up:
        print(f"upload: web app RSS {up['rss_before_mb']:.0f} MB before, peak sampled {up['rss_peak_sampled_mb']:.0f} "
              f"MB ({up['samples']} samples at 50 ms), VmHWM {up['hwm_before_mb']:.0f} -> {up['hwm_after_mb']:.0f} "
              f"MB, refused in {up['seconds_to_refusal']:.1f} s (target < {RSS_TARGET_MB} MB)")
    print(f"log: {fl.get('log_lines_added')} lines added during the flood ({fl.get('connection_log_lines')} "
          f"per-connection lines), {sv['tracebacks_added']} Traceback lines added over the replay")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robots", type=int, default=4, help="simulated robots in the practice session")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--flood", type=int, default=500, help="hostile messages per endpoint in finding 5")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit(f"no Chromium at {CHROMIUM} (set DOJO_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    root = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="dojo-hostile-replay-"))
    root.mkdir(parents=True, exist_ok=True)
    t_start, dojo, result, rc = time.monotonic(), Dojo(root, args.robots), {"bench": "hostile_replay"}, 1
    try:
        print(f"[hostile_replay] setting up in {root}: tiny Stage-1 checkpoint, launcher, practice on "
              f"{args.robots} robots", flush=True)
        dojo.start()
        t_setup = time.monotonic() - t_start
        token = dojo.cli("storage", "--db", str(dojo.db_path), "robot-token", "create",
                         "hostile replay").stdout.strip().splitlines()[-1]
        base = {"worker_pid": dojo.worker_pid, "app_pid": dojo.app_pid, "counts": dojo.counts(),
                "practice_finished": dojo.practice()[0], "log_bytes": dojo.log_path.stat().st_size,
                "log_tracebacks": sum("Traceback" in x for x in dojo.log_lines())}
        print(f"[hostile_replay] set up in {t_setup:.0f} s; baseline {json.dumps(base)}", flush=True)
        (tmp := root / "attacker").mkdir()
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            robot_ws = attempt("1 script injection", f1_names, dojo, token)
            cred = attempt("2 credentials", f2_credentials, dojo, browser, token)
            if robot_ws:
                attempt("4 hostile robot", f4_robot, robot_ws)
            ticket = mint_viewer_ticket(dojo.secret, "viewer1", "replay")
            flood_r = attempt("5 log flooding", f5_flood, dojo, ticket, args.flood)
            upload_r = attempt("3 uploads", f3_upload, dojo, browser, tmp)
            attempt("7 commands", f7_commands, dojo, tmp)
            login_r = attempt("6 log-in", f6_login, dojo, browser)
            browser.close()
        sv = after(dojo, base)
        report(sv, upload_r, flood_r)
        all_ok = (all(r["ok"] for r in ROWS) and sv["worker_same_pid"] and sv["no_loss"] and sv["app_healthy"]
                  and not sv["restarts"] and sv["tracebacks_added"] == 0
                  and sv["practice_finished_after"] > sv["practice_finished_at_end_of_replay"])
        result.update({"robots": args.robots, "rows": ROWS, "all_refused_as_expected": all(r["ok"] for r in ROWS),
                       "survival": sv, "upload": upload_r, "flood": flood_r, "login": login_r,
                       "dialogs": cred.get("dialogs"), "setup_s": round(t_setup, 1), "all_ok": all_ok})
        rc = int(not all_ok)
    except Exception as e:  # noqa: BLE001 - report what was done so far, then stop the launcher
        traceback.print_exc()
        print(f"[hostile_replay] FAILED: {type(e).__name__}: {e} (launcher log: {dojo.log_path})", flush=True)
        result.update({"rows": ROWS, "error": f"{type(e).__name__}: {e}"})
    finally:
        result["launcher_exit"] = dojo.stop()
        result["seconds"] = round(time.monotonic() - t_start, 1)
        if dojo.db is not None:
            dojo.db.dispose()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        print(f"[hostile_replay] launcher stopped (exit {result['launcher_exit']}); {result['seconds']:.0f} s in "
              "all" + (f"; kept {root}" if args.keep else ""), flush=True)
    print_result(result)
    return rc


if __name__ == "__main__":
    sys.exit(main())
