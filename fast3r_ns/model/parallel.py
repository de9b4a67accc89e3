"""Sequence parallelism on one host: each rank encodes its own views, the decoder's global attention is computed
exactly over the tokens of all ranks with torch.distributed, and each rank runs the heads on its own views.

Only attention mixes tokens of different views (the decoder's linear layers, norms and MLPs act per token), so
splitting the views across ranks and exchanging keys and values is exact. Two methods:

* ``"allgather"`` (default): ``torch.distributed.all_gather_into_tensor`` (``all_gather_single`` since torch 2.14)
  of each layer's keys and values, then one SDPA call of the rank's queries over all keys (the all-gather rotation
  of PyTorch's context parallelism, fused into one attention call). Transient memory per layer: K and V of all
  tokens (2 x tokens x 1024 x 2 bytes in bf16, 6 GB at 2000 views of 512x384); communication is small against the
  quadratic attention.
* ``"ring"``: PyTorch's own context-parallel ring attention (``_templated_ring_attention`` of
  ``torch.distributed.tensor.experimental``, all-to-all rotation of K/V blocks, log-sum-exp merge of partial
  SDPA results); needs the same number of tokens on every rank (falls back to ``"allgather"`` otherwise).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.distributed as dist

from .attention import AttentionOptions
from .attention import attention as local_attention
from .fast3r import OUTPUT_KEYS, Output

Method = Literal["allgather", "ring"]


def split_views(tokens_per_view: Sequence[int], world_size: int) -> list[range]:
    """Contiguous view ranges, one per rank, with about the same number of tokens each (every rank >= 1 view)."""
    count = len(tokens_per_view)
    if count < world_size:
        raise ValueError(f"{count} views cannot be split over {world_size} ranks (one view per rank at least)")
    cumulative = torch.tensor(tokens_per_view, dtype=torch.float64).cumsum(0)
    bounds = [0]
    for rank in range(1, world_size):
        cut = int(torch.searchsorted(cumulative, cumulative[-1] * rank / world_size)) + 1  # views of ranks < rank
        bounds.append(min(max(cut, bounds[-1] + 1), count - (world_size - rank)))
    bounds.append(count)
    return [range(bounds[r], bounds[r + 1]) for r in range(world_size)]


class SequenceParallel:
    """Exact attention of this rank's queries over the keys and values of all ranks (set on decoder blocks)."""

    def __init__(self, group: dist.ProcessGroup | None = None, method: Method = "allgather") -> None:
        if method not in ("allgather", "ring"):
            raise ValueError(f"unknown sequence-parallel method {method!r}")
        self.group = group or dist.group.WORLD
        self.method = method
        self.world_size = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.tokens_per_rank: list[int] = []
        """Tokens (per batch item) held by each rank in the current forward; set by ``parallel_forward``."""

    def attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, options: AttentionOptions
    ) -> torch.Tensor:
        """q, k, v: [B, heads, N_rank, head_dim] of this rank -> [B, heads, N_rank, head_dim]; ``options`` apply to
        the all-gather method's local attention call."""
        if self.method == "ring" and len(set(self.tokens_per_rank)) == 1:
            return self._ring(q, k, v, scale)
        keys, values = self._gather_kv(k, v)
        return local_attention(q, keys, values, scale, options)

    def _gather_kv(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' keys and values in rank order, [B, heads, N_total, head_dim] each (strided views)."""
        counts = self.tokens_per_rank
        longest = max(counts)
        local = torch.stack((k, v)).permute(3, 0, 1, 2, 4)  # token-major [N_rank, 2, B, heads, head_dim]
        if local.shape[0] < longest:
            local = torch.cat((local, local.new_zeros(longest - local.shape[0], *local.shape[1:])))
        local = local.contiguous()
        gathered = local.new_empty(self.world_size * longest, *local.shape[1:])
        all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.14
        all_gather(gathered, local, group=self.group)
        if len(set(counts)) > 1:  # drop the padding
            gathered = torch.cat([gathered[r * longest : r * longest + n] for r, n in enumerate(counts)])
        full = gathered.permute(1, 2, 3, 0, 4)  # [2, B, heads, N_total, head_dim]
        return full[0], full[1]

    def _ring(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        from torch.distributed.tensor.experimental import _attention as context_parallel

        options = context_parallel._cp_options
        saved = (options.enable_load_balance, options.rotate_method)
        options.enable_load_balance = False  # load balancing is for causal masks; ours is full attention
        options.rotate_method = context_parallel._RotateMethod.ALL_TO_ALL
        aten = torch.ops.aten
        if not q.is_cuda:
            op, kwargs = aten._scaled_dot_product_flash_attention_for_cpu, {"dropout_p": 0.0}
        elif q.dtype == torch.float32:
            op, kwargs = aten._scaled_dot_product_efficient_attention, {"attn_bias": None, "compute_log_sumexp": True}
        else:
            op = aten._scaled_dot_product_cudnn_attention
            kwargs = {"attn_bias": None, "compute_log_sumexp": True, "dropout_p": 0.0, "return_debug_mask": False}
        ring = context_parallel._templated_ring_attention
        first = next(iter(inspect.signature(ring).parameters))
        where = self.group
        if first == "mesh":  # older releases take a one-dimensional DeviceMesh
            from torch.distributed.device_mesh import DeviceMesh

            where = DeviceMesh.from_group(self.group, q.device.type)
        try:
            out = ring(where, 2, op, q.contiguous(), k, v, is_causal=False, scale=scale, **kwargs)[0]
        finally:
            options.enable_load_balance, options.rotate_method = saved
        return out

    @contextlib.contextmanager
    def attached(self, decoder: torch.nn.Module) -> Iterator[None]:
        """Route the attention of every block of ``decoder`` through this object for the duration."""
        blocks = [m for m in decoder.modules() if hasattr(m, "sequence_parallel")]
        for block in blocks:
            block.sequence_parallel = self
        try:
            yield
        finally:
            for block in blocks:
                block.sequence_parallel = None


def view_tokens(model: torch.nn.Module, views: Sequence[torch.Tensor]) -> list[int]:
    """Decoder tokens of each view (per batch item)."""
    patch = model.config.encoder.patch_size
    return [(v.shape[-2] // patch) * (v.shape[-1] // patch) for v in views]


@torch.inference_mode()
def parallel_forward(
    model: torch.nn.Module,
    views: Sequence[torch.Tensor],
    parallel: SequenceParallel,
    image_ids: torch.Tensor | None = None,
    local_views: Sequence[torch.Tensor] | None = None,
    output_device: torch.device | str | None = None,
) -> tuple[range, list[Output]]:
    """The forward of ``Fast3R`` over all ``views``, this rank computing its share; returns (its view range, their
    outputs, moved to ``output_device`` as ``Fast3R.forward`` does). Every rank must pass the same view shapes;
    ``views`` may be placeholders of the right shape for the other ranks' views when this rank's own tensors are
    passed as ``local_views``.
    """
    batch = views[0].shape[0]
    tokens = view_tokens(model, views)
    ranges = split_views(tokens, parallel.world_size)
    mine = ranges[parallel.rank]
    parallel.tokens_per_rank = [sum(tokens[i] for i in r) for r in ranges]
    ids = model.view_ids(len(views), batch, image_ids)[:, mine.start : mine.stop]
    own = list(local_views) if local_views is not None else [views[i] for i in mine]
    device = next(model.parameters()).device
    own = model.prepare([v.to(device, model.dtype) for v in own])
    features = model.encode(own)
    with parallel.attached(model.decoder):
        hooked = model.decode(features, ids)
    del features
    return mine, model.heads(own, hooked, output_device)


def gather_outputs(
    mine: range,
    outputs: list[Output],
    shapes: Sequence[torch.Size],
    ranges: Sequence[range],
    group: dist.ProcessGroup | None = None,
    device: torch.device | str = "cpu",
) -> list[Output] | None:
    """All views' outputs on rank 0 (on its CPU, float32), sent view by view; None on the other ranks.

    shapes: the [B, 3, H, W] shape of every view; ranges: ``split_views`` of all ranks; device: where this rank's
    communication buffers live (its GPU with NCCL, the CPU with gloo).
    """
    group = group or dist.group.WORLD
    rank = dist.get_rank(group)
    if rank != 0:
        for output in outputs:
            requests = [dist.isend(output[k].float().to(device).contiguous(), 0, group=group) for k in OUTPUT_KEYS]
            for request in requests:
                request.wait()
        return None
    result: list[Output | None] = [None] * len(shapes)
    for view, output in zip(mine, outputs):
        result[view] = {k: output[k].float().cpu() for k in OUTPUT_KEYS}
    for source, views in enumerate(ranges):
        if source == 0:
            continue
        for view in views:
            batch, _, height, width = shapes[view]
            buffers = {
                k: torch.empty(
                    (batch, height, width, 3) if k.startswith("pts3d") else (batch, height, width), device=device
                )
                for k in OUTPUT_KEYS
            }
            requests = [dist.irecv(buffers[k], dist.get_global_rank(group, source), group=group) for k in OUTPUT_KEYS]
            for request in requests:
                request.wait()
            result[view] = {k: b.cpu() for k, b in buffers.items()}
    return result  # type: ignore[return-value]
