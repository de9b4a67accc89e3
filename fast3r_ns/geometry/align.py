"""Similarity fits between point sets (batched weighted Umeyama) and the official local-to-global alignment."""

from __future__ import annotations

import torch


def umeyama(
    source: torch.Tensor,  # [..., N, 3]
    target: torch.Tensor,  # [..., N, 3]
    weights: torch.Tensor | None = None,  # [..., N] >= 0; None = all ones
    with_scale: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted least-squares similarity minimising sum w * |s R source + t - target|^2, batched over leading dims.

    Returns (scale [...], rotation [..., 3, 3] proper, translation [..., 3]) in float64. Batches whose weights sum to
    zero get NaN (the caller decides what an unusable fit means).
    """
    source, target = source.double(), target.double()
    weights = torch.ones(source.shape[:-1], dtype=torch.float64, device=source.device) if weights is None else weights
    weights = weights.double()
    total = weights.sum(-1, keepdim=True)  # [..., 1]
    norm_w = weights / total  # NaN where total is zero
    mean_source = (norm_w[..., None] * source).sum(-2)  # [..., 3]
    mean_target = (norm_w[..., None] * target).sum(-2)
    centered_source = source - mean_source[..., None, :]
    centered_target = target - mean_target[..., None, :]
    covariance = torch.einsum("...n,...ni,...nj->...ij", norm_w, centered_target, centered_source)  # [..., 3, 3]
    covariance = torch.nan_to_num(covariance)
    u, singular, vh = torch.linalg.svd(covariance)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    correction = torch.ones_like(singular)
    correction[..., 2] = sign
    rotation = u @ (correction[..., :, None] * vh)
    if with_scale:
        variance = (norm_w * centered_source.square().sum(-1)).sum(-1)
        scale = (singular * correction).sum(-1) / variance
    else:
        scale = torch.ones_like(total[..., 0])
    translation = mean_target - scale[..., None] * (rotation @ mean_source[..., None])[..., 0]
    bad = ~(total[..., 0] > 0)
    scale = torch.where(bad, torch.nan, scale)
    return scale, rotation, translation


def apply_similarity(
    points: torch.Tensor,  # [..., N, 3]
    scale: torch.Tensor,  # [...]
    rotation: torch.Tensor,  # [..., 3, 3]
    translation: torch.Tensor,  # [..., 3]
) -> torch.Tensor:
    """s R x + t for every point, in the dtype of ``points``."""
    dtype = points.dtype
    out = scale[..., None, None].to(dtype) * (points @ rotation.to(dtype).transpose(-1, -2))
    return out + translation[..., None, :].to(dtype)


def align_local_to_global_official(
    local: torch.Tensor,  # [H, W, 3] points of one view in its own camera frame
    world: torch.Tensor,  # [H, W, 3] the same pixels in the global (view 0) frame
    conf: torch.Tensor,  # [H, W] global-head confidence
    percentile: float = 85.0,
    valid: torch.Tensor | None = None,  # [H, W] bool, optional extra mask
) -> torch.Tensor:
    """Official-compatible local->global alignment (spec section 7A): unweighted similarity on the pixels whose
    confidence is >= the ``percentile`` quantile (linear interpolation); with fewer than 3 such pixels the valid
    mask alone, and identity if still fewer than 3. Returns the aligned local points [H, W, 3] (dtype of ``local``).
    """
    threshold = torch.quantile(conf.reshape(-1).float(), percentile / 100.0)
    mask = conf >= threshold
    valid = torch.ones_like(mask) if valid is None else valid
    mask = mask & valid
    if mask.sum() < 3:
        mask = valid
    if mask.sum() < 3:
        return local.clone()
    scale, rotation, translation = umeyama(local[mask], world[mask])
    return apply_similarity(local.reshape(1, -1, 3), scale[None], rotation[None], translation[None]).reshape(
        local.shape
    )
