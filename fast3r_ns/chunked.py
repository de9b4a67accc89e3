"""More views than one pass holds: overlapping passes that share anchor views, merged by robust similarity fits.

Each pass (one call of the inner predictor) sees the anchor views (view 0 first, then a few spread over the
sequence) and its own share of the other views, so its global pointmaps are in its first view's camera frame at
the pass's own scale. Pass k is brought into pass 0's frame by a confidence-weighted, outlier-rejecting similarity
(scale, rotation, translation) fitted on the anchor views' points, which every pass predicts. Anchors appear once
in the merged output (from pass 0); local pointmaps and confidences are passed through unchanged.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch

from .geometry.align import apply_similarity
from .geometry.robust import cauchy_similarity, masked_median
from .predictions import Output, Predictor

Progress = Callable[[str], None]

# Peak GPU memory of one pass of the released model (ViT-L/512) in bf16, measured on an H200 with SDPA (attention
# memory is linear in the number of tokens): 10.7 GiB at 256 views, 26.1 GiB at 1000 views with all outputs kept on
# the GPU, about 20 GiB at 1000 views when the outputs move to the CPU head chunk by head chunk (what
# Fast3RPredictor does). A linear fit through those numbers, rounded up to stay on the safe side:
PASS_FIXED_GIB = 7.5
"""Per-pass memory that does not grow with the views (weights 1.2 GiB, encoder chunk, head chunk), bf16."""
PASS_WEIGHTS_GIB = 1.2
"""Of which the weights of the released model in bf16 (already resident when a predictor asks for a limit)."""
PASS_BYTES_PER_TOKEN = 20 * 1024
"""Memory per decoder token (768 tokens per 512x384 view) with outputs moved to the CPU, bf16."""
OUTPUT_BYTES_PER_TOKEN = 8 * 1024
"""Extra memory per token when the outputs stay on the GPU (4 float32 maps of 8 channels per 16x16 patch)."""


def estimate_pass_gib(
    views: int, tokens_per_view: float = 768, outputs_on_gpu: bool = False, itemsize: int = 2
) -> float:
    """Estimated peak GPU memory (GiB) of one pass of the released model over ``views`` views.

    11.3 GiB at 256 views and 22.2 GiB at 1000 views of 512x384 (outputs to the CPU; measured ~9.1 and ~20);
    28.0 GiB at 1000 views with outputs on the GPU (measured 26.1): on the safe side by 7-25 %.
    ``itemsize`` 4 for fp32 doubles everything.
    """
    per_token = PASS_BYTES_PER_TOKEN + (OUTPUT_BYTES_PER_TOKEN if outputs_on_gpu else 0)
    return (PASS_FIXED_GIB + views * tokens_per_view * per_token / 2**30) * itemsize / 2


def free_gpu_gib(device: torch.device) -> float:
    """GiB a pass can still use on ``device``: free memory plus what PyTorch's allocator caches unused."""
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return (free + cached) / 2**30


def views_per_pass_for_memory(
    free_gib: float, tokens_per_view: float = 768, itemsize: int = 2, weights_resident: bool = True, margin: float = 0.9
) -> int:
    """The most views one pass may hold in ``free_gib`` of GPU memory (outputs moved to the CPU), at least 2.

    free_gib: what the allocator can still get (free device memory plus torch's cached free blocks);
    weights_resident: the weights are already loaded, so they are not counted against ``free_gib``.
    """
    fixed = PASS_FIXED_GIB - (PASS_WEIGHTS_GIB if weights_resident else 0.0)
    budget = margin * free_gib * 2 / itemsize - fixed
    return max(2, int(budget * 2**30 / (tokens_per_view * PASS_BYTES_PER_TOKEN)))


@dataclass
class ChunkFit:
    """How well one pass was brought into pass 0's frame (pass 0 itself: the identity, residual 0)."""

    chunk: int
    """Index of the pass."""
    views: int
    """Views in the pass, anchors included."""
    anchor_points: int
    """Anchor pixels the similarity was fitted on (0 for pass 0)."""
    inlier_fraction: float
    """Confidence-weighted fraction of those within 3 robust sigmas after the fit."""
    residual_rel: float
    """Median distance between the moved and the reference anchor points, relative to the scene size."""
    scale: float
    """Scale of the fitted similarity (pass k units -> pass 0 units)."""
    rotation_deg: float
    """Angle of its rotation."""
    seconds: float
    """Time of the pass (predictor call) plus its merge."""
    merge_seconds: float = 0.0
    """Time of the fit and of moving the pass's points."""
    ok: bool = True
    """False when the fit is poor (residual above ``max_residual`` or inliers below ``min_inlier_fraction``)."""

    def as_dict(self) -> dict:
        return asdict(self)


