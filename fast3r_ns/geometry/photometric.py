"""Photometric correction of track observations: each observation moves to where its image matches the track's
reference observation.

For every track the most confident observation is the reference; around each other observation a patch of the
reference image, warped by the affine map that the reference pointmap and the current cameras predict, is searched
by normalised cross-correlation over integer offsets (a parabola fit gives the sub-pixel peak), then refined by
Lucas-Kanade with gain and bias. Observations with a weak or bordering peak, a low final correlation or too little
texture are rejected. Grey images, all views in one flat buffer, bilinear sampling; vectorised over observations in
chunks (torch, CPU). Pixels: continuous NETWORK-image coordinates (``fast3r_ns.geometry.conventions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .tracks import Tracks, local_affine


@dataclass
class MatchOptions:
    """Patch matching of ``match_observations``."""

    patch_radius: int = 4
    """Patches of (2 r + 1)^2 network pixels. Default is 4."""
    search_radius: int = 8
    """Integer offsets searched around the predicted pixel on the coarsest level, in its reference pixels
    (peaks on the border are rejected). Default is 8 (16 network pixels with two levels)."""
    epipolar_band: int = 3
    """With epipolar directions: offsets searched across the line on the coarsest level. Default is 3."""
    fine_search_radius: int = 2
    """Integer offsets searched around the previous level's peak on the finer levels. Default is 2."""
    levels: int = 2
    """Pyramid levels (each halves the images). Default is 2."""
    min_margin: float = 3.0
    """Uniqueness: the second best local maximum's 1 - NCC must be at least this many times the best one's.
    Default is 3.0."""
    lk_iterations: int = 4
    """Lucas-Kanade (translation, gain, bias) iterations after the search. Default is 4."""
    min_ncc: float = 0.85
    """Least normalised cross-correlation of the final patches. Default is 0.85."""
    min_gradient: float = 0.02
    """Least root-mean-square image gradient (grey in [-1, 1] per pixel) along the weakest direction of the
    reference patch: rejects flat and edge-only patches. Default is 0.02."""
    max_refine_shift: float = 1.0
    """Lucas-Kanade may move the correlation peak at most this far (pixels). Default is 1.0."""
    chunk: int = 8192
    """Observations per vectorised chunk (bounds memory). Default is 8192."""


@dataclass
class GreyImages:
    """Grey images of all views in one flat buffer, with central-difference gradients."""

    values: torch.Tensor  # [N] float32
    grad_x: torch.Tensor  # [N]
    grad_y: torch.Tensor  # [N]
    start: torch.Tensor  # [V] int64, offset of each view in the buffers
    width: torch.Tensor  # [V] int64
    height: torch.Tensor  # [V] int64


def grey_pyramid(tensors: Sequence[torch.Tensor], levels: int = 2) -> list[GreyImages]:
    """[1, 3, H, W] network inputs (any range) -> ``GreyImages`` (mean of the channels) at full resolution, then
    halved ``levels - 1`` times (2 x 2 means; a continuous pixel x of one level is x / 2 on the next)."""
    greys = [tensor.reshape(-1, *tensor.shape[-3:])[0].float().mean(0).cpu() for tensor in tensors]
    pyramid = [grey_images(greys)]
    for _ in range(levels - 1):
        greys = [F.avg_pool2d(grey[None, None], 2, ceil_mode=True)[0, 0] for grey in greys]
        pyramid.append(grey_images(greys))
    return pyramid


