"""The splatfacto benchmark's textured scenes (benchmarks/splat_scene.py): exact, deterministic, textured, and the
cameras see the objects."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import splat_scene  # noqa: E402


@pytest.fixture(scope="module", params=splat_scene.SCENES)
def scene(request):
    return splat_scene.make(request.param)


def test_boxes_are_hit_exactly() -> None:
    scene = splat_scene.make("room")
    lo, hi = scene.box_min[0], scene.box_max[0]
    origin = np.array([(lo[0] + hi[0]) / 2, lo[1] - 1.0, 0.3])  # in front of the box's y-min face
    t, obj = scene.cast(origin, np.array([[0.0, 2.0, 0.0]]))
    assert obj[0] == len(scene.sphere_radii) + 6 and t[0] == pytest.approx(0.5)  # 1 m at |d| = 2
    normal = scene.normals(origin + t[0] * np.array([[0.0, 2.0, 0.0]]), obj)
    np.testing.assert_allclose(normal, [[0.0, -1.0, 0.0]])


def test_scenes_are_deterministic_and_textured(scene) -> None:
    again = splat_scene.make("room_hard" if len(scene.cameras) == 72 else "room")
    for a, b in zip(scene.cameras, again.cameras):
        np.testing.assert_array_equal(a.cam_to_world, b.cam_to_world)
    view = len(scene.cameras) // 3
    image = scene.render_rgb(view, supersample=1)
    np.testing.assert_array_equal(image, again.render_rgb(view, supersample=1))
    assert image.shape == (splat_scene.HEIGHT, splat_scene.WIDTH, 3)
    # Real texture: many colours, strong local contrast everywhere (not flat shading).
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1000
    gradient = np.abs(np.diff(image.astype(np.float64), axis=1)).mean(axis=2)
    assert (gradient > 30).mean() > 0.03
    for block in np.array_split(gradient, 4, axis=0):  # texture in every horizontal band of the image
        assert block.mean() > 3


def test_cameras_look_at_the_objects(scene) -> None:
    objects = len(scene.sphere_radii)
    for view, camera in enumerate(scene.cameras):
        center = camera.cam_to_world[:3, 3]
        assert np.all(center > scene.room_min) and np.all(center < scene.room_max)
        assert not scene.inside_object(center, margin=0.1)
        grid = np.stack(np.meshgrid(np.arange(8, 256, 16) + 0.5, np.arange(8, 192, 16) + 0.5), -1)
        obj = scene.cast_pixels(view, grid)[2]
        on_objects = ((obj < objects) | (obj >= objects + 6)).mean()  # spheres and boxes, not walls
        assert on_objects > 0.05, f"view {view} sees mostly walls"


def test_split_names_and_cameras(scene) -> None:
    names = scene.image_names()
    evals = [i for i, s in enumerate(scene.split) if s == "eval"]
    assert len(names) == len(set(names)) == len(scene.cameras)
    assert [names[i] for i in evals] == [f"frame_eval_{k + 1:05d}.png" for k in range(len(evals))]
    ordered = scene.reordered(scene.process_order())
    assert ordered.image_names() == sorted(n for n in names if "train" in n) + sorted(n for n in names if "eval" in n)
    focals = {float(c.intrinsics[0]) for c in scene.cameras}
    if len(scene.cameras) == 72:  # room_hard: two cameras, both held out
        assert sorted(focals) == pytest.approx([splat_scene.FOCAL, 1.4 * splat_scene.FOCAL])
        assert {scene.cameras[i].intrinsics[0] for i in evals} == focals
    else:
        assert len(scene.cameras) == 40 and focals == {splat_scene.FOCAL} and len(evals) == 5
