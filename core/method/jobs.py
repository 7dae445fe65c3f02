"""Job kinds and their parameters: what the web app enqueues and the worker accepts.

One table per kind, each parameter with its type, default and help. The demos, eval and
refine tables are written here; the sft and practice tables are derived by the worker from
the run configurations (``core.learning.sft.SFTConfig``, ``core.learning.practice.PracticeConfig``)
with ``spec_from_config``, so each default is stated once. Torch-free: the UI reads the
refine defaults from here (Training page) and storage checks kinds against ``JOB_KINDS``.
"""
from __future__ import annotations

import json

import dataclasses
from typing import Any, Iterable

JOB_KINDS = ("demos", "sft", "practice", "eval", "refine")

ParamSpec = dict[str, dict[str, Any]]


class JobParamsError(ValueError):
    """The job's params are wrong; the message names the field and the accepted ones."""


DEMOS_PARAMS: ParamSpec = {
    "n": {"type": "int", "required": True, "help": "successful expert episodes wanted"},
    "out": {"type": "str", "default": None, "help": "dataset directory; default <data>/demos/job<J>"},
    "backend": {"type": "str", "default": None, "help": "default: the job's task's backend, else tabletop"},
    "env_config": {"type": "dict", "default": None, "help": "default: the job's task's env_config"},
    "seed0": {"type": "int", "default": 0},
    "workers": {"type": "int", "default": 1, "help": "expert processes"},
}

REFINE_PARAMS: ParamSpec = {
    "session_id": {"type": "int", "default": None,
                   "help": "the practice session whose judged episodes (labels, overrides) to learn from; "
                           "default: the job's session, else the task's newest one with judged episodes"},
    "reward_checkpoint": {"type": "str", "default": None,
                          "help": "the reward model to re-train; default: the one that session ran with"},
    "out": {"type": "str", "default": None, "help": "run directory; default <data>/runs/refine-job<J>"},
    "steps": {"type": "int", "default": 300, "help": "gradient steps"},
    "lr": {"type": "float", "default": 1e-4}, "seed": {"type": "int", "default": 0},
    "min_labels": {"type": "int", "default": 10, "help": "usable judged episodes needed"},
    "fail_tail": {"type": "int", "default": 10,
                  "help": "train on the last K frames of a failed episode only (0: every frame)"},
    "anchor": {"type": "float", "default": 1.0,
               "help": "with fail_tail: keep d where it was on a failure's earlier frames (weight; 0 = off)"},
}

EVAL_PARAMS: ParamSpec = {
    "checkpoint_id": {"type": "int", "default": None, "help": "default: the task's promoted checkpoint"},
    "checkpoint": {"type": "str", "default": None, "help": "a checkpoint file instead of a row"},
    "reward_checkpoint": {"type": "str", "default": None},
    "episodes": {"type": "int", "default": 50}, "threshold": {"type": "float", "default": None},
    "patience": {"type": "int", "default": 1}, "n_envs": {"type": "int", "default": 8},
    "seed0": {"type": "int", "default": None}, "device": {"type": "str", "default": "auto"},
    "promote": {"type": "bool", "default": False}, "promote_tolerance": {"type": "float", "default": 0.0},
}

PROMOTE_PARAMS: ParamSpec = {
    "promote": {"type": "bool", "default": True,
                "help": "promote the result if evaluated and not worse than the promoted checkpoint"},
    "promote_tolerance": {"type": "float", "default": 0.0},
}

_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,)}


def type_name(t: Any, default: Any) -> str:
    """The params type of a dataclass field's annotation (a string under postponed evaluation)."""
    s = str(t)
    for name in ("dict", "bool", "float", "int", "str"):
        if name in s:
            return name
    return type(default).__name__ if default is not None else "any"


def spec_from_config(cls: Any, skip: Iterable[str] = (), extra: ParamSpec | None = None) -> ParamSpec:
    """A params table from a config dataclass: one param per field (its default, or None for a
    required field the worker fills in), minus ``skip``, plus ``extra``."""
    spec: ParamSpec = {}
    skip = set(skip)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        spec[f.name] = {"type": type_name(f.type, default), "default": default}
    spec.update(extra or {})
    return spec


def check_params(kind: str, params: dict[str, Any] | None, spec: ParamSpec) -> dict[str, Any]:
    """Params with defaults filled in; JobParamsError on unknown keys, missing or mistyped values."""
    params = dict(params or {})
    bad = sorted(set(params) - set(spec))
    if bad:
        raise JobParamsError(f"{kind} job: unknown params {bad}; accepted: {sorted(spec)}")
    out: dict[str, Any] = {}
    for name, s in spec.items():
        if name not in params or params[name] is None:
            if s.get("required"):
                raise JobParamsError(f"{kind} job: param {name!r} ({s['type']}) is required")
            out[name] = s.get("default")
            continue
        v = params[name]
        types = _TYPES.get(s["type"])
        if types and (not isinstance(v, types) or (s["type"] in ("int", "float") and isinstance(v, bool))):
            raise JobParamsError(f"{kind} job: param {name!r} must be {s['type']}, got {v!r}")
        out[name] = float(v) if s["type"] == "float" else v
    return out


def json_object(text: str | None, what: str, example: str = '{"task": "push-v3"}') -> dict[str, Any] | None:
    """``text`` parsed as a JSON object (None when empty), or ValueError naming ``what`` (a flag or
    a form field) with an example: the one reader of user-typed JSON configs and params."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} must be a JSON object, e.g. '{example}' ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
