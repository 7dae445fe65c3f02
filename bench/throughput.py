"""Practice throughput against the bare simulator, and the per-step inference latency.

    python -m bench.throughput [--fleet K] [--policy best_policy.pt --reward best_stg.pt]

Measured in one run, on the same cores:

- ``bare_steps_per_s``: K simulator processes stepping random actions with rendering,
  nothing else (the ceiling for this machine). Steps only are timed: building, first
  resetting and closing the simulators are left out, as practice's fleet start-up is.
- ``practice_steps_per_s``: what practice collects: the same K robots as a ProcessFleet,
  the policy sampling actions batched across the fleet, the frozen reward model giving
  d(o, g) for every frame, the detector ending episodes (``core.learning.practice``'s rollout).
  ``practice_with_updates_steps_per_s`` adds the REINFORCE updates (one practice
  iteration: >= 1,024 tuples collected, then 16 gradient steps; fleet start-up excluded).
- ``ratio`` = practice / bare, with the learner's torch thread count and the rollout's
  number of robot groups that did best (``--threads``, ``--groups``: each setting is timed
  on the same episodes; the OpenMP threads of a 2-thread learner spin on cores the
  simulators need; 1 group is lock-step, 2 or more pipeline inference for one group with
  the other groups' simulator steps). ``pipeline_speedup``: the best pipelined setting
  against lock-step, measured in this run (``--rounds N``: each setting N times,
  interleaved, medians).
- ``latency_*``: one control step of policy + reward model + detector test, at batch 1
  and at batch K, p50/p99 over 300 calls, with the ``torch.compile``d forward that practice
  uses (``latency_eager_*``: the same without compiling; ``--no-compile``: eager only).

Without checkpoints the default model is built untrained (speed does not depend on the
weights; the detector then rarely fires, so episodes run to the step limit, as a weak
policy's do). The last line printed is ``RESULT {json}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import tempfile
import time
from typing import Any

import numpy as np

from bench.common import print_result


def _random_steps(env, rng: np.random.Generator, steps: int) -> None:
    """``steps`` random actions; an episode that ends is reset (as a robot's is in practice)."""
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_dim).astype(np.float32))
        if term or trunc:
            env.reset(seed=int(rng.integers(1 << 30)))


def _bare_worker(args: tuple[str, dict[str, Any], int, int]) -> int:
    """One simulator process: steps/s x 1000 over ``steps`` random steps. Building the
    environment, its first reset, a warm-up (GL context, caches) and closing it are outside
    the timed region, as practice's timing leaves out the fleet's start-up."""
    from sim_backends.registry import make_env

    backend, env_config, steps, seed = args
    import torch

    torch.set_num_threads(1)
    env = make_env(backend, env_config)
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed=seed)
        _random_steps(env, rng, 50)  # warm-up
        t0 = time.perf_counter()
        _random_steps(env, rng, steps)
        return int(steps / (time.perf_counter() - t0) * 1000)
    finally:
        env.close()


