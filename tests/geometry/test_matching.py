"""Guided SIFT matching (geometry.features, geometry.matching) on the splat benchmark's textured room with the
noisy oracle (per-view misplaced pointmaps, depth warp and noise): matches land on the true correspondences."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import splat_scene  # noqa: E402
from bench_splat import NOISY, FastLikeOracle  # noqa: E402

from fast3r_ns import ReconstructOptions, reconstruct_from_predictions  # noqa: E402
from fast3r_ns.geometry.conventions import intrinsics_to_network  # noqa: E402
from fast3r_ns.geometry.features import extract_features, view_features  # noqa: E402
from fast3r_ns.geometry.matching import match_tracks  # noqa: E402
from fast3r_ns.io import load_images  # noqa: E402


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    scene = splat_scene.make("room")
    scene = scene.reordered(scene.process_order()[:6])
    paths = scene.write_images(tmp_path_factory.mktemp("room"))
    images = load_images(paths, size=512)
    predictions = FastLikeOracle(scene, images, seed=11, **NOISY)([im.tensor for im in images])
    return scene, images, predictions


def test_keypoints_follow_the_pixel_convention() -> None:
    ys, xs = np.mgrid[0:96, 0:128] + 0.5
    centre = np.array([61.3, 45.8])
    blob = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 3.0**2))
    image = torch.from_numpy(2 * blob - 1).float().expand(1, 3, 96, 128)
    ((pixels, descriptors, scales),) = extract_features([image])
    nearest = pixels[np.argmin(np.linalg.norm(pixels - centre, axis=1))]
    np.testing.assert_allclose(nearest, centre, atol=0.05)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, rtol=1e-5)
    assert len(scales) == len(pixels)


def test_guided_matches_are_true_correspondences(room) -> None:
    scene, images, predictions = room
    rec = reconstruct_from_predictions(images, predictions, ReconstructOptions(device="cpu", colors="network"))
    features = view_features(
        [im.tensor for im in images],
        [p["pts3d_in_other_view"][0] for p in predictions],
        [p["conf"][0] for p in predictions],
    )
    network = np.stack(
        [intrinsics_to_network(c, im.scale_to_original, im.crop_offset) for c, im in zip(rec.intrinsics, images)]
    )
    tracks = match_tracks(features, network, rec.cam_to_world, neighbors=3)
    assert tracks.num_tracks > 300
    track = tracks.track
    first = tracks.offsets[:-1][track]
    original = np.stack([images[v].to_original(p) for v, p in zip(tracks.view, tracks.pixel)])
    truth = np.stack([scene.cast_pixels(v, p[None])[1][0] for v, p in zip(tracks.view, original)])
    errors = []
    for row in np.flatnonzero(first != np.arange(len(track))):
        camera = scene.cameras[tracks.view[row]]
        cam = np.linalg.inv(camera.cam_to_world) @ np.append(truth[first[row]], 1.0)
        fx, fy, cx, cy = camera.intrinsics
        errors.append(
            np.hypot(fx * cam[0] / cam[2] + cx - original[row, 0], fy * cam[1] / cam[2] + cy - original[row, 1])
        )
    errors = np.array(errors)  # original pixels (the network images are these upsampled twice)
    assert np.mean(errors < 1.0) > 0.6
    assert np.median(errors) < 0.8
