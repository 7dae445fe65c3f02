"""The Tasks page's "New task" section: pick a catalog entry, fill in the kind's fields, and
create the task with ``python -m core.cli tasks add`` in a subprocess.

The UI may not import ``sim_backends`` (tests/test_architecture.py), and building and checking
a backend (MuJoCo, Meta-World, Gymnasium) is the CLI's business, so there is one
implementation (core/cli_tasks.py) and the page runs it: ``tasks catalog --json`` once per UI
process (cached), ``tasks add ... --by USER`` per creation. The subprocess inherits the app's
environment, so it writes to the same database (DATABASE_URL / DOJO_DB).

Who created the task: the page passes ``--by`` with the logged-in user's name, and the CLI's
``create_task(actor=user)`` checks the edit_task permission and writes the audit entry in the
same transaction as the task row. So a task is never saved without its audit entry (or the
other way round, as an audit written here after the subprocess could be), and the
permission is checked again by storage, not only by this page.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import streamlit as st

from storage import repo
from storage.models import User
from ui.text import md

ROOT = Path(__file__).resolve().parents[1]
ADD_TIMEOUT_S = 600
CATALOG_TIMEOUT_S = 120
CREATED_KEY = "new_task_created"  # name of the task just created: the page selects it
FLASH_KEY = "new_task_flash"
KIND_LABELS = {"tabletop": "tabletop", "metaworld": "Meta-World", "gym": "Gymnasium", "remote": "remote robot"}


class CliError(RuntimeError):
    """``core.cli tasks`` refused or failed; the message is its error text."""


def error_text(stderr: str, returncode: int) -> str:
    """The CLI's ``error: ...`` message (with the checker's indented lines), without the
    warnings and shutdown noise a simulator may print around it."""
    lines = (stderr or "").splitlines()
    start = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("error: ")), None)
    if start is None:
        tail = [ln for ln in lines if ln.strip()][-8:]
        return f"the command failed (exit code {returncode})" + (": " + "\n".join(tail) if tail else "")
    out = [lines[start][len("error: "):]]
    for ln in lines[start + 1:]:
        if ln.startswith(("Exception ignored", "Traceback")) or not ln.strip():
            break
        out.append(ln)
    return "\n".join(out)


def run_cli(args: list[str], timeout: float = ADD_TIMEOUT_S) -> Any:
    """``python -m core.cli tasks *args`` in the repository root with the app's environment;
    its JSON output, or CliError with its error message."""
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    try:
        proc = subprocess.run([sys.executable, "-m", "core.cli", "tasks", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CliError(f"the backend check took over {timeout:.0f} s and was stopped; nothing was saved") from None
    if proc.returncode != 0:
        raise CliError(error_text(proc.stderr, proc.returncode))
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise CliError(f"unexpected output from the command: {proc.stdout[-500:]!r}") from None


@st.cache_data(show_spinner=False, ttl=24 * 3600)
def load_catalog() -> dict[str, Any]:
    """The catalog (fetched once per UI process; installed packages do not change under it)."""
    return run_cli(["catalog", "--json"], timeout=CATALOG_TIMEOUT_S)


def search(entries: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """Entries whose search text holds every word of ``query`` (any order, any case)."""
    words = query.lower().split()
    return [e for e in entries if all(w in e["search"] for w in words)]


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip()]


def add_args(entry: dict[str, Any], f: dict[str, Any], by: Optional[str]) -> list[str]:
    """``tasks add`` arguments for catalog ``entry`` and the form's values ``f`` (name,
    description, phrasings, image_size, max_steps; tabletop: family, blocks, objects; gym:
    extra (JSON); remote: height, width, proprio_dim, action_dim, action_low, action_high)."""
    kind = entry["kind"]
    args = ["add", "--name", str(f["name"]).strip(), "--backend", entry["backend"]]
    if f.get("description"):
        args += ["--description", str(f["description"])]
    if f.get("max_steps"):
        args += ["--max-steps", str(int(f["max_steps"]))]
    if kind != "remote" and f.get("image_size"):
        args += ["--image-size", str(int(f["image_size"]))]
    if kind == "tabletop":
        cfg = {k: v for k, v in entry["env_config"].items() if k not in ("family", "blocks", "objects")}
        cfg.update(blocks=list(f["blocks"]), objects=list(f.get("objects") or []))
        args += ["--family", f["family"], "--env-config", json.dumps(cfg)]
    elif kind == "metaworld":
        args += ["--task", entry["env_config"]["task"]]
    elif kind == "gym":
        extra = (f.get("extra") or "").strip()
        cfg = json.loads(extra) if extra else {}
        if not isinstance(cfg, dict):
            raise ValueError("extra config must be a JSON object, e.g. {\"success_key\": \"is_success\"}")
        args += ["--env-id", entry["env_config"]["env_id"]]
        if cfg:
            args += ["--env-config", json.dumps(cfg)]
    else:
        args += ["--camera", f"{int(f['height'])}x{int(f['width'])}", "--proprio-dim", str(int(f["proprio_dim"])),
                 "--action-dim", str(int(f["action_dim"])),
                 f"--action-low={str(f['action_low']).strip()}", f"--action-high={str(f['action_high']).strip()}"]
    if kind in ("gym", "remote"):
        for text in _lines(f.get("phrasings", "")):
            args += ["--instruction", text]
    if by:
        args += ["--by", by]
    return args


def _kind_fields(entry: dict[str, Any], cat: dict[str, Any]) -> dict[str, Any]:
    """The kind-specific widgets (inside the form)."""
    kind, cfg, f = entry["kind"], entry["env_config"], {}
    if kind == "tabletop":
        opts = cat["tabletop"]
        c1, c2 = st.columns(2)
        f["family"] = c1.selectbox("Family", opts["families"], index=opts["families"].index(cfg.get("family", "block2block")),
                                   help="block2block: push one object to another; block2location: to a region")
        f["objects"] = c2.multiselect("New objects", opts["objects"], default=cfg.get("objects", []),
                                      help="objects that are not LanguageTable blocks")
        f["blocks"] = st.multiselect("Blocks on the table", opts["blocks"], default=cfg.get("blocks", opts["default_blocks"]),
                                     help="any of the 8 LanguageTable blocks (block2block needs two objects at least)")
    elif kind == "metaworld":
        st.caption(f"Meta-World task {md(cfg['task'])}; {md(entry['about'])}")
    elif kind == "gym":
        st.caption(md(cat.get("gym_note", "")))
        f["extra"] = st.text_input("Extra config (JSON, optional)", value="",
                                   placeholder='{"success_key": "is_success", "proprio": "0:4"}',
                                   help="any GymTaskConfig field (sim_backends/gym_spec.py), e.g. make_kwargs, "
                                        "success_key, proprio, camera")
    else:
        cam, act = cfg.get("camera", {}), cfg.get("action", {})
        c1, c2, c3 = st.columns(3)
        f["height"] = c1.number_input("Camera height", 1, 4096, int(cam.get("height", 64)))
        f["width"] = c2.number_input("Camera width", 1, 4096, int(cam.get("width", 64)))
        f["proprio_dim"] = c3.number_input("Proprio dim", 0, 1024, int(cfg.get("proprio_dim", 2)))
        c1, c2, c3 = st.columns(3)
        f["action_dim"] = c1.number_input("Action dim", 1, 64, int(act.get("dim", 2)))
        f["action_low"] = c2.text_input("Action low", value=str(act.get("low", -1.0)),
                                        help="a number, or one per dimension separated by commas")
        f["action_high"] = c3.text_input("Action high", value=str(act.get("high", 1.0)))
    return f


def section(user: User) -> None:
    """The "New task" section (supervisors and admins; nothing for other roles)."""
    if FLASH_KEY in st.session_state:
        created = st.session_state.pop(FLASH_KEY)
        st.success(f"Task {md(created['name'])} created ({md(created['backend'])}): the backend was built and "
                   "checked before it was saved.")
        st.json(created.get("check") or {}, expanded=False)
    if not repo.can(user, "edit_task"):
        return
    if not st.toggle("New task", help="make a task from the catalog: tabletop, Meta-World, Gymnasium or a "
                     "remote robot; its backend is built and checked before it is saved"):
        return
    try:
        with st.spinner("Loading the catalog..."):
            cat = load_catalog()
    except CliError as e:
        st.error(md(f"cannot load the task catalog: {e}", multiline=True))
        return
    counts = cat["counts"]
    query = st.text_input("Search the catalog", placeholder="drawer, banana, block2location, CartPole, remote ...",
                          help=f"{counts['tabletop']} tabletop, {counts['metaworld']} Meta-World, {counts['gym']} "
                               "Gymnasium entries and a remote robot; every word must match")
    found = search(cat["entries"], query)
    if not found:
        st.caption("Nothing in the catalog matches.")
        return
    # Options are shown as plain text in a selectbox (no markdown), so the titles go as they are.
    i = st.selectbox(f"Start from ({len(found)} found)", range(len(found)),
                     format_func=lambda j: f"[{KIND_LABELS[found[j]['kind']]}] {found[j]['title']}")
    entry = found[i]
    kind = entry["kind"]
    with st.form(f"new_task_{entry['key']}"):
        fields = _kind_fields(entry, cat)
        c1, c2 = st.columns(2)
        fields["name"] = c1.text_input("Name", max_chars=200, placeholder="drawer closing")
        if kind != "remote":
            default_size = int(entry["env_config"].get("image_size", 64))
            fields["image_size"] = c2.number_input("Image size (pixels, square)", 16, 512, default_size)
        fields["max_steps"] = c2.number_input("Step limit per episode", 1, 1_000_000,
                                              int(entry.get("max_steps") or (80 if kind == "tabletop" else 100)))
        if kind in ("gym", "remote"):
            fields["phrasings"] = st.text_area(
                "Instruction phrasings (one per line; the first is the canonical one)",
                help="gym: required, the policy is conditioned on it; remote: what the robot is asked, for people "
                     "(the robot sends its own instruction)")
        fields["description"] = st.text_area("Description (optional)")
        create = st.form_submit_button("Create", type="primary")
    if create:
        _create(user, entry, fields)


def _create(user: User, entry: dict[str, Any], fields: dict[str, Any]) -> None:
    if not str(fields.get("name") or "").strip():
        st.error("Give the task a name.")
        return
    try:
        args = add_args(entry, fields, user.username)
    except (ValueError, json.JSONDecodeError) as e:
        st.error(md(e))
        return
    try:
        with st.spinner("Building the backend and checking it (a few seconds; nothing is saved if it fails)..."):
            created = run_cli(args)
    except CliError as e:
        st.error(md(f"Not created: {e}", multiline=True))  # the checker's message quotes user input
        return
    st.session_state[CREATED_KEY] = created["name"]
    st.session_state[FLASH_KEY] = created
    st.rerun()


def take_created() -> Optional[str]:
    """The name of the task created on the previous run (once), for the page to select it."""
    return st.session_state.pop(CREATED_KEY, None)
