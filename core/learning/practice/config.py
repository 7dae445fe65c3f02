"""Practice's settings (``PracticeConfig``), which of them a resumed run may change, and the
error practice raises when it refuses to start. No torch here: the worker's job params and
the CLI's defaults are read from these fields."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from core.method.detector import DEFAULT_TOLERANCE

class PracticeRefused(RuntimeError):
    """The reward model failed its check; the message gives the figures and what would help."""


# Settings a resumed run may change: the budget, how it is evaluated and stopped, the fleet
# (a lab's robots come and go) and speed settings. Every other PracticeConfig field (and the
# two checkpoints' contents) defines what the run learns, so a resume with one of them changed
# is refused (run_practice) rather than continuing one run under another's settings.
PRACTICE_MAY_CHANGE = frozenset({
    "out", "policy_checkpoint", "reward_checkpoint",  # paths: compared by content (..._sha256)
    "max_episodes", "eval_every", "eval_episodes", "plateau_evals", "stop_after_drops", "min_precision",
    "min_recall", "fleet_size", "fleet_kind", "ray_address", "rollout_groups", "rollout_threads", "compile", "device",
    "refine_min_labels"})


@dataclass(frozen=True)
class PracticeConfig:
    policy_checkpoint: str
    """Where the policy starts (a Stage-1 'best_policy.pt', or a practice checkpoint)."""
    reward_checkpoint: str
    """The frozen reward model / success detector (a Stage-1 'best_stg.pt')."""
    out: str
    """Run directory: iter_XXXX.pt, best.pt, metrics.jsonl, state.json, detector_check.json,
    run.json (the settings it started with; a resume that changes one that defines the run
    is refused, see PRACTICE_MAY_CHANGE)."""
    backend: str | None = None
    """Defaults to the reward checkpoint's backend and env config."""
    env_config: dict[str, Any] | None = None
    fleet_size: int = 0
    """Robots (simulator processes); 0 = the machine's cores."""
    fleet_kind: str = "process"
    """Where the robots' simulators run: "process" (one process per robot on this machine),
    "local" (all in this process, for tests) or "ray" (Ray actors across a cluster's nodes,
    core/learning/ray_fleet.py, docs/cluster.md)."""
    ray_address: str | None = None
    """The Ray cluster for fleet_kind "ray": 'auto', 'HOST:PORT', or None to start Ray on this machine."""
    gamma: float = 0.9
    c: float = 0.05
    lr: float = 3e-5
    """Adam(W) learning rate. docs/method.md, "Learning rate": >= 1e-4 destroyed the policy within a few hundred episodes."""
    weight_decay: float = 0.0
    """AdamW weight decay (c matters only through its interaction with this)."""
    tuples_per_iteration: int = 1024
    minibatch: int = 64
    freeze_vision: bool = True
    """Keep the image pathway frozen (as the paper's vision encoder in Stage 2)."""
    trainable: str = "policy"
    """What the REINFORCE update trains: 'policy' (everything but the frozen vision) or
    'action_head' (the action head alone, a linear map of the trunk's features)."""
    baseline: str = "none"
    """'none' (docs/method.md, "Rewards and returns": the progress reward's shaping already holds -V(o_t)) or 'mean':
    subtract the iteration's mean R_t from every R_t before the update. A constant within
    the iteration, so the gradient stays unbiased; it removes the offset that steady
    progress puts on every return (about rate / (1 - gamma))."""
    bc_weight: float = 0.0
    """Demonstration anchor (not in the paper; the demo-augmented policy gradient of DAPG,
    Rajeswaran et al. 2018): every REINFORCE gradient step also adds ``bc_weight`` x the
    behavioural-cloning cross-entropy on a minibatch of the policy's own Stage-1 training
    demonstrations (held-out ones excluded), so the update moves the policy toward what
    practice rewards without unlearning the demonstrations. 0 = the paper's update."""
    update_dropout: bool = False
    """Dropout during the REINFORCE update. Off by default: the rollouts sample from the
    policy without dropout, so with it on the update's log pi(a|o) is not the behaviour
    policy's and the gradient is noisier."""
    threshold_s: float | None = None
    """Detector threshold; default: the reward checkpoint's calibration on held-out demos."""
    patience: int = 2
    """Consecutive frames with d <= s before the detector fires."""
    calibrate_on_rollouts: bool = True
    """Without an explicit threshold_s, pick s on half of the check rollouts (simulation:
    ground truth is known there) instead of on demonstration endings alone."""
    calibration_beta: float = 0.5
    """s maximises F-beta on those rollouts: 0.5 weighs precision twice as much as recall
    (a false positive rewards a failure; a miss only costs steps). With F1 and a starting
    policy that succeeds often, an always-firing detector can win (precision = the
    success rate, recall 1)."""
    ground_truth_reward: bool = False
    """Use the simulator's success for termination and a +1 terminal reward (an oracle
    ablation; never the default)."""
    check_episodes: int = 100
    """Held-out rollouts of the starting policy for the pre-practice detector check (0 = skip)."""
    refine_episodes: int = 0
    """Before the check, refine a copy of the reward model on this many labeled rollouts of
    the starting policy (``core.learning.refine``: the paper's fix for a detector fooled by failure
    states that demonstrations never show). Simulated robots only: the simulator's ground
    truth labels them, one label per episode, standing in for a reviewer. 0 = off (the
    paper's recipe: no labels). The refined model is ``reward_refined.pt`` in the run
    directory, and the check reports the detector before and after on the same rollouts."""
    refine_steps: int = 400
    """Gradient steps of that refinement."""
    refine_train_vision: bool = True
    """Let the refinement train the reward model's image pathway too (it is a separate copy:
    the policy's stays frozen). Frozen, the head could not tell a pressed button from a
    near-miss on Meta-World (docs/experiments, issue 6 notes)."""
    refine_every: int = 0
    """Refine the reward model again every this many iterations, on the labeled practice
    episodes of those iterations (no extra rollouts): a refinement fitted on the starting
    policy's states is fooled again by a policy that moves away from them (the detector-gaming
    collapse on Meta-World, docs/experiments). Labels: the simulator's ground truth on simulated robots
    (one per episode, counted as labels used); on real robots, only the episodes a supervisor
    gave a verdict (Live page overrides). The refined model replaces ``reward_refined.pt``
    (resume uses the latest). Where s is calibrated (no threshold_s given), every third
    episode of the window is held out of the refinement and s is re-calibrated on those
    (F-beta as in the check, precision/recall reported on half of them), since each
    refinement moves d's scale. 0 = off."""
    refine_min_labels: int = 8
    """A periodic refinement with fewer labeled episodes than this is skipped (and logged)."""
    refine_recalibrate: bool = True
    """With ``refine_every`` and s calibrated (no threshold_s given): re-calibrate s at each
    periodic refinement on a third of its new episodes, held out. False: s stays where the
    pre-practice check put it and every labeled episode trains (a refinement trains failures
    to read d above s, so a fixed s stays meaningful; ~18 held-out episodes could not pin s
    on Meta-World and moved it 0.75-1.25 between refinements, docs/experiments)."""
    refine_memory: int = 0
    """With ``refine_every``: also train each periodic refinement on up to this many earlier
    labeled episodes (the most recent; at a fresh start the pre-practice refinement's
    rollouts of the starting policy come first), so a refinement does not forget the states
    the previous ones fixed. 0 = only the episodes since the last refinement. Held-out
    episodes for re-calibrating s come from the new episodes only. Not kept across a resume
    (the labeled frames live in memory): a resumed run's next refinement starts without it."""
    detector_tolerance: int = DEFAULT_TOLERANCE
    """Steps: a detector firing this close before ground truth counts as right when the
    check (and a periodic refinement) scores and calibrates it. A detector that ends the
    episode a step before the goal ends it unsolved, so 0 is the strict setting (Meta-World's
    button press: fires just before the press paid the policy for stopping short)."""
    min_precision: float = 0.5
    min_recall: float = 0.5
    eval_every: int = 5
    eval_episodes: int = 200
    max_episodes: int = 3000
    """Budget of practice episodes."""
    plateau_evals: int = 4
    """Stop after this many evaluations without a new best."""
    stop_after_drops: int = 2
    """Stop when this many evaluations in a row are below the start's beyond noise (the
    paired interval of the gain since the start lies below 0): the policy is getting worse
    while its reward says otherwise, i.e. it is gaming the detector. 0 = never."""
    seed: int = 0
    device: str = "auto"
    finish_running_episodes: bool = False
    """When an iteration's buffer is full, drop the episodes under way (default): the iteration
    ends as its buffer fills, each update is made from ~``tuples_per_iteration`` tuples' worth
    of episodes. True lets them run to their end (Dojo's behaviour before 2026-12-04): their
    tuples join the buffer, from which ``tuples_per_iteration`` are drawn, so with 16 robots
    an iteration collected ~2x the episodes it used while the fleet waited for the longest.
    Measured on the tabletop quick plan, two training seeds: +17.5 points over BC dropping
    them, +7.75 finishing them (docs/experiments). The paper does not say."""
    plan_starts: bool = False
    """Start a new episode only while the buffer's tuples plus what the episodes under way
    are expected to add (each: the last iteration's mean episode length less its steps so
    far, at least 1) fall short of ``tuples_per_iteration``; the other robots wait. With
    ``finish_running_episodes`` this collects about one iteration's tuples with no episode
    chosen by its length (dropping leans towards short ones); with dropping, fewer are
    dropped. The decision uses other episodes' progress only, never the outcome of the one
    it starts."""
    rollout_groups: int = 0
    """Robot groups in the rollout loop: while one group's simulators step, the next group's
    observations go through the models (``core.learning.rollout``). 1 = lock-step; 0 = automatic
    (2 for a process fleet of >= 4 robots; ``DOJO_ROLLOUT_GROUPS`` overrides). A speed
    setting: every value gives the lock-step episodes (``core.learning.rollout``)."""
    rollout_threads: int | None = None
    """The learner's torch threads while the fleet rolls out (practice, selection evaluations,
    the detector check and labeled rollouts); updates keep torch's own. None: unchanged. On 2
    cores with a simulator that costs more than its inference (Meta-World, ~3 ms a rendered
    step), 1 leaves the robots a core: 196 practice steps/s against 158 with 2 (fleet 4,
    2026-12-05). A speed setting: the episodes are the same."""
    compile: bool = True
    """``torch.compile`` the policy's and the reward model's rollout forward passes (padded
    to the fleet size): ~1.5x faster inference at batch 8 on 2 CPU cores, after a one-off
    compile of ~30 s (a few seconds once inductor's cache is warm). Falls back to eager if
    compiling fails; ``DOJO_NO_COMPILE=1`` turns it off everywhere."""

    def resolved_fleet_size(self) -> int:
        return self.fleet_size or os.cpu_count() or 1

    def groups(self, fleet: Any) -> int:
        """The rollout's robot groups on ``fleet`` (``rollout_groups`` resolved)."""
        from core.learning.rollout import rollout_groups

        return rollout_groups(fleet, self.rollout_groups or None)

    def batch(self, fleet: Any) -> int:
        """The largest batch one rollout model call sees on ``fleet`` (what to compile for)."""
        from core.learning.rollout import rollout_batch

        return rollout_batch(fleet, self.rollout_groups or None)


def practice_settings(cfg: PracticeConfig) -> dict[str, Any]:
    """The run's settings as stored in its run.json: every field, and the starting and reward
    checkpoints' content hashes (a checkpoint gone since the run started is not compared)."""
    from core.learning.checkpoint import file_sha256

    rec = dataclasses.asdict(cfg)
    for key in ("policy_checkpoint", "reward_checkpoint"):
        sha = file_sha256(rec[key])
        if sha is not None:
            rec[f"{key}_sha256"] = sha
    return rec