def grey_images(greys: Sequence[torch.Tensor]) -> GreyImages:
    """Grey images [H, W] -> ``GreyImages``."""
    values, grad_x, grad_y, widths, heights = [], [], [], [], []
    for grey in greys:
        padded = F.pad(grey[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
        values.append(grey.reshape(-1))
        grad_x.append((0.5 * (padded[1:-1, 2:] - padded[1:-1, :-2])).reshape(-1))
        grad_y.append((0.5 * (padded[2:, 1:-1] - padded[:-2, 1:-1])).reshape(-1))
        heights.append(grey.shape[0])
        widths.append(grey.shape[1])
    sizes = torch.tensor([h * w for h, w in zip(heights, widths)], dtype=torch.int64)
    start = torch.cumsum(sizes, 0) - sizes
    return GreyImages(
        torch.cat(values),
        torch.cat(grad_x),
        torch.cat(grad_y),
        start,
        torch.tensor(widths, dtype=torch.int64),
        torch.tensor(heights, dtype=torch.int64),
    )


def sample(images: GreyImages, buffers: Sequence[torch.Tensor], view: torch.Tensor, xy: torch.Tensor):
    """Bilinear samples of ``buffers`` (flat, like ``images.values``) of views ``view`` [n] at continuous pixels
    ``xy`` [n, m, 2] (pixel centres at +0.5, edges clamped). Returns the samples [n, m] per buffer and [n, m] bool,
    True inside the image."""
    width = images.width[view][:, None].to(xy.dtype)
    height = images.height[view][:, None].to(xy.dtype)
    x, y = xy[..., 0] - 0.5, xy[..., 1] - 0.5
    inside = (x >= 0) & (y >= 0) & (x <= width - 1) & (y <= height - 1)
    x = torch.minimum(x.clamp(min=0), width - 1.0)
    y = torch.minimum(y.clamp(min=0), height - 1.0)
    x0 = x.floor().clamp(max=width - 2).clamp(min=0)
    y0 = y.floor().clamp(max=height - 2).clamp(min=0)
    fx, fy = x - x0, y - y0
    stride = images.width[view][:, None]
    base = images.start[view][:, None] + y0.long() * stride + x0.long()
    corners = (base, base + 1, base + stride, base + stride + 1)
    weights = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
    out = []
    for buffer in buffers:
        out.append(sum(w * buffer[c] for w, c in zip(weights, corners)))
    return out, inside


def corner_score(grey: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """[H, W] mean squared image gradient along the weakest direction over the (2 r + 1)^2 patch around each pixel
    (the smaller eigenvalue of the structure tensor, Shi-Tomasi); -inf where the patch leaves the image."""
    padded = F.pad(grey[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    gx = 0.5 * (padded[1:-1, 2:] - padded[1:-1, :-2])
    gy = 0.5 * (padded[2:, 1:-1] - padded[:-2, 1:-1])
    size = 2 * radius + 1
    gxx, gyy, gxy = (F.avg_pool2d(g[None, None], size, stride=1)[0, 0] for g in (gx * gx, gy * gy, gx * gy))
    weakest = 0.5 * (gxx + gyy) - torch.sqrt(0.25 * (gxx - gyy) ** 2 + gxy**2)
    out = torch.full(grey.shape, float("-inf"))
    out[radius + 1 : grey.shape[0] - radius - 1, radius + 1 : grey.shape[1] - radius - 1] = weakest[1:-1, 1:-1]
    return out


def reference_rows(tracks: Tracks) -> np.ndarray:
    """[T] row of each track's reference observation: its most confident one."""
    track = tracks.track
    order = np.lexsort((-tracks.confidence, track))
    return order[tracks.offsets[:-1]]


def patch_warps(
    tracks: Tracks,
    reference: np.ndarray,  # [T] rows
    pointmaps: Sequence[torch.Tensor],  # per view [H, W, 3] global pointmap
    intrinsics: np.ndarray,  # [V, 4] NETWORK-image (fx, fy, cx, cy)
    cam_to_world: np.ndarray,  # [V, 4, 4]
    window: int = 4,
) -> np.ndarray:
    """[O, 2, 2] d(pixel of the observation) / d(pixel of its reference): the reference pointmap's local affine fit
    (robust) projected by the observation's camera. Identity where undefined."""
    track = tracks.track
    ref_row = reference[track]
    jacobian = np.full((len(tracks.view), 3, 2), np.nan)
    ref_jacobian = np.full((len(reference), 3, 2), np.nan)
    ref_view = tracks.view[reference]
    for view, pointmap in enumerate(pointmaps):
        mine = np.flatnonzero(ref_view == view)
        if len(mine):
            _, ref_jacobian[mine], _ = local_affine(pointmap, tracks.pixel[reference[mine]], window, robust=True)
    jacobian = ref_jacobian[track]
    world_to_cam = np.linalg.inv(cam_to_world)[tracks.view]
    point = tracks.points[track]
    cam = np.einsum("oij,oj->oi", world_to_cam[:, :3, :3], point) + world_to_cam[:, :3, 3]
    fx, fy = intrinsics[tracks.view, 0], intrinsics[tracks.view, 1]
    x, y, z = cam.T
    projection = np.zeros((len(cam), 2, 3))
    projection[:, 0, 0], projection[:, 0, 2] = fx / z, -fx * x / z**2
    projection[:, 1, 1], projection[:, 1, 2] = fy / z, -fy * y / z**2
    warp = projection @ world_to_cam[:, :3, :3] @ jacobian
    bad = ~np.isfinite(warp).all(axis=(1, 2)) | (z <= 0) | (ref_row == np.arange(len(ref_row)))
    scale = np.abs(np.linalg.det(np.where(bad[:, None, None], np.eye(2), warp)))
    bad |= (scale < 0.25) | (scale > 4.0)  # foreshortened too much for a small patch
    warp[bad] = np.eye(2)
    return warp


def project(points: np.ndarray, view: np.ndarray, intrinsics: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """[n, 2] pixels of world points [n, 3] in views [n] (intrinsics [V, 4] in the pixels wanted)."""
    world_to_cam = np.linalg.inv(cam_to_world)[view]
    cam = np.einsum("nij,nj->ni", world_to_cam[:, :3, :3], points) + world_to_cam[:, :3, 3]
    fx, fy, cx, cy = intrinsics[view].T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], axis=-1)


def epipolar_predictions(
    tracks: Tracks,
    reference: np.ndarray,  # [T] rows
    ref_points: np.ndarray,  # [T, 3] the reference observations' 3-D points
    intrinsics: np.ndarray,  # [V, 4] NETWORK-image
    cam_to_world: np.ndarray,  # [V, 4, 4]
) -> tuple[np.ndarray, np.ndarray]:
    """Each observation's predicted pixel (its reference point projected) [O, 2] and the unit direction of the
    reference ray's image, the epipolar line, there [O, 2] (NaN where undefined)."""
    track = tracks.track
    point = ref_points[track]
    ray = point - cam_to_world[tracks.view[reference][track], :3, 3]
    predicted = project(point, tracks.view, intrinsics, cam_to_world)
    direction = project(point + 0.01 * ray, tracks.view, intrinsics, cam_to_world) - predicted
    with np.errstate(divide="ignore", invalid="ignore"):
        direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    return predicted, direction


def match_observations(
    tracks: Tracks,
    pyramid: Sequence[GreyImages],  # from grey_pyramid
    warps: np.ndarray,  # [O, 2, 2]
    reference: np.ndarray,  # [T] rows
    options: MatchOptions | None = None,
    predicted: np.ndarray | None = None,  # [O, 2] where to search (default: the observations' pixels)
    epipolar: np.ndarray | None = None,  # [O, 2] unit epipolar directions: search a band along them
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [O, 2] where each observation's image best matches its reference patch (NaN where rejected; the
    references keep their pixel) and the final normalised cross-correlation [O] (1 for references)."""
    options = options or MatchOptions()
    track = tracks.track
    ref_row = reference[track]
    out = np.full_like(tracks.pixel, np.nan)
    score = np.zeros(len(track))
    out[reference], score[reference] = tracks.pixel[reference], 1.0
    rows = np.flatnonzero(ref_row != np.arange(len(track)))
    for begin in range(0, len(rows), options.chunk):
        chunk = rows[begin : begin + options.chunk]
        pixel, ncc = _match_chunk(
            pyramid,
            torch.from_numpy(tracks.view[ref_row[chunk]]),
            torch.from_numpy(tracks.pixel[ref_row[chunk]]).float(),
            torch.from_numpy(tracks.view[chunk]),
            torch.from_numpy((tracks.pixel if predicted is None else predicted)[chunk]).float(),
            torch.from_numpy(warps[chunk]).float(),
            options,
            None if epipolar is None else torch.from_numpy(epipolar[chunk]).float(),
        )
        out[chunk], score[chunk] = pixel.double().numpy(), ncc.double().numpy()
    return out, score


def _grid(radius: int) -> torch.Tensor:
    """[(2 r + 1)^2, 2] integer offsets (x, y), row-major."""
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def _zero_mean_unit(patch: torch.Tensor) -> torch.Tensor:
    centred = patch - patch.mean(-1, keepdim=True)
    return centred / centred.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def _ncc_search(
    images: GreyImages,
    ref_view: torch.Tensor,  # [n]
    ref_pixel: torch.Tensor,  # [n, 2] on this level
    view: torch.Tensor,  # [n]
    centre: torch.Tensor,  # [n, 2] on this level
    ref_warp: torch.Tensor,  # [n, 2, 2] reference patch pixel per patch offset
    frame: torch.Tensor,  # [n, 2, 2] target pixel per patch offset
    radius: int,
    search: tuple[int, int],  # (x, y) integer offsets searched
    min_margin: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlation of the reference patch (at ref_pixel + ref_warp d) with the target at centre + frame (d + s)
    over integer offsets s, a parabola through the peak's neighbours per axis. Returns the peak's pixel [n, 2] and
    [n] bool, False on the border or where another peak's 1 - NCC is within ``min_margin`` times the best one's."""
    size, count = 2 * radius + 1, len(view)
    (ref_patch,), _ = sample(images, (images.values,), ref_view, ref_pixel[:, None] + _grid(radius) @ ref_warp.mT)
    steps_x = torch.arange(-radius - search[0], radius + search[0] + 1, dtype=torch.float32)
    steps_y = torch.arange(-radius - search[1], radius + search[1] + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(steps_y, steps_x, indexing="ij")
    wide = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    (target,), _ = sample(images, (images.values,), view, centre[:, None] + wide @ frame.mT)
    target = target.reshape(1, count, len(steps_y), len(steps_x))
    kernel = _zero_mean_unit(ref_patch).reshape(count, 1, size, size)
    numerator = F.conv2d(target, kernel, groups=count)[0]  # [n, Sy, Sx]
    mean = F.avg_pool2d(target, size, stride=1)[0]
    energy = F.avg_pool2d(target**2, size, stride=1)[0]
    spread = ((energy - mean**2).clamp(min=0) * size * size).sqrt().clamp(min=1e-8)
    grid = numerator / spread
    side_y, side_x = grid.shape[1:]
    best = grid.reshape(count, -1).argmax(-1)
    by, bx = best // side_x, best % side_x
    ok = (bx > 0) & (bx < side_x - 1) & (by > 0) & (by < side_y - 1)
    bx, by = bx.clamp(1, side_x - 2), by.clamp(1, side_y - 2)
    at = torch.arange(count)
    peak = grid[at, by, bx]
    # Unique: no other local maximum (two or more offsets away) comes close.
    near = ((torch.arange(side_y)[None, :, None] - by[:, None, None]).abs() <= 1) & (
        (torch.arange(side_x)[None, None, :] - bx[:, None, None]).abs() <= 1
    )
    local_max = F.pad(F.max_pool2d(grid[None], 3, stride=1)[0] == grid[:, 1:-1, 1:-1], (1, 1, 1, 1))  # interior
    second = grid.masked_fill(near | ~local_max, float("-inf")).reshape(count, -1).max(-1).values
    ok &= (1.0 - second) >= min_margin * (1.0 - peak).clamp(min=1e-3)

    def vertex(minus: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        curvature = minus + plus - 2 * peak
        return torch.where(curvature < 0, 0.5 * (minus - plus) / curvature.clamp(max=-1e-8), 0.0).clamp(-0.5, 0.5)

    shift = torch.stack(
        [
            bx - search[0] + vertex(grid[at, by, bx - 1], grid[at, by, bx + 1]),
            by - search[1] + vertex(grid[at, by - 1, bx], grid[at, by + 1, bx]),
        ],
        dim=-1,
    ).float()
    return centre + (frame @ shift[..., None])[..., 0], ok


def _match_chunk(
    pyramid: Sequence[GreyImages],  # full resolution, then halved
    ref_view: torch.Tensor,  # [n]
    ref_pixel: torch.Tensor,  # [n, 2]
    view: torch.Tensor,  # [n]
    pixel: torch.Tensor,  # [n, 2] predicted
    warp: torch.Tensor,  # [n, 2, 2]
    options: MatchOptions,
    epipolar: torch.Tensor | None = None,  # [n, 2] unit direction of the epipolar line at the prediction
) -> tuple[torch.Tensor, torch.Tensor]:
    images = pyramid[0]
    radius, count = options.patch_radius, len(view)
    offsets = _grid(radius)
    (ref_patch, ref_gx, ref_gy), ref_inside = sample(
        images, (images.values, images.grad_x, images.grad_y), ref_view, ref_pixel[:, None] + offsets
    )
    # Texture: the weakest direction of the reference patch's structure tensor.
    gxx, gyy, gxy = (ref_gx**2).mean(-1), (ref_gy**2).mean(-1), (ref_gx * ref_gy).mean(-1)
    weakest = 0.5 * (gxx + gyy) - torch.sqrt(0.25 * (gxx - gyy) ** 2 + gxy**2)
    ok = ref_inside.all(-1) & (weakest > options.min_gradient**2)

    # Coarse to fine: a wide search on the halved images, a narrow one at full resolution. Along an epipolar
    # direction the search is a band: long along it, narrow across.
    found, identity = pixel, torch.eye(2).expand(count, 2, 2)
    if epipolar is None:
        ref_warp, frame = identity, warp
    else:
        frame = torch.stack([epipolar, torch.stack([-epipolar[:, 1], epipolar[:, 0]], -1)], dim=-1)
        ref_warp = torch.linalg.solve_ex(warp, frame)[0]
    for level in range(len(pyramid) - 1, -1, -1):
        factor = 2.0**level
        coarsest = level == len(pyramid) - 1
        if epipolar is None:
            search = (options.search_radius,) * 2 if coarsest else (options.fine_search_radius,) * 2
        else:
            search = (options.search_radius, options.epipolar_band) if coarsest else (options.fine_search_radius,) * 2
        found, inside = _ncc_search(
            pyramid[level],
            ref_view,
            ref_pixel / factor,
            view,
            found / factor,
            ref_warp,
            frame,
            radius,
            search,
            options.min_margin,
        )
        found = found * factor
        ok &= inside

    # Lucas-Kanade on (translation, gain, bias) from the correlation peak.
    position = found.clone()
    gain = torch.ones(count)
    bias = torch.zeros(count)
    spots = offsets @ warp.mT  # [n, K*K, 2]
    for _ in range(options.lk_iterations):
        (values, grad_x, grad_y), inside = sample(
            images, (images.values, images.grad_x, images.grad_y), view, position[:, None] + spots
        )
        residual = gain[:, None] * values + bias[:, None] - ref_patch
        jac = torch.stack([gain[:, None] * grad_x, gain[:, None] * grad_y, values, torch.ones_like(values)], -1)
        normal = jac.mT @ jac + 1e-6 * torch.eye(4)
        step = torch.nan_to_num(torch.linalg.solve_ex(normal, -(jac.mT @ residual[..., None]))[0][..., 0])
        position = position + step[:, :2]
        gain, bias = gain + step[:, 2], bias + step[:, 3]
        ok &= inside.all(-1)
    ok &= (position - found).norm(dim=-1) <= options.max_refine_shift
    (final,), inside = sample(images, (images.values,), view, position[:, None] + spots)
    score = (_zero_mean_unit(final) * _zero_mean_unit(ref_patch)).sum(-1)
    ok &= inside.all(-1) & (score >= options.min_ncc)
    position[~ok] = float("nan")
    return position, score
