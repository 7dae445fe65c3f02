"""The compiled rollout forward (``DojoPolicy.compile_inference``): same outputs as eager,
padded batches, live weights, eager whenever gradients are needed, and practice using it."""
from __future__ import annotations

import pytest
import torch

from core.learning.policy import DojoPolicy, compile_enabled, compile_mode_for
from tests.core.learning.helpers import make_batch, tiny_config


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = DojoPolicy(cfg).eval()
    eager = DojoPolicy(cfg).eval()
    eager.load_state_dict(model.state_dict())
    model.compile_inference(4)
    return cfg, model, eager


def test_compiled_forward_matches_eager_at_full_and_padded_batches(compiled):
    cfg, model, eager = compiled
    for b in (4, 3, 1, 6):  # 3 and 1 are padded to 4; 6 is larger than the compiled batch: eager
        batch = make_batch(cfg, b=b, seed=b)
        with torch.no_grad():
            got, want = model.predict(batch), eager.predict(batch)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert torch.allclose(g, w, atol=1e-4), (b, (g - w).abs().max())
    assert model._fast.compiled is not None, model.inference_backend
    assert model.inference_backend.startswith("compiled (batch 4, compiled in")


def test_compiled_forward_sees_in_place_weight_updates(compiled):
    cfg, model, eager = compiled
    batch = make_batch(cfg, b=4)
    with torch.no_grad():
        before = model.predict(batch)[1].clone()
        model.stg_head.bias.add_(1.0)
        after = model.predict(batch)[1].clone()
        model.stg_head.bias.sub_(1.0)
    assert torch.allclose(after - before, torch.ones_like(before), atol=1e-4)


def test_gradients_and_training_mode_use_the_eager_forward(compiled):
    cfg, model, _ = compiled
    batch = make_batch(cfg, b=4)
    logp = model.action_log_prob({**batch})  # grad enabled: the update's path
    assert logp.requires_grad
    logp.sum().backward()
    assert model.action_head.weight.grad is not None
    model.zero_grad()
    model.train()
    try:
        assert model.predict(batch)[0].requires_grad
    finally:
        model.eval()


def test_copies_leave_the_compiled_forward_behind(compiled):
    import copy

    _, model, _ = compiled
    twin = copy.deepcopy(model)
    assert twin._fast is None and model._fast is not None
    assert twin.inference_backend == "eager"


def test_dojo_no_compile_turns_it_off(monkeypatch):
    monkeypatch.setenv("DOJO_NO_COMPILE", "1")
    assert not compile_enabled()
    monkeypatch.setenv("DOJO_NO_COMPILE", "0")
    assert compile_enabled()


def test_cuda_graphs_on_a_gpu_inductor_default_on_the_cpu_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("DOJO_COMPILE_MODE", raising=False)
    assert compile_mode_for("cpu") is None
    assert compile_mode_for(torch.device("cuda", 0)) == "reduce-overhead"
    monkeypatch.setenv("DOJO_COMPILE_MODE", "default")
    assert compile_mode_for("cuda") is None
    monkeypatch.setenv("DOJO_COMPILE_MODE", "max-autotune")
    assert compile_mode_for("cpu") == "max-autotune"
    model = DojoPolicy(tiny_config())
    model.compile_inference(2)
    assert model._fast.mode == "max-autotune" and "mode max-autotune" in model.inference_backend


def test_a_failing_compile_falls_back_to_eager_and_says_why(monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    cfg = tiny_config()
    torch.manual_seed(1)
    model = DojoPolicy(cfg).eval()
    batch = make_batch(cfg, b=2)
    with torch.no_grad():
        want = model.predict(batch)[0]
        with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
            model.compile_inference(2, warm_up=True)
        got = model.predict(batch)[0]
    assert torch.equal(got, want)
    assert model.inference_backend == "eager (compile failed: RuntimeError: no C++ compiler found)"
