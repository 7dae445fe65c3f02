"""The paper's pretraining ablation at CPU scale: a frozen ImageNet backbone against a CNN
trained from scratch, each with and without the simulator's keypoint labels.

    python -m bench.pretraining [--quick] [--arms scratch_kp,scratch,pretrained,pretrained_kp]
                                [--backbone efficientnet_lite0] [--seeds N] [--real2sim] [--novel] [--metaworld]

Arms (``ARMS``), all on the same Block2Block demonstrations (10 % of the self-improvement
bench's pool, seeds 0..299), the same model otherwise, the same practice budget:

- ``scratch_kp``: today's default, the scratch CNN and the auxiliary loss on goal keypoints
  whose labels come from the simulator's state (``PolicyConfig.keypoint_aux_weight``);
- ``scratch``: the same without those labels (what a lab's own data gives it);
- ``pretrained``: a frozen ImageNet backbone from a PyPI wheel (``--backbone``), no labels;
- ``pretrained_kp``: that backbone with the labels.

Per arm: BC success on the test seeds (Stage 1's ``best_policy.pt``), steps-to-go MAE of
its reward model on fresh scripted episodes, the detector check's precision / recall
(practice's pre-start check, against ground truth), success after the same practice
budget (the best checkpoint by practice's own selection seeds, never the test seeds), and
the paired gain over its own BC on the same test seeds with a 95 % interval. Each policy is
also evaluated on the held-out paraphrases (``sim_backends/tabletop/paraphrases.py``): the
same test episodes seed for seed, in words the generator never produces.

``--real2sim``: the paper's Real2Sim on the tabletop: Stage 1 on demonstrations collected in
the "lab" domain only (``sim_backends/tabletop/scene.py``'s DOMAINS: another table, light,
camera, block size and friction), then practice in the default domain; success in the
default domain before and after, for the backbone and for scratch (``--real2sim-arms``). ``--novel``: the new-object (banana) arm of bench.self_improvement
per backbone. ``--metaworld``: bench.metaworld's quick set per backbone (and MT10 in the
full plan). The full plan runs all three.

Run directories carry the arm, epochs and seed, and evaluations are kept in
``<root>/outcomes.json``: a rerun (or the full plan after the quick one) goes on from what
is there. Writes ``<root>/pretraining.png``; the last line is ``RESULT {json}`` with, per
arm, ``bc``, ``si``, ``gain``, ``gain_lo``, ``gain_hi``, ``detector_precision``,
``detector_recall``, ``stg_mae``, ``si_episodes`` (and the paraphrase figures).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.common import PhaseTimer, print_result

DEFAULT_BACKBONE = "efficientnet_lite0"
KEYPOINT_WEIGHT = 100.0  # PolicyConfig's default: what "with keypoint labels" means
# arm -> (image encoder, keypoint loss weight, which frames' labels Stage 1 keeps)
ARMS = {"scratch_kp": ("scratch", KEYPOINT_WEIGHT, "all"), "scratch": ("scratch", 0.0, "none"),
        "pretrained": ("backbone", 0.0, "none"), "pretrained_kp": ("backbone", KEYPOINT_WEIGHT, "all"),
        # The cheap human substitute: a reviewer clicks the object and its target on the first
        # frame of each demonstration; the other frames carry no label.
        "scratch_kp_first": ("scratch", KEYPOINT_WEIGHT, "first"),
        "pretrained_kp_first": ("backbone", KEYPOINT_WEIGHT, "first"),
        # ... and those clicks followed through the frames by template matching.
        "scratch_kp_tracked": ("scratch", KEYPOINT_WEIGHT, "tracked"),
        "pretrained_kp_tracked": ("backbone", KEYPOINT_WEIGHT, "tracked")}
DEFAULT_ARMS = ("scratch_kp", "scratch", "pretrained", "pretrained_kp")
# Quick: one training seed, 80 test seeds a point, 300 practice episodes an arm, 5 epochs: the
# four arms in 29.4 min on an idle 2-core machine (2026-12-07); at 6 epochs, 100 seeds and 400
# episodes they took 35.6 (Stage 1 13.7, practice 14.9, test evaluations 5.8). At these sizes the
# default's gain does not show (1,400 episodes give +10.3): the quick plan checks that every arm
# runs and its BC, detector and steps-to-go; the gains are the full plan's. (The first quick run:
# 8 epochs, 150 test seeds, 600 practice episodes, a 60-rollout check, 51 minutes.) Full: the
# issue's >= 2 training seeds and >= 300 test seeds, the self-improvement bench's 1,400 practice
# episodes, 8 epochs, Real2Sim, banana and Meta-World.
QUICK = dict(pool=3000, fraction=0.1, seeds=1, epochs=5, eval_episodes=80, practice_episodes=300, fleet=16,
             select_episodes=40, si_eval_every=10, si_eval_episodes=40, check_episodes=30, lr=3e-5,
             real2sim=False, novel=False, metaworld=False, mt10=False)
FULL = dict(QUICK, seeds=2, epochs=8, eval_episodes=300, practice_episodes=1400, si_eval_episodes=60,
            check_episodes=60, real2sim=True, novel=True, metaworld=True, mt10=True)
DEFAULT_ROOT = "data/bench/pretraining"
TASK = {"family": "block2block"}
LAB = {**TASK, "domain": "lab"}
# The ablation on Block2Block, then what the full plan adds (Meta-World's quick set, and MT10: the long part)
PARTS = ("tabletop", "real2sim", "novel", "metaworld", "mt10")


class Outcomes:
    """Success per test seed of (checkpoint, task), kept in ``<root>/outcomes.json`` so a rerun
    evaluates nothing twice."""

    def __init__(self, root: Path, timer: PhaseTimer):
        self.path, self.timer = root / "outcomes.json", timer
        self.data: dict[str, list[int]] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def __call__(self, ckpt: str, task: dict[str, Any], n: int) -> list[int]:
        key = f"{ckpt}|{json.dumps(task, sort_keys=True)}|{n}"
        if key not in self.data:
            from core.learning.checkpoint import load_checkpoint
            from core.learning.evaluate import evaluate_policy

            model, _ = load_checkpoint(ckpt)
            with self.timer("test_evaluation"):
                _, recs = evaluate_policy(model, "tabletop", task, n, threshold_s=1.0)
            self.data[key] = [int(bool(r.success)) for r in recs]
            tmp = self.path.with_suffix(".tmp")  # a run stopped mid-write keeps the previous file whole
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)
        return self.data[key]


def policy_for(arm: str, backbone: str):
    from core.learning.policy import PolicyConfig

    encoder, weight, _labels = ARMS[arm]
    return PolicyConfig(image_encoder=backbone if encoder == "backbone" else "scratch", keypoint_aux_weight=weight)


def stage1(arm: str, seed: int, plan: dict[str, Any], args, data: Path, tag: str, n: int) -> dict[str, Any]:
    from core.learning.sft import SFTConfig, train_sft

    enc = args.backbone if ARMS[arm][0] == "backbone" else "scratch"
    out = Path(args.root) / f"sft{tag}-{arm}-{enc}-n{n}-e{plan['epochs']}-s{seed}"
    return train_sft(SFTConfig(data=str(data), out=str(out), max_episodes=n, epochs=plan["epochs"],
                               eval_every=max(1, plan["epochs"] // 3), eval_episodes=plan["select_episodes"],
                               seed=seed, keypoint_labels=ARMS[arm][2], policy=policy_for(arm, args.backbone)),
                     progress=False)


def practice(sft: dict[str, Any], out: Path, plan: dict[str, Any], seed: int, env_config: dict | None = None
             ) -> dict[str, Any]:
    from core.learning.practice import PracticeConfig, run_practice

    return run_practice(PracticeConfig(
        policy_checkpoint=sft["best_policy"], reward_checkpoint=sft["best_stg"], out=str(out),
        backend="tabletop" if env_config else None, env_config=env_config,
        max_episodes=plan["practice_episodes"], eval_every=plan["si_eval_every"],
        eval_episodes=plan["si_eval_episodes"], seed=seed, plateau_evals=1000, min_precision=0.0, min_recall=0.0,
        fleet_size=plan["fleet"], check_episodes=plan["check_episodes"], lr=plan["lr"]), progress=False)


def kept_checkpoint(sft: dict[str, Any], si: dict[str, Any]) -> str:
    """The checkpoint practice ended with. When no evaluation beat its start, that is Stage 1's
    policy, the same weights as BC: named so, it is evaluated once (``Outcomes`` caches by path)."""
    return sft["best_policy"] if si["best_iteration"] == 0 else si["best"]


def arm_seed(arm: str, seed: int, plan: dict[str, Any], args, data: Path, outcomes: Outcomes,
             timer: PhaseTimer) -> dict[str, Any]:
    """One arm, one training seed: Stage 1, its evaluations, practice, and after."""
    from bench.self_improvement import reward_signal

    n = int(plan["fraction"] * plan["pool"])
    with timer(f"stage1_{arm}"):
        sft = stage1(arm, seed, plan, args, data, "", n)
    signal = reward_signal(sft["best_stg"], TASK)
    with timer(f"practice_{arm}"):
        si = practice(sft, Path(sft["run_dir"]).with_name(
            Path(sft["run_dir"]).name.replace("sft-", "si-") + f"-p{plan['practice_episodes']}"), plan, seed)
    chk = json.loads((Path(si["run_dir"]) / "detector_check.json").read_text())
    m = plan["eval_episodes"]
    para = {**TASK, "phrasing": "paraphrases"}
    after = kept_checkpoint(sft, si)
    row = {"bc": outcomes(sft["best_policy"], TASK, m), "si": outcomes(after, TASK, m),
           "bc_paraphrase": outcomes(sft["best_policy"], para, m), "si_paraphrase": outcomes(after, para, m),
           "detector": (chk["precision"], chk["recall"]), "stg_mae": signal["stg_mae_steps"],
           "keypoint_err": (signal["keypoint_err_object"], signal["keypoint_err_target"]),
           "si_episodes": si["episodes"], "train_minutes": sft["train_seconds"] / 60}
    print(f"{arm} seed {seed}: BC {sum(row['bc'])}/{m}, SI {sum(row['si'])}/{m} after {si['episodes']} episodes; "
          f"paraphrases BC {sum(row['bc_paraphrase'])}/{m}, SI {sum(row['si_paraphrase'])}/{m}; "
          f"detector {chk['precision']:.2f}/{chk['recall']:.2f}; stg MAE {signal['stg_mae_steps']:.2f}", flush=True)
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm over its training seeds: rates, the paired gain (all seeds' test episodes pooled)."""
    import numpy as np

    from core.method.stats import paired_gain, wilson_interval

    cat = {k: [x for r in rows for x in r[k]] for k in ("bc", "si", "bc_paraphrase", "si_paraphrase")}
    g = paired_gain(cat["bc"], cat["si"])
    rate = {k: sum(v) / len(v) for k, v in cat.items()}
    out = {"bc": rate["bc"], "si": rate["si"], "gain": g["gain"], "gain_lo": g["ci"][0], "gain_hi": g["ci"][1],
           "gain_p": g["p"], "bc_ci": wilson_interval(sum(cat["bc"]), len(cat["bc"])),
           "si_ci": wilson_interval(sum(cat["si"]), len(cat["si"])),
           "detector_precision": float(np.mean([r["detector"][0] for r in rows])),
           "detector_recall": float(np.mean([r["detector"][1] for r in rows])),
           "stg_mae": float(np.mean([r["stg_mae"] for r in rows])),
           "keypoint_err": [float(np.mean([r["keypoint_err"][i] for r in rows])) for i in (0, 1)],
           "si_episodes": [r["si_episodes"] for r in rows], "test_episodes": len(cat["bc"]),
           "bc_per_seed": [sum(r["bc"]) / len(r["bc"]) for r in rows],
           "si_per_seed": [sum(r["si"]) / len(r["si"]) for r in rows],
           "bc_paraphrase": rate["bc_paraphrase"], "si_paraphrase": rate["si_paraphrase"],
           "train_minutes": float(np.mean([r["train_minutes"] for r in rows]))}
    for k in ("bc", "si"):  # the target: success on the paraphrases >= 80 % of that on the templates
        out[f"{k}_paraphrase_ratio"] = rate[f"{k}_paraphrase"] / rate[k] if rate[k] else None
        gp = paired_gain(cat[k], cat[f"{k}_paraphrase"])  # same episodes, other words: paired
        out[f"{k}_paraphrase_diff"], out[f"{k}_paraphrase_diff_ci"] = gp["gain"], gp["ci"]
    return out


