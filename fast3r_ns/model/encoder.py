"""Per-view ViT encoder: 16x16 conv patches, 2-D RoPE attention blocks, final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Block
from .config import EncoderConfig
from .rope import RoPE2D


class PatchEmbed(nn.Module):
    """Conv patch embedding for any H, W divisible by the patch size (no position table)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: [N, 3, H, W] -> tokens [N, P, dim] (row-major) and positions [N, P, 2] (row, col)."""
        n, _, height, width = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        tokens = self.proj(images).flatten(2).transpose(1, 2)
        rows, cols = height // self.patch_size, width // self.patch_size
        grid = torch.stack(
            torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), dim=-1
        ).reshape(1, rows * cols, 2)
        return tokens, grid.to(images.device).expand(n, -1, -1)


class Encoder(nn.Module):
    """Encodes each image independently (weights shared across views)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        rope = RoPE2D(cfg.rope_base)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.enc_blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, norm_eps=1e-6, rope=rope)
            for _ in range(cfg.depth)
        )
        self.enc_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: [N, 3, H, W] in [-1, 1] -> features [N, P, dim], positions [N, P, 2]."""
        x, pos = self.patch_embed(images)
        for block in self.enc_blocks:
            x = block(x, pos)
        return self.enc_norm(x), pos
