"""End to end, the path for real hardware (docs/remote_protocol.md, "A real robot as a task"),
with the reference client as the stand-in robot, through the functions the pages call:

1. ``python -m core.cli tasks add --backend remote`` (camera 32x32, proprio 2, action 2);
2. demonstrations recorded elsewhere, as a LeRobot v3.0 dataset with its actions in the robot's
   own units (here: the tabletop expert's, times 0.05, as a controller in m/s would log them),
   imported into the task the way the Data page does (``ui.dataio.import_archive``);
3. Stage 1 from Prepare this task (``ui.prepare.enqueue_sft``) run by the worker: the checkpoint
   keeps the dataset's action bounds;
4. a robot token (``storage.credentials``), then ``python -m sim_backends.remote.client`` started
   as a process, wrapping a tabletop simulator whose actions are scaled the same way (so it takes
   the robot's units, like the real one);
5. a practice session from Tasks & fleet (``ui.actions.start_practice``: fleet ``remote``), the
   worker practising on the robot through its ``/robot`` endpoint until the episode budget.

Checks: the practice job finishes; its episodes come from the remote robot, for the task; every
action the robot was sent lies in the dataset's bounds (the stand-in logs them) and its spread
uses them, which only holds if the policy's [-1, 1] actions were mapped back. Behind ``slow``
(about 2.5 minutes on 2 cores).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = 0.05  # the robot's action unit: its actions are the tabletop's [-1, 1] times this
STAND_IN = f'''
import json, sys
import numpy as np
from sim_backends.remote import client as c
from sim_backends.registry import make_env

class RobotUnits:
    """The tabletop simulator behind an interface in the robot's units, logging what it is sent."""
    def __init__(self, env, log):
        self.env, self.log = env, open(log, "a")
        for k in ("image_shape", "action_dim", "proprio_dim", "max_steps"):
            setattr(self, k, getattr(env, k))
    def reset(self, seed):
        return self.env.reset(seed=seed)
    def step(self, a):
        self.log.write(json.dumps([float(x) for x in a]) + "\\n"); self.log.flush()
        return self.env.step(np.clip(np.asarray(a) / {UNIT}, -1, 1))

env = RobotUnits(make_env("tabletop", {{"family": "block2block", "image_size": 32}}), sys.argv[1])
robot = c.RemoteRobotClient(sys.argv[2], open(sys.argv[3]).read().strip(), "arm-1", env, tasks=["arm-push"],
                            action_low={-UNIT}, action_high={UNIT})