def real2sim(plan: dict[str, Any], args, outcomes: Outcomes, timer: PhaseTimer) -> dict[str, Any]:
    """Stage 1 on "lab" demonstrations only, practice in the default domain: before and after there."""
    from core.learning.demos import generate_demos
    from core.method.stats import paired_gain

    n = int(plan["fraction"] * plan["pool"])
    lab = Path(args.root) / "demos-lab"
    with timer("demos_lab"):
        generate_demos(lab, n, env_config=LAB, workers=args.workers, progress=False)
    out: dict[str, Any] = {}
    for arm in args.real2sim_arms:
        with timer(f"real2sim_stage1_{arm}"):
            sft = stage1(arm, 0, plan, args, lab, "-lab", n)
        m = plan["eval_episodes"]
        lab_bc = outcomes(sft["best_policy"], LAB, m)
        with timer(f"real2sim_practice_{arm}"):
            si = practice(sft, Path(sft["run_dir"]).with_name(Path(sft["run_dir"]).name.replace("sft-", "si-sim-")
                                                              + f"-p{plan['practice_episodes']}"), plan, 0, TASK)
        before, after = outcomes(sft["best_policy"], TASK, m), outcomes(kept_checkpoint(sft, si), TASK, m)
        g = paired_gain(before, after)
        chk = json.loads((Path(si["run_dir"]) / "detector_check.json").read_text())
        out[arm] = {"lab_bc": sum(lab_bc) / m, "sim_before": sum(before) / m, "sim_after": sum(after) / m,
                    "gain": g["gain"], "gain_lo": g["ci"][0], "gain_hi": g["ci"][1], "gain_p": g["p"],
                    "si_episodes": si["episodes"], "detector_precision": chk["precision"],
                    "detector_recall": chk["recall"]}
        print(f"real2sim {arm}: lab BC {out[arm]['lab_bc']:.3f}; default domain {out[arm]['sim_before']:.3f} -> "
              f"{out[arm]['sim_after']:.3f}, gain {100 * g['gain']:+.1f} [{100 * g['ci'][0]:+.1f}, "
              f"{100 * g['ci'][1]:+.1f}] points", flush=True)
    return out


