"""Regenerate docs/images/fast3r_report_example.png: the report of a synthetic room scanned by a walking camera.

Run from the repository root: ``python docs/make_report_example.py`` (needs matplotlib; no GPU, no weights).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from fast3r_ns.preview.report import REPORT_PNG, write_report
from fast3r_ns.reconstruction import Reconstruction

OUT_PNG = Path(__file__).parent / "images" / "fast3r_report_example.png"


def room_reconstruction(num_views: int = 36, num_points: int = 60_000) -> Reconstruction:
    """A 6 x 4 m room (OpenCV world: y down, floor at y = 1.5) seen by a camera walking an arc and looking out."""
    rng = np.random.default_rng(7)
    # Floor and four walls, each with its own colour and some texture.
    u, v = rng.random(num_points), rng.random(num_points)
    surface = rng.choice(5, num_points, p=[0.3, 0.2, 0.2, 0.15, 0.15])
    x, z = np.where(surface < 3, -3 + 6 * u, np.where(surface == 3, -3.0, 3.0)), -2 + 4 * v
    z = np.where(surface == 1, -2.0, np.where(surface == 2, 2.0, z))
    y = np.where(surface == 0, 1.5, 1.5 - 2.5 * v)
    points = np.stack([x, y, np.where(surface >= 3, -2 + 4 * u, z)], axis=1) + rng.normal(0, 0.01, (num_points, 3))
    palette = np.array([[150, 110, 80], [200, 200, 190], [120, 150, 190], [190, 170, 120], [140, 170, 130]])
    colors = np.clip(palette[surface] * rng.uniform(0.75, 1.1, (num_points, 1)), 0, 255).astype(np.uint8)

    angles = np.linspace(-0.6 * np.pi, 0.6 * np.pi, num_views)
    centres = np.stack([1.2 * np.sin(angles), np.zeros(num_views), -1.2 * np.cos(angles) + 0.8], axis=1)
    cam_to_world = np.tile(np.eye(4), (num_views, 1, 1))
    for i, (angle, centre) in enumerate(zip(angles, centres)):
        forward = np.array([np.sin(angle + 0.4), 0.1, -np.cos(angle + 0.4)])
        forward /= np.linalg.norm(forward)
        right = np.cross([0.0, 1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        cam_to_world[i, :3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
        cam_to_world[i, :3, 3] = centre
    confidence = rng.uniform(6.0, 9.0, num_views)
    confidence[[11, 27]] = [2.1, 2.6]  # two blurry photos
    pose_ok = np.ones(num_views, bool)
    pose_ok[19] = False
    focal = rng.normal(1150, 12, num_views)
    return Reconstruction(
        image_paths=[Path(f"IMG_{4021 + i}.jpg") for i in range(num_views)],
        image_sizes=np.tile([1600, 1200], (num_views, 1)),
        intrinsics=np.stack([focal, focal, np.full(num_views, 800.0), np.full(num_views, 600.0)], axis=1),
        cam_to_world=cam_to_world,
        view_confidence=confidence,
        pose_ok=pose_ok,
        points=points.astype(np.float32),
        colors=colors,
        point_confidence=rng.uniform(1, 10, num_points).astype(np.float32),
        point_image=rng.integers(0, num_views, num_points).astype(np.int32),
        point_pixel=np.zeros((num_points, 2), np.float32),
        timings={"load images": 1.9, "model": 6.4, "cameras": 0.8, "point cloud": 1.1, "write dataset": 2.3},
    )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        command = "ns-process-data fast3r --data examples/room/images --output-dir outputs/room"
        write_report(Path(tmp), room_reconstruction(), command=command)
        OUT_PNG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / REPORT_PNG, OUT_PNG)
    print(f"wrote {OUT_PNG} ({OUT_PNG.stat().st_size // 1024} KiB)")
