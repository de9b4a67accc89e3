"""Typed configuration of a Fast3R checkpoint, parsed from the official ``config.json``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_REPO = "jedyang97/Fast3R_ViT_Large_512"
"""The released checkpoint on the Hugging Face Hub."""


@dataclass(frozen=True)
class EncoderConfig:
    """ViT encoder with 2-D RoPE (official ``encoder_args``, type ``croco``)."""

    embed_dim: int = 1024
    """Token width. Default is 1024 (ViT-L)."""
    depth: int = 24
    """Number of transformer blocks. Default is 24."""
    num_heads: int = 16
    """Attention heads; head dim = embed_dim / num_heads. Default is 16."""
    mlp_ratio: float = 4.0
    """MLP hidden width / embed_dim. Default is 4."""
    patch_size: int = 16
    """Patch size of the conv embedding (kernel = stride). Default is 16."""
    rope_base: float = 100.0
    """Frequency base of the 2-D RoPE, from ``pos_embed: "RoPE100"``. Default is 100."""
    img_size: int = 512
    """Nominal image size (informational only: there is no learned position table). Default is 512."""


@dataclass(frozen=True)
class DecoderConfig:
    """Global fusion transformer over the tokens of all views (official ``decoder_args``)."""

    enc_embed_dim: int = 1024
    """Width of the encoder tokens it reads. Default is 1024."""
    embed_dim: int = 1024
    """Token width inside the decoder. Default is 1024."""
    depth: int = 24
    """Number of blocks; the DPT heads hook blocks 0, depth/2, 3*depth/4 and depth. Default is 24."""
    num_heads: int = 16
    """Attention heads. Default is 16."""
    mlp_ratio: float = 4.0
    """MLP hidden width / embed_dim. Default is 4."""
    qkv_bias: bool = True
    """Bias on the fused qkv projection. Default is True."""
    random_image_idx_embedding: bool = True
    """Non-reference views get distinct pseudo-random index-embedding ids (as in training). Default is True."""
    attn_bias_for_inference_enabled: bool = False
    """Scale decoder attention by sqrt(ln 137 / ln 20) at inference (an official option). Default is False."""


@dataclass(frozen=True)
class HeadConfig:
    """Two DPT heads (global and local pointmaps with confidence; official ``head_args``)."""

    patch_size: int = 16
    """Un-patchify factor. Default is 16."""
    feature_dim: int = 256
    """DPT fusion width (absent from the released config). Default is 256."""
    layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    """Widths of the four DPT reassemble stages (absent from the released config). Default is (96, 192, 384, 768)."""
    depth_mode: tuple[str, float, float] = ("exp", -math.inf, math.inf)
    """Activation of the xyz channels: xyz / |xyz| * expm1(|xyz|). Only ("exp", -inf, inf) is supported."""
    conf_mode: tuple[str, float, float] = ("exp", 1.0, math.inf)
    """Activation of the confidence channel: vmin + exp(x). Only ("exp", 1, inf) is supported."""
    with_local_head: bool = True
    """Also predict each view's points in its own camera frame. Default is True."""