def bare_steps_per_s(backend: str, env_config: dict[str, Any], k: int, steps: int) -> float:
    """K processes stepping random actions with rendering at the same time: total steps/s."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(k) as pool:
        rates = pool.map(_bare_worker, [(backend, env_config, steps, i) for i in range(k)])
    return sum(rates) / 1000.0


def step_latency_ms(policy, reward, backend: str, env_config: dict[str, Any], batch: int, s: float,
                    iters: int = 300) -> dict[str, float]:
    """One control step's inference: sample actions, d(o, g) from the reward model, d <= s."""
    import torch

    from core.learning.policy import FEATURES, FRAMES, make_obs_batch, shared_feature_key
    from core.learning.rollout import policy_and_reward
    from core.method.stats import percentiles_ms
    from sim_backends.registry import make_env

    env = make_env(backend, env_config)
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    n = policy.config.n_frames
    frames = np.repeat(np.stack([obs["image"]] * n)[None], batch, 0)
    prop = np.repeat(np.stack([obs["proprio"]] * n)[None], batch, 0)
    b = make_obs_batch(frames, prop, [obs["instruction"]] * batch)
    gen = torch.Generator().manual_seed(0)
    policy.eval()
    reward.eval()

    shared = shared_feature_key(policy, reward) is not None
    # A frozen backbone shared by both models: the rollout encodes each robot's current frame
    # and reuses its previous frame's features from the last step (the steady state timed here).
    prev = policy.frozen_features(b[FRAMES][:, 1:]) if shared and n == 2 else None

    def once():
        step = dict(b)
        if shared:
            cur = policy.frozen_features(b[FRAMES][:, :1])
            step[FEATURES] = cur if prev is None else torch.cat([cur, prev], 1)
        _, d = policy_and_reward(policy, reward, step, greedy=False, generator=gen)
        return d <= s

    for _ in range(15):
        once()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return percentiles_ms(times)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet", type=int, default=os.cpu_count() or 1, help="robots K (default: cores)")
    ap.add_argument("--policy", help="policy checkpoint (default: the default model, untrained)")
    ap.add_argument("--reward", help="reward model checkpoint (default: the policy itself)")
    ap.add_argument("--episodes", type=int, default=24, help="practice rollout episodes to time")
    ap.add_argument("--bare-steps", type=int, default=1500, help="random steps per bare process")
    ap.add_argument("--skip-updates", action="store_true", help="leave out the two practice iterations")
    ap.add_argument("--threads", default=None,
                    help="torch threads for the learner's inference, comma-separated settings timed in turn "
                         "on the same episodes (default: 1 and all cores; the worker uses half the cores, "
                         "since the simulator processes need the rest)")
    ap.add_argument("--groups", default="1,2",
                    help="robot groups in the rollout loop, comma-separated settings timed in turn (1 = lock-step; "
                         "practice's default is 2 for a process fleet of >= 4 robots)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time every (threads, groups) setting this many times, interleaved, and keep each "
                         "setting's median (this VM's speed drifts by 10-20 %% within minutes)")
    ap.add_argument("--device", default="auto", help="where the policy and reward model run: auto (CUDA when "
                    "available), cpu or cuda")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode for the rollout forward: default (inductor's), reduce-overhead (CUDA "
                         "graphs), ... (default: DOJO_COMPILE_MODE, else reduce-overhead on a GPU, default on "
                         "the CPU)")
    ap.add_argument("--no-compile", action="store_true",
                    help="eager forward passes only (default: practice's torch.compile'd rollout forward, "
                         "with the eager latency reported beside it)")
    ap.add_argument("--image-encoder", default="scratch",
                    help="the untrained model's image encoder when no --policy is given: scratch (default) or a "
                         "pretrained backbone (efficientnet_lite0/1/2, mobilenet_v2), frozen: its features are "
                         "computed once a frame for the policy and the reward model")
    ap.add_argument("--latency-only", action="store_true",
                    help="time the per-step inference latency only (no simulators, no practice)")
    return ap


def settings(ap: argparse.ArgumentParser, args) -> tuple[list[int], list[int]]:
    """The learner thread counts and the rollout group counts to time (refused before any work)."""
    cores = os.cpu_count() or 1
    try:
        thread_counts = sorted({int(t) for t in (args.threads or f"1,{cores}").split(",")})
    except ValueError:
        ap.error(f"--threads {args.threads!r}: expected whole numbers separated by commas, e.g. 1,2")
    if not thread_counts or min(thread_counts) < 1:
        ap.error(f"--threads {args.threads!r}: every setting must be >= 1")
    try:
        group_counts = sorted({int(g) for g in args.groups.split(",")})
    except ValueError:
        ap.error(f"--groups {args.groups!r}: expected whole numbers separated by commas, e.g. 1,2")
    if not group_counts or min(group_counts) < 1:
        ap.error(f"--groups {args.groups!r}: every setting must be >= 1")
    return thread_counts, group_counts


def load_models(args, dev) -> tuple[Any, Any, float, str, dict[str, Any]]:
    """(policy, reward model, detector s, backend, env config): the checkpoints', or the
    default model untrained on Block2Block."""
    import torch

    from core.learning.checkpoint import load_checkpoint
    from core.learning.policy import DojoPolicy, PolicyConfig

    backend, env_config = "tabletop", {"family": "block2block", "terminate_on_success": False}
    if args.policy:
        policy, meta = load_checkpoint(args.policy, dev)
        backend = meta.get("backend", backend)
        env_config = {**meta.get("env_config", {}), "terminate_on_success": False}
        reward = load_checkpoint(args.reward if args.reward else args.policy, dev)[0]
        s = float((load_checkpoint(args.reward)[1] if args.reward else meta).get("threshold_s", 1.0))
    else:
        torch.manual_seed(0)
        policy = DojoPolicy(PolicyConfig(image_encoder=args.image_encoder)).to(dev)
        reward, s = copy.deepcopy(policy), 1.0  # practice's reward model is a separate frozen network
    return policy, reward, s, backend, env_config