def novel(plan: dict[str, Any], args, outcomes: Outcomes, data: Path) -> dict[str, Any]:
    """bench.self_improvement's new-object (banana) arm once per arm of this run (its encoder, with
    or without keypoint labels); arms that keep only some labels (first, tracked) are left out:
    that arm trains on its own demonstrations, where the option does not reach."""
    import bench.self_improvement as SI

    # bench.self_improvement's recipe for that arm, on this plan's pool and test seeds; the sizes given
    # on the command line reach it too (a small run stays small), the rest stays its own.
    si_plan = dict(SI.QUICK, pool=plan["pool"], eval_episodes=plan["eval_episodes"],
                   novel_single_demos=max(1, round(SI.QUICK["novel_single_demos"] * plan["pool"] / SI.QUICK["pool"])))
    for flag, key in (("practice_episodes", "novel_practice_episodes"), ("check_episodes", "novel_check_episodes"),
                      ("select_episodes", "select_episodes"), ("select_episodes", "si_eval_episodes")):
        if getattr(args, flag) is not None:
            si_plan[key] = getattr(args, flag)
    if args.epochs is not None:
        si_plan["epochs"] = {0.1: args.epochs}
    ns = argparse.Namespace(workers=args.workers, novel_refine=0, running_tag="-discard", fleet=args.fleet,
                            running={"finish_running_episodes": False, "plan_starts": False})
    res: dict[str, Any] = {}
    for arm in (a for a in args.arms if ARMS[a][2] in ("all", "none")):
        pairs: dict[tuple[str, str], list[int]] = {}

        def test_success(ckpt, task=None, _pairs=pairs):
            o = outcomes(ckpt, task or TASK, plan["eval_episodes"])
            _pairs[ckpt, json.dumps(task or TASK, sort_keys=True)] = o
            return sum(o), len(o)

        r = SI.novel_arm(si_plan, Path(args.root) / f"novel-{arm}", data, ns, test_success, pairs,
                         policy=policy_for(arm, args.backbone))
        res[arm] = {k: r[k] for k in ("novel_before", "novel_after", "novel_gain", "novel_gain_ci", "novel_episodes",
                                      "novel_detector_precision", "novel_detector_recall")}
    return res


