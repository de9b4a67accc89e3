"""The pre-norm transformer block shared by the encoder and the decoder."""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .rope import RoPE2D


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear; without autograd, long inputs run in token chunks to bound memory."""

    chunk_tokens = 65536
    """Tokens per chunk at inference (the hidden layer is 4x wider than the input). Default is 65536."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, dim] -> [B, N, dim]."""
        if torch.is_grad_enabled() or x.shape[0] * x.shape[1] <= self.chunk_tokens:
            return self.fc2(self.act(self.fc1(x)))
        flat = x.reshape(-1, x.shape[-1])
        out = torch.empty_like(flat)
        for start in range(0, flat.shape[0], self.chunk_tokens):
            rows = slice(start, start + self.chunk_tokens)
            out[rows] = self.fc2(self.act(self.fc1(flat[rows])))
        return out.view_as(x)


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, rope=rope)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, N, dim]; pos: [B, N, 2] patch positions (only read by a RoPE attention)."""
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))
