"""2-D rotary position embedding of the encoder: rows rotate the first half of each head, columns the second."""

from __future__ import annotations

import torch
from torch import nn


class RoPE2D(nn.Module):
    """Parameter-free 2-D RoPE (rotate-half pairing inside each half of the head dimension)."""

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = base

    def _cos_sin(self, half_dim: int, max_pos: int, device: torch.device, dtype: torch.dtype):
        inv_freq = 1.0 / (self.base ** (torch.arange(0, half_dim, 2, device=device).float() / half_dim))
        angles = torch.outer(torch.arange(max_pos, device=device, dtype=inv_freq.dtype), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)  # [max_pos, half_dim]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-second, first), dim=-1) * sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: [B, heads, N, head_dim]; pos: [B, N, 2] integer (row, col). Returns x rotated, same shape."""
        half_dim = x.shape[-1] // 2
        cos, sin = self._cos_sin(half_dim, int(pos.max()) + 1, x.device, x.dtype)
        rows, cols = x.split(half_dim, dim=-1)
        row_pos, col_pos = pos[..., 0], pos[..., 1]  # [B, N]
        rows = self._rotate(rows, cos[row_pos][:, None], sin[row_pos][:, None])
        cols = self._rotate(cols, cos[col_pos][:, None], sin[col_pos][:, None])
        return torch.cat((rows, cols), dim=-1)