def time_practice_rollouts(policy, reward, backend: str, env_config: dict[str, Any], k: int, s: float, args,
                           thread_counts: list[int], group_counts: list[int], compiled: bool
                           ) -> tuple[dict[tuple[int, int], list[float]], int]:
    """Practice's rollouts on a ProcessFleet of K, for every (threads, groups) setting, the
    fleet's start-up and a warm-up round outside the timed region: steps/s per setting and
    round, and the episodes timed in each."""
    import torch

    from core.learning.fleets import ProcessFleet
    from core.learning.rollout import rollout_batch, run_episodes
    from core.method.detector import DetectorSpec

    fleet = ProcessFleet(backend, env_config, k)
    runs: dict[tuple[int, int], list[float]] = {}
    try:
        for _round, groups in ((r, g) for r in range(max(1, args.rounds)) for g in group_counts):
            if compiled:
                t_c = time.perf_counter()
                for model in (policy, reward):
                    model.compile_inference(rollout_batch(fleet, groups), warm_up=True)
                print(f"compiled the rollout forward passes (batch {rollout_batch(fleet, groups)}) in "
                      f"{time.perf_counter() - t_c:.1f} s: {policy.inference_backend}", flush=True)
            for threads in thread_counts:
                # The same episodes for every setting (same seeds, same sampling stream).
                torch.set_num_threads(threads)
                gen = torch.Generator().manual_seed(0)
                run_episodes(policy, None, [10_000_000 + i for i in range(k)], fleet=fleet, greedy=False,
                             reward_model=reward, stop_on_ground_truth=False, detector=DetectorSpec(s, 2),
                             generator=gen, groups=groups)  # warm-up
                t0 = time.perf_counter()
                recs = run_episodes(policy, None, [10_001_000 + i for i in range(args.episodes)], fleet=fleet,
                                    greedy=False, reward_model=reward, stop_on_ground_truth=False,
                                    detector=DetectorSpec(s, 2), generator=gen, groups=groups)
                secs = time.perf_counter() - t0
                steps = sum(r.length for r in recs)
                runs.setdefault((threads, groups), []).append(steps / secs)
                print(f"practice rollouts, {threads} torch thread(s), {groups} group(s): {len(recs)} episodes, "
                      f"{steps} steps in {secs:.1f} s: {steps / secs:.0f} steps/s", flush=True)
    finally:
        fleet.close()
    return runs, len(recs)


def practice_with_updates(args, policy, backend: str, s: float, k: int, compiled: bool, dev, groups: int
                          ) -> tuple[float, dict[str, Any]]:
    """One practice iteration with its updates (run_practice, fleet start-up excluded):
    steps/s and the iteration's split (rollout, update, checkpoint seconds)."""
    from core.learning.checkpoint import save_checkpoint
    from core.learning.practice import PracticeConfig, run_practice

    with tempfile.TemporaryDirectory() as tmp:
        pol_path = args.policy or os.path.join(tmp, "policy.pt")
        rew_path = args.reward or pol_path
        if not args.policy:
            save_checkpoint(pol_path, policy, {"stage": "sft", "backend": backend,
                                               "env_config": {"family": "block2block"}, "threshold_s": s,
                                               "patience": 2})
        res = run_practice(PracticeConfig(
            policy_checkpoint=pol_path, reward_checkpoint=rew_path, out=os.path.join(tmp, "si"),
            fleet_size=k, threshold_s=s, check_episodes=0, eval_episodes=0, eval_every=1000,
            max_episodes=1, seed=0, compile=compiled, device=str(dev), rollout_groups=groups),
            progress=False)
        rows = [json.loads(x) for x in open(os.path.join(res["run_dir"], "metrics.jsonl"))]
        it_steps = sum(r["episodes"] * r["mean_length"] for r in rows if "mean_length" in r)
        secs_u = rows[-1]["seconds"]
        with_updates = it_steps / secs_u
        split = {key: rows[-1].get(f"time_{key}_s") for key in ("rollout", "update", "checkpoint")}
    print(f"practice with updates: {with_updates:.0f} steps/s ({it_steps:.0f} steps + 16 updates "
          f"in {secs_u:.1f} s: rollouts {split['rollout']} s, updates {split['update']} s, "
          f"checkpoint {split['checkpoint']} s)", flush=True)
    return with_updates, split


def latencies(policy, reward, backend: str, env_config: dict[str, Any], k: int, s: float, compiled: bool
              ) -> dict[str, dict[str, float]]:
    """Per-step inference latency at batch 1 and K, eager (and compiled): {"eager1": ..., "compiledK": ...}."""
    lat: dict[str, dict[str, float]] = {}
    for mode in (["eager", "compiled"] if compiled else ["eager"]):
        for b in (1, k):
            for model in (policy, reward):
                if mode == "eager":
                    model.disable_compiled_inference()
                else:
                    model.compile_inference(b, warm_up=True)
            lat[f"{mode}{b}"] = step_latency_ms(policy, reward, backend, env_config, b, s)
        print(f"latency policy+reward+detector, {mode}: batch 1 p50 {lat[f'{mode}1']['p50']:.1f} / p99 "
              f"{lat[f'{mode}1']['p99']:.1f} ms; batch {k} p50 {lat[f'{mode}{k}']['p50']:.1f} / p99 "
              f"{lat[f'{mode}{k}']['p99']:.1f} ms", flush=True)
    return lat