robot.connect()
robot.serve()
'''


@pytest.mark.slow
def test_a_remote_robot_task_from_import_to_practice(tmp_path):
    from sqlalchemy import select

    from core.cli import main
    from core.datasets import lerobot_export as lrx
    from core.learning.checkpoint import read_checkpoint
    from core.learning.dataset import load_episodes
    from core.worker.access import RobotAccess
    from core.worker.remote import RemoteHub
    from core.worker.runner import Worker
    from core.worker.telemetry import WebsocketServer
    from storage import init_db, repo
    from storage.credentials import create_robot_token
    from storage.models import Episode, Robot
    from ui import actions, dataio, prepare

    url = f"sqlite:///{tmp_path / 'dojo.sqlite'}"
    db = init_db(url)
    with db.write() as s:
        repo.create_user(s, "sup", "sup-password", "supervisor")
    # 1. the task
    assert main(["tasks", "add", "--db", url, "--name", "arm-push", "--backend", "remote", "--camera", "32x32",
                 "--proprio-dim", "2", "--action-dim", "2", f"--action-low={-UNIT}", f"--action-high={UNIT}",
                 "--max-steps", "30", "--instruction", "push the red moon to the blue cube"]) == 0
    with db.read() as s:
        task = next(t for t in repo.list_tasks(s) if t.name == "arm-push")
        tid = task.id
    # 2. demonstrations recorded in the robot's units, as a LeRobot dataset, imported for the task
    assert main(["demos", "--out", str(tmp_path / "sim"), "--n", "10", "--image-size", "32", "--workers", "1",
                 "--quiet"]) == 0
    meta, eps = load_episodes(tmp_path / "sim")
    for e in eps:
        e.actions = e.actions * UNIT
    lrx.export_lerobot_v3((lrx.from_dojo_episode(e) for e in eps), tmp_path / "lr", fps=10)
    archive = shutil.make_archive(str(tmp_path / "arm"), "zip", tmp_path, "lr")
    with db.write() as s:
        sup = repo.get_user(s, "sup")
    res = dataio.import_archive(db, Path(archive), "arm.zip", tid, actor=sup, datasets_dir=tmp_path / "datasets")
    assert res.episodes == 10
    # 3. Stage 1 from Prepare this task
    with db.write() as s:
        job = prepare.enqueue_sft(s, tid, data=str(res.path), epochs=2, max_minutes=5, actor=repo.get_user(s, "sup"),
                                  policy={"d_model": 32, "n_layers": 1})
        job.params = {**job.params, "threads": 1, "device": "cpu", "batch_size": 32}
    assert Worker(db, name="w", data_dir=tmp_path).run(exit_when_idle=True) == 1
    with db.read() as s:
        ck = repo.list_checkpoints(s, task_id=tid)[0]
        sft_job = repo.list_jobs(s, kind="sft")[0]
        assert sft_job.status == "done", sft_job.error
    config = read_checkpoint(ck.path)["config"]
    assert max(config["action_high"]) <= UNIT + 1e-9 and min(config["action_low"]) >= -UNIT - 1e-9
    # 4. the robot: a token, and the reference client as a process
    with db.write() as s:
        _row, token = create_robot_token(s, "arm-1 stand-in", robot_name="arm-1", actor=repo.get_user(s, "sup"))
    (tmp_path / "arm-1.token").write_text(token)
    hub = RemoteHub(RobotAccess(db))
    srv = WebsocketServer({"/robot": hub.handler}, port=0)
    hub.attach(srv)
    srv.start()
    sent = tmp_path / "sent.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    robot = subprocess.Popen([sys.executable, "-c", STAND_IN, str(sent), srv.url("/robot"),
                              str(tmp_path / "arm-1.token")], cwd=ROOT, env=env)
    # 5. practice from Tasks & fleet
    with db.write() as s:
        ps = actions.start_practice(s, tid, fleet_size=1, actor=repo.get_user(s, "sup"), extra={
            "fleet": {"wait_s": 60}, "tuples_per_iteration": 32, "minibatch": 16, "eval_every": 0,
            "max_episodes": 4, "check_episodes": 0})
        sid = ps.id
    worker = Worker(db, name="w-robots", data_dir=tmp_path, server=srv, hub=hub, poll_s=0.1)
    timer = threading.Timer(400, worker.stop)
    timer.start()
    try:
        assert worker.run(exit_when_idle=True) == 1
    finally:
        timer.cancel()
        robot.terminate()
        robot.wait(10)
        srv.stop()
    with db.read() as s:
        pj = repo.list_jobs(s, kind="practice")[0]
        eps_ = s.scalars(select(Episode).where(Episode.session_id == sid)).all()
        robots = {r.id: r for r in s.scalars(select(Robot)).all()}
    assert pj.status == "done", pj.error
    finished = [e for e in eps_ if e.status == "finished"]
    assert len(finished) >= 2 and {e.task_id for e in finished} == {tid}
    assert {robots[e.robot_id].name for e in finished} == {"arm-1"} and robots[finished[0].robot_id].kind == "remote"
    acts = np.array([json.loads(line) for line in sent.read_text().splitlines()])
    assert len(acts) >= sum(e.length for e in finished)
    assert np.abs(acts).max() <= UNIT + 1e-6  # the robot's units, not the policy's [-1, 1]
    # Mapped bin centres fall between the bounds; unmapped [-1, 1] actions clipped to +-UNIT would be 0 or +-UNIT.
    inside = (np.abs(acts) > 1e-3) & (np.abs(acts) < UNIT - 1e-3)
    assert inside.mean() > 0.2, np.unique(np.round(acts, 4))
