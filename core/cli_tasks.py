"""``python -m core.cli tasks``: the task catalog, and creating a task only after its backend
has been built and checked. One implementation for the command line and the web app (the
Tasks page may not import ``sim_backends``, so it runs these commands in a subprocess and
reads their JSON; errors go to stderr with exit code 2).

  tasks catalog [--json]   what can become a task: tabletop families and block sets, the
                           Meta-World tasks of the installed ``metaworld``, the Gymnasium ids
                           registered by installed packages, and a remote robot
  tasks add --name N --backend B ...
                           build the backend, run ``check_backend`` on it (a remote task: validate
                           its robot spec with the worker's own register parser), and only then
                           save the task; a refused configuration saves nothing
  tasks list [--json]      the tasks in the database

Remote tasks keep the robot spec in ``env_config``::

    {"camera": {"height": 64, "width": 64}, "proprio_dim": 2,
     "action": {"dim": 2, "low": [-1.0, -1.0], "high": [1.0, 1.0]}, "max_steps": 80}

the shape of a robot's register message (docs/remote_protocol.md). A robot matches the task
(``core.worker.robot_messages.robot_matches_task``) when its registered camera height and width, action dim, action
bounds (within 1e-6) and proprio dim are the task's, its ``max_steps`` (if it sends one) is not
below the task's, and its ``tasks`` list is empty, holds ``"*"`` or names the task.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from core.method.jobs import json_object


KINDS = ("tabletop", "metaworld", "gym", "remote")
REMOTE_DEFAULT = {"camera": {"height": 64, "width": 64}, "proprio_dim": 2,
                  "action": {"dim": 2, "low": -1.0, "high": 1.0}}
# The namespace Meta-World registers in Gymnasium: its ids are benchmark suites, not single
# tasks; each task is in the catalog as a metaworld entry instead.
SKIP_GYM_NAMESPACES = ("Meta-World",)
GYM_NOTE = ("a Gymnasium env passes the check when it renders RGB frames (render_mode='rgb_array'), has a "
            "finite 1-D Box action space and reports ground-truth success in step()'s info (set success_key "
            "in --env-config when the key is not 'success')")


# --- the catalog ---------------------------------------------------------------------------

def _entry(key: str, kind: str, title: str, env_config: dict[str, Any], *, family: str | None = None,
           about: str = "", words: str = "", max_steps: int | None = None) -> dict[str, Any]:
    search = " ".join([key, kind, title, about, words, json.dumps(env_config)]).lower()
    return {"key": key, "kind": kind, "backend": kind, "title": title, "env_config": env_config,
            "instruction_family": family, "about": about, "max_steps": max_steps, "search": search}


def _tabletop_entries() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from sim_backends.tabletop.instructions import (BLOCK2BLOCK, BLOCK2LOCATION, CATALOG_BLOCKS, DEFAULT_BLOCKS,
                                                    EXTRA_OBJECTS, FAMILIES)

    words = "tabletop languagetable mujoco push pusher block blocks"
    out = [
        _entry("tabletop:block2block", "tabletop", "Tabletop Block2Block: push one block to another",
               {"family": BLOCK2BLOCK}, family=BLOCK2BLOCK, words=words,
               about=f"LanguageTable Block2Block with {', '.join(DEFAULT_BLOCKS)} (the bundled demo task's family)"),
        _entry("tabletop:block2location", "tabletop", "Tabletop Block2Location: push a block to a place",
               {"family": BLOCK2LOCATION}, family=BLOCK2LOCATION, words=words + " location region corner",
               about="LanguageTable Block2Location: push a block to a region of the table (top left, centre, ...)"),
        _entry("tabletop:blocks", "tabletop", "Tabletop with the blocks you choose (any of the 8)",
               {"family": BLOCK2BLOCK, "blocks": list(CATALOG_BLOCKS)}, family=BLOCK2BLOCK,
               words=words + " subset choose custom catalog " + " ".join(CATALOG_BLOCKS),
               about="any subset of LanguageTable's 8 blocks (2 at least for Block2Block), either family"),
        _entry("tabletop:banana", "tabletop", "Tabletop new object: a banana alone (Block2Location)",
               {"family": BLOCK2LOCATION, "blocks": [], "objects": list(EXTRA_OBJECTS)}, family=BLOCK2LOCATION,
               words=words + " banana new novel object unseen",
               about="the new-object experiment: an object no demonstration shows, alone on the table"),
    ]
    for b in CATALOG_BLOCKS:
        out.append(_entry(f"tabletop:lone:{b.replace(' ', '-')}", "tabletop", f"Tabletop lone object: the {b} alone",
                          {"family": BLOCK2LOCATION, "blocks": [b]}, family=BLOCK2LOCATION,
                          words=words + " lone alone single one object", about=f"the {b} alone on the table, "
                          "pushed to a region (Block2Location)"))
    options = {"families": list(FAMILIES), "blocks": list(CATALOG_BLOCKS), "objects": list(EXTRA_OBJECTS),
               "default_blocks": list(DEFAULT_BLOCKS)}
    return out, options


def _metaworld_entries() -> list[dict[str, Any]]:
    from sim_backends.metaworld_backend.tasks import INSTRUCTIONS, MAX_STEPS, MT10, TASK_NAMES

    try:  # the installed package's own list (a test pins it equal to TASK_NAMES)
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        names = list(ALL_V3_ENVIRONMENTS)
    except ImportError:
        names = list(TASK_NAMES)
    out = []
    for name in names:
        said = INSTRUCTIONS.get(name, ())
        out.append(_entry(f"metaworld:{name}", "metaworld", f"Meta-World {name}" + (f": {said[0]}" if said else ""),
                          {"task": name}, family=name, max_steps=MAX_STEPS.get(name),
                          words="meta-world metaworld sawyer arm " + ("mt10 " if name in MT10 else "") + " ".join(said),
                          about=("phrasings: " + "; ".join(said)) if said else "not in Dojo's instruction table"))
    return out


def _gym_entries() -> list[dict[str, Any]]:
    import gymnasium

    out = []
    for env_id, spec in sorted(gymnasium.envs.registry.items()):
        if spec.namespace in SKIP_GYM_NAMESPACES:
            continue
        ep = spec.entry_point if isinstance(spec.entry_point, str) else getattr(spec.entry_point, "__module__", "")
        out.append(_entry(f"gym:{env_id}", "gym", f"Gymnasium {env_id}", {"env_id": env_id},
                          words=f"gymnasium gym {ep}", about=f"entry point {ep}", max_steps=spec.max_episode_steps))
    return out


def catalog() -> dict[str, Any]:
    """Every entry the New task form can start from, with the options its kind takes."""
    tabletop, options = _tabletop_entries()
    metaworld = _metaworld_entries()
    gym = _gym_entries()
    remote = [_entry("remote", "remote", "Remote robot (your own robot or simulator over websocket)",
                     json.loads(json.dumps(REMOTE_DEFAULT)),
                     words="remote robot real hardware websocket camera proprio action",
                     about="a robot that registers on the worker's /robot endpoint with this camera, proprio "
                           "and action spec (docs/remote_protocol.md)")]
    entries = tabletop + metaworld + gym + remote
    return {"entries": entries,
            "counts": {"tabletop": len(tabletop), "metaworld": len(metaworld), "gym": len(gym), "remote": 1,
                       "total": len(entries)},
            "tabletop": options, "gym_note": GYM_NOTE}


# --- building and checking -----------------------------------------------------------------

def _numbers(text: str, flag: str) -> float | list[float]:
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag}={text!r}: expected a number or comma-separated numbers") from None
    if not vals:
        raise ValueError(f"{flag} is empty")
    return vals[0] if len(vals) == 1 else vals


def _phrasings(args) -> list[str]:
    out: list[str] = []
    for text in args.instruction or []:
        out += [line.strip() for line in str(text).splitlines() if line.strip()]
    return out


def task_config(args) -> tuple[str, dict[str, Any], str | None]:
    """(backend, env_config, instruction_family) from ``tasks add``'s options; ValueError when
    an option does not apply to the backend."""
    backend = args.backend
    if backend not in KINDS:
        raise ValueError(f"unknown backend {backend!r}; tasks can be made for {', '.join(KINDS)}")
    cfg = json_object(args.env_config, "--env-config") or {}
    said = _phrasings(args)
    for flag, value, kinds in (("--family", args.family, ("tabletop",)), ("--task", args.task, ("metaworld",)),
                               ("--env-id", args.env_id, ("gym",)),
                               ("--image-size", args.image_size, ("tabletop", "metaworld", "gym")),
                               ("--camera", args.camera, ("remote",)), ("--proprio-dim", args.proprio_dim, ("remote",)),
                               ("--action-dim", args.action_dim, ("remote",)),
                               ("--action-low", args.action_low, ("remote",)),
                               ("--action-high", args.action_high, ("remote",))):
        if value is not None and backend not in kinds:
            raise ValueError(f"{flag} is for {'/'.join(kinds)} tasks, not {backend}")
    if said and backend in ("tabletop", "metaworld"):
        raise ValueError(f"{backend} tasks phrase their own instructions (tabletop: from the family and the "
                         "objects; Meta-World: each task's built-in phrasings); --instruction is for gym and "
                         "remote tasks")
    if args.image_size is not None:
        cfg["image_size"] = args.image_size
    if args.max_steps is not None and backend != "remote":
        cfg["max_steps"] = args.max_steps
    family: str | None = None
    if backend == "tabletop":
        if args.family:
            cfg["family"] = args.family
        cfg.setdefault("family", "block2block")
        family = cfg["family"]
    elif backend == "metaworld":
        if args.task:
            cfg["task"] = args.task
        if not cfg.get("task"):
            raise ValueError("a metaworld task needs --task (e.g. drawer-close-v3; `tasks catalog` lists all 50)")
        family = cfg["task"]
    elif backend == "gym":
        if args.env_id:
            cfg["env_id"] = args.env_id
        if said:
            cfg["instruction"], cfg["phrasings"] = said[0], said[1:]
        if not cfg.get("instruction"):
            raise ValueError("a gym task needs its instruction (--instruction \"open the drawer\"; more "
                             "--instruction options add phrasings): the policy is conditioned on it")
        family = cfg.get("env_id") or cfg.get("name") or None
    else:
        cfg = _remote_config(args, cfg, said)
        family = said[0] if said else None
    return backend, cfg, family


def _remote_config(args, cfg: dict[str, Any], said: list[str]) -> dict[str, Any]:
    if args.camera is not None:
        h, sep, w = str(args.camera).lower().partition("x")
        try:
            cfg["camera"] = {"height": int(h), "width": int(w)}
        except ValueError:
            raise ValueError(f"--camera={args.camera!r}: expected HEIGHTxWIDTH, e.g. 64x64") from None
    if args.proprio_dim is not None:
        cfg["proprio_dim"] = args.proprio_dim
    action = dict(cfg.get("action") or {})
    if args.action_dim is not None:
        action["dim"] = args.action_dim
    if args.action_low is not None:
        action["low"] = _numbers(args.action_low, "--action-low")
    if args.action_high is not None:
        action["high"] = _numbers(args.action_high, "--action-high")
    if action:
        cfg["action"] = action
    if args.max_steps is not None:
        cfg["max_steps"] = args.max_steps
    if said:
        cfg["instructions"] = said
    missing = [flag for key, flag in (("camera", "--camera HxW"), ("proprio_dim", "--proprio-dim P"))
               if key not in cfg] + (["--action-dim A"] if "dim" not in action else [])
    if missing:
        raise ValueError(f"a remote task needs the robot spec: {', '.join(missing)}")
    return cfg


def check_remote(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a remote task's spec with the parser the worker applies to a robot's register
    message; (the normalised env_config, figures). ValueError names the bad field."""
    from core.worker.robot_messages import ProtocolError, parse_register

    unknown = sorted(set(cfg) - {"camera", "proprio_dim", "action", "max_steps", "instructions"})
    if unknown:
        raise ValueError(f"remote task env_config has unknown field(s) {unknown}; fields: camera, proprio_dim, "
                         "action, max_steps, instructions")
    if cfg.get("proprio_dim") is None:
        raise ValueError("remote task: proprio_dim is missing (the robot's proprioception length; 0 for none)")
    msg = {"type": "register", "name": "task-spec", **{k: v for k, v in cfg.items() if k != "instructions"}}
    try:
        spec = parse_register(msg)
    except ProtocolError as e:
        raise ValueError(f"remote robot spec refused: {str(e).replace('register.', 'spec.')}") from None
    said = cfg.get("instructions")
    if said is not None and (not isinstance(said, list) or not all(isinstance(t, str) and t.strip() for t in said)):
        raise ValueError("remote task: instructions must be a list of non-empty strings")
    out = {"camera": {"height": spec.height, "width": spec.width}, "proprio_dim": spec.proprio_dim,
           "action": {"dim": spec.action_dim, "low": spec.action_low.tolist(), "high": spec.action_high.tolist()}}
    if spec.max_steps is not None:
        out["max_steps"] = spec.max_steps
    if said:
        out["instructions"] = list(said)
    figures = {"ok": True, "checked": "robot spec (the worker's register parser)", "action_dim": spec.action_dim,
               "proprio_dim": spec.proprio_dim, "image_shape": [spec.height, spec.width, 3],
               "max_steps": spec.max_steps}
    return out, figures


