"""The splatfacto benchmark's textured scenes (benchmarks/splat_scene.py): exact, deterministic, textured, and the
cameras see the objects."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import splat_scene  # noqa: E402


@pytest.fixture(scope="module", params=splat_scene.SCENES)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def scene(name):
    return splat_scene.make(name)


def test_boxes_are_hit_exactly() -> None:
    scene = splat_scene.make("room")
    lo, hi = scene.box_min[0], scene.box_max[0]
    origin = np.array([(lo[0] + hi[0]) / 2, lo[1] - 1.0, 0.3])  # in front of the box's y-min face
    t, obj = scene.cast(origin, np.array([[0.0, 2.0, 0.0]]))
    assert obj[0] == len(scene.sphere_radii) + 6 and t[0] == pytest.approx(0.5)  # 1 m at |d| = 2
    normal = scene.normals(origin + t[0] * np.array([[0.0, 2.0, 0.0]]), obj)
    np.testing.assert_allclose(normal, [[0.0, -1.0, 0.0]])


def test_scenes_are_deterministic_and_textured(name, scene) -> None:
    again = splat_scene.make(name)
    for a, b in zip(scene.cameras, again.cameras):
        np.testing.assert_array_equal(a.cam_to_world, b.cam_to_world)
    view = len(scene.cameras) // 3
    image = scene.render_rgb(view, supersample=1)
    np.testing.assert_array_equal(image, again.render_rgb(view, supersample=1))
    assert image.shape == (splat_scene.HEIGHT, splat_scene.WIDTH, 3)
    # Real texture: many colours, strong local contrast everywhere (not flat shading).
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1000
    gradient = np.abs(np.diff(image.astype(np.float64), axis=1)).mean(axis=2)
    if name == "room_natural":  # smooth natural texture: few hard edges, fine detail everywhere
        assert (gradient > 8).mean() > 0.1
    else:
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


def test_split_names_and_cameras(name, scene) -> None:
    names = scene.image_names()
    evals = [i for i, s in enumerate(scene.split) if s == "eval"]
    assert len(names) == len(set(names)) == len(scene.cameras)
    assert [names[i] for i in evals] == [f"frame_eval_{k + 1:05d}.png" for k in range(len(evals))]
    ordered = scene.reordered(scene.process_order())
    assert ordered.image_names() == sorted(n for n in names if "train" in n) + sorted(n for n in names if "eval" in n)
    focals = {float(c.intrinsics[0]) for c in scene.cameras}
    if name == "room_hard":  # two cameras, both held out
        assert len(scene.cameras) == 72
        assert sorted(focals) == pytest.approx([splat_scene.FOCAL, 1.4 * splat_scene.FOCAL])
        assert {scene.cameras[i].intrinsics[0] for i in evals} == focals
    else:
        views = {"room": 40, "room_natural": 30}[name]
        assert len(scene.cameras) == views and focals == {splat_scene.FOCAL} and len(evals) == 5


def _autocorrelation(signal: np.ndarray) -> np.ndarray:
    """Normalised (unbiased: each lag divided by its number of products) autocorrelation at lags 0..len/2."""
    centred = signal - signal.mean()
    spectrum = np.fft.rfft(centred, n=2 * len(centred))
    full = np.fft.irfft(spectrum * np.conj(spectrum))[: len(centred) // 2]
    full /= len(centred) - np.arange(len(full))
    return full / full[0]


def test_natural_textures_are_not_periodic() -> None:
    """Along a 4 m line on the floor the checker floor of "room" repeats (autocorrelation near 1 at its period),
    the fractal noise of "room_natural" does not (no lag beyond its base period correlates)."""
    line = np.stack([np.linspace(-2.0, 2.0, 4000), np.full(4000, 0.37), np.full(4000, 1e-6)], axis=1)
    floor = len(splat_scene.make("room").sphere_radii) + 4  # walls: S + 2 * axis + side; the floor is z min
    checker = splat_scene.albedo(splat_scene.make("room").materials[floor], line).mean(axis=1)
    natural_material = splat_scene.make("room_natural").materials[floor]
    natural = splat_scene.albedo(natural_material, line, salt=floor).mean(axis=1)
    lags = np.arange(2000) * 0.001  # metres
    checker_ac, natural_ac = _autocorrelation(checker), _autocorrelation(natural)
    assert checker_ac[np.argmin(np.abs(lags - 0.8))] > 0.9  # the checker's period: two 0.4 m squares
    beyond = lags > 1.5 * natural_material.period
    assert np.abs(natural_ac[beyond]).max() < 0.5
    assert natural.std() > 0.05  # textured, not flat


def _image_autocorrelation_peak(image: np.ndarray, min_lag: float = 8.0) -> float:
    """Largest normalised autocorrelation of the high-passed grey image (minus its 9x9 box mean) at lags of
    ``min_lag`` to 80 pixels: a texture that repeats makes a secondary peak."""
    grey = image.astype(np.float64).mean(axis=2)
    grey -= uniform_filter(grey, 9)
    spectrum = np.fft.rfft2(grey, s=(2 * grey.shape[0], 2 * grey.shape[1]))
    ac = np.fft.fftshift(np.fft.irfft2(np.abs(spectrum) ** 2))
    cy, cx = np.array(ac.shape) // 2
    ys, xs = np.ogrid[: ac.shape[0], : ac.shape[1]]
    ring = np.hypot(ys - cy, xs - cx)
    return float(ac[(ring > min_lag) & (ring < 80)].max() / ac[cy, cx])


def test_natural_scene_images_have_no_repeating_pattern() -> None:
    """The checker rooms' views correlate with themselves shifted (0.12-0.17 measured), room_natural's do not
    (0.03-0.04), and its views hold fine texture a matcher can track."""
    natural = splat_scene.make("room_natural")
    for view in (7, 20):
        image = natural.render_rgb(view, supersample=1)
        assert _image_autocorrelation_peak(image) < 0.1
        assert (np.abs(np.diff(image.astype(np.float64).mean(axis=2), axis=1)) > 8).mean() > 0.1
    assert _image_autocorrelation_peak(splat_scene.make("room").render_rgb(7, supersample=1)) > 0.1


def test_natural_scene_shading_depends_on_the_view_a_little() -> None:
    """The same surface points seen from two cameras: identical colours in "room" (Lambertian), different by a few
    percent in "room_natural" (its highlight), so brightness constancy holds only approximately."""
    for name, low, high in (("room", 0.0, 0.0), ("room_natural", 0.005, 0.08)):
        scene = splat_scene.make(name)
        _, points, obj = scene.cast_pixels(
            0, np.stack(np.meshgrid(np.arange(4, 256, 8) + 0.5, np.arange(4, 192, 8) + 0.5), -1)
        )
        points, obj = points.reshape(-1, 3), obj.reshape(-1)
        one = scene.texture(points, obj, scene.cameras[0].cam_to_world[:3, 3])
        other = scene.texture(points, obj, scene.cameras[len(scene.cameras) // 4].cam_to_world[:3, 3])
        change = np.abs(one - other).mean()
        assert low <= change <= high, (name, change)
        if name == "room_natural":
            assert np.abs(one - other).max() > 0.1  # a visible highlight moves somewhere
