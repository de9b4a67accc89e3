"""Opt-in FP8 (e4m3) attention through cuDNN's fused FP8 SDPA on Hopper GPUs: faster, less exact.

Q, K and V are scaled per tensor so that their largest magnitude maps to e4m3's 448, the softmax probabilities
use the fixed scale 448 (they lie in [0, 1]) and the output uses V's scale (an attention output is an average of
V rows, so it never exceeds V's largest magnitude). Needs the ``nvidia-cudnn-frontend`` package (its ``cudnn``
module) and a GPU of compute capability 9.0; ``fp8_unavailable_reason`` says why it cannot run.
"""

from __future__ import annotations

import math

import torch

E4M3_MAX = 448.0
"""Largest finite float8 e4m3 value."""

_graphs: dict[tuple, tuple] = {}
_handles: dict[int, object] = {}


def fp8_unavailable_reason(device: torch.device | str) -> str | None:
    """None when FP8 attention can run on ``device``, else one sentence saying why not."""
    device = torch.device(device)
    if device.type != "cuda":
        return "FP8 attention needs a CUDA GPU"
    if torch.cuda.get_device_capability(device) != (9, 0):
        return "FP8 attention is built for Hopper GPUs (compute capability 9.0, e.g. H100/H200)"
    try:
        import cudnn  # noqa: F401 - the nvidia-cudnn-frontend package
    except ImportError:
        return "FP8 attention needs the cuDNN frontend: pip install nvidia-cudnn-frontend"
    return None


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x scaled to e4m3's range, in float8_e4m3fn and x's strides; descale [1, 1, 1, 1] float32 = amax / 448)."""
    low, high = torch.aminmax(x)
    amax = torch.maximum(-low, high).float().clamp(min=1e-12)
    scaled = torch.empty_like(x, dtype=torch.float8_e4m3fn)
    scaled.copy_(x * (E4M3_MAX / amax).to(x.dtype))
    return scaled, (amax / E4M3_MAX).reshape(1, 1, 1, 1)


def _handle(device: torch.device):
    import cudnn

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _handles:
        with torch.cuda.device(index):
            _handles[index] = cudnn.create_handle()
    cudnn.set_stream(handle=_handles[index], stream=torch.cuda.current_stream(index).cuda_stream)
    return _handles[index]


def _build(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, scale: float, stats: bool, handle):
    import cudnn

    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
    tensors = {
        name: graph.tensor(name=name, dim=list(t.shape), stride=list(t.stride()), data_type=e4m3)
        for name, t in (("q", q), ("k", k), ("v", v))
    }
    for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
        tensors[name] = graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=fp32)
    o, lse, amax_s, amax_o = graph.sdpa_fp8(
        **{name: tensors[name] for name in tensors},
        generate_stats=stats,
        attn_scale=scale,
        use_causal_mask=False,
        name="fp8_attention",
    )
    o.set_output(True).set_dim(list(out.shape)).set_stride(list(out.stride())).set_data_type(e4m3)
    for amax in (amax_s, amax_o):
        amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
    tensors |= {"o": o, "amax_s": amax_s, "amax_o": amax_o}
    if stats:
        batch, heads, tokens, _ = q.shape
        lse.set_output(True).set_dim([batch, heads, tokens, 1]).set_stride([heads * tokens, tokens, 1, 1])
        lse.set_data_type(fp32)
        tensors["lse"] = lse
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    return graph, tensors, graph.get_workspace_size()


def fp8_attention_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, with_lse: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention in FP8. q, k, v: [B, H, N, D] bf16/fp16 (any strides, D contiguous).

    Returns (out [B, H, Nq, D] in q's dtype, stored as [B, Nq, H, D]; natural-log log-sum-exp [B, H, Nq] float32
    of the scaled scores, or None without ``with_lse``).
    """
    batch, heads, tokens, dim = q.shape
    q8, descale_q = quantize(q)
    k8, descale_k = quantize(k)
    v8, descale_v = quantize(v)
    out8 = torch.empty(batch, tokens, heads, dim, device=q.device, dtype=torch.float8_e4m3fn).transpose(1, 2)
    handle = _handle(q.device)
    key = (q.device, scale, with_lse) + tuple((t.shape, t.stride()) for t in (q8, k8, v8, out8))
    if key not in _graphs:
        _graphs[key] = _build(q8, k8, v8, out8, scale, with_lse, handle)
    graph, tensors, workspace_size = _graphs[key]
    scalars = torch.tensor([1.0 / E4M3_MAX, E4M3_MAX], device=q.device).reshape(2, 1, 1, 1, 1)
    amax = torch.empty(2, 1, 1, 1, 1, device=q.device)
    pack = {
        tensors["q"]: q8,
        tensors["k"]: k8,
        tensors["v"]: v8,
        tensors["descale_q"]: descale_q,
        tensors["descale_k"]: descale_k,
        tensors["descale_v"]: descale_v,
        tensors["descale_s"]: scalars[0],
        tensors["scale_s"]: scalars[1],
        tensors["scale_o"]: 1.0 / descale_v,
        tensors["o"]: out8,
        tensors["amax_s"]: amax[0],
        tensors["amax_o"]: amax[1],
    }
    lse = None
    if with_lse:
        lse = torch.empty(batch, heads, tokens, 1, device=q.device, dtype=torch.float32)
        pack[tensors["lse"]] = lse
    workspace = torch.empty(max(workspace_size, 1), device=q.device, dtype=torch.uint8)
    graph.execute(pack, workspace, handle=handle)
    out = out8.to(q.dtype).mul_(descale_v.reshape(()).to(q.dtype))
    return out, (lse.reshape(batch, heads, tokens) if with_lse else None)


def reference_check(tokens: int = 4096, device: str = "cuda", seed: int = 0) -> float:
    """Relative error ||fp8 - exact|| / ||exact|| of one [1, 16, tokens, 64] attention (a quick device check)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(1, 16, tokens, 64, device=device, generator=generator).bfloat16() for _ in range(3))
    scale = 1 / math.sqrt(64)
    exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale)
    fast, _ = fp8_attention_with_lse(q, k, v, scale, with_lse=False)
    return ((fast.float() - exact).norm() / exact.norm()).item()