@dataclass(frozen=True)
class Fast3RConfig:
    """The three argument groups of a Fast3R ``config.json``."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    @property
    def hooks(self) -> tuple[int, int, int, int]:
        """Decoder layer outputs the heads read: 0 is the encoder output, ``depth`` the normed last block."""
        depth = self.decoder.depth
        return (0, depth * 2 // 4, depth * 3 // 4, depth)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fast3RConfig:
        """Parse the official dict (``encoder_args``, ``decoder_args``, ``head_args``), refusing what we cannot run."""
        enc, dec, head = (dict(raw.get(k) or {}) for k in ("encoder_args", "decoder_args", "head_args"))
        _require(enc, "encoder_type", "croco")
        _require(enc, "patch_embed_cls", "PatchEmbedDust3R", "ManyAR_PatchEmbed")
        _require(dec, "decoder_type", "fast3r")
        _require(head, "head_type", "dpt")
        _require(head, "output_mode", "pts3d")
        if head.get("landscape_only", False):
            raise ValueError("config: head_args.landscape_only=true is not supported (the released model uses false)")
        pos = str(enc.get("pos_embed", "RoPE100"))
        if not pos.startswith("RoPE"):
            raise ValueError(f"config: encoder_args.pos_embed={pos!r} is not supported (expected 'RoPE<base>')")
        depth_mode = _mode(head.get("depth_mode", ["exp", -math.inf, math.inf]))
        conf_mode = _mode(head.get("conf_mode", ["exp", 1, math.inf]))
        if depth_mode != ("exp", -math.inf, math.inf):
            raise ValueError(f"config: head_args.depth_mode={list(depth_mode)} is not supported")
        if conf_mode[0] != "exp" or conf_mode[2] != math.inf:
            raise ValueError(f"config: head_args.conf_mode={list(conf_mode)} is not supported")
        encoder = _build(
            EncoderConfig, enc, rope_base=float(pos[len("RoPE") :]), mlp_ratio=float(enc.get("mlp_ratio", 4.0))
        )
        decoder = _build(DecoderConfig, dec)
        head_cfg = _build(
            HeadConfig,
            head,
            layer_dims=tuple(head.get("layer_dims", HeadConfig.layer_dims)),
            depth_mode=depth_mode,
            conf_mode=conf_mode,
        )
        if decoder.enc_embed_dim != encoder.embed_dim:
            raise ValueError("config: decoder_args.enc_embed_dim must equal encoder_args.embed_dim")
        if head_cfg.patch_size != encoder.patch_size:
            raise ValueError("config: head_args.patch_size must equal encoder_args.patch_size")
        return cls(encoder=encoder, decoder=decoder, head=head_cfg)

    @classmethod
    def from_json(cls, path: str | Path) -> Fast3RConfig:
        """Read a ``config.json`` (JSON ``Infinity`` tokens are accepted)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        """The official layout, readable by the official code and by :meth:`from_dict`."""
        enc, dec, head = self.encoder, self.decoder, self.head
        return {
            "encoder_args": {
                "encoder_type": "croco",
                "patch_embed_cls": "PatchEmbedDust3R",
                "attn_implementation": "flash_attention",
                "img_size": enc.img_size,
                "patch_size": enc.patch_size,
                "embed_dim": enc.embed_dim,
                "num_heads": enc.num_heads,
                "depth": enc.depth,
                "mlp_ratio": enc.mlp_ratio,
                "pos_embed": f"RoPE{enc.rope_base:g}",
            },
            "decoder_args": {
                "decoder_type": "fast3r",
                "attn_implementation": "flash_attention",
                "drop": 0.0,
                "attn_drop": 0.0,
                **{f.name: getattr(dec, f.name) for f in fields(dec)},
            },
            "head_args": {
                "head_type": "dpt",
                "output_mode": "pts3d",
                "landscape_only": False,
                "patch_size": head.patch_size,
                "depth_mode": list(head.depth_mode),
                "conf_mode": list(head.conf_mode),
                "with_local_head": head.with_local_head,
                "feature_dim": head.feature_dim,
                "layer_dims": list(head.layer_dims),
            },
        }


def _require(args: dict[str, Any], key: str, *allowed: str) -> None:
    if key in args and args[key] not in allowed:
        raise ValueError(f"config: {key}={args[key]!r} is not supported (expected {' or '.join(allowed)})")


def _mode(value: Any) -> tuple[str, float, float]:
    name, lo, hi = value
    return (str(name), float(lo), float(hi))


def _build(kind: type, args: dict[str, Any], **overrides: Any) -> Any:
    names = {f.name for f in fields(kind)}
    kwargs = {k: v for k, v in args.items() if k in names}
    kwargs.update(overrides)
    return kind(**kwargs)
