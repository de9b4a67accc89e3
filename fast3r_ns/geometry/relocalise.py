"""A view's camera found again from its neighbours: patch correlation near the predicted flow (or SIFT), then PnP.

Where a view's pose is too far off for the optical flow (``geometry.flow``) to land on the right texture period,
its neighbours' anchors are searched for in it by normalised cross-correlation of a patch within a window around
the flow predicted from the current cameras (on the view warped onto the neighbour by that prediction, so the
patch is compared under the right perspective), and the view's pose is solved by PnP-RANSAC on the matches
lifted to 3-D by the neighbours' points. Where that finds no acceptable pose (a close-up the neighbours see at
another scale, a turn beyond the window), SIFT matches with the neighbours, lifted by their placed pointmaps, take
the patches' place. Pixels: continuous NETWORK-image coordinates
(``fast3r_ns.geometry.conventions``); poses camera-to-world.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .flow import FlowOptions, _at, _cv2, _projected, sample_field, warped_by_prediction


@dataclass
class WindowOptions:
    """The patch search and the PnP acceptance."""

    radius: int = 48
    """Search window half size around the predicted flow, network pixels. Default is 48."""
    half: int = 10
    """Patch half size (a (2 half + 1)^2 patch). Default is 10."""
    min_score: float = 0.8
    """Smallest normalised correlation of a kept match. Default is 0.8."""
    min_margin: float = 0.05
    """A kept match's score beats the best score more than 3 px away by at least this. Default is 0.05."""
    min_contrast: float = 5.0
    """Smallest grey standard deviation of a searched patch (0-255). Default is 5.0."""
    threshold_px: float = 2.0
    """PnP-RANSAC inlier threshold, network pixels. Default is 2.0."""
    min_inliers: int = 12
    """Fewest PnP inliers of an accepted pose. Default is 12."""
    min_gain: float = 1.5
    """An accepted pose has at least this many times the inliers of the current pose on the same matches. Default is
    1.5."""
    max_points: int = 0
    """Most points of one neighbour searched for (spread over its observations; each costs a correlation); 0:
    all. 256 made a relocalisation 3-4x faster but room_natural's 1.2 and 2 deg cases worse (rotation max 0.08-0.18
    -> 0.15-1.64 deg, docs/refine.md). Default is 0."""
    features: int = 2000
    """Where the patch search finds no acceptable pose, SIFT keypoints (at most this many per image, OpenCV) of
    the view are matched to its neighbours' and PnP solved on them: no window, so neither the scale change of a
    close-up nor a turn beyond the window defeats it; 0: off. Default is 2000."""
    ratio: float = 0.8
    """Lowe's ratio test of a kept SIFT match (best over second-best descriptor distance). Default is 0.8."""
    feature_threshold_px: float = 4.0
    """PnP-RANSAC inlier threshold on SIFT matches, network pixels: looser than ``threshold_px``, as their points
    come from the neighbours' pointmaps (a depth error there is many pixels in a close-up), and the patch search
    from the pose found refines it. Default is 4.0."""
    min_feature_inliers: int = 20
    """Fewest PnP inliers of a pose accepted from SIFT matches (with ``min_gain`` and ``min_cells``). Default is
    20."""
    min_cells: int = 4
    """The inliers of an accepted pose fall in at least this many cells of a 4x4 grid over the image (matches
    bunched in one corner leave the pose free to turn about them). Default is 4."""


