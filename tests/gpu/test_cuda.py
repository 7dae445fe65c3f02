"""The GPU path: Stage 1, practice and evaluation on CUDA, and a larger model trained there.

Skipped without a CUDA GPU (CI has none). On a GPU machine:

    pytest -m gpu tests/gpu -s

``DOJO_GPU_TEST_DEVICE=cpu`` runs the same checks on the CPU, to debug them without a GPU.
"""
from __future__ import annotations

import json
import os
import time

import pytest
import torch

from core.learning.checkpoint import load_checkpoint, read_checkpoint
from core.cli import main
from core.learning.practice import PracticeConfig, run_practice
from tests.core.learning.helpers import make_batch

DEVICE = os.environ.get("DOJO_GPU_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    data, out = root / "demos", root / "sft"
    assert main(["demos", "--out", str(data), "--n", "8", "--workers", "2", "--image-size", "32", "--quiet"]) == 0
    assert main(["sft", "--data", str(data), "--out", str(out), "--epochs", "2", "--d-model", "32",
                 "--n-layers", "1", "--eval-episodes", "2", "--batch-size", "32", "--device", DEVICE,
                 "--quiet"]) == 0
    return data, out


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def test_sft_on_the_gpu_writes_checkpoints_that_give_the_same_outputs_on_the_cpu(stage1):
    _, out = stage1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["train_loss"] == r["train_loss"] for r in rows)
    on_gpu, _ = load_checkpoint(out / "best_policy.pt", DEVICE)
    on_cpu, _ = load_checkpoint(out / "best_policy.pt", "cpu")
    assert next(on_gpu.parameters()).device.type == DEVICE
    batch = make_batch(on_cpu.config, b=4)
    with torch.no_grad():
        a_gpu, s_gpu = (t.cpu() for t in on_gpu.predict(batch))
        a_cpu, s_cpu = on_cpu.predict(batch)
    # TF32 convolutions on the GPU differ from the CPU in the third or fourth digit.
    assert torch.allclose(a_gpu, a_cpu, atol=2e-2, rtol=2e-2)
    assert torch.allclose(s_gpu, s_cpu, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("mode", ["default", ""])
def test_practice_on_the_gpu_compiles_updates_and_resumes(stage1, tmp_path, monkeypatch, mode):
    _, out = stage1
    monkeypatch.setenv("DOJO_NO_COMPILE", "0")  # the default path: compiled rollout forwards
    monkeypatch.setenv("DOJO_COMPILE_MODE", mode)  # inductor's default, or unset: CUDA graphs on a GPU
    cfg = dict(policy_checkpoint=str(out / "best_policy.pt"), reward_checkpoint=str(out / "best_stg.pt"),
               out=str(tmp_path / "si"), fleet_size=2, fleet_kind="process", tuples_per_iteration=64, minibatch=32,
               check_episodes=2, min_precision=0.0, min_recall=0.0, eval_every=1, eval_episodes=2,
               max_episodes=2, plateau_evals=10, threshold_s=1.0, lr=1e-3, device=DEVICE)
    first = run_practice(PracticeConfig(**cfg), progress=False)
    assert first["iterations"] >= 1
    assert first["inference"].startswith("compiled (batch 2"), first["inference"]
    assert ("mode reduce-overhead" in first["inference"]) == (mode == "" and DEVICE == "cuda")
    rows = [json.loads(x) for x in (tmp_path / "si" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in rows if r["iteration"] > 0)  # finite, not NaN
    start, _ = load_checkpoint(out / "best_policy.pt")
    after, _ = load_checkpoint(tmp_path / "si" / f"iter_{first['iterations']:04d}.pt")
    before, now = _params(start), _params(after)
    assert any(not torch.equal(before[k], now[k]) for k in before)  # the update moved the policy
    # Resumed on the GPU from the last iteration, with the optimizer state moved there too.
    again = run_practice(PracticeConfig(**{**cfg, "max_episodes": first["episodes"] + 2}), progress=False)
    assert again["iterations"] > first["iterations"]
    assert read_checkpoint(tmp_path / "si" / "best.pt")["meta"]["stage"] == "si"


def test_eval_on_the_gpu(stage1, capsys):
    _, out = stage1
    assert main(["eval", "--checkpoint", str(out / "best_policy.pt"), "--episodes", "4", "--n-envs", "4",
                 "--device", DEVICE, "--quiet"]) == 0
    ev = _json_out(capsys)
    assert ev["episodes"] == 4 and 0.0 <= ev["success"] <= 1.0 and ev["stg_mae_steps"] >= 0


def test_a_bert_base_sized_trunk_from_a_local_dir_trains_on_the_gpu(stage1, tmp_path, capsys):
    """A larger model than the CPU default (a 12-layer, 768-wide trunk, ~85 M parameters,
    saved in half precision as hub checkpoints often are): Stage 1 on it through the CLI,
    and it fits one batch."""
    from transformers import BertConfig, BertModel

    data, _ = stage1
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=2, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=128),
              add_pooling_layer=False).half().save_pretrained(tmp_path / "trunk")
    out = tmp_path / "sft"
    assert main(["sft", "--data", str(data), "--out", str(out), "--epochs", "1", "--trunk",
                 f"hf:{tmp_path / 'trunk'}", "--eval-episodes", "2", "--batch-size", "32", "--lr", "1e-4",
                 "--device", DEVICE, "--quiet"]) == 0
    model, _ = load_checkpoint(out / "best_policy.pt", DEVICE)
    assert model.width == 768 and sum(p.numel() for p in model.trunk.parameters()) > 80e6
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = make_batch(model.config, b=64)
    losses = []
    t0 = time.perf_counter()
    for _ in range(20):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    per_step = (time.perf_counter() - t0) / 20
    print(f"\nBERT-base trunk on {DEVICE}: {per_step * 1000:.0f} ms per training step at batch 64; "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.8 * losses[0]


def test_cuda_graph_inference_matches_eager_across_calls_and_weight_updates(stage1):
    """``reduce-overhead`` (CUDA graphs) replays into static buffers: an earlier call's
    outputs must survive the next call, and in-place optimizer updates must be seen."""
    import copy

    _, out = stage1
    model, _ = load_checkpoint(out / "best_policy.pt", DEVICE)
    eager = copy.deepcopy(model)
    model.compile_inference(4, warm_up=True, mode="reduce-overhead")
    assert "mode reduce-overhead" in model.inference_backend
    b1, b2 = make_batch(model.config, b=3, seed=1), make_batch(model.config, b=4, seed=2)
    with torch.no_grad():
        first = [t.clone() for t in model.predict(b1)]
        for _ in range(3):  # past CUDA-graph warm-up and recording
            out1 = model.predict(b1)
            out2 = model.predict(b2)
        for got, want in zip(out1 + out2, eager.predict(b1) + eager.predict(b2)):
            assert torch.allclose(got, want, atol=1e-3, rtol=1e-3)
        for m in (model, eager):
            for p in m.action_head.parameters():
                p.add_(0.05)
        moved = model.predict(b1)
        assert torch.allclose(moved[0], eager.predict(b1)[0], atol=1e-3, rtol=1e-3)
        assert not torch.allclose(moved[0], first[0], atol=1e-3)
