"""Global fusion decoder: all views' tokens in one sequence, told apart by an image-index embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import Block
from .config import DecoderConfig


def image_index_embedding(ids: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoid rows [sin(n w_k) | cos(n w_k)], w_k = 10000^(-k / (dim/2)), for any integer ids.

    ids: [...] integer -> [..., dim] float32 (computed in float64, as the official table).
    """
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64, device=ids.device) / half)
    angles = ids.to(torch.float64)[..., None] * omega
    return torch.cat((angles.sin(), angles.cos()), dim=-1).float()


class Decoder(nn.Module):
    """decoder_embed -> + index embedding -> blocks (LayerNorm eps 1e-5, no RoPE) -> dec_norm."""

    def __init__(self, cfg: DecoderConfig, hooks: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.hooks = hooks
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.embed_dim)
        self.dec_blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, norm_eps=1e-5)
            for _ in range(cfg.depth)
        )
        self.dec_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def _set_attention_scale(self) -> None:
        factor = 1.0
        if self.cfg.attn_bias_for_inference_enabled and not self.training:
            factor = math.sqrt(math.log(137) / math.log(20))
        for block in self.dec_blocks:
            block.attn.scale = (self.cfg.embed_dim // self.cfg.num_heads) ** -0.5 * factor

    def forward(self, features: list[torch.Tensor], image_ids: torch.Tensor) -> list[torch.Tensor]:
        """features: V tensors [B, P_v, enc_dim]; image_ids: [B, V] integer.

        Returns the four hooked layer outputs, each [B, sum(P_v), C]: hook 0 is the concatenated encoder
        output (enc_dim wide), the last is dec_norm(final block); the others are raw block outputs.
        """
        self._set_attention_scale()
        tokens = torch.cat(features, dim=1)
        counts = torch.tensor([f.shape[1] for f in features], device=tokens.device)
        ids_per_token = torch.repeat_interleave(image_ids.to(tokens.device), counts, dim=1)  # [B, sum(P_v)]
        kept = [tokens] if 0 in self.hooks else []
        x = self.decoder_embed(tokens)
        x = x + image_index_embedding(ids_per_token, x.shape[-1]).to(x.dtype)
        for depth, block in enumerate(self.dec_blocks, start=1):
            x = block(x)
            if depth == len(self.dec_blocks):
                x = self.dec_norm(x)
            if depth in self.hooks:
                kept.append(x)
        return kept