def window_matches(
    grey_a: np.ndarray,  # [H, W] uint8
    grey_b: np.ndarray,  # [H, W] uint8
    predicted: np.ndarray,  # [H, W, 2] predicted flow A -> B (NaN holes allowed)
    pixels: np.ndarray,  # [N, 2] pixels of A to find in B
    options: WindowOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """Matches of A's ``pixels`` in B: indices of the kept pixels [M] and their pixels in B [M, 2]. A patch of A
    is correlated (OpenCV ``matchTemplate``, normalised) within ``radius`` of each pixel on B warped onto A by the
    prediction (``flow.warped_by_prediction``, the flow's default smoothing), kept where the peak reaches
    ``min_score`` and beats the rest by ``min_margin``; the target is the peak moved through the smoothed
    prediction."""
    cv2 = _cv2()
    smooth, warped = warped_by_prediction(grey_b, predicted, FlowOptions().smoothing)
    height, width = grey_a.shape
    half, radius = options.half, options.radius
    kept, moved = [], []
    for index, (x, y) in enumerate(pixels):
        xi, yi = int(x), int(y)
        if min(xi, yi) < half or xi + half >= width or yi + half >= height:
            continue
        patch = grey_a[yi - half : yi + half + 1, xi - half : xi + half + 1]
        if patch.std() < options.min_contrast:
            continue
        x0, y0 = max(0, xi - half - radius), max(0, yi - half - radius)
        region = warped[y0 : yi + half + radius + 1, x0 : xi + half + radius + 1]
        if region.shape[0] <= 2 * half or region.shape[1] <= 2 * half:
            continue
        scores = cv2.matchTemplate(region, patch, cv2.TM_CCOEFF_NORMED)
        _, best, _, (col, row) = cv2.minMaxLoc(scores)
        scores[max(0, row - 3) : row + 4, max(0, col - 3) : col + 4] = -1.0
        if best < options.min_score or best - scores.max() < options.min_margin:
            continue
        kept.append(index)
        moved.append((x0 + col + half - xi + x, y0 + row + half - yi + y))
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    moved = np.array(moved)
    return np.array(kept, dtype=np.int64), moved + _at(smooth, moved)


def pnp_pose(
    points: np.ndarray,  # [N, 3] world points
    pixels: np.ndarray,  # [N, 2] their network pixels in the view
    intrinsics: np.ndarray,  # [4] network (fx, fy, cx, cy)
    threshold_px: float,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Camera-to-world [4, 4] by PnP-RANSAC (OpenCV AP3P) refined on its inliers (Levenberg-Marquardt), and the
    inlier mask [N]; None when no pose was found."""
    cv2 = _cv2()
    none = np.zeros(len(points), dtype=bool)
    if len(points) < 6:
        return None, none
    matrix = _matrix(intrinsics)
    # Centred points keep the PnP solver well conditioned far from the world origin.
    origin = points.mean(0)
    objects = (points - origin).reshape(-1, 1, 3).astype(np.float64)
    image = pixels.reshape(-1, 1, 2).astype(np.float64)
    found, rvec, tvec, inliers = cv2.solvePnPRansac(
        objects,
        image,
        matrix,
        None,
        iterationsCount=10000,
        reprojectionError=threshold_px,
        confidence=0.9999,
        flags=cv2.SOLVEPNP_AP3P,
    )
    if not found or inliers is None or len(inliers) < 4:
        return None, none
    rvec, tvec = cv2.solvePnPRefineLM(objects[inliers[:, 0]], image[inliers[:, 0]], matrix, None, rvec, tvec)
    world_to_cam = np.eye(4)
    world_to_cam[:3, :3], world_to_cam[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
    world_to_cam[:3, 3] -= world_to_cam[:3, :3] @ origin
    cam_to_world = np.linalg.inv(world_to_cam)
    return cam_to_world, pose_inliers(points, pixels, intrinsics, cam_to_world, threshold_px)


def pose_inliers(
    points: np.ndarray, pixels: np.ndarray, intrinsics: np.ndarray, cam_to_world: np.ndarray, threshold_px: float
) -> np.ndarray:
    """[N] bool: world points [N, 3] that project within ``threshold_px`` of their pixels [N, 2] (in front)."""
    projected = _projected(points, np.linalg.inv(cam_to_world), intrinsics)
    with np.errstate(invalid="ignore"):
        return np.linalg.norm(projected - pixels, axis=-1) <= threshold_px


def _matrix(intrinsics: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass
class Relocalised:
    """One view's relocalisation."""

    cam_to_world: np.ndarray | None  # [4, 4] the new pose, None when not accepted
    matches: int
    inliers: int  # of the new pose
    current_inliers: int  # of the current pose on the same matches
    cells: int = 0  # cells of a 4x4 grid holding inliers
    turn: float = np.inf  # degrees between the current and the new orientation
    features: bool = False  # the matches are SIFT's (the patch search found no acceptable pose)


def relocalise_view(
    view: int,
    known: list[tuple[int, np.ndarray, np.ndarray]],  # (neighbour, its pixels [N, 2], their world points [N, 3])
    greys: list[np.ndarray],  # [H, W] uint8 network images
    pointmaps: list[np.ndarray | None],  # [H, W, 3] world points of the neighbours (NaN where unusable)
    intrinsics: np.ndarray,  # [V, 4] network
    cam_to_world: np.ndarray,  # [V, 4, 4] current cameras
    options: WindowOptions,
    keypoints: dict | None = None,  # SIFT keypoints found so far (``feature_matches``)
) -> Relocalised:
    """The pose of ``view`` by PnP on the neighbours' known points found in it (``window_matches``, around the
    flow their pointmaps predict). Accepted at ``min_inliers``, ``min_gain`` times the current pose's inliers and
    inliers in ``min_cells`` cells, and only when it turns the view by at most the window's angular size
    (``radius`` over the focal length): a larger turn is one the search could not have seen, so the inliers are
    a coincidence (on few image points the pose is free to turn about them).

    Where no such pose is found, PnP on SIFT matches with the neighbours (``feature_matches``, their points
    lifted by the neighbours' pointmaps) gives one, and the patch search is run again from it: now under the
    right scale and turn, its known points (more accurate than the pointmaps' lift) refine the pose."""
    current = cam_to_world[view]
    patch = _patch_relocalised(view, known, greys, pointmaps, intrinsics[view], current, options, options.min_gain)
    if patch.cam_to_world is not None or not options.features:
        return patch
    neighbours = [other for other, _, _ in known]
    points, pixels = feature_matches(view, neighbours, greys, pointmaps, options, keypoints)
    # No turn limit: the SIFT matches were not searched for near the current pose.
    accept = (options.min_feature_inliers, options.min_gain, options.min_cells, np.inf)
    threshold = options.feature_threshold_px
    sift = _pnp_verdict(points, pixels, intrinsics[view], current, greys[view].shape, threshold, accept)
    sift = replace(sift, features=True)
    if sift.cam_to_world is None:
        return sift
    again = _patch_relocalised(view, known, greys, pointmaps, intrinsics[view], sift.cam_to_world, options, 1.0)
    if again.cam_to_world is None:
        return sift
    return replace(again, turn=_turn(current, again.cam_to_world), features=True)


def _patch_relocalised(
    view: int,
    known: list[tuple[int, np.ndarray, np.ndarray]],
    greys: list[np.ndarray],
    pointmaps: list[np.ndarray | None],
    intrinsics: np.ndarray,  # [4] network, of the view
    cam_to_world: np.ndarray,  # [4, 4] the view's camera the search starts from
    options: WindowOptions,
    gain: float,
) -> Relocalised:
    """``relocalise_view``'s patch search and PnP from ``cam_to_world``; accepted at ``gain`` times that pose's
    inliers (and the other tests there)."""
    from .flow import predicted_flow

    world_to_cam = np.linalg.inv(cam_to_world)
    found_points, found_pixels = [], []
    for other, pixels, points in known:
        if options.max_points and len(pixels) > options.max_points:
            chosen = np.linspace(0, len(pixels) - 1, options.max_points).round().astype(np.int64)
            pixels, points = pixels[chosen], points[chosen]
        predicted = predicted_flow(pointmaps[other], world_to_cam, intrinsics)
        kept, targets = window_matches(greys[other], greys[view], predicted, pixels, options)
        found_points.append(points[kept])
        found_pixels.append(targets)
    points = np.concatenate(found_points) if found_points else np.zeros((0, 3))
    pixels = np.concatenate(found_pixels) if found_pixels else np.zeros((0, 2))
    reach = np.degrees(np.arctan(options.radius / float(intrinsics[0])))  # the window's angular size
    accept = (options.min_inliers, gain, options.min_cells, reach)
    return _pnp_verdict(points, pixels, intrinsics, cam_to_world, greys[view].shape, options.threshold_px, accept)


def feature_matches(
    view: int,
    neighbours: list[int],
    greys: list[np.ndarray],  # [H, W] uint8 network images
    pointmaps: list[np.ndarray | None],  # [H, W, 3] world points of the neighbours (NaN where unusable)
    options: WindowOptions,
    keypoints: dict | None = None,  # view -> its SIFT keypoints, filled as they are found (images do not change)
) -> tuple[np.ndarray, np.ndarray]:
    """SIFT matches of ``view`` with its neighbours (ratio test), as world points [M, 3] (the neighbours'
    pointmaps at their keypoints) and the view's pixels [M, 2]."""
    cv2 = _cv2()
    keypoints = {} if keypoints is None else keypoints
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    view_pixels, descriptors = _keypoints(view, greys, options, keypoints)
    points, pixels = [np.zeros((0, 3))], [np.zeros((0, 2))]
    if len(view_pixels) < 2:
        return points[0], pixels[0]
    for other in neighbours:
        other_pixels, other_descriptors = _keypoints(other, greys, options, keypoints)
        if len(other_pixels) < 2:
            continue
        world = _sampled(pointmaps[other], other_pixels)
        pairs = [
            (best.queryIdx, best.trainIdx)
            for best, second in matcher.knnMatch(other_descriptors, descriptors, k=2)
            if best.distance < options.ratio * second.distance
        ]
        if not pairs:
            continue
        source, target = np.array(pairs).T
        lifted = np.isfinite(world[source]).all(-1)
        points.append(world[source[lifted]])
        pixels.append(view_pixels[target[lifted]])
    return np.concatenate(points), np.concatenate(pixels)


def _keypoints(
    view: int, greys: list[np.ndarray], options: WindowOptions, cache: dict
) -> tuple[np.ndarray, np.ndarray | None]:
    """SIFT keypoints of ``view`` as continuous pixels [K, 2] and their descriptors [K, 128], from ``cache``."""
    if view not in cache:
        keys, descriptors = _cv2().SIFT_create(nfeatures=options.features).detectAndCompute(greys[view], None)
        pixels = np.array([key.pt for key in keys]).reshape(-1, 2) + 0.5  # OpenCV's pixel centres are integers
        cache[view] = (pixels if descriptors is not None else np.zeros((0, 2)), descriptors)
    return cache[view]


def _sampled(field: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear values [N, C] of a [H, W, C] field at continuous pixels [N, 2], the nearest pixel's next to a hole
    and at the border (the nearest pixel everywhere moves a keypoint's point by half a pixel on average: 0.1 deg
    of rotation in PnP on exact points)."""
    values = sample_field(field.astype(np.float32), pixels).astype(np.float64)
    holes = ~np.isfinite(values).all(-1)
    values[holes] = _at(field, pixels[holes])
    return values


def _pnp_verdict(
    points: np.ndarray,  # [N, 3] world points
    pixels: np.ndarray,  # [N, 2] network pixels in the view
    intrinsics: np.ndarray,  # [4] network
    cam_to_world: np.ndarray,  # [4, 4] the view's current camera
    shape: tuple[int, int],
    threshold_px: float,
    accept: tuple[int, float, int, float],  # min_inliers, gain, min_cells, max_turn (deg)
) -> Relocalised:
    """PnP-RANSAC on the matches; its pose accepted at ``min_inliers``, ``gain`` times the current pose's inliers,
    inliers in ``min_cells`` cells and a turn of at most ``max_turn`` degrees."""
    min_inliers, gain, min_cells, max_turn = accept
    current = int(pose_inliers(points, pixels, intrinsics, cam_to_world, threshold_px).sum())
    pose, inliers = pnp_pose(points, pixels, intrinsics, threshold_px)
    count = int(inliers.sum())
    cells = _cells(pixels[inliers], shape)
    turn = _turn(cam_to_world, pose) if pose is not None else np.inf
    accepted = count >= min_inliers and count >= gain * current and cells >= min_cells and turn <= max_turn
    return Relocalised(pose if accepted else None, len(points), count, current, cells, turn)


def _cells(pixels: np.ndarray, shape: tuple[int, int]) -> int:
    """How many cells of a 4x4 grid over an image of ``shape`` (H, W) hold at least one of ``pixels`` [N, 2]."""
    height, width = shape
    column = np.clip((pixels[:, 0] * 4 / width).astype(np.int64), 0, 3)
    row = np.clip((pixels[:, 1] * 4 / height).astype(np.int64), 0, 3)
    return len(np.unique(row * 4 + column))


def _turn(before: np.ndarray, after: np.ndarray) -> float:
    """Degrees between the orientations of two cameras [4, 4]."""
    cosine = (np.trace(before[:3, :3].T @ after[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