def main(argv=None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.compile_mode:  # read by compile_inference here and in the practice iteration below
        os.environ["DOJO_COMPILE_MODE"] = args.compile_mode
    thread_counts, group_counts = settings(ap, args)

    import torch

    from core.learning.policy import compile_enabled
    from core.learning.device import resolve_device

    dev = resolve_device(args.device)
    k = max(1, args.fleet)
    t_all = time.perf_counter()
    policy, reward, s, backend, env_config = load_models(args, dev)
    compiled = not args.no_compile and compile_enabled()
    if args.latency_only:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        lat = latencies(policy, reward, backend, env_config, k, s, compiled)
        best = "compiled" if compiled else "eager"
        result = {"image_encoder": policy.config.image_encoder, "frozen_features_shared": policy.feature_key is not None,
                  "latency_p50_ms": lat[f"{best}1"]["p50"], "latency_p99_ms": lat[f"{best}1"]["p99"],
                  f"latency_batch{k}_p50_ms": lat[f"{best}{k}"]["p50"],
                  f"latency_batch{k}_p99_ms": lat[f"{best}{k}"]["p99"],
                  "latency_eager_p50_ms": lat["eager1"]["p50"], "latency_eager_p99_ms": lat["eager1"]["p99"],
                  "inference": best, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
                  "policy": args.policy or "default model, untrained"}
        print_result(result)
        return result

    bare = bare_steps_per_s(backend, env_config, k, args.bare_steps)
    print(f"bare: {k} processes, random actions + rendering: {bare:.0f} steps/s", flush=True)

    runs, episodes_timed = time_practice_rollouts(policy, reward, backend, env_config, k, s, args, thread_counts,
                                                  group_counts, compiled)
    by_setting = {key: float(np.median(v)) for key, v in runs.items()}
    best_threads, best_groups = max(by_setting, key=by_setting.get)
    practice = by_setting[(best_threads, best_groups)]
    by_threads = {t: max(v for (tt, _g), v in by_setting.items() if tt == t) for t in thread_counts}
    by_groups = {g: max(v for (_t, gg), v in by_setting.items() if gg == g) for g in group_counts}
    pipelined = [v for g, v in by_groups.items() if g > 1]
    speedup = max(pipelined) / by_groups[1] if pipelined and 1 in by_groups else None
    torch.set_num_threads(best_threads)

    with_updates, split = None, None
    if not args.skip_updates:
        with_updates, split = practice_with_updates(args, policy, backend, s, k, compiled, dev, best_groups)

    lat = latencies(policy, reward, backend, env_config, k, s, compiled)
    best = "compiled" if compiled else "eager"
    lat1, latk = lat[f"{best}1"], lat[f"{best}{k}"]
    result = {
        "fleet": k, "bare_steps_per_s": bare, "practice_steps_per_s": practice, "ratio": practice / bare,
        "threads": best_threads, "practice_steps_per_s_by_threads": by_threads,
        "groups": best_groups, "practice_steps_per_s_by_groups": by_groups, "pipeline_speedup": speedup,
        "rounds": max(1, args.rounds), "practice_steps_per_s_runs": {f"threads{t}_groups{g}": v
                                                                       for (t, g), v in runs.items()},
        "practice_with_updates_steps_per_s": with_updates,
        "practice_iteration_seconds": None if args.skip_updates else split,
        "latency_p50_ms": lat1["p50"], "latency_p99_ms": lat1["p99"],
        f"latency_batch{k}_p50_ms": latk["p50"], f"latency_batch{k}_p99_ms": latk["p99"],
        "latency_eager_p50_ms": lat["eager1"]["p50"], "latency_eager_p99_ms": lat["eager1"]["p99"],
        f"latency_eager_batch{k}_p50_ms": lat[f"eager{k}"]["p50"],
        f"latency_eager_batch{k}_p99_ms": lat[f"eager{k}"]["p99"], "inference": best,
        "policy": args.policy or "default model, untrained", "device": str(dev),
        "compile_mode": policy._fast.mode if compiled and policy._fast is not None else None,
        "practice_episodes_timed": episodes_timed, "cores": os.cpu_count(),
        "minutes": (time.perf_counter() - t_all) / 60,
    }
    print_result(result)
    return result


if __name__ == "__main__":
    main()
