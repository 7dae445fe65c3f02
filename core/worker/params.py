"""Every job kind's params as the worker accepts them (``python -m core.worker --params``).
The demos, eval and refine tables are ``core.method.jobs``'s; sft's and practice's are derived
from ``SFTConfig`` and ``PracticeConfig``, so their defaults are the configurations' own."""
from __future__ import annotations

import functools
from typing import Any

from core.method.jobs import (DEMOS_PARAMS, EVAL_PARAMS, JOB_KINDS, PROMOTE_PARAMS, REFINE_PARAMS, JobParamsError,
                              ParamSpec, spec_from_config)
from core.method.jobs import check_params as _check


@functools.cache
def _sft_params() -> ParamSpec:
    from core.learning.sft import SFTConfig

    return spec_from_config(SFTConfig, skip=("data", "out", "policy"), extra={
        "data": {"type": "str", "default": None, "help": "dataset directory (or demos_job)"},
        "demos_job": {"type": "int", "default": None, "help": "use the dataset a finished demos job made"},
        "out": {"type": "str", "default": None, "help": "run directory; default <data>/runs/sft-job<J>"},
        "policy": {"type": "dict", "default": None,
                   "help": "core.learning.policy.PolicyConfig fields, e.g. {\"d_model\": 64}"},
        **PROMOTE_PARAMS})


@functools.cache
def _practice_params() -> ParamSpec:
    from core.learning.practice.config import PracticeConfig

    return spec_from_config(PracticeConfig, skip=("out", "policy_checkpoint", "reward_checkpoint", "fleet_kind", "ray_address",
                                                  "fleet_size"), extra={
        "policy_checkpoint": {"type": "str", "default": None,
                              "help": "starting policy file; default: checkpoint_id's, else the task's promoted"},
        "checkpoint_id": {"type": "int", "default": None, "help": "starting policy as a checkpoints row"},
        "reward_checkpoint": {"type": "str", "default": None,
                              "help": "frozen Stage-1 reward model; default: the start checkpoint's recorded "
                                      "reward_checkpoint, else best_stg.pt beside it"},
        "out": {"type": "str", "default": None, "help": "run directory; default <data>/runs/practice-job<J>"},
        "fleet": {"type": "dict", "default": None,
                  "help": '{"kind": "process"|"local"|"remote", "size": N, "wait_s": 120, "min_robots": N}; '
                          "default: one simulator process per core"},
        "frame_every": {"type": "int", "default": 1, "help": "store every k-th frame (0 = none)"},
        "jpeg_quality": {"type": "int", "default": 80},
        **PROMOTE_PARAMS})


_TABLES = {"demos": lambda: DEMOS_PARAMS, "sft": _sft_params, "practice": _practice_params,
           "eval": lambda: EVAL_PARAMS, "refine": lambda: REFINE_PARAMS}


def job_params_spec(kind: str) -> ParamSpec:
    if kind not in _TABLES:
        raise JobParamsError(f"unknown job kind {kind!r}; kinds: {JOB_KINDS}")
    return _TABLES[kind]()


def check_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Params with defaults filled in; JobParamsError on unknown keys, missing or mistyped values."""
    return _check(kind, params, job_params_spec(kind))