def _figures(env, report, started: float) -> dict[str, Any]:
    obs, _ = env.reset(seed=0)
    return {"ok": True, "checks_passed": len(report.passed), "warnings": list(report.warnings),
            "action_dim": int(env.action_dim), "proprio_dim": int(env.proprio_dim),
            "image_shape": [int(x) for x in env.image_shape], "max_steps": int(env.max_steps),
            "instruction": str(obs.get("instruction", "")), "seconds": round(time.monotonic() - started, 2)}


def _refused(report) -> ValueError:
    return ValueError(f"the backend check refused this configuration:\n{report}")


def check_sim(backend: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Build the backend and run ``check_backend`` on it; the figures, or ValueError with the
    checker's (or the config's) message. The environment is closed either way."""
    from sim_backends.gym_adapter import GymTaskConfig, check_backend, make_raw_env
    from sim_backends.registry import make_env

    started = time.monotonic()
    if backend == "gym":
        try:
            config = GymTaskConfig(**cfg)
        except TypeError as e:
            raise ValueError(f"bad config for backend 'gym': {e}") from None
        if config.factory is not None and not isinstance(config.factory, str):
            raise ValueError("gym factory must be an import path 'package.module:function'")
        try:
            raw = make_raw_env(config)
        except Exception as e:  # noqa: BLE001 - any failure to build is the refusal
            raise ValueError(f"cannot build the gym environment: {type(e).__name__}: {e}") from None
        try:
            report = check_backend(raw, config, raise_error=False)
        finally:
            raw.close()
        if not report.ok:
            raise _refused(report)
    try:
        env = make_env(backend, cfg)
    except (ValueError, TypeError) as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot build the {backend} backend: {type(e).__name__}: {e}") from None
    try:
        if backend != "gym":
            report = check_backend(env, raise_error=False)
            if not report.ok:
                raise _refused(report)
        return _figures(env, report, started)
    finally:
        env.close()


def add_task(args) -> dict[str, Any]:
    from storage import init_db, repo

    name = (args.name or "").strip()
    if not name or len(name) > 200:
        raise ValueError("--name must be 1..200 characters")
    backend, cfg, family = task_config(args)
    try:
        json.dumps(cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"env_config must be JSON: {e}") from None
    db = init_db(args.db)
    with db.read() as s:
        if any(t.name == name for t in repo.list_tasks(s)):
            raise ValueError(f"a task named {name!r} already exists")
    if backend == "remote":
        started = time.monotonic()
        cfg, check = check_remote(cfg)
        check["seconds"] = round(time.monotonic() - started, 3)
    else:
        check = check_sim(backend, cfg)
    with db.write() as s:
        actor = None
        if args.by:
            actor = repo.get_user(s, args.by)
            if actor is None:
                raise ValueError(f"--by {args.by!r}: no such user")
        if any(t.name == name for t in repo.list_tasks(s)):
            raise ValueError(f"a task named {name!r} already exists")
        try:
            task = repo.create_task(s, name, backend, cfg, instruction_family=family, fleet_size=args.fleet_size,
                                    description=(args.description or None), actor=actor)
        except PermissionError as e:
            raise ValueError(str(e)) from None
        out = {"id": task.id, "name": task.name, "backend": task.backend, "env_config": task.env_config,
               "instruction_family": task.instruction_family, "description": task.description,
               "created_by": actor.username if actor is not None else "system", "check": check}
    db.dispose()
    return out


def list_rows(db_url: str | None) -> list[dict[str, Any]]:
    from storage import init_db, repo

    db = init_db(db_url)
    with db.read() as s:
        rows = [{"id": t.id, "name": t.name, "backend": t.backend, "env_config": t.env_config,
                 "instruction_family": t.instruction_family, "fleet_size": t.fleet_size,
                 "description": t.description, "created_at": t.created_at.isoformat() if t.created_at else None}
                for t in repo.list_tasks(s)]
    db.dispose()
    return rows


# --- the command ---------------------------------------------------------------------------

def options(p: argparse.ArgumentParser, show_all: bool) -> None:
    sub = p.add_subparsers(dest="tasks_command", required=True, metavar="{catalog,add,list}")
    c = sub.add_parser("catalog", help="what can become a task (tabletop, Meta-World, Gymnasium ids, remote)")
    c.add_argument("--json", action="store_true", help="the whole catalog as JSON (default: one line per entry)")
    a = sub.add_parser("add", help="build and check a backend, then save the task (nothing is saved if refused)")
    a.add_argument("--name", required=True, help="the task's name (unique)")
    a.add_argument("--backend", required=True, choices=KINDS, help="tabletop, metaworld, gym or remote")
    a.add_argument("--family", default=None, help="tabletop: block2block or block2location")
    a.add_argument("--task", default=None, help="metaworld: the task, e.g. drawer-close-v3")
    a.add_argument("--env-id", default=None, help="gym: a Gymnasium id (tasks catalog lists them)")
    a.add_argument("--env-config", default=None,
                   help="JSON object of backend config fields, e.g. '{\"blocks\": [\"red moon\", \"blue cube\"]}' "
                        "(tabletop), '{\"success_key\": \"is_success\"}' (gym)")
    a.add_argument("--image-size", type=int, default=None, help="side of the square camera image (sim backends)")
    a.add_argument("--max-steps", type=int, default=None, help="episode step limit")
    a.add_argument("--instruction", action="append", default=None,
                   help="gym/remote: the instruction; repeat (or give lines) for more phrasings")
    a.add_argument("--description", default=None, help="free text shown on the Tasks page")
    a.add_argument("--fleet-size", type=int, default=1, help="default robots for practice sessions")
    a.add_argument("--camera", default=None, help="remote: camera HEIGHTxWIDTH, e.g. 64x64")
    a.add_argument("--proprio-dim", type=int, default=None, help="remote: proprioception length (0: none)")
    a.add_argument("--action-dim", type=int, default=None, help="remote: action vector length")
    a.add_argument("--action-low", default=None, help="remote: lower action bound(s), a number or a comma list (negative: --action-low=-1,-0.5)")
    a.add_argument("--action-high", default=None, help="remote: upper action bound(s), a number or a comma list")
    a.add_argument("--by", default=None, help="the user creating it (checked for the edit_task permission and "
                   "audited as them; default: the system)")
    a.add_argument("--db", default=None, help="database URL or SQLite path (default: DATABASE_URL, DOJO_DB, "
                   "data/dojo.sqlite)")
    ls = sub.add_parser("list", help="the tasks in the database")
    ls.add_argument("--json", action="store_true", help="JSON rows (default: one line per task)")
    ls.add_argument("--db", default=None, help="database URL or SQLite path")


def _text_out(lines: list[str]) -> None:
    """Plain-text output: printed here, then exit 0 (``core.cli.main`` prints JSON otherwise)."""
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    raise SystemExit(0)


def cmd_tasks(args) -> Any:
    if args.tasks_command == "catalog":
        cat = catalog()
        if args.json:
            return cat
        _text_out([f"{e['key']:<34} {e['title']}" for e in cat["entries"]]
                  + [f"# {', '.join(f'{k} {v}' for k, v in cat['counts'].items())}"])
    if args.tasks_command == "list":
        rows = list_rows(args.db)
        if args.json:
            return rows
        _text_out([f"{r['id']:>4}  {r['name']:<32} {r['backend']:<10} {json.dumps(r['env_config'])}" for r in rows]
                  or ["no tasks"])
    return add_task(args)


COMMAND = ("tasks: the catalog, and creating a checked task (catalog | add | list)", options, cmd_tasks)
