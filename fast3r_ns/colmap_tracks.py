"""Multi-view tracks for the COLMAP model without ``--refine``, so that every written 3-D point has >= 2 images.

COLMAP's bundle adjuster (and pycolmap's) refuses a point seen by one image. The tracks come from the
correspondences the pointmaps already give: grid pixels of neighbouring views whose predicted global points
coincide, moved to sub-pixel positions (``geometry.tracks``, two passes of smaller windows). Each track is then
triangulated with the recovered cameras (rays weighted like pixel errors, a weak pull towards the pointmaps'
position along poorly constrained directions); observations reprojecting farther than ``max_error`` pixels (or,
in a view whose unrefined camera is off, farther than 3x that view's median error) are dropped.
Conventions: ``fast3r_ns.geometry.conventions`` (original-image pixels, OpenCV axes, camera-to-world poses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .geometry.tracks import Tracks, ViewSamples, build_tracks, sample_view, subpixel_observations
from .io.images import PreparedImage
from .refine import reprojection_errors


def pointmap_model_tracks(
    images: Sequence[PreparedImage],
    global_maps: Sequence[torch.Tensor],  # per view [H, W, 3] on the network grid
    confidences: Sequence[torch.Tensor],  # per view [H, W]
    intrinsics: np.ndarray,  # [V, 4] original-image (fx, fy, cx, cy)
    cam_to_world: np.ndarray,  # [V, 4, 4]
    trusted: np.ndarray,  # [V] bool, views whose pose may carry observations
    samples_per_view: int = 1024,
    neighbors: int = 10,
    max_pair_matches: int = 256,
    conf_percentile: float = 10.0,
    min_confidence: float = 1.5,
    max_error: float = 4.0,
) -> tuple[Tracks, np.ndarray]:
    """Triangulated tracks (points in ``Tracks.points``, pixels in network coordinates) and their observations
    in original-image pixels [O, 2]; every track keeps >= 2 observations within ``max_error`` pixels."""
    empty = ViewSamples(np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0), 1)
    samples = [
        sample_view(points, conf, samples_per_view, conf_percentile, min_confidence) if ok else empty
        for points, conf, ok in zip(global_maps, confidences, trusted)
    ]
    tracks = build_tracks(samples, cam_to_world, neighbors=neighbors, max_pair_matches=max_pair_matches)
    # Sub-pixel in two steps: a 5x5 fit may shift by 2 px, then a 3x3 fit by 1 px (on the oracle the true points
    # of a track's observations then agree to 7e-5 of the depth, median; one 9x9 fit leaves 4e-3).
    for window, max_shift in ((2, None), (1, 1.0)):
        tracks.pixel = subpixel_observations(tracks, global_maps, window=window, max_shift=max_shift)
        tracks = tracks.select(np.isfinite(tracks.pixel).all(-1))
    original = to_original(images, tracks.view, tracks.pixel)
    for _ in range(2):  # triangulate, drop what reprojects badly, triangulate the rest again
        tracks.points = triangulate(intrinsics, cam_to_world, tracks.track, tracks.view, original, tracks.points)
        error = reprojection_errors(intrinsics, cam_to_world, tracks.points[tracks.track], tracks.view, original)
        keep = _with_length(tracks, error <= _view_limits(error, tracks.view, len(images), max_error)[tracks.view])
        tracks, original = tracks.select(keep), original[keep]
    return tracks, original


def triangulate(
    intrinsics: np.ndarray,  # [V, 4]
    cam_to_world: np.ndarray,  # [V, 4, 4]
    track: np.ndarray,  # [O] track of each observation
    view: np.ndarray,  # [O]
    pixel: np.ndarray,  # [O, 2] original-image pixels
    prior: np.ndarray,  # [T, 3] a guess of each point (the pointmaps' position)
    prior_weight: float = 1e-2,
) -> np.ndarray:
    """[T, 3] points closest to their observations' rays, each ray weighted by 1 / depth^2 (so distances count
    about like pixel errors), plus ``prior_weight`` x (total weight) x |X - prior|^2, which only decides the
    directions the rays leave free (a tiny baseline); NaN priors get no pull."""
    count = len(prior)
    fx, fy, cx, cy = intrinsics[view].T
    rays = np.stack([(pixel[:, 0] - cx) / fx, (pixel[:, 1] - cy) / fy, np.ones(len(view))], axis=-1)
    rays = np.einsum("oij,oj->oi", cam_to_world[view, :3, :3], rays)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    centers = cam_to_world[view, :3, 3]
    guess = np.nan_to_num(prior[track])
    depth = np.einsum("oi,oi->o", guess - centers, rays)
    weight = 1.0 / np.maximum(np.abs(depth), 1e-6) ** 2
    projector = np.eye(3) - rays[:, :, None] * rays[:, None, :]  # [O, 3, 3]: removes the along-ray part
    normal = np.stack([np.bincount(track, weight * projector[:, i, j], count) for i in range(3) for j in range(3)], -1)
    rhs_obs = np.einsum("oij,oj->oi", projector, centers) * weight[:, None]
    rhs = np.stack([np.bincount(track, rhs_obs[:, i], count) for i in range(3)], -1)
    pull = prior_weight * np.bincount(track, weight, count) * np.isfinite(prior).all(-1)
    normal = normal.reshape(count, 3, 3) + pull[:, None, None] * np.eye(3)
    rhs = rhs + pull[:, None] * np.nan_to_num(prior)
    solved, info = torch.linalg.solve_ex(torch.from_numpy(normal), torch.from_numpy(rhs)[..., None])
    points = solved[..., 0].numpy()
    points[info.numpy() != 0] = np.nan
    return points


def to_original(images: Sequence[PreparedImage], view: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """[O, 2] network pixels of the given views -> original-image pixels."""
    out = np.empty_like(pixel, dtype=np.float64)
    order = np.argsort(view, kind="stable")
    bounds = np.searchsorted(view[order], np.arange(len(images) + 1))
    for index, image in enumerate(images):
        rows = order[bounds[index] : bounds[index + 1]]
        if len(rows):
            out[rows] = image.to_original(pixel[rows])
    return out


def _with_length(tracks: Tracks, keep: np.ndarray, min_length: int = 2) -> np.ndarray:
    """``keep`` [O] without the observations of tracks left shorter than ``min_length`` (as ``Tracks.select``)."""
    track = tracks.track
    length = np.bincount(track[keep], minlength=tracks.num_tracks)
    return keep & (length >= min_length)[track]


def _view_limits(error: np.ndarray, view: np.ndarray, count: int, max_error: float, factor: float = 3.0) -> np.ndarray:
    """[V] largest error kept per view: ``max_error``, or ``factor`` x the view's median error where its camera is
    off (unrefined cameras: the tracks stay, their errors show; a bundle adjuster can then fix them)."""
    finite = np.isfinite(error)
    limits = np.full(count, float(max_error))
    order = np.argsort(view[finite], kind="stable")
    values, views = error[finite][order], view[finite][order]
    bounds = np.searchsorted(views, np.arange(count + 1))
    for index in range(count):
        if bounds[index + 1] > bounds[index]:
            limits[index] = max(max_error, factor * float(np.median(values[bounds[index] : bounds[index + 1]])))
    return limits