def metaworld(args, mt10: bool = False) -> dict[str, Any]:
    """bench.metaworld's quick set (or MT10) per encoder, each with the keypoint labels Meta-World's
    demonstrations carry (the task's object and its goal, projected through the camera)."""
    import bench.metaworld as MW

    res: dict[str, Any] = {}
    for enc in ("scratch", args.backbone):
        r = MW.main((["--tasks", "MT10"] if mt10 else ["--quick"]) + ["--image-encoder", enc])
        res[f"{enc}{'_mt10' if mt10 else ''}"] = {
            k: r[k] for k in ("bc_mean", "si_mean", "si_gain_points", "si_gain_ci_points", "si_gain_p",
                              "detector_precision", "detector_recall", "si_episodes")}
    return res


def plot(path: Path, arms: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    names = list(arms)
    for i, name in enumerate(names):
        a = arms[name]
        for j, (k, colour, label) in enumerate((("bc", "C0", "BC"), ("si", "C3", "after practice"))):
            lo, hi = a[f"{k}_ci"]
            ax.bar(i + (j - 0.5) * 0.38, a[k], 0.36, color=colour, yerr=[[a[k] - lo], [hi - a[k]]], capsize=3,
                   label=label if i == 0 else None)
            ax.plot([i + (j - 0.5) * 0.38], [a[f"{k}_paraphrase"]], "kx", label="on the paraphrases"
                    if i == 0 and j == 0 else None)
        ax.text(i, min(0.97, a["si_ci"][1] + 0.03), f"{100 * a['gain']:+.0f} pts", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("success (held-out test seeds)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Block2Block, 10 % of the pool: backbone x keypoint labels")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _sizes(key: str) -> str:
    """A plan setting for --help, from the plans themselves: "quick 5, full 8"."""
    return f"quick {QUICK[key]:,}, full {FULL[key]:,}"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"one training seed, {QUICK['eval_episodes']} test seeds, "
                                                       f"{QUICK['practice_episodes']} practice episodes")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                    help=f"comma-separated, from {list(ARMS)} (default: the first four)")
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE,
                    help="the pretrained arms' frozen backbone: efficientnet_lite0/1/2, mobilenet_v2")
    ap.add_argument("--seeds", type=int, help=f"training seeds ({_sizes('seeds')})")
    ap.add_argument("--eval-episodes", type=int, help=f"test seeds a point ({_sizes('eval_episodes')})")
    ap.add_argument("--practice-episodes", type=int, help=f"practice budget an arm ({_sizes('practice_episodes')})")
    ap.add_argument("--pool", type=int, help=f"the demonstration pool ({QUICK['pool']:,}; Stage 1 uses "
                                                   f"{QUICK['fraction']:.0%}% of it)")
    ap.add_argument("--epochs", type=int, help=f"Stage-1 epochs ({_sizes('epochs')})")
    ap.add_argument("--fleet", type=int, help=f"practice robots ({QUICK['fleet']})")
    ap.add_argument("--check-episodes", type=int,
                    help=f"practice's pre-start detector check, rollouts ({_sizes('check_episodes')})")
    ap.add_argument("--select-episodes", type=int,
                    help=f"Stage 1's and practice's selection seeds ({QUICK['select_episodes']}; practice's full "
                         f"{FULL['si_eval_episodes']})")
    ap.add_argument("--real2sim", action="store_true", help="add Real2Sim (in the full plan)")
    ap.add_argument("--only-real2sim", action="store_true", help="run Real2Sim alone")
    ap.add_argument("--real2sim-arms", default="pretrained_kp,scratch_kp",
                    help="Real2Sim's arms (default: the backbone and scratch, each with the lab demonstrations' "
                         "keypoint labels, projected through the lab's camera)")
    ap.add_argument("--novel", action="store_true", help="add the new-object (banana) arms (in the full plan)")
    ap.add_argument("--metaworld", action="store_true", help="add Meta-World's quick set (in the full plan)")
    ap.add_argument("--parts", help=f"comma-separated, from {list(PARTS)} (default: tabletop and what the "
                                    "plan adds: the quick plan nothing, the full plan all)")
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--workers", type=int, default=2)
    return ap


