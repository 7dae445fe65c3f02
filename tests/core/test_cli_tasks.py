"""``python -m core.cli tasks``: the catalog lists every kind; ``tasks add`` builds and checks
the backend before it saves (tabletop, Meta-World, Gymnasium, remote), refuses a bad
configuration with the checker's message and saves nothing, and audits the user given with --by."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

from core import cli
from core.worker.robot_messages import robot_matches_task
from storage import init_db, repo
from tests.sim_backends.test_gym_adapter import PointEnv

ROOT = Path(__file__).resolve().parents[2]
GYM_ID = "DojoCliTasksPoint-v0"
if GYM_ID not in gym.envs.registry:
    gym.register(GYM_ID, entry_point=PointEnv)


@pytest.fixture
def db_url(tmp_path):
    url = str(tmp_path / "tasks.sqlite")
    db = init_db(url)
    with db.write() as s:
        repo.create_user(s, "sup", "password123", "supervisor")
        repo.create_user(s, "rev", "password123", "reviewer")
    db.dispose()
    return url


def _run(capsys, *argv: str) -> tuple[int, object, str]:
    rc = cli.main(["tasks", *argv])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 and out.strip() else None), err


def _tasks(url: str) -> list:
    db = init_db(url)
    with db.read() as s:
        rows = [(t.name, t.backend, t.env_config) for t in repo.list_tasks(s)]
    db.dispose()
    return rows


@pytest.fixture(scope="module")
def catalog():
    from core.cli_tasks import catalog as build

    return build()


def test_catalog_lists_tabletop_metaworld_gymnasium_and_remote(catalog, capsys):
    keys = {e["key"] for e in catalog["entries"]}
    assert {"tabletop:block2block", "tabletop:block2location", "tabletop:blocks", "tabletop:banana",
            "tabletop:lone:red-moon", "remote"} <= keys
    mw = [e for e in catalog["entries"] if e["kind"] == "metaworld"]
    assert len(mw) >= 50 and "metaworld:drawer-close-v3" in keys
    gyms = {e["env_config"]["env_id"] for e in catalog["entries"] if e["kind"] == "gym"}
    assert {"CartPole-v1", "Pendulum-v1", "Reacher-v5"} <= gyms
    assert not any(g.startswith("Meta-World/") for g in gyms)  # suites, not tasks: the metaworld entries cover them
    assert catalog["counts"]["total"] == len(catalog["entries"])
    assert len(catalog["tabletop"]["blocks"]) == 8 and "banana" in catalog["tabletop"]["objects"]
    drawer = next(e for e in mw if e["key"] == "metaworld:drawer-close-v3")
    assert "drawer" in drawer["search"] and drawer["max_steps"] == 110
    # the plain-text listing: one line per entry, then the counts
    with pytest.raises(SystemExit) as done:
        cli.main(["tasks", "catalog"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "metaworld:drawer-close-v3" in out and out.strip().splitlines()[-1].startswith("# tabletop")


def test_add_tabletop_block2location(db_url, capsys):
    rc, out, err = _run(capsys, "add", "--db", db_url, "--name", "b2l", "--backend", "tabletop", "--family",
                        "block2location", "--image-size", "32", "--max-steps", "50", "--description", "a test",
                        "--env-config", '{"blocks": ["red moon", "blue cube"], "objects": ["banana"]}')
    assert rc == 0, err
    assert out["env_config"] == {"blocks": ["red moon", "blue cube"], "objects": ["banana"], "image_size": 32,
                                 "max_steps": 50, "family": "block2location"}
    assert out["check"]["ok"] and out["check"]["image_shape"] == [32, 32, 3] and out["check"]["max_steps"] == 50
    assert out["check"]["action_dim"] == 2 and out["check"]["instruction"]
    assert out["created_by"] == "system"
    assert _tasks(db_url) == [("b2l", "tabletop", out["env_config"])]
    rc, rows, _ = _run(capsys, "list", "--db", db_url, "--json")
    assert rc == 0 and rows[0]["name"] == "b2l" and rows[0]["instruction_family"] == "block2location"


def test_add_metaworld_drawer_close_audited_as_the_user(db_url, capsys):
    rc, out, err = _run(capsys, "add", "--db", db_url, "--name", "drawer", "--backend", "metaworld", "--task",
                        "drawer-close-v3", "--image-size", "32", "--by", "sup")
    assert rc == 0, err
    assert out["env_config"] == {"task": "drawer-close-v3", "image_size": 32}
    assert out["check"]["action_dim"] == 4 and out["check"]["max_steps"] == 110 and out["created_by"] == "sup"
    db = init_db(db_url)
    with db.read() as s:
        entry = repo.audit_log(s, action="create_task", limit=1)[0]
        assert entry.username == "sup" and entry.target_id == str(out["id"])
    db.dispose()


def test_add_a_registered_gymnasium_env(db_url, capsys):
    rc, out, err = _run(capsys, "add", "--db", db_url, "--name", "point", "--backend", "gym", "--env-id", GYM_ID,
                        "--instruction", "move the dot to the goal", "--instruction", "reach the green dot",
                        "--image-size", "16", "--max-steps", "40")
    assert rc == 0, err
    assert out["env_config"]["env_id"] == GYM_ID and out["env_config"]["phrasings"] == ["reach the green dot"]
    assert out["check"]["image_shape"] == [16, 16, 3] and out["check"]["proprio_dim"] == 4
    assert out["instruction_family"] == GYM_ID


def test_add_a_remote_robot_task_and_which_robots_match_it(db_url, capsys):
    rc, out, err = _run(capsys, "add", "--db", db_url, "--name", "arm", "--backend", "remote", "--camera", "48x64",
                        "--proprio-dim", "3", "--action-dim", "2", "--action-low=-0.5,-1", "--action-high", "0.5",
                        "--max-steps", "60", "--instruction", "put the cup on the plate")
    assert rc == 0, err
    cfg = out["env_config"]
    assert cfg == {"camera": {"height": 48, "width": 64}, "proprio_dim": 3,
                   "action": {"dim": 2, "low": [-0.5, -1.0], "high": [0.5, 0.5]}, "max_steps": 60,
                   "instructions": ["put the cup on the plate"]}
    robot = {"camera": {"height": 48, "width": 64}, "proprio_dim": 3, "max_steps": 80, "tasks": [],
             "action": {"dim": 2, "low": [-0.5, -1.0], "high": [0.5, 0.5]}}
    assert robot_matches_task(cfg, robot, "arm")
    assert robot_matches_task(cfg, {**robot, "tasks": ["arm"]}, "arm")
    assert robot_matches_task(cfg, {**robot, "tasks": ["*"]}, "arm")
    assert not robot_matches_task(cfg, {**robot, "tasks": ["other"]}, "arm")
    assert not robot_matches_task(cfg, {**robot, "camera": {"height": 64, "width": 64}}, "arm")
    assert not robot_matches_task(cfg, {**robot, "proprio_dim": 2}, "arm")
    assert not robot_matches_task(cfg, {**robot, "action": {"dim": 2, "low": -1.0, "high": 1.0}}, "arm")
    assert not robot_matches_task(cfg, {**robot, "max_steps": 30}, "arm")


@pytest.mark.parametrize("argv, said", [
    (["--backend", "gym", "--env-id", "NoSuchEnv-v0", "--instruction", "do it"], "NoSuchEnv"),
    (["--backend", "gym", "--env-id", "CartPole-v1", "--instruction", "balance the pole"],
     "not a gymnasium.spaces.Box"),
    (["--backend", "gym", "--env-id", GYM_ID, "--instruction", "go", "--env-config", '{"succes_key": "x"}'],
     "succes_key"),
    (["--backend", "tabletop", "--env-config", '{"colour": "red"}'], "unexpected keyword argument 'colour'"),
    (["--backend", "tabletop", "--env-config", '{"blocks": ["purple cube", "red moon"]}'], "purple cube"),
    (["--backend", "tabletop", "--family", "block2block", "--env-config", '{"blocks": ["red moon"]}'],
     "needs at least 2 objects"),
    (["--backend", "metaworld", "--task", "drawer-shut-v3"], "unknown Meta-World task 'drawer-shut-v3'"),
    (["--backend", "metaworld", "--task", "drawer-close-v3", "--instruction", "close it"], "phrase their own"),
    (["--backend", "remote", "--camera", "64x64", "--proprio-dim", "2", "--action-dim", "2", "--action-low", "1",
      "--action-high", "-1"], "low must be below"),
    (["--backend", "remote", "--camera", "64x64", "--action-dim", "2"], "--proprio-dim"),
    (["--backend", "tabletop", "--by", "rev"], "may not edit_task"),
    (["--backend", "tabletop", "--by", "nobody"], "no such user"),
])
def test_a_bad_configuration_is_refused_and_nothing_is_saved(db_url, capsys, argv, said):
    size = [] if "remote" in argv else ["--image-size", "32"]
    rc, out, err = _run(capsys, "add", "--db", db_url, "--name", "bad", *size, *argv)
    assert rc == 2 and out is None
    assert err.startswith("error: ") and said in err, err
    assert _tasks(db_url) == []


def test_a_duplicate_name_is_refused(db_url, capsys):
    rc, _, err = _run(capsys, "add", "--db", db_url, "--name", "dup", "--backend", "remote", "--camera", "8x8",
                      "--proprio-dim", "0", "--action-dim", "1")
    assert rc == 0, err
    rc, _, err = _run(capsys, "add", "--db", db_url, "--name", "dup", "--backend", "remote", "--camera", "8x8",
                      "--proprio-dim", "0", "--action-dim", "1")
    assert rc == 2 and "already exists" in err


def test_the_command_line_refuses_with_exit_code_2_and_the_message_on_stderr(db_url):
    env = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    proc = subprocess.run([sys.executable, "-m", "core.cli", "tasks", "add", "--db", db_url, "--name", "x",
                           "--backend", "metaworld", "--task", "nope-v3"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "error: unknown Meta-World task 'nope-v3'" in proc.stderr
    assert _tasks(db_url) == []


def test_remote_matching_refuses_a_malformed_spec():
    assert not robot_matches_task({"camera": {}}, {"camera": {"height": 1}})
