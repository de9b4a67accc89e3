"""The blocked (log-sum-exp merged) attention used for long CUDA sequences equals plain SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fast3r_ns.model.attention import attention_with_lse, blocked_attention


def test_lse_matches_definition():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=generator) for _ in range(3))
    out, lse = attention_with_lse(q, k, v, 0.3)
    expected = torch.logsumexp(q @ k.transpose(-1, -2) * 0.3, dim=-1)
    torch.testing.assert_close(lse, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), rtol=1e-5, atol=1e-5)


def test_blocked_attention_equals_sdpa():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 257, 16, generator=generator) * 2 for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.25)
    for kv_block, q_block in ((64, 1000), (100, 50), (257, 257), (1, 300)):
        got = blocked_attention(q, k, v, 0.25, kv_block, q_block)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
