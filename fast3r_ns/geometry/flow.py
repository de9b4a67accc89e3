"""Dense correspondences by optical flow started from the pointmaps, kept where forward and backward flows agree.

For a view pair (A, B) A's global pointmap, projected into B with the current cameras, predicts the flow A -> B;
OpenCV's DIS optical flow refines it on the grey network images (and B -> A likewise). A pixel of A is kept when
the backward flow brings it back (forward-backward check), it is textured, and the refined flow stays close to the
prediction. Each view's kept grid pixels become track anchors: the anchor and its flow targets in every
neighbour form one track. Pixels: continuous NETWORK-image coordinates (``fast3r_ns.geometry.conventions``).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..imports import require
from .points import confidence_mask
from .tracks import Tracks, candidate_pairs, tracks_from_matches


@dataclass
class FlowOptions:
    """Optical flow and the gates of its correspondences."""

    preset: str = "medium"
    """DIS preset: "ultrafast", "fast" or "medium". Default is "medium"."""
    max_roundtrip: float = 0.5
    """Largest forward-backward inconsistency |f_AB(p) + f_BA(p + f_AB(p))|, network pixels. Default is 0.5."""
    max_correction: float = 64.0
    """Largest distance between the refined flow and the pointmaps' prediction, network pixels (a hard cap; the
    adaptive gate below decides inside it). Default is 64.0."""
    correction_spread: float = 3.0
    """Adaptive gate: the corrections (refined flow minus prediction) of one directed pair are fitted by an affine
    function of the pixel (the smooth part of the prediction's error: a misplaced view or camera); a match is kept
    when its correction is within this many times the median distance to that fit (0 disables: the gate is then
    ``max_correction`` on the correction itself). Default is 3.0."""
    min_correction_gate: float = 1.0
    """Smallest adaptive gate, network pixels. Default is 1.0."""
    min_gradient: float = 8.0
    """Smallest mean grey gradient magnitude (0-255 scale, 3x3 Sobel over a 5x5 box) at a kept pixel. Default is
    8.0."""
    sparse_view_share: float = 0.0
    """A view whose confident grid pixels reach ``min_gradient`` at fewer than this share of them takes its anchors
    at ``min_dense_gradient`` instead (0 disables). 0.25 fixed room_natural's held low-texture view (6x: rotation
    max 1.53 -> 0.08 deg) but made room 6x seed 23 worse (0.17 -> 0.32; docs/refine.md). Default is 0.0."""
    min_dense_gradient: float = 2.0
    """The same for the dense targets kept for the fused cloud (``FlowCache.dense_budget``): flat areas, where DIS
    fills in a consistent but made-up flow, drop (98 % of the splat scenes' pixels stay, 38 % at 8). Default is
    2.0."""
    smoothing: float = 2.0
    """Gaussian sigma (network pixels) smoothing the predicted flow (after a 5x5 median) before it warps the
    second image. Default is 2.0."""
    stride: int = 8
    """Grid step of the anchor pixels, network pixels. Default is 8."""
    max_pair_matches: int = 1024
    """Most correspondences kept per directed pair (spread over the grid). Default is 1024."""
    max_observations: int = 0
    """Budget of flow correspondences over all pairs (the adjustment's cost grows with them): the per-pair cap
    becomes min(``max_pair_matches``, budget / (2 x pairs)), at least 64; 0: no budget. Default is 0."""
    link_radius: float = 0.5
    """Observations of one view closer than this (network pixels), from different anchors or pairs, become one
    observation, which links their tracks (0 disables). Default is 0.5."""
    reuse_px: float = 0.5
    """With a ``FlowCache`` across rounds: a pair whose predicted flow moved at most this (median over either
    view's anchors, network pixels) since its flows were computed keeps those flows and is only gated again
    against the new prediction (0: always recompute); the refinement passes ``RefineFlowOptions.reuse_px`` (2).
    Default is 0.5."""
    threads: int | None = None
    """Threads over the view pairs (OpenCV releases the GIL); None: every core this process may use (2 was the
    default before, leaving 14 of the GPU machine's 16 cores idle). Default is None."""


def grey_image(tensor: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] network tensor in [-1, 1] -> [H, W] uint8 grey."""
    rgb = ((tensor[0].float() + 1.0) * 127.5).clamp(0, 255)
    grey = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return grey.round().to(torch.uint8).cpu().numpy()


def _cv2():
    return require("cv2", extra="refine", feature="--refine with flow tracks (OpenCV's optical flow)")


def predicted_flow(
    points: np.ndarray,  # [H, W, 3] global pointmap of A (NaN where unusable)
    world_to_cam: np.ndarray,  # [4, 4] of B
    intrinsics: np.ndarray,  # [4] network (fx, fy, cx, cy) of B
) -> np.ndarray:
    """[H, W, 2] float32 flow A -> B predicted by projecting A's points into B (NaN where not predictable)."""
    height, width = points.shape[:2]
    return _projected(points.reshape(-1, 3), world_to_cam, intrinsics).reshape(height, width, 2) - _centres(
        height, width
    )


@functools.lru_cache(maxsize=8)
def _centres(height: int, width: int) -> np.ndarray:
    """[H, W, 2] float32 pixel centres (x, y), read-only."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.stack([xs + 0.5, ys + 0.5], axis=-1)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> np.ndarray:
    """[H, W, 2] float32 integer pixel coordinates (x, y), as ``cv2.remap`` reads them, read-only."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.stack([xs, ys], axis=-1)
    out.flags.writeable = False
    return out


def _projected(points: np.ndarray, world_to_cam: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """[N, 2] float32 pixels of world points [N, 3] in a camera (NaN behind it)."""
    if not len(points):
        return np.zeros((0, 2), dtype=np.float32)
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    projection = (np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]) @ world_to_cam[:3, :4]).astype(np.float32)
    homogeneous = _cv2().transform(points.reshape(-1, 1, 3).astype(np.float32, copy=False), projection).reshape(-1, 3)
    depth = homogeneous[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = homogeneous[:, :2] / depth
    pixels[~(depth[:, 0] > 0)] = np.nan
    return pixels


def _anchor_guess(anchors: tuple[np.ndarray, np.ndarray, np.ndarray], world_to_cam, intrinsics) -> np.ndarray:
    """The predicted flow [N, 2] at a view's anchors (``view_anchors``) only: what ``_at(predicted_flow(...))``
    gives, without the full field."""
    return _projected(anchors[1], world_to_cam, intrinsics) - anchors[0].astype(np.float32)


def _at(field: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Values of a [H, W, C] field at pixel centres [N, 2] (continuous coordinates)."""
    return field[(pixels[:, 1] - 0.5).astype(np.int64), (pixels[:, 0] - 0.5).astype(np.int64)]


def _fill(flow: np.ndarray) -> np.ndarray:
    """Flow with NaN holes replaced by the median of the finite part (the initialisation needs a full field)."""
    out = flow.astype(np.float32)  # a copy
    finite = np.isfinite(out)
    sample = out[::8, ::8][finite[::8, ::8].all(-1)]  # every 64th pixel: the median of 196k flows cost 19 ms a call
    if not len(sample):
        sample = out[finite.all(-1)]
    fill = np.median(sample, axis=0) if len(sample) else np.zeros(2, np.float32)
    np.copyto(out, fill.astype(np.float32), where=~finite)
    return out


def sample_field(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear values [N, C] of a float32 [H, W, C] field (a flow, a pointmap) at continuous pixels xy [N, 2]
    (NaN outside the image and next to NaN)."""
    cv2 = _cv2()
    channels = field.shape[2]
    if len(xy) == 0:
        return np.zeros((0, channels), dtype=np.float32)
    height, width = field.shape[:2]
    map_xy = (xy - 0.5).astype(np.float32).reshape(-1, 1, 2)
    out = cv2.remap(field, map_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    inside = (xy[:, 0] >= 0.5) & (xy[:, 0] <= width - 0.5) & (xy[:, 1] >= 0.5) & (xy[:, 1] <= height - 0.5)
    return np.where(inside[:, None], out.reshape(-1, channels), np.nan)


def texture_mask(grey: np.ndarray, min_gradient: float) -> np.ndarray:
    """[H, W] bool: mean Sobel gradient magnitude over a 5x5 box reaches ``min_gradient``."""
    cv2 = _cv2()
    image = grey.astype(np.float32)
    gx, gy = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.blur(np.sqrt(gx * gx + gy * gy) / 8.0, (5, 5))
    return magnitude >= min_gradient


def warped_by_prediction(second: np.ndarray, initial: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed prediction [H, W, 2] (5x5 median, Gaussian sigma ``smoothing``) of the flow first -> second
    (NaN holes allowed) and ``second`` [H, W] warped by it onto the first view's grid [H, W]."""
    cv2 = _cv2()
    smooth = cv2.GaussianBlur(cv2.medianBlur(_fill(initial), 5), (0, 0), smoothing)
    grid = _grid(*initial.shape[:2])
    return smooth, cv2.remap(second, grid + smooth, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class PairFlow:
    """DIS flows of view pairs, both directions, started from the pointmaps' predictions."""

    def __init__(self, options: FlowOptions) -> None:
        cv2 = _cv2()
        presets = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        self.dis = cv2.DISOpticalFlow_create(presets[options.preset])
        self.dis.setUseSpatialPropagation(True)
        self.options = options

    def flow(self, first: np.ndarray, second: np.ndarray, initial: np.ndarray) -> np.ndarray:
        """[H, W, 2] flow first -> second (uint8 greys [H, W]) around ``initial`` (NaN holes allowed): ``second``
        is warped onto ``first`` by the smoothed prediction and DIS finds the small residual r, so the flow is
        r(p) + prediction(p + r(p)) (the warp absorbs the perspective that DIS's translating patches miss)."""
        cv2 = _cv2()
        smooth, warped = self.warped(second, initial)
        residual = self.dis.calc(first, warped, None)
        grid = _grid(*first.shape)
        return residual + cv2.remap(smooth, grid + residual, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def warped(self, second: np.ndarray, initial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``warped_by_prediction`` with this flow's ``smoothing``."""
        return warped_by_prediction(second, initial, self.options.smoothing)

    def flows(
        self, grey: tuple[np.ndarray, np.ndarray], predicted: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The flows A -> B and B -> A [H, W, 2] of uint8 greys (A, B) around the predicted flows (A -> B, B -> A)."""
        return self.flow(grey[0], grey[1], predicted[0]), self.flow(grey[1], grey[0], predicted[1])

    @staticmethod
    def measure(forward: np.ndarray, backward: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(step [N, 2], back [N, 2]): the flow A -> B at A's anchors and the flow B -> A where they land, of the
        flows A -> B and B -> A [H, W, 2]; what the gate needs of the flows (no prediction in it)."""
        step = _at(forward, anchors)
        return step, sample_field(backward, anchors + step)

    def gate(
        self,
        anchors: np.ndarray,  # [N, 2] candidate pixels of A (continuous, pixel centres)
        step: np.ndarray,  # [N, 2] measured flow A -> B at the anchors
        back: np.ndarray,  # [N, 2] measured flow B -> A at the anchors' targets
        guess: np.ndarray,  # [N, 2] predicted flow A -> B at the anchors
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices of the kept anchors [M], their pixels in B [M, 2] and their roundtrip error [M]."""
        options = self.options
        target = anchors + step
        roundtrip = np.linalg.norm(step + back, axis=-1)
        correction = step - guess
        keep = (roundtrip <= options.max_roundtrip) & np.isfinite(back).all(-1) & np.isfinite(correction).all(-1)
        keep &= np.linalg.norm(np.where(np.isfinite(correction), correction, np.inf), axis=-1) <= options.max_correction
        if options.correction_spread > 0:
            keep[keep] = correction_inliers(
                anchors[keep], correction[keep], options.correction_spread, options.min_correction_gate
            )
        index = np.flatnonzero(keep)
        return index, target[index], roundtrip[index]

    def correspondences(
        self,
        grey: tuple[np.ndarray, np.ndarray],  # uint8 [H, W] of A and B
        predicted: tuple[np.ndarray, np.ndarray],  # [H, W, 2] predicted flows A -> B and B -> A
        anchors: np.ndarray,  # [N, 2] candidate pixels of A (continuous, pixel centres)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices of the kept anchors [M], their pixels in B [M, 2] and their roundtrip error [M]."""
        forward, backward = self.flows(grey, predicted)
        return self.gate(anchors, *self.measure(forward, backward, anchors), _at(predicted[0], anchors))


def correction_inliers(
    pixels: np.ndarray,  # [N, 2]
    correction: np.ndarray,  # [N, 2] refined flow minus predicted flow
    spread: float,
    min_gate: float,
    iterations: int = 3,
) -> np.ndarray:
    """[N] bool: corrections within ``spread`` times the median distance (at least ``min_gate``) of a robust affine
    fit correction ~ A [x, y, 1] (refitted on the inliers ``iterations`` times)."""
    inlier = np.ones(len(pixels), dtype=bool)
    if len(pixels) < 6:
        return inlier
    design = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
    distance = _length(correction - _median(correction))
    for _ in range(iterations):
        gate = max(min_gate, spread * float(_median(distance[inlier])))
        inlier = distance <= gate
        if inlier.sum() < 6:
            break
        model = _affine_fit(design[inlier], correction[inlier])
        distance = _length(correction - design @ model)
    return distance <= max(min_gate, spread * float(_median(distance[inlier])))


def _length(vectors: np.ndarray) -> np.ndarray:
    """[N] lengths of [N, 2] vectors."""
    return np.hypot(vectors[:, 0], vectors[:, 1])


def _median(values: np.ndarray) -> np.ndarray:
    """``np.median`` along the first axis of finite values, without its NaN checks (called per pair and round)."""
    count = len(values)
    half = count // 2
    part = np.partition(values, [half - 1, half] if count % 2 == 0 else half, axis=0)
    return part[half] if count % 2 else 0.5 * (part[half - 1] + part[half])


def _affine_fit(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[3, 2] least-squares A of target ~ design A (design [N, 3] of x, y, 1) by the normal equations (pixel
    coordinates keep them well conditioned); ``np.linalg.lstsq`` when they are singular."""
    try:
        return np.linalg.solve(design.T @ design, design.T @ target)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(design, target, rcond=None)[0]


def view_anchors(
    points: np.ndarray,  # [H, W, 3] global pointmap, NaN where not confident
    confidence: np.ndarray,  # [H, W]
    grey: np.ndarray,  # [H, W] uint8
    options: FlowOptions,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid pixels of one view that are confident, finite and textured: pixels [N, 2], points [N, 3], conf [N]."""
    height, width = grey.shape
    stride = options.stride
    rows = np.arange(stride // 2, height, stride)
    cols = np.arange(stride // 2, width, stride)
    finite = np.isfinite(points).all(-1)[rows][:, cols]
    grid_valid = finite & texture_mask(grey, options.min_gradient)[rows][:, cols]
    if grid_valid.sum() < options.sparse_view_share * finite.sum():
        grid_valid = finite & texture_mask(grey, options.min_dense_gradient)[rows][:, cols]
    r, c = np.meshgrid(rows, cols, indexing="ij")
    r, c = r[grid_valid], c[grid_valid]
    pixels = np.stack([c + 0.5, r + 0.5], axis=-1).astype(np.float64)
    return pixels, points[r, c].astype(np.float64), confidence[r, c].astype(np.float64)


@dataclass
class FlowCache:
    """Flows measured in earlier rounds, per view pair (i, j): the predictions at i's and j's anchors then and
    ``PairFlow.measure`` of both directions. ``reused`` counts the pairs the last call did not recompute.
    ``dense_budget`` > 0 also keeps, per directed pair (a, b), the flow targets of a's half grid
    (``half_grid_targets``) in ``dense``, while they fit in that many bytes: the fused cloud triangulates them."""

    pairs: dict = field(default_factory=dict)
    reused: int = 0
    dense: dict = field(default_factory=dict)
    dense_budget: int = 0
    dense_bytes: int = 0
    _dense_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def keep_dense(self, pair: tuple[int, int], targets: np.ndarray) -> None:
        """Keep (or replace) the targets of a directed pair if they fit in the budget."""
        with self._dense_lock:
            old = self.dense.get(pair)
            used = self.dense_bytes - (0 if old is None else old.nbytes)
            if used + targets.nbytes <= self.dense_budget:
                self.dense[pair] = targets
                self.dense_bytes = used + targets.nbytes


def half_grid_targets(
    forward: np.ndarray,  # [H, W, 2] flow A -> B
    backward: np.ndarray,  # [H, W, 2] flow B -> A
    textured: np.ndarray,  # [ceil(H/2), ceil(W/2)] bool, A's texture mask on the half grid
    max_roundtrip: float,
) -> np.ndarray:
    """[ceil(H/2), ceil(W/2), 2] float32 pixels in B of A's pixels (2r, 2c) by the flow (NaN where the backward
    flow does not bring them back within ``max_roundtrip`` or A is flat)."""
    cv2 = _cv2()
    step = forward[::2, ::2]
    target = _centres(*forward.shape[:2])[::2, ::2] + step
    back = cv2.remap(backward, target - 0.5, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    keep = (np.linalg.norm(step + back, axis=-1) <= max_roundtrip) & textured
    return np.where(keep[..., None], target, np.nan).astype(np.float32)


def confidence_masks(
    confidences: Sequence[torch.Tensor], conf_percentile: float, min_confidence: float
) -> list[np.ndarray]:
    """Per view [H, W] bool: the confidence gates of the point cloud (``geometry.points.confidence_mask``)."""
    return [
        confidence_mask(conf.double().cpu()[None], conf_percentile, min_confidence)[0].numpy() for conf in confidences
    ]


def flow_tracks(
    greys: Sequence[np.ndarray],  # per view [H, W] uint8
    pointmaps: Sequence[torch.Tensor],  # per view [H, W, 3] global pointmap
    confidences: Sequence[torch.Tensor],  # per view [H, W]
    intrinsics: np.ndarray,  # [V, 4] network (fx, fy, cx, cy)
    cam_to_world: np.ndarray,  # [V, 4, 4] current cameras
    neighbors: int = 10,
    options: FlowOptions | None = None,
    conf_percentile: float = 10.0,
    min_confidence: float = 1.5,
    masks: Sequence[np.ndarray] | None = None,
    cache: FlowCache | None = None,
) -> Tracks:
    """Tracks of anchor pixels and their flow targets in the candidate neighbours (``tracks.candidate_pairs``);
    each anchor's track holds the anchor and one target per neighbour (best roundtrip first). ``masks``: the
    views' confidence masks [H, W] when already known (``confidence_masks``; rounds reuse them). ``cache``: the
    flows of earlier rounds (``FlowCache``, ``FlowOptions.reuse_px``)."""
    options = options or FlowOptions()
    count = len(greys)
    world_to_cam = np.linalg.inv(cam_to_world)
    global_maps, confs = [], []  # per view: confident points (NaN elsewhere) [H, W, 3], confidence [H, W]
    if masks is None:
        masks = confidence_masks(confidences, conf_percentile, min_confidence)
    for points, conf, mask in zip(pointmaps, confidences, masks):
        confident = points.float().cpu().numpy().copy()
        confident[~mask] = np.nan
        global_maps.append(confident)
        conf = conf.cpu()  # as stored (no copy); view_anchors reads only the anchors' values
        confs.append((conf if conf.dtype in (torch.float32, torch.float64) else conf.float()).numpy())
    anchors = [view_anchors(p, c, g, options) for p, c, g in zip(global_maps, confs, greys)]
    pairs = candidate_pairs(cam_to_world, [_Points(a[1]) for a in anchors], neighbors)
    per_pair = options.max_pair_matches
    if options.max_observations > 0 and len(pairs):
        per_pair = min(per_pair, max(64, options.max_observations // (2 * len(pairs))))
    local = threading.local()
    reuse, reused = options.reuse_px, []
    keeps_dense = cache is not None and cache.dense_budget > 0
    textured = [texture_mask(g, options.min_dense_gradient)[::2, ::2] if keeps_dense else None for g in greys]

    def pair_correspondences(pair: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not hasattr(local, "pair_flow"):
            local.pair_flow = PairFlow(options)
        i, j = pair
        guesses = (
            _anchor_guess(anchors[i], world_to_cam[j], intrinsics[j]),
            _anchor_guess(anchors[j], world_to_cam[i], intrinsics[i]),
        )
        known = cache.pairs.get((i, j)) if cache is not None else None
        if known is not None and reuse > 0 and max(_median_move(a, b) for a, b in zip(known[0], guesses)) <= reuse:
            measured = known[1]
            reused.append(1)
        else:
            predicted = (
                predicted_flow(global_maps[i], world_to_cam[j], intrinsics[j]),
                predicted_flow(global_maps[j], world_to_cam[i], intrinsics[i]),
            )
            forward, backward = local.pair_flow.flows((greys[i], greys[j]), predicted)  # one flow each way
            measured = (
                PairFlow.measure(forward, backward, anchors[i][0]),
                PairFlow.measure(backward, forward, anchors[j][0]),
            )
            if cache is not None:
                cache.pairs[(i, j)] = (guesses, measured)
                if cache.dense_budget > 0:
                    cache.keep_dense((i, j), half_grid_targets(forward, backward, textured[i], options.max_roundtrip))
                    cache.keep_dense((j, i), half_grid_targets(backward, forward, textured[j], options.max_roundtrip))
        out = []
        for a, (step, back), guess in zip((i, j), measured, guesses):
            kept, target, roundtrip = local.pair_flow.gate(anchors[a][0], step, back, guess)
            if len(kept) > per_pair:
                chosen = np.linspace(0, len(kept) - 1, per_pair).round().astype(np.int64)
                kept, target, roundtrip = kept[chosen], target[chosen], roundtrip[chosen]
            out.append((kept, target, roundtrip))
        return out

    with ThreadPoolExecutor(max(1, options.threads or len(os.sched_getaffinity(0)))) as pool:
        results = list(pool.map(pair_correspondences, pairs))
    if cache is not None:
        cache.reused = len(reused)
    pair_matches = np.zeros(len(pairs), dtype=np.int64)
    # Nodes: every view's anchors first, then one new node per flow target.
    anchor_offsets = np.concatenate([[0], np.cumsum([len(a[0]) for a in anchors])])
    node_view = [np.repeat(np.arange(count), np.diff(anchor_offsets))]
    node_pixel = [np.concatenate([a[0] for a in anchors]) if anchor_offsets[-1] else np.zeros((0, 2))]
    node_point = [np.concatenate([a[1] for a in anchors]) if anchor_offsets[-1] else np.zeros((0, 3))]
    node_conf = [np.concatenate([a[2] for a in anchors]) if anchor_offsets[-1] else np.zeros(0)]
    next_node = int(anchor_offsets[-1])
    firsts, seconds, scores = [], [], []
    for index, ((i, j), result) in enumerate(zip(pairs, results)):
        for a, b, (kept, target, roundtrip) in zip((i, j), (j, i), result):
            pair_matches[index] += len(kept)
            firsts.append(kept + anchor_offsets[a])
            seconds.append(np.arange(next_node, next_node + len(kept)))
            scores.append(roundtrip)
            next_node += len(kept)
            node_view.append(np.full(len(kept), b))
            node_pixel.append(target)
            node_point.append(np.full((len(kept), 3), np.nan))
            node_conf.append(np.ones(len(kept)))
    first = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    second = np.concatenate(seconds) if seconds else np.zeros(0, dtype=np.int64)
    order = np.argsort(np.concatenate(scores) if scores else np.zeros(0), kind="stable")
    node_view, node_pixel = np.concatenate(node_view), np.concatenate(node_pixel)
    node_point, node_conf = np.concatenate(node_point), np.concatenate(node_conf)
    if options.link_radius > 0 and len(node_view):
        same = link_nodes(node_view, node_pixel, options.link_radius)
        first, second = same[first], same[second]
        node_point = _representative_points(same, node_point)
    distinct = first[order] != second[order]
    return tracks_from_matches(
        node_view,
        node_pixel,
        node_point,
        node_conf,
        first[order][distinct],
        second[order][distinct],
        pairs,
        pair_matches,
    )


def link_nodes(
    node_view: np.ndarray,  # [N] int
    node_pixel: np.ndarray,  # [N, 2] network pixels
    radius: float,
) -> np.ndarray:
    """[N] representative node of each node: nodes of one view within ``radius`` of each other (connected
    components of that relation) share the lowest index among them."""
    feature = "--refine with flow tracks"
    coo_matrix = require("scipy.sparse", extra="refine", feature=feature).coo_matrix
    connected_components = require("scipy.sparse.csgraph", extra="refine", feature=feature).connected_components
    cKDTree = require("scipy.spatial", extra="refine", feature=feature).cKDTree

    order = np.argsort(node_view, kind="stable")
    bounds = np.searchsorted(node_view[order], np.arange(int(node_view.max()) + 2))
    left, right = [], []
    for view in range(len(bounds) - 1):
        rows = order[bounds[view] : bounds[view + 1]]
        if len(rows) > 1:
            close = cKDTree(node_pixel[rows]).query_pairs(radius, output_type="ndarray")
            left.append(rows[close[:, 0]])
            right.append(rows[close[:, 1]])
    size = len(node_view)
    left = np.concatenate(left) if left else np.zeros(0, dtype=np.int64)
    right = np.concatenate(right) if right else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    lowest = np.full(component.max() + 1, size, dtype=np.int64)
    np.minimum.at(lowest, component, np.arange(size))
    return lowest[component]


def _representative_points(same: np.ndarray, node_point: np.ndarray) -> np.ndarray:
    """[N, 3] node points where each representative takes a finite point of its group (an anchor's), if any."""
    out = node_point.copy()
    finite = np.flatnonzero(np.isfinite(node_point).all(-1) & (same != np.arange(len(same))))
    missing = ~np.isfinite(out[same[finite]]).all(-1)
    out[same[finite][missing]] = node_point[finite][missing]
    return out


@dataclass
class _Points:
    points: np.ndarray  # [N, 3], what ``candidate_pairs`` reads


def _median_move(before: np.ndarray, after: np.ndarray) -> float:
    """Median distance [px] between two predictions [N, 2] at the same anchors (inf when not comparable)."""
    if before.shape != after.shape or not len(before):
        return float("inf")
    moved = np.linalg.norm(after - before, axis=-1)
    moved = moved[np.isfinite(moved)]
    return float(np.median(moved)) if len(moved) else float("inf")
