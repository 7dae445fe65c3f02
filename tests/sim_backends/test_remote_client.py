"""The reference remote-robot client (sim_backends/remote/client.py) serves a simulator whose
episodes do not end at ground-truth success: remote episodes end by the worker's detector,
the step limit or a person (docs/remote_protocol.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sim_backends.remote import client as remote_client
from sim_backends.tabletop.expert import ScriptedExpert


def _drive_to_success(client: remote_client.RemoteRobotClient, seeds=range(6)) -> list[dict]:
    """Reset and step ``client`` (through ``handle``, as the worker's requests arrive) with the
    scripted expert until an observation reports success, and one step more if the episode
    goes on. The replies of that episode."""
    rid = 0
    for seed in seeds:
        rid += 1
        replies = [client.handle({"type": "reset", "request_id": rid, "seed": seed})]
        expert = ScriptedExpert(client.env, np.random.default_rng(seed), noise=0.0)
        while not (replies[-1]["success"] or replies[-1]["terminated"] or replies[-1]["truncated"]):
            rid += 1
            replies.append(client.handle({"type": "action", "request_id": rid, "action": expert.act().tolist()}))
        if replies[-1]["success"]:
            if not (replies[-1]["terminated"] or replies[-1]["truncated"]):
                rid += 1
                replies.append(client.handle({"type": "action", "request_id": rid,
                                              "action": expert.act().tolist()}))
            return replies
    raise AssertionError("the scripted expert reached no success on these seeds")


def test_the_client_that_main_builds_does_not_end_an_episode_at_ground_truth_success(monkeypatch, capsys, tmp_path):
    served: list[list[dict]] = []

    class Offline(remote_client.RemoteRobotClient):
        """No worker: ``connect`` plays the worker's requests, then the worker refuses it."""

        def connect(self, timeout: float = 10.0):
            served.append(_drive_to_success(self))
            raise ConnectionError("registration refused: test: done")

    monkeypatch.setattr(remote_client, "RemoteRobotClient", Offline)
    env_config = {"family": "block2block", "image_size": 32, "terminate_on_success": True}
    (tmp_path / "token").write_text("dojo_rt_test\n")
    rc = remote_client.main(["--url", "ws://127.0.0.1:1/robot", "--token-file", str(tmp_path / "token"), "--name", "sim-1",
                             "--env-config", json.dumps(env_config)])
    assert rc == 2 and served
    replies = served[0]
    first = next(i for i, r in enumerate(replies) if r["success"])
    assert first >= 1 and replies[first]["type"] == "observation"
    # ground truth is reported, but the episode goes on: the worker's detector ends it
    assert not replies[first]["terminated"] and not replies[first]["truncated"]
    assert len(replies) == first + 2 and replies[first + 1]["type"] == "observation"  # and it steps on
    assert "terminate_on_success is overridden to False" in capsys.readouterr().err


def test_make_robot_env_overrides_terminate_on_success_whatever_the_config_says():
    for config in ({"family": "block2block", "image_size": 32, "terminate_on_success": True},
                   {"family": "block2block", "image_size": 32}):
        env = remote_client.make_robot_env("tabletop", config)
        try:
            assert env.config.terminate_on_success is False
        finally:
            env.close()
        assert config.get("terminate_on_success", True) is True  # the caller's dict is left alone


def test_the_client_takes_its_token_from_a_file_or_the_environment_never_the_command_line(monkeypatch, capsys):
    monkeypatch.delenv("DOJO_ROBOT_TOKEN", raising=False)
    monkeypatch.delenv("DOJO_ROBOT_TOKEN_FILE", raising=False)
    with pytest.raises(SystemExit):
        remote_client.main(["--url", "ws://127.0.0.1:1/robot", "--token", "t", "--name", "sim-1"])
    assert "unrecognized arguments: --token" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        remote_client.main(["--url", "ws://127.0.0.1:1/robot", "--name", "sim-1"])
    assert "no robot token: give --token-file PATH or set DOJO_ROBOT_TOKEN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        remote_client.main(["--url", "ws://127.0.0.1:1/robot", "--token-file", "/nonexistent/t", "--name", "x"])
    assert "cannot read --token-file /nonexistent/t" in capsys.readouterr().err
