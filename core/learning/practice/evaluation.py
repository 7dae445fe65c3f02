"""Practice's greedy evaluations on the selection seeds, the paired gain since the start,
and the message practice stops with when its success keeps falling."""
from __future__ import annotations

from typing import Any, Callable

from core.learning.fleets import Fleet
from core.learning.policy import DojoPolicy
from core.learning.rollout import EpisodeRecord, RolloutHooks, run_episodes
from core.method.seeds import SELECT_SEED0
from core.method.stats import format_points, paired_gain, wilson_interval


def interrupt_control(interrupt: Callable[[], None] | None) -> Callable[[int, EpisodeRecord], None] | None:
    """A rollout's per-step hook that only lets ``interrupt`` raise (a worker asked to stop)."""
    if interrupt is None:
        return None

    def control(_robot: int, _rec: EpisodeRecord) -> None:
        interrupt()

    return control


def evaluate_success(policy: DojoPolicy, fleet: Fleet, n: int,
                     interrupt: Callable[[], None] | None = None,
                     on_step: Callable[[int, EpisodeRecord, dict[str, Any]], None] | None = None,
                     groups: int | None = None) -> dict[str, Any]:
    """Greedy success on fixed selection seeds (ground truth ends episodes). Test seeds
    (EVAL_SEED0) stay untouched, so a reported success is not fitted to them. ``interrupt``
    is called before every step and may raise to abandon the evaluation; ``on_step`` sees
    every frame (``run_episodes``'s hook: the worker streams the evaluation to Live)."""
    seeds = list(range(SELECT_SEED0, SELECT_SEED0 + n))
    recs = run_episodes(policy, None, seeds, fleet=fleet, greedy=True, groups=groups,
                        hooks=RolloutHooks(control=interrupt_control(interrupt), on_step=on_step))
    k = sum(r.success for r in recs)
    by_seed = {r.seed: int(bool(r.success)) for r in recs}
    return {"success": k / max(1, len(recs)), "success_ci": wilson_interval(k, len(recs)), "episodes": len(recs),
            "outcomes": [by_seed.get(sd) for sd in seeds]}


def gain_vs_start(start: list[int | None] | None, now: list[int | None]) -> dict[str, Any]:
    """Metrics row fields for the change in greedy success since the starting checkpoint,
    paired seed by seed (both evaluations run the selection seeds from SELECT_SEED0, so the
    common prefix is the same seeds); empty when the start's outcomes are unknown (a run
    begun before they were kept) or no seed was run by both."""
    if not start:
        return {}
    pairs = [(a, b) for a, b in zip(start, now) if a is not None and b is not None]
    if not pairs:
        return {}
    g = paired_gain([a for a, _ in pairs], [b for _, b in pairs])
    return {"eval_gain": g["gain"], "eval_gain_lo": g["ci"][0], "eval_gain_hi": g["ci"][1],
            "eval_gain_p": g["p"], "eval_gain_seeds": g["n"], "eval_gained": g["gained"], "eval_lost": g["lost"]}


def drop_message(row: dict[str, Any], state: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Why practice stopped on a drop, with the figures and what would help. ``rows``: the
    run's metrics rows so far (the detector's false positives against ground truth, where
    the fleet knows it, show whether the policy is gaming it)."""
    first = next((r.get("eval_success") for r in rows if r.get("iteration") == 0), None)
    msg = (f"practice stopped at iteration {row['iteration']}: greedy success {100 * row['eval_success']:.0f} % "
           f"is below the start's{'' if first is None else f' {100 * first:.0f} %'} beyond noise in "
           f"{state['drops_in_row']} evaluations in a row ({format_points(row['eval_gain'])} pts, 95 % interval "
           f"[{format_points(row['eval_gain_lo'])}, {format_points(row['eval_gain_hi'])}] on the same "
           f"{row['eval_gain_seeds']} seeds).")
    its = [r for r in rows if r.get("iteration", 0) > 0 and "detector_fires" in r]
    if its:
        k = max(1, len(its) // 4)
        def share(block):
            fires = sum(r["detector_fires"] for r in block)
            return sum(r["detector_false_positives"] for r in block), fires
        (fp0, f0), (fp1, f1) = share(its[:k]), share(its[-k:])
        if f0 and f1:
            before, after = fp0 / f0, fp1 / f1
            gamed = after >= before + 0.1
            msg += (f" False positives among the detector's fires (against ground truth) went from {fp0}/{f0} in the "
                    f"first {k} iterations to {fp1}/{f1} in the last {k}"
                    + (": the policy is learning to fool the detector." if gamed else
                       ": not a clear rise, so the detector may not be the (only) cause."))
    best = state.get("best_iteration")
    msg += (f" The best checkpoint (iteration {best}, {100 * state['best_success']:.0f} %) is kept in best.pt. "
            "What would help: re-check the detector against labels (Review page, or the detector check with "
            "more rollouts), refine it on the labeled practice episodes as practice goes (refine_every), a larger s with "
            "patience, or a smaller learning rate; stop_after_drops 0 practises on regardless.")
    return msg
