"""SIFT keypoints and descriptors of the network images (pycolmap's CPU extractor), for guided matching.

Keypoints are in continuous NETWORK-image pixels (``fast3r_ns.geometry.conventions``; COLMAP's keypoints use the
same corner-origin convention). Each view also gets its global pointmap sampled at the keypoints, which is what
``geometry.matching`` uses to predict where a keypoint appears in another view.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .points import confidence_mask


@dataclass
class FeatureOptions:
    """How many and which SIFT features each view gets."""

    max_features: int = 2048
    """Most keypoints per view (the strongest). Default is 2048."""
    first_octave: int = -1
    """SIFT's first octave: -1 upsamples the network image twice (COLMAP's default; measured 2.4x the keypoints and
    1.5x lower rotation errors than 0 on the 256x192 splat benchmark scenes, at 3x the time), 0 starts at the
    network resolution. Default is -1."""
    peak_threshold: float = 0.0067
    """SIFT's contrast threshold (COLMAP's default 0.02 / 3). Default is 0.0067."""
    threads: int = 2
    """Views extracted in parallel (one extractor per thread). Default is 2."""


@dataclass
class ViewFeatures:
    """The keypoints of one view with unit descriptors and the view's global pointmap sampled at them."""

    pixels: np.ndarray  # [N, 2] float64, continuous network-image (x, y)
    descriptors: np.ndarray  # [N, 128] float32, unit L2 norm
    scales: np.ndarray  # [N] float64, keypoint scale (network pixels)
    points: np.ndarray  # [N, 3] float64, global pointmap at the keypoint (NaN where not usable)
    confidence: np.ndarray  # [N] float64, global confidence there (0 where not usable)


def to_gray(image: torch.Tensor) -> np.ndarray:
    """[H, W] float32 in [0, 1] from a network input [1, 3, H, W] (or [3, H, W]) in [-1, 1]."""
    rgb = image.reshape(-1, *image.shape[-2:]).float().cpu()
    gray = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return ((gray + 1.0) * 0.5).clamp(0.0, 1.0).numpy().astype(np.float32)


def extract_features(images: Sequence[torch.Tensor], options: FeatureOptions | None = None) -> list[tuple]:
    """SIFT of each network image: a list of (pixels [N, 2] float64, descriptors [N, 128] float32 unit norm,
    scales [N] float64)."""
    import pycolmap

    options = options or FeatureOptions()
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = 1
    extraction.sift.max_num_features = options.max_features
    extraction.sift.first_octave = options.first_octave
    extraction.sift.peak_threshold = options.peak_threshold
    local = threading.local()

    def one(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not hasattr(local, "extractor"):
            local.extractor = pycolmap.FeatureExtractor.create(extraction, pycolmap.Device.cpu)
        keypoints, descriptors = local.extractor.extract_from_float32_array(to_gray(image))
        pixels = np.array([(k.x, k.y, k.compute_scale()) for k in keypoints], dtype=np.float64).reshape(-1, 3)
        unit = np.asarray(descriptors.data, dtype=np.float32).reshape(-1, 128)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        return pixels[:, :2], unit, pixels[:, 2]

    with ThreadPoolExecutor(max_workers=max(1, options.threads)) as pool:
        return list(pool.map(one, images))


def sample_points(
    pointmap: torch.Tensor,  # [H, W, 3] global pointmap
    confidence: torch.Tensor,  # [H, W]
    pixels: np.ndarray,  # [N, 2] continuous network pixels
    conf_percentile: float = 10.0,
    min_confidence: float = 1.5,
    window: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust pointmap sample at each keypoint: the per-axis median of the confident, finite pixels of the
    (2 window + 1)^2 neighbourhood (keypoints sit on edges and corners, where single pixels fly). Returns points
    [N, 3] (NaN where fewer than half the window is usable) and the mean confidence there [N] (0 there)."""
    height, width = confidence.shape
    grid = pointmap.double().cpu()
    conf = confidence.double().cpu()
    usable = confidence_mask(conf[None], conf_percentile, min_confidence)[0] & torch.isfinite(grid).all(-1)
    offsets = torch.arange(-window, window + 1)
    col = torch.from_numpy(np.floor(pixels[:, 0]).astype(np.int64)).clamp(0, width - 1)
    row = torch.from_numpy(np.floor(pixels[:, 1]).astype(np.int64)).clamp(0, height - 1)
    index_y = (row[:, None, None] + offsets[None, :, None]).clamp(0, height - 1).expand(-1, -1, len(offsets))
    index_x = (col[:, None, None] + offsets[None, None, :]).clamp(0, width - 1).expand(-1, len(offsets), -1)
    patch = grid[index_y, index_x].reshape(len(pixels), -1, 3)  # [N, K*K, 3]
    ok = usable[index_y, index_x].reshape(len(pixels), -1)  # [N, K*K]
    points = torch.where(ok[..., None], patch, float("nan")).nanmedian(dim=1).values
    count = ok.sum(-1)
    enough = count * 2 >= ok.shape[1]
    mean_conf = torch.where(ok, conf[index_y, index_x].reshape(len(pixels), -1), 0.0).sum(-1) / count.clamp(min=1)
    points[~enough] = float("nan")
    return points.numpy(), torch.where(enough, mean_conf, 0.0).numpy()


def view_features(
    images: Sequence[torch.Tensor],  # per view [1, 3, H, W] network input
    pointmaps: Sequence[torch.Tensor],  # per view [H, W, 3] global pointmap
    confidences: Sequence[torch.Tensor],  # per view [H, W]
    options: FeatureOptions | None = None,
    conf_percentile: float = 10.0,
    min_confidence: float = 1.5,
) -> list[ViewFeatures]:
    """SIFT keypoints of every view with their pointmap samples (``sample_points``)."""
    out = []
    for (pixels, descriptors, scales), pointmap, confidence in zip(
        extract_features(images, options), pointmaps, confidences
    ):
        points, conf = sample_points(pointmap, confidence, pixels, conf_percentile, min_confidence)
        out.append(ViewFeatures(pixels, descriptors, scales, points, conf))
    return out