def parse(argv=None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The command line and the plan it asks for; bad choices end here, before any work."""
    ap = build_parser()
    args = ap.parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    for k in ("seeds", "eval_episodes", "practice_episodes", "pool", "epochs", "fleet", "check_episodes"):
        if getattr(args, k) is not None:
            plan[k] = getattr(args, k)
    if args.select_episodes is not None:
        plan["select_episodes"] = plan["si_eval_episodes"] = args.select_episodes
    for k in ("real2sim", "novel", "metaworld"):
        plan[k] = plan[k] or getattr(args, k)
    parts = plan_parts(plan) if args.parts is None else [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.only_real2sim:
        parts = ["real2sim"]
    if set(parts) - set(PARTS):
        ap.error(f"--parts {sorted(set(parts) - set(PARTS))}: not among {list(PARTS)}")
    args.parts = parts
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    args.real2sim_arms = [a.strip() for a in args.real2sim_arms.split(",") if a.strip()]
    bad = [a for a in args.arms + args.real2sim_arms if a not in ARMS]
    if bad:
        ap.error(f"--arms {bad}: not among {list(ARMS)}")
    from core.learning.encoders import PRETRAINED_IMAGE_ENCODERS

    if args.backbone not in PRETRAINED_IMAGE_ENCODERS:
        ap.error(f"--backbone {args.backbone!r}: choose from {list(PRETRAINED_IMAGE_ENCODERS)}")
    return args, plan


def main(argv=None) -> dict:
    args, plan = parse(argv)
    from core.learning.demos import generate_demos

    t0, timer = time.perf_counter(), PhaseTimer()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    outcomes = Outcomes(root, timer)
    data = root / "demos-pool"
    result: dict[str, Any] = {"plan": plan, "backbone": args.backbone, "quick": args.quick}
    with timer("demos"):
        generate_demos(data, int(plan["fraction"] * plan["pool"]), env_config=TASK, workers=args.workers,
                       progress=False)
    if "tabletop" in args.parts:
        # Seed-major: a run stopped part-way has every arm at the first seed (it resumes where it stopped).
        rows: dict[str, list] = {arm: [] for arm in args.arms}
        for seed in range(plan["seeds"]):
            for arm in args.arms:
                rows[arm].append(arm_seed(arm, seed, plan, args, data, outcomes, timer))
        for arm in args.arms:
            result[arm] = summarise(rows[arm])
        arms = {a: result[a] for a in args.arms}
        png = root / f"pretraining{file_tag(args, plan)}.png"
        plot(png, arms)
        result["plot"] = str(png)
        result["targets"] = targets(arms)
    if "real2sim" in args.parts:
        result["real2sim"] = real2sim(plan, args, outcomes, timer)
    if "novel" in args.parts:
        result["novel"] = novel(plan, args, outcomes, data)
    if "metaworld" in args.parts:
        result["metaworld"] = metaworld(args)
    if "mt10" in args.parts:
        result["metaworld_mt10"] = metaworld(args, mt10=True)
    result.update(minutes=(time.perf_counter() - t0) / 60, phase_minutes=timer.minutes())
    name = f"result{file_tag(args, plan)}.json"
    (root / name).write_text(json.dumps(result, indent=2, default=float))
    print_result(result)
    return result


def plan_parts(plan: dict[str, Any]) -> list[str]:
    """The parts a plan runs when ``--parts`` does not say: the tabletop ablation and what the plan adds."""
    return ["tabletop"] + [p for p in PARTS[1:] if plan[p]]


def file_tag(args, plan: dict[str, Any]) -> str:
    """Result and plot names: "-quick" for the quick plan, plus the arms when not the default four,
    the parts when not the plan's, and the training seeds when not the plan's (a run of other arms,
    parts or seeds on the same root must not overwrite the whole plan's figures)."""
    tag = "-quick" if args.quick else ""
    if list(args.arms) != list(DEFAULT_ARMS) and args.parts != ["real2sim"]:  # Real2Sim has its own arms
        tag += f"-{'-'.join(args.arms)}"
    if args.parts != plan_parts(plan):
        tag += f"-{'-'.join(args.parts)}"
    if plan["seeds"] != (QUICK if args.quick else FULL)["seeds"]:
        tag += f"-seeds{plan['seeds']}"
    return tag


def targets(arms: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, read off the figures (nothing here selects anything)."""
    out: dict[str, Any] = {}
    if "pretrained" in arms and "scratch_kp" in arms:
        out["pretrained_gain_minus_scratch_kp_gain"] = arms["pretrained"]["gain"] - arms["scratch_kp"]["gain"]
        out["pretrained_gain_beyond_noise"] = arms["pretrained"]["gain_lo"] > 0
    if "pretrained" in arms and "scratch" in arms:
        s = arms["scratch"]["gain"]
        out["pretrained_over_scratch_gain_ratio"] = arms["pretrained"]["gain"] / s if s > 0 else None
    out["paraphrase_ratio_si"] = {a: v["si_paraphrase_ratio"] for a, v in arms.items()}
    return out


if __name__ == "__main__":
    main()
