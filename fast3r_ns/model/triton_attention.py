"""Forward softmax attention for head dim 64 in Triton, with part of the exponentials done on the FMA units.

At head dim 64 an attention score costs one exponential per 256 FLOP of matrix work, and the GPU's special
function units (16 exponentials per clock per SM on H100) need about as long for those exponentials as the tensor
cores need for the matrix products: kernels that use only those units stall on them. Here ``poly_parts`` of every
``parts`` key sub-blocks compute 2^x with a cubic polynomial on the FMA units instead (Cody-Waite split: x = j + f,
j = round(x) by the 1.5 * 2^23 trick, 2^f on [-0.5, 0.5] to 7.5e-5 relative, j added to the exponent bits), far
below the bf16 rounding (3.9e-3) the probabilities get before the second product.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover - triton comes with CUDA builds of torch
    TRITON_AVAILABLE = False

LOG2E = 1.4426950408889634

if TRITON_AVAILABLE:

    @triton.jit
    def _exp2_poly(x):
        """2^x for x <= 0 on the FMA/ALU units (x below -126 gives about 2^-126)."""
        x = tl.maximum(x, -126.0)
        shifted = x + 12582912.0  # 1.5 * 2^23: round(x) lands in the low mantissa bits
        j = shifted - 12582912.0
        f = x - j
        p = 0.055170919814460234 * f + 0.24260956110776513
        p = p * f + 0.6932609632147407
        p = p * f + 0.9999281718167096
        bits = p.to(tl.int32, bitcast=True) + (shifted.to(tl.int32, bitcast=True) << 23)
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _exp2_half(x, DTYPE: tl.constexpr):
        """2^x of fp32 x through the packed half-precision instruction (two results per instruction)."""
        if DTYPE == tl.float16:
            y = tl.inline_asm_elementwise(
                "ex2.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)], dtype=tl.float16, is_pure=True, pack=2
            )
        else:
            y = tl.inline_asm_elementwise(
                "ex2.approx.ftz.bf16x2 $0, $1;", "=r,r", [x.to(tl.bfloat16)], dtype=tl.bfloat16, is_pure=True, pack=2
            )
        return y

    @triton.jit
    def _attend_part(
        acc, m_i, l_i, q, k_ptrs, v_ptrs, kv_offsets, kv_len, scale_log2,
        POLY: tl.constexpr, HALF: tl.constexpr, MASK: tl.constexpr,
    ):  # fmt: skip
        if MASK:
            kv_ok = kv_offsets < kv_len
            k = tl.load(k_ptrs, mask=kv_ok[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=kv_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, k)  # raw scores; x = s * scale_log2 - m is one FMA
        if MASK:
            s = tl.where(kv_ok[None, :], s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2)
        alpha = tl.math.exp2(m_i - m_new)
        if POLY:
            p = _exp2_poly(s * scale_log2 - m_new[:, None]).to(v.dtype)
            l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
        elif HALF:
            p = _exp2_half(s * scale_log2 - m_new[:, None], v.dtype)
            l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
        else:
            p32 = tl.math.exp2(s * scale_log2 - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p32, 1)
            p = p32.to(v.dtype)
        acc = acc * alpha[:, None]
        acc = tl.dot(p, v, acc)
        return acc, m_new, l_i

    @triton.jit
    def _attention_fwd(
        Q, K, V, Out, Lse,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
        heads, q_len, kv_len, scale_log2,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, SUB_N: tl.constexpr, PARTS: tl.constexpr,
        POLY_PARTS: tl.constexpr, HALF_EXP: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, WRITE_LSE: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // heads
        h = bh % heads
        rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # offsets pass 2^31 at 768k tokens
        dims = tl.arange(0, HEAD_DIM)
        sub = tl.arange(0, SUB_N).to(tl.int64)
        row_ok = rows < q_len
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqn + dims[None, :], mask=row_ok[:, None], other=0.0)
        k_base = K + b * skb + h * skh + dims[:, None]  # K read transposed: [D, SUB_N] tiles
        v_base = V + b * svb + h * svh + dims[None, :]
        m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        full_end = (kv_len // (SUB_N * PARTS)) * (SUB_N * PARTS)
        for start in tl.range(0, full_end, SUB_N * PARTS, warp_specialize=WARP_SPECIALIZE):
            for part in tl.static_range(PARTS):
                offs = start + part * SUB_N + sub
                acc, m_i, l_i = _attend_part(
                    acc, m_i, l_i, q, k_base + offs[None, :] * skn, v_base + offs[:, None] * svn, offs, kv_len,
                    scale_log2, part >= PARTS - POLY_PARTS, HALF_EXP, False,
                )  # fmt: skip
        for start in range(full_end, kv_len, SUB_N):
            offs = start + sub
            acc, m_i, l_i = _attend_part(
                acc, m_i, l_i, q, k_base + offs[None, :] * skn, v_base + offs[:, None] * svn, offs, kv_len,
                scale_log2, False, False, True,
            )  # fmt: skip
        out = acc / l_i[:, None]
        tl.store(
            Out + b * sob + h * soh + rows[:, None] * son + dims[None, :],
            out.to(Out.dtype.element_ty),
            mask=row_ok[:, None],
        )
        if WRITE_LSE:
            tl.store(Lse + bh * q_len + rows, (m_i + tl.math.log2(l_i)) / 1.4426950408889634, mask=row_ok)

    @triton.jit
    def _attend_tile(acc, m_i, l_i, q, k_desc, v_desc, kv_start, kv_len, scale_log2,
                     POLY: tl.constexpr, HALF: tl.constexpr, MASK: tl.constexpr, SUB_N: tl.constexpr):  # fmt: skip
        k = k_desc.load([kv_start, 0])
        v = v_desc.load([kv_start, 0])
        s = tl.dot(q, k.T)  # raw scores; x = s * scale_log2 - m is one FMA
        if MASK:
            s = tl.where((kv_start + tl.arange(0, SUB_N) < kv_len)[None, :], s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2)
        alpha = tl.math.exp2(m_i - m_new)
        if POLY:
            p = _exp2_poly(s * scale_log2 - m_new[:, None]).to(v.dtype)
            l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
        elif HALF:
            p = _exp2_half(s * scale_log2 - m_new[:, None], v.dtype)
            l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
        else:
            p32 = tl.math.exp2(s * scale_log2 - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p32, 1)
            p = p32.to(v.dtype)
        acc = acc * alpha[:, None]
        acc = tl.dot(p, v, acc)
        return acc, m_new, l_i

    @triton.jit
    def _attention_fwd_tma(
        Q, K, V, Out, Lse,
        sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
        heads, q_len, kv_len, scale_log2,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, SUB_N: tl.constexpr, PARTS: tl.constexpr,
        POLY_PARTS: tl.constexpr, HALF_EXP: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, WRITE_LSE: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // heads).to(tl.int64)
        h = (bh % heads).to(tl.int64)
        q_desc = tl.make_tensor_descriptor(Q + b * sqb + h * sqh, [q_len, HEAD_DIM], [sqn, 1], [BLOCK_M, HEAD_DIM])
        k_desc = tl.make_tensor_descriptor(K + b * skb + h * skh, [kv_len, HEAD_DIM], [skn, 1], [SUB_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(V + b * svb + h * svh, [kv_len, HEAD_DIM], [svn, 1], [SUB_N, HEAD_DIM])
        o_desc = tl.make_tensor_descriptor(Out + b * sob + h * soh, [q_len, HEAD_DIM], [son, 1], [BLOCK_M, HEAD_DIM])
        q = q_desc.load([pid_m * BLOCK_M, 0])
        m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        full_end = (kv_len // (SUB_N * PARTS)) * (SUB_N * PARTS)
        for start in tl.range(0, full_end, SUB_N * PARTS, warp_specialize=WARP_SPECIALIZE):
            for part in tl.static_range(PARTS):
                acc, m_i, l_i = _attend_tile(
                    acc, m_i, l_i, q, k_desc, v_desc, start + part * SUB_N, kv_len, scale_log2,
                    part >= PARTS - POLY_PARTS, HALF_EXP, False, SUB_N,
                )  # fmt: skip
        for start in range(full_end, kv_len, SUB_N):
            acc, m_i, l_i = _attend_tile(
                acc, m_i, l_i, q, k_desc, v_desc, start, kv_len, scale_log2, False, False, True, SUB_N
            )  # fmt: skip
        out = acc / l_i[:, None]
        o_desc.store([pid_m * BLOCK_M, 0], out.to(Out.dtype.element_ty))
        if WRITE_LSE:
            rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            lse = (m_i + tl.math.log2(l_i)) / 1.4426950408889634
            tl.store(Lse + bh.to(tl.int64) * q_len + rows, lse, mask=rows < q_len)


DEFAULT_CONFIG = {"BLOCK_M": 128, "SUB_N": 64, "PARTS": 2, "POLY_PARTS": 0, "num_warps": 8, "num_stages": 2}
"""Tile sizes, the share of exponentials done by polynomial (POLY_PARTS of PARTS sub-blocks) and launch settings;
optional: HALF_EXP (the other sub-blocks' exponentials as packed half-precision instructions), WARP_SPECIALIZE,
FP16 (inputs converted to fp16 first)."""


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    with_lse: bool = False,
    config: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention, q/k/v [B, H, N, 64] fp16/bf16 with any strides (last dim contiguous).

    Returns (out [B, H, Nq, 64], stored as [B, Nq, H, 64]; natural-log log-sum-exp [B, H, Nq] float32 or None).
    """
    if not TRITON_AVAILABLE:
        raise RuntimeError("the Triton attention needs the triton package")
    batch, heads, q_len, head_dim = q.shape
    if head_dim != 64 or any(t.stride(-1) != 1 for t in (q, k, v)):
        raise ValueError("triton_attention takes head dim 64 with a contiguous last dimension")
    cfg = {"HALF_EXP": 0, "WARP_SPECIALIZE": False, "FP16": False, "TMA": False} | DEFAULT_CONFIG | (config or {})
    dtype = q.dtype
    if cfg["FP16"]:
        q, k, v = q.half(), k.half(), v.half()
    out = torch.empty(batch, q_len, heads, head_dim, device=q.device, dtype=dtype).transpose(1, 2)
    lse = torch.empty(batch, heads, q_len, device=q.device, dtype=torch.float32) if with_lse else out
    grid = (triton.cdiv(q_len, cfg["BLOCK_M"]), batch * heads)
    kernel = _attention_fwd
    if cfg["TMA"]:
        _ensure_allocator()
        kernel = _attention_fwd_tma
    kernel[grid](
        q, k, v, out, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        heads, q_len, k.shape[2], scale * LOG2E,
        HEAD_DIM=head_dim, BLOCK_M=cfg["BLOCK_M"], SUB_N=cfg["SUB_N"], PARTS=cfg["PARTS"],
        POLY_PARTS=cfg["POLY_PARTS"], HALF_EXP=cfg["HALF_EXP"], WARP_SPECIALIZE=cfg["WARP_SPECIALIZE"],
        WRITE_LSE=with_lse, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    return out, (lse if with_lse else None)


def _ensure_allocator() -> None:
    """Device-side tensor descriptors need scratch memory from torch's allocator."""
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


def triton_attention_with_lse(q, k, v, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``triton_attention`` in the (out, lse) form ``blocked_attention`` merges."""
    return triton_attention(q, k, v, scale, with_lse=True)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Float64 attention of the same inputs (tests)."""
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    return torch.softmax(scores, dim=-1) @ v.double()
