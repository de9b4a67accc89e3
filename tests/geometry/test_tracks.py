"""Tracks from pointmaps: consistent merging, exact correspondences from exact pointmaps, bounded pairs."""

from __future__ import annotations

import numpy as np
import torch

from fast3r_ns.geometry.tracks import build_tracks, merge_consistent, sample_view, subpixel_observations
from fast3r_ns.testing import OraclePredictor, make_scene


def test_merge_never_puts_two_pixels_of_one_view_in_a_track() -> None:
    node_view = np.array([0, 1, 2, 0, 3])
    # 0-1, 1-2 merge; 2-3 would bring a second pixel of view 0; 3-4 is its own track; 4-0 would too.
    label = merge_consistent(np.array([0, 1, 2, 3, 4]), np.array([1, 2, 3, 4, 0]), node_view)
    assert label[0] == label[1] == label[2] and label[3] == label[4] and label[3] != label[0]
    assert (merge_consistent(np.zeros(0, int), np.zeros(0, int), node_view) == -1).all()


def test_exact_pointmaps_give_exact_tracks() -> None:
    scene = make_scene(8, image_size=(128, 96), arc_degrees=60, seed=4)
    predictions = OraclePredictor(scene, normalize=False)([torch.zeros(1, 3, 96, 128)] * 8)
    maps = [p["pts3d_in_other_view"][0] for p in predictions]
    samples = [sample_view(m, p["conf"][0], 512) for m, p in zip(maps, predictions)]
    cam_to_world = scene.cam_to_world_in_view0()
    tracks = build_tracks(samples, cam_to_world, neighbors=3, max_pair_matches=100)
    assert len(tracks.pairs) <= 8 * 3 and tracks.pair_matches.max() <= 100
    lengths = np.diff(tracks.offsets)
    assert tracks.num_tracks > 200 and lengths.min() >= 2
    track = tracks.track
    assert len(np.unique(track * 8 + tracks.view)) == len(track)
    pixel = subpixel_observations(tracks, maps, window=2)
    ok = np.isfinite(pixel).all(-1)
    assert ok.mean() > 0.9
    # Project each track's 3-D point (pointmap world = camera 0 frame) into its views with the true cameras.
    world_to_cam = np.linalg.inv(cam_to_world)[tracks.view[ok]]
    points = tracks.points[track[ok]]
    cam = np.einsum("oij,oj->oi", world_to_cam[:, :3, :3], points) + world_to_cam[:, :3, 3]
    fx, fy, cx, cy = np.array([c.intrinsics for c in scene.cameras])[tracks.view[ok]].T
    projected = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1)
    grid_error = np.linalg.norm(projected - tracks.pixel[ok], axis=-1)
    subpixel_error = np.linalg.norm(projected - pixel[ok], axis=-1)
    assert np.median(subpixel_error) < 0.1 < np.median(grid_error)
