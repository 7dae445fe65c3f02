"""Helpers shared by the benchmark scripts: result line, timing, speed probes."""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def free_port() -> int:
    """A TCP port free on loopback now (for servers started by benches and browser tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float, what: str, every: float = 0.5):
    """Poll ``cond()`` until it returns something truthy (returned); TimeoutError naming ``what``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def cmdline(pid: int) -> str:
    """A process's command line ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children ...), from /proc."""
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [c for c, pp in parent.items() if pp == pid]
        out += kids
        todo += kids
    return out


CHROMIUM = os.environ.get("DOJO_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium, which the browser tests and benches drive through Playwright (no browser download)."""
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


def launch_chromium(pw):
    """Headless Chromium from a Playwright instance, quiet (no sync, updates or background traffic)."""
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS))


class Launched:
    """The one-command launcher (scripts/launch.py: worker + web app) on free ports over a data
    folder and its SQLite database, for browser tests and benches; ``stop()`` is Ctrl-C (the
    launcher stops the worker and the app) and returns its exit code. ``prepare``: on a fresh
    data folder the launcher enqueues the demo task's preparation, as ./scripts/run.sh does."""

    def __init__(self, data: Path, db_path: Path, admin_password: str, *, env: dict[str, str] | None = None,
                 timeout_s: float = 90.0, prepare: bool = False):
        import subprocess
        import sys

        self.data, self.log_path = Path(data), Path(data) / "launcher.log"
        self.port, self.tport = free_port(), free_port()
        self.url, self.ws = f"http://127.0.0.1:{self.port}", f"ws://127.0.0.1:{self.tport}"
        gl = os.environ.get("MUJOCO_GL", "egl")
        full = {**os.environ, "MUJOCO_GL": gl, "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", gl),
                **(env or {}), "DOJO_DATA": str(data), "DOJO_DB": str(db_path), "DOJO_ADMIN_PASSWORD": admin_password}
        full.pop("DATABASE_URL", None)  # the given SQLite file, whatever the caller's shell points at
        self.log = open(self.log_path, "w")
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen([sys.executable, "scripts/launch.py", "--port", str(self.port),
                                      "--telemetry-port", str(self.tport)] + ([] if prepare else ["--no-prepare"]),
                                     cwd=root, env=full,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until(self.healthy, timeout_s, f"the web app to answer (log: {self.log_path})")
        except BaseException:
            self.stop()
            raise

    def healthy(self) -> bool:
        import urllib.request

        try:
            return urllib.request.urlopen(self.url + "/_stcore/health", timeout=3).status == 200
        except OSError:
            return False

    def stop(self, wait_s: float = 40.0) -> int | None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not self.log.closed:
            self.log.close()
        return self.proc.wait()


def print_result(result: dict[str, Any]) -> None:
    """The last line of every bench: ``RESULT {json}``."""
    print("RESULT " + json.dumps(result, sort_keys=True, default=float), flush=True)


class PhaseTimer:
    """Wall minutes per named phase of a bench run (``with timer("practice"): ...``), summed
    over repeats, for the RESULT's profile of where a run's time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def minutes(self) -> dict[str, float]:
        return {k: round(v / 60, 2) for k, v in self.seconds.items()}


PRACTICE_SPLIT = (("time_rollout_s", "rollouts"), ("time_update_s", "updates"),
                  ("time_eval_s", "selection_evals"), ("time_checkpoint_s", "checkpoints"))


def practice_split(run_dir: str | Path) -> dict[str, float]:
    """Wall minutes of a practice run by part (rollouts, updates, selection evaluations,
    checkpoints), summed over its metrics rows (resumed iterations included)."""
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {name: sum(r.get(key, 0.0) for r in rows) / 60 for key, name in PRACTICE_SPLIT}


def env_steps_per_second(backend: str, env_config: dict[str, Any], steps: int = 1000, seed: int = 0) -> float:
    """Bare environment speed: random actions, rendering on, one process."""
    from sim_backends.registry import make_env

    env = make_env(backend, env_config)
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed=seed)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_dim).astype(np.float32))
            if term or trunc:
                env.reset(seed=int(rng.integers(1 << 30)))
        return steps / (time.perf_counter() - t0)
    finally:
        env.close()


def policy_latency_ms(model, backend: str, env_config: dict[str, Any], batch: int = 1,
                      iters: int = 200) -> dict[str, float]:
    """Wall time of one ``act`` call (actions + d(o, g)) on real observations."""
    from core.learning.policy import make_obs_batch
    from core.method.stats import percentiles_ms
    from sim_backends.registry import make_env

    env = make_env(backend, env_config)
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    n = model.config.n_frames
    frames = np.repeat(np.stack([obs["image"]] * n)[None], batch, 0)
    prop = np.repeat(np.stack([obs["proprio"]] * n)[None], batch, 0)
    b = make_obs_batch(frames, prop, [obs["instruction"]] * batch)
    model.eval()
    for _ in range(10):
        model.act(b)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model.act(b)
        times.append(time.perf_counter() - t0)
    return percentiles_ms(times)


def add_running_episode_flags(ap) -> None:
    """The practice benches' flags for the episodes under way when an iteration's buffer fills."""
    ap.add_argument("--finish-running", action="store_true",
                    help="practice lets the episodes under way when an iteration's buffer fills run to their end "
                         "(PracticeConfig.finish_running_episodes; the behaviour behind this bench's results before "
                         "2026-12-04, in their run directories); default: drop them (run directories end in -discard)")
    ap.add_argument("--discard-running", action="store_true",
                    help="the default since 2026-12-04 (kept for the commands that name it)")
    ap.add_argument("--plan-starts", action="store_true",
                    help="practice starts an episode only while the buffer plus the running episodes' expected "
                         "tuples fall short of an iteration's (PracticeConfig.plan_starts; run directories end in -plan)")


def running_episode_settings(ap, args) -> tuple[dict[str, Any], str]:
    """(PracticeConfig fields, run-directory suffix) for ``add_running_episode_flags``' flags."""
    if args.finish_running and args.discard_running:
        ap.error("--finish-running and --discard-running contradict each other: pick one")
    tag = ("" if args.finish_running else "-discard") + ("-plan" if args.plan_starts else "")
    return {"finish_running_episodes": args.finish_running, "plan_starts": args.plan_starts}, tag
