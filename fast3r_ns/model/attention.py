"""Multi-head self-attention: torch SDPA by default, flash-attn when installed and asked for."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .rope import RoPE2D

try:  # optional accelerator, tried once
    from flash_attn import flash_attn_func

    FLASH_ATTN_AVAILABLE = True
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flash_attn_func = None
    FLASH_ATTN_AVAILABLE = False

CUDA_SDPA_PRIORITY = (
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
)
"""SDPA backends tried in this order on CUDA: cuDNN measured fastest for head dim 64 on H100/H200."""


@dataclass(frozen=True)
class AttentionOptions:
    """How CUDA attention runs (the CPU always uses plain SDPA); set on a model with ``Fast3R(attention=...)``."""

    use_flash_attn: bool = False
    """Route CUDA fp16/bf16 attention through the flash-attn package (only if installed). Default is False."""
    kv_block_tokens: int = 49152
    """Long CUDA attentions run over key/value blocks of this many tokens, merged by log-sum-exp: one head's block
    of K and V (12 MB in bf16) then stays in L2 while every query tile reads it. cuDNN measured 491 TFLOP/s at 49k
    tokens but 415 at 768k on an H200. 0 disables blocking. Default is 49152."""
    q_block_tokens: int = 196608
    """Queries per blocked call (bounds the float32 accumulator). Default is 196608."""
    sdpa_priority: tuple[SDPBackend, ...] = CUDA_SDPA_PRIORITY
    """SDPA backends tried in this order on CUDA. Default is ``CUDA_SDPA_PRIORITY``."""

    def as_record(self) -> dict:
        """JSON-ready fields for benchmark records."""
        return {
            "use_flash_attn": self.use_flash_attn,
            "kv_block_tokens": self.kv_block_tokens,
            "q_block_tokens": self.q_block_tokens,
            "sdpa_priority": [backend.name for backend in self.sdpa_priority],
        }


DEFAULT_ATTENTION = AttentionOptions()


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """(out [B, H, Nq, D] in q's dtype, log-sum-exp [B, H, Nq] float32) of softmax attention."""
    if q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, scale=scale)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
    return out, lse.reshape(q.shape[:3]).float()


def blocked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, kv_block: int, q_block: int
) -> torch.Tensor:
    """Exact attention as a log-sum-exp merge over key/value blocks. q, k, v: [B, H, N, D] -> [B, H, Nq, D]."""
    out = torch.empty_like(q)
    for q_start in range(0, q.shape[2], q_block):
        q_part = q[:, :, q_start : q_start + q_block]
        acc, lse_acc = None, None
        for kv_start in range(0, k.shape[2], kv_block):
            part, lse = attention_with_lse(
                q_part, k[:, :, kv_start : kv_start + kv_block], v[:, :, kv_start : kv_start + kv_block], scale
            )
            if acc is None:
                acc, lse_acc = part.float(), lse
                continue
            merged = torch.logaddexp(lse_acc, lse)
            acc.mul_((lse_acc - merged).exp_().unsqueeze(-1))
            acc.addcmul_(part, (lse - merged).exp_().unsqueeze(-1))
            lse_acc = merged
        out[:, :, q_start : q_start + q_block] = acc
    return out


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, options: AttentionOptions = DEFAULT_ATTENTION
) -> torch.Tensor:
    """Softmax attention. q, k, v: [B, heads, N, head_dim] -> [B, heads, N, head_dim]."""
    if not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    half = q.dtype in (torch.float16, torch.bfloat16)
    if options.kv_block_tokens and k.shape[2] > 2 * options.kv_block_tokens and half:
        return blocked_attention(q, k, v, scale, options.kv_block_tokens, options.q_block_tokens)
    if options.use_flash_attn and FLASH_ATTN_AVAILABLE and half:
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale)
        return out.transpose(1, 2)
    with sdpa_kernel(list(options.sdpa_priority), set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)


class Attention(nn.Module):
    """Fused-qkv multi-head attention with an optional 2-D RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, rope: RoPE2D | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope
        self.compute_dtype: torch.dtype | None = None
        """Dtype of the score/softmax part (e.g. bf16 for parity with the official CUDA path); None = input dtype."""
        self.sequence_parallel = None
        """Set by ``fast3r_ns.model.parallel`` on decoder blocks: attention over the tokens of all ranks."""
        self.options = DEFAULT_ATTENTION
        """How CUDA attention runs; the model sets one ``AttentionOptions`` on all its blocks."""

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, N, dim], pos: [B, N, 2] (row, col) patch positions, used only with RoPE."""
        batch, tokens, dim = x.shape
        # channel layout of qkv: (3, heads, head_dim)
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if self.rope is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        dtype = self.compute_dtype or q.dtype
        compute = attention if self.sequence_parallel is None else self.sequence_parallel.attention
        out = compute(q.to(dtype), k.to(dtype), v.to(dtype), self.scale, self.options).to(x.dtype)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))