def plan_chunks(
    num_views: int,
    max_views_per_pass: int,
    num_anchors: int = 8,
    order: Literal["interleaved", "contiguous"] = "interleaved",
) -> tuple[list[int], list[list[int]]]:
    """Anchors and passes: every pass is ``anchors + own views`` (view 0 first), each view in exactly one pass.

    The anchors are view 0 plus views spread evenly over the sequence; at most a quarter of a pass is anchors.
    ``order``: "interleaved" (default) gives pass k the views k, k+K, k+2K, ... so every pass covers the whole
    sequence (each pass is a full, sparser reconstruction, which keeps the anchors consistent); "contiguous"
    gives each pass a consecutive block.
    """
    if max_views_per_pass < 2:
        raise ValueError(f"max_views_per_pass must be at least 2, got {max_views_per_pass}")
    if num_views <= max_views_per_pass:
        return [0], [list(range(num_views))]
    count = max(1, min(num_anchors, max_views_per_pass // 4))
    anchors = sorted({int(round(x)) for x in np.linspace(0, num_views - 1, count + 1)[:-1]})
    others = [v for v in range(num_views) if v not in set(anchors)]
    per_pass = max_views_per_pass - len(anchors)
    passes = math.ceil(len(others) / per_pass)
    if order == "interleaved":
        groups = [others[k::passes] for k in range(passes)]
    elif order == "contiguous":
        groups = [list(g) for g in np.array_split(np.array(others), passes)]
    else:
        raise ValueError(f"unknown chunk order {order!r}")
    return anchors, [anchors + [int(v) for v in group] for group in groups]


class ChunkedPredictor:
    """A Predictor over an inner Predictor, in passes of at most ``max_views_per_pass`` views sharing anchors.

    Returns one dict per input view with every global pointmap in pass 0's frame (view 0's camera, pass 0's
    scale), so the cameras and points code runs unchanged. ``report`` holds one ``ChunkFit`` per pass after a
    call; a poor fit also raises a ``RuntimeWarning``.
    """

    def __init__(
        self,
        inner: Predictor,
        max_views_per_pass: int,
        num_anchors: int = 8,
        order: Literal["interleaved", "contiguous"] = "interleaved",
        fit_points: int = 50_000,
        iterations: int = 6,
        max_residual: float = 0.05,
        min_inlier_fraction: float = 0.5,
        progress: Progress | None = None,
    ) -> None:
        self.inner = inner
        self.max_views_per_pass = max_views_per_pass
        self.num_anchors = num_anchors
        self.order = order
        self.fit_points = fit_points
        """Anchor pixels (a regular grid subsample over all anchors) used per fit. Default is 50_000."""
        self.iterations = iterations
        """Cauchy reweighting rounds of the robust fit. Default is 6."""
        self.max_residual = max_residual
        """A fit is poor above this median anchor residual, as a fraction of the scene size (it includes the
        pointmaps' own disagreement between passes: ~2 % for 3 % depth noise). Default is 0.05."""
        self.min_inlier_fraction = min_inlier_fraction
        """A fit is poor below this weighted inlier fraction. Default is 0.5."""
        self.progress = progress
        self.report: list[ChunkFit] = []

    @property
    def chunk_report(self) -> list[ChunkFit]:
        return self.report

    def __call__(self, views: list[torch.Tensor]) -> list[Output]:
        anchors, passes = plan_chunks(len(views), self.max_views_per_pass, self.num_anchors, self.order)
        outputs: list[Output | None] = [None] * len(views)
        reference: list[Output] = []
        self.report = []
        for index, members in enumerate(passes):
            start = time.perf_counter()
            if self.progress:
                self.progress(
                    f"pass {index + 1}/{len(passes)}: {len(members)} views ({len(anchors)} shared anchor views)"
                )
            predicted = self.inner([views[i] for i in members])
            if len(predicted) != len(members):
                raise ValueError(f"the predictor returned {len(predicted)} outputs for {len(members)} views")
            if index == 0:
                reference = predicted[: len(anchors)]
                fit = ChunkFit(0, len(members), 0, 1.0, 0.0, 1.0, 0.0, 0.0)
            else:
                merge_start = time.perf_counter()
                fit = self._merge(predicted, reference, len(anchors))
                fit.chunk, fit.views = index, len(members)
                fit.merge_seconds = time.perf_counter() - merge_start
            fit.seconds = time.perf_counter() - start
            self.report.append(fit)
            own = len(anchors) if index else 0  # anchors come from pass 0 only
            for view, output in zip(members[own:], predicted[own:]):
                outputs[view] = output
            if index and self.progress:
                self.progress(
                    f"pass {index + 1}/{len(passes)} merged: scale {fit.scale:.3g}, anchor residual "
                    f"{fit.residual_rel:.2%} of the scene, {fit.inlier_fraction:.0%} inliers"
                )
            if not fit.ok:
                warnings.warn(poor_fit_message(fit), RuntimeWarning, stacklevel=2)
        return outputs  # type: ignore[return-value]

    def _merge(self, predicted: list[Output], reference: list[Output], num_anchors: int) -> ChunkFit:
        """Fit pass -> pass 0 on the anchors and move the pass's global pointmaps (in place)."""
        source, target, weights, depth = _anchor_points(predicted[:num_anchors], reference, self.fit_points)
        scale, rotation, translation, stats = robust_similarity(source, target, weights, depth, self.iterations)
        for output in predicted[num_anchors:]:
            points = output["pts3d_in_other_view"]  # [B, H, W, 3]
            moved = apply_similarity(points.reshape(points.shape[0], -1, 3).double(), scale, rotation, translation)
            output["pts3d_in_other_view"] = moved.to(points.dtype).reshape(points.shape)
        angle = float(torch.rad2deg(torch.arccos(((rotation[0].trace() - 1) / 2).clamp(-1, 1))))
        fit = ChunkFit(
            chunk=-1,
            views=-1,
            anchor_points=int(stats["points"]),
            inlier_fraction=float(stats["inlier_fraction"]),
            residual_rel=float(stats["residual_rel"]),
            scale=float(scale[0]),
            rotation_deg=angle,
            seconds=0.0,
        )
        fit.ok = bool(
            math.isfinite(fit.residual_rel)
            and fit.residual_rel <= self.max_residual
            and fit.inlier_fraction >= self.min_inlier_fraction
            and fit.scale > 0
        )
        return fit


def poor_fit_message(fit: ChunkFit) -> str:
    return (
        f"pass {fit.chunk + 1} fits the shared anchor views poorly (residual {fit.residual_rel:.2%} of the scene, "
        f"{fit.inlier_fraction:.0%} inliers over {fit.anchor_points} points): its cameras may be off; try a larger "
        "--max-views-per-pass"
    )


def _anchor_points(
    moving: Sequence[Output], reference: Sequence[Output], fit_points: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Corresponding anchor pixels [B, N, 3] of a pass and of pass 0, weights log(conf) * log(conf_ref) [B, N] and
    each pixel's distance from its own camera over the view's median one [B, N] (pointmap errors grow with it)."""
    pixels = sum(o["conf"].shape[-2] * o["conf"].shape[-1] for o in moving)
    stride = max(1, int(math.floor(math.sqrt(pixels / max(1, fit_points)))))
    sources, targets, weights, depths = [], [], [], []
    for new, old in zip(moving, reference):
        grid = (slice(None), slice(stride // 2, None, stride), slice(stride // 2, None, stride))
        batch = new["conf"].shape[0]
        sources.append(new["pts3d_in_other_view"][grid].reshape(batch, -1, 3))
        targets.append(old["pts3d_in_other_view"][grid].reshape(batch, -1, 3))
        log_conf = new["conf"][grid].float().log().clamp_min(0) * old["conf"][grid].float().log().clamp_min(0)
        weights.append(log_conf.reshape(batch, -1))
        distance = old["pts3d_local"][grid].double().norm(dim=-1).reshape(batch, -1)
        depths.append(distance / distance.nanmedian(dim=-1, keepdim=True).values)
    return tuple(torch.cat(parts, 1).double() for parts in (sources, targets, weights, depths))


def robust_similarity(
    source: torch.Tensor,  # [B, N, 3]
    target: torch.Tensor,  # [B, N, 3]
    weights: torch.Tensor,  # [B, N] >= 0
    distance: torch.Tensor | None = None,  # [B, N] > 0, relative noise level of each point; None = all ones
    iterations: int = 6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """target ~ s R source + t by weighted Umeyama (symmetric scale: both sides are predictions) and Cauchy IRLS on
    residual / distance (scale 1.4826 * median), with weights / distance^2 (errors that grow with the depth of a
    pixel, as a pointmap's do).

    Returns (scale [B], rotation [B, 3, 3], translation [B, 3]) in float64 and statistics of batch item 0:
    ``points`` (usable points), ``inlier_fraction`` (weighted, within 3 sigmas), ``residual_rel`` (median residual
    over the robust extent of the target points: the norm of their 2nd-98th percentile box).
    """
    distance = torch.ones_like(weights) if distance is None else distance
    usable = (weights > 0) & torch.isfinite(source).all(-1) & torch.isfinite(target).all(-1)
    usable &= torch.isfinite(distance) & (distance > 0)
    source = torch.where(usable[..., None], source, torch.zeros_like(source))
    target = torch.where(usable[..., None], target, torch.zeros_like(target))
    distance = torch.where(usable, distance, torch.ones_like(distance))
    base = torch.where(usable, weights / distance.square(), torch.zeros_like(weights))
    fit = cauchy_similarity(source, target, base, usable, distance, iterations, symmetric_scale=True, sigma_floor=1e-12)
    kept = target[0][usable[0]]
    if len(kept):
        low, high = torch.quantile(kept, torch.tensor([0.02, 0.98], dtype=kept.dtype), dim=0)
        size = float((high - low).norm())
    else:
        size = float("nan")
    stats = {
        "points": float(usable[0].sum()),
        "inlier_fraction": float(fit.inlier_fraction[0]),
        "residual_rel": float(masked_median(fit.residual, usable)[0]) / size if size > 0 else float("inf"),
    }
    return fit.scale, fit.rotation, fit.translation, stats


def chunked_if_needed(
    predictor: Predictor,
    views: Sequence[torch.Tensor],
    max_views_per_pass: int | None = None,
    num_anchors: int = 8,
    progress: Progress | None = None,
) -> Predictor:
    """``predictor`` itself when all views fit one pass, else a ``ChunkedPredictor`` over it.

    max_views_per_pass: None asks the predictor (a ``max_views_per_pass(views)`` method, as on
    ``Fast3RPredictor``: from the free GPU memory, None on the CPU = no limit).
    """
    if isinstance(predictor, ChunkedPredictor):
        return predictor
    limit = max_views_per_pass
    if limit is None and hasattr(predictor, "max_views_per_pass"):
        limit = predictor.max_views_per_pass(list(views))
    if limit is None or len(views) <= limit:
        return predictor
    if progress:
        anchors, passes = plan_chunks(len(views), limit, num_anchors)
        progress(f"{len(views)} views in {len(passes)} passes of at most {limit} ({len(anchors)} shared anchor views)")
    return ChunkedPredictor(predictor, limit, num_anchors, progress=progress)


def summary_lines(report: Sequence[ChunkFit | dict]) -> list[str]:
    """Lines for the command-line summary: the passes and the quality of their merge (empty for one pass)."""
    report = [fit if isinstance(fit, ChunkFit) else ChunkFit(**fit) for fit in report]
    if len(report) < 2:
        return []
    merged = report[1:]
    worst = max(merged, key=lambda f: f.residual_rel)
    lines = [
        f"Chunked: {len(report)} passes of at most {max(f.views for f in report)} views; anchor fit residual median "
        f"{float(np.median([f.residual_rel for f in merged])):.2%} of the scene size (worst pass {worst.chunk + 1}: "
        f"{worst.residual_rel:.2%}, {worst.inlier_fraction:.0%} inliers over {worst.anchor_points} points)"
    ]
    lines += [f"[yellow]{poor_fit_message(f)}" for f in merged if not f.ok]
    return lines
