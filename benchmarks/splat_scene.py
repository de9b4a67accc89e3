"""Textured synthetic scenes for the splatfacto benchmark (numpy only, deterministic).

A box room with textured spheres and boxes, Lambertian shading from two fixed lights (view-independent, so 3D
Gaussian splatting can fit it exactly), rendered by ray casting with supersampling. Geometry is exact:
``TexturedScene`` extends ``fast3r_ns.testing.Scene`` (same ray casting, cameras and conventions: OpenCV camera
axes, continuous pixel coordinates, world up = +z), so ``fast3r_ns.testing.OraclePredictor`` turns it into
pointmaps.

Three scenes (``make``):
  "room"       40 views of 256x192 on a loop around the objects, one camera (65 degree horizontal field of view);
               every 8th view (k % 8 == 4) is held out for evaluation.
  "room_hard"  72 views of 256x192 from scattered positions (radius 1.0-2.6 m, height 0.5-2.3 m, varied aims, in
               golden-angle order so neighbouring files are far apart), two cameras: odd views have a 1.4x
               focal length; every 9th view (k % 9 == 4, both cameras) is held out.
  "room_natural" the same objects with non-repetitive fractal value-noise textures (no checkers, stripes or
               grids), a little view-dependent shading (a Blinn-Phong highlight of the main light, so brightness
               constancy is not exact), and a wider baseline: 30 views on a loop 12 degrees apart with the radius
               (1.9-2.7 m) and height (0.8-1.9 m) varying more from view to view; every 6th view (k % 6 == 3) held out.

    PYTHONPATH=. python benchmarks/splat_scene.py room OUT_DIR   # writes OUT_DIR/images/*.png (a quick look)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fast3r_ns.geometry.conventions import pixel_centers
from fast3r_ns.testing.scene import Camera, Scene, look_at

WIDTH, HEIGHT = 256, 192
FOCAL = (WIDTH / 2) / np.tan(np.deg2rad(65.0) / 2)  # 65 degree horizontal field of view
SCENES = ("room", "room_hard", "room_natural")
LIGHTS = (  # (direction towards the light, weight); |n . l| so every face gets some light
    (np.array([0.45, 0.3, 0.84]), 0.55),
    (np.array([-0.6, 0.7, 0.38]), 0.2),
)
AMBIENT = 0.3
NOISE_OCTAVES = 6  # fractal value noise: octaves of halving period ...
NOISE_PERSISTENCE = 0.8  # ... and amplitude times this (rougher than 0.5: fine detail for matching)
NOISE_CONTRAST = 4.0  # the noise is stretched about 0.5 by this factor (then clipped to [0, 1])


@dataclass(frozen=True)
class Material:
    """A procedural albedo of world coordinates: two colours mixed by a pattern of the given period (metres)."""

    pattern: str  # "checker", "stripes", "grid", "mosaic", "rings", "noise"
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    period: float
    axis: int = 0  # stripes: the coordinate the stripes vary along (rings: the axis they wrap around)


def _hash01(cells: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell [N, 3]."""
    h = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791) ^ (salt * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float64) / 65536.0


def albedo(material: Material, points: np.ndarray, salt: int = 0) -> np.ndarray:
    """Colours [N, 3] in [0, 1] of the material at world points [N, 3]."""
    a, b = np.asarray(material.color_a), np.asarray(material.color_b)
    q = points / material.period
    if material.pattern == "checker":
        t = np.floor(q).astype(np.int64).sum(axis=1) % 2
    elif material.pattern == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * q[:, material.axis])
    elif material.pattern == "grid":
        frac = np.abs(q - np.round(q))
        t = (np.sort(frac, axis=1)[:, 1] < 0.08).astype(np.float64)  # lines on the two in-plane coordinates
    elif material.pattern == "mosaic":
        cells = np.floor(q).astype(np.int64)
        t = _hash01(cells, salt)
        tint = _hash01(cells, salt + 7)[:, None] * np.array([0.25, -0.15, 0.1])
        return np.clip(a * (1 - t[:, None]) + b * t[:, None] + tint, 0.0, 1.0)
    elif material.pattern == "noise":
        t = np.clip(0.5 + NOISE_CONTRAST * (fractal_noise(q, salt) - 0.5), 0.0, 1.0)
        tint = (fractal_noise(q * 0.37 + 11.0, salt + 5) - 0.5)[:, None] * np.array([0.3, -0.2, 0.25])
        return np.clip(a * (1 - t[:, None]) + b * t[:, None] + tint, 0.0, 1.0)
    elif material.pattern == "rings":
        others = [k for k in range(3) if k != material.axis]
        t = (np.floor(np.linalg.norm(q[:, others], axis=1) * 2) % 2).astype(np.float64)
    else:
        raise ValueError(f"unknown pattern {material.pattern}")
    return a * (1 - t[:, None]) + b * t[:, None]


def fractal_noise(q: np.ndarray, salt: int) -> np.ndarray:
    """Value noise [N] in [0, 1] of points [N, 3] (in units of the base period): NOISE_OCTAVES octaves of
    trilinearly interpolated (smoothstep) hashed lattice values, each of half the period and NOISE_PERSISTENCE
    times the amplitude of the last.
    Solid (defined in 3-D, so it has no seams between faces) and not periodic."""
    total, norm, amplitude = np.zeros(len(q)), 0.0, 1.0
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    for octave in range(NOISE_OCTAVES):
        scaled = q * 2.0**octave
        cells = np.floor(scaled).astype(np.int64)
        f = scaled - cells
        smooth = f * f * (3.0 - 2.0 * f)
        value = np.zeros(len(q))
        for corner in corners:
            weight = np.prod(np.where(corner == 1, smooth, 1.0 - smooth), axis=1)
            value += weight * _hash01(cells + corner, salt * 31 + octave)
        total += amplitude * value
        norm += amplitude
        amplitude *= NOISE_PERSISTENCE
    return total / norm


def shade(normals: np.ndarray) -> np.ndarray:
    """Lambertian shading factor [N] of unit normals [N, 3] (view-independent)."""
    light = np.full(len(normals), AMBIENT)
    for direction, weight in LIGHTS:
        light += weight * np.abs(normals @ (direction / np.linalg.norm(direction)))
    return light


def highlight(normals: np.ndarray, points: np.ndarray, eye: np.ndarray, exponent: float = 12.0) -> np.ndarray:
    """Blinn-Phong factor [N] in [0, 1] of the first light seen from ``eye``: (n . h)^exponent, h the half vector
    between the light and the view direction (normals facing the viewer; depends on the view)."""
    light = LIGHTS[0][0] / np.linalg.norm(LIGHTS[0][0])
    view = eye - points
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    facing = np.where((normals * view).sum(axis=1, keepdims=True) < 0, -normals, normals)
    half = light + view
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    return np.clip((facing * half).sum(axis=1), 0.0, 1.0) ** exponent


@dataclass
class TexturedScene(Scene):
    """``Scene`` plus axis-aligned boxes, one ``Material`` per object, Lambertian shading and (``specular`` > 0) a
    view-dependent highlight of that weight.

    Object ids: spheres 0..S-1, walls S..S+5 (S + 2 * axis + (hit the max side)), boxes S+6..S+5+B.
    """

    box_min: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [B, 3]
    box_max: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # [B, 3]
    materials: list[Material] = field(default_factory=list)  # S + 6 + B
    split: list[str] = field(default_factory=list)  # per camera "train" or "eval"
    specular: float = 0.0  # weight of the Blinn-Phong highlight (0: Lambertian only, view-independent)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.materials) != len(self.sphere_radii) + 6 + len(self.box_min):
            raise ValueError("one material per sphere, wall and box")

    def cast(self, origin: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t, obj = super().cast(origin, directions)
        d = np.asarray(directions, dtype=np.float64)
        o = np.asarray(origin, dtype=np.float64)
        first_box = len(self.sphere_radii) + 6
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = 1.0 / d
            for index, (lo, hi) in enumerate(zip(self.box_min, self.box_max)):
                t0, t1 = (lo - o) * inverse, (hi - o) * inverse
                near = np.nan_to_num(np.minimum(t0, t1), nan=-np.inf).max(axis=1)
                far = np.nan_to_num(np.maximum(t0, t1), nan=np.inf).min(axis=1)
                closer = (near <= far) & (near > 1e-9) & (near < t)
                t = np.where(closer, near, t)
                obj = np.where(closer, first_box + index, obj)
        return t, obj

    def normals(self, points: np.ndarray, obj: np.ndarray) -> np.ndarray:
        """Unit surface normals [N, 3] at world points on objects ``obj`` (walls: pointing into the room)."""
        spheres = len(self.sphere_radii)
        out = np.zeros_like(points)
        for s, (center, radius) in enumerate(zip(self.sphere_centers, self.sphere_radii)):
            mine = obj == s
            out[mine] = (points[mine] - center) / radius
        wall = (obj >= spheres) & (obj < spheres + 6)
        axis, side = (obj[wall] - spheres) // 2, (obj[wall] - spheres) % 2
        out[np.flatnonzero(wall), axis] = np.where(side == 1, -1.0, 1.0)
        for b, (lo, hi) in enumerate(zip(self.box_min, self.box_max)):
            mine = np.flatnonzero(obj == spheres + 6 + b)
            distance = np.concatenate([np.abs(points[mine] - lo), np.abs(points[mine] - hi)], axis=1)
            face = np.argmin(distance, axis=1)
            out[mine, face % 3] = np.where(face < 3, -1.0, 1.0)
        return out

    def texture(self, points: np.ndarray, obj: np.ndarray, eye: np.ndarray | None = None) -> np.ndarray:
        """Shaded colours [N, 3] in [0, 1]: albedo of each object's material times Lambertian shading, plus the
        highlight seen from ``eye`` (world camera centre) when ``specular`` > 0."""
        normals = self.normals(points, obj)
        # Off the surface by a hair, so patterns of a plane lying on a cell boundary (the floor at z = 0) do not
        # flicker with rounding.
        lifted = points + 1e-6 * normals
        colors = np.zeros_like(points)
        for index in np.unique(obj):
            mine = obj == index
            colors[mine] = albedo(self.materials[index], lifted[mine], salt=int(index))
        shaded = colors * shade(normals)[:, None]
        if self.specular > 0 and eye is not None:
            shaded += self.specular * highlight(normals, points, np.asarray(eye, dtype=np.float64))[:, None]
        return np.clip(shaded, 0.0, 1.0)

    def render_rgb(self, view: int, supersample: int = 2) -> np.ndarray:
        """[H, W, 3] uint8 image of camera ``view``, the mean of supersample^2 rays per pixel (antialiased)."""
        camera = self.cameras[view]
        centers = pixel_centers(camera.height, camera.width)
        offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
        total = np.zeros((camera.height * camera.width, 3))
        for dy in offsets:
            for dx in offsets:
                _, world, obj = self.cast_pixels(view, centers + np.array([dx, dy]))
                total += self.texture(world.reshape(-1, 3), obj.reshape(-1), camera.cam_to_world[:3, 3])
        image = total / supersample**2
        return np.round(image * 255.0).astype(np.uint8).reshape(camera.height, camera.width, 3)

    def image_names(self) -> list[str]:
        """File names in the naming of ``ns-process-data fast3r --eval-data`` (frame_train_/frame_eval_, 1-based,
        numbered within each split in camera order), which nerfstudio's ``--eval-mode filename`` splits on."""
        counters = {"train": 0, "eval": 0}
        names = []
        for split in self.split:
            counters[split] += 1
            names.append(f"frame_{split}_{counters[split]:05d}.png")
        return names

    def process_order(self) -> list[int]:
        """Camera indices in the order ``process()`` sees the images: the train views, then the eval views."""
        return [i for split in ("train", "eval") for i, s in enumerate(self.split) if s == split]

    def reordered(self, order: list[int]) -> TexturedScene:
        """The same scene with its cameras (and split) in ``order`` (the oracle's view order must be process()'s)."""
        return TexturedScene(
            sphere_centers=self.sphere_centers,
            sphere_radii=self.sphere_radii,
            room_min=self.room_min,
            room_max=self.room_max,
            cameras=[self.cameras[i] for i in order],
            base_colors=self.base_colors,
            box_min=self.box_min,
            box_max=self.box_max,
            materials=self.materials,
            split=[self.split[i] for i in order],
            specular=self.specular,
        )

    def write_images(self, directory: str | Path, supersample: int = 2) -> list[Path]:  # type: ignore[override]
        """Write every camera's antialiased image as ``directory/<image_names()[i]>`` (PNG); paths in view order."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for view, name in enumerate(self.image_names()):
            path = directory / name
            Image.fromarray(self.render_rgb(view, supersample)).save(path, optimize=True)
            paths.append(path)
        return paths

    def inside_object(self, point: np.ndarray, margin: float = 0.25) -> bool:
        """True when ``point`` is within ``margin`` of a sphere or box (or of a wall): no camera there."""
        if np.any(point < self.room_min + margin) or np.any(point > self.room_max - margin):
            return True
        if np.any(np.linalg.norm(self.sphere_centers - point, axis=1) < self.sphere_radii + margin):
            return True
        return bool(np.any(np.all((point > self.box_min - margin) & (point < self.box_max + margin), axis=1)))


NATURAL_MATERIALS = [  # room_natural: fractal value noise everywhere (base periods 0.05-0.32 m)
    Material("noise", (0.55, 0.25, 0.12), (0.95, 0.8, 0.45), 0.105),  # spheres
    Material("noise", (0.1, 0.3, 0.55), (0.75, 0.85, 0.9), 0.087),
    Material("noise", (0.15, 0.4, 0.1), (0.7, 0.8, 0.35), 0.052),
    Material("noise", (0.6, 0.5, 0.4), (0.95, 0.92, 0.85), 0.315),  # walls: x min, x max
    Material("noise", (0.35, 0.45, 0.55), (0.9, 0.9, 0.8), 0.245),
    Material("noise", (0.5, 0.55, 0.35), (0.92, 0.9, 0.75), 0.28),  # y min, y max
    Material("noise", (0.55, 0.4, 0.5), (0.95, 0.85, 0.85), 0.21),
    Material("noise", (0.3, 0.27, 0.22), (0.8, 0.75, 0.65), 0.14),  # floor (gravel-like), ceiling
    Material("noise", (0.7, 0.7, 0.72), (0.95, 0.95, 0.95), 0.315),
    Material("noise", (0.45, 0.22, 0.08), (0.85, 0.6, 0.3), 0.07),  # boxes (wood-like), stone, moss
    Material("noise", (0.3, 0.32, 0.35), (0.75, 0.75, 0.7), 0.087),
    Material("noise", (0.25, 0.35, 0.05), (0.8, 0.75, 0.2), 0.063),
]


def _objects() -> TexturedScene:
    """The room (6 x 6 x 3 m, floor at z = 0) with three spheres and three boxes, no cameras yet."""
    spheres = [(-0.8, 0.3, 0.55, 0.55), (0.75, 0.85, 0.4, 0.4), (0.45, -0.95, 0.95, 0.35)]
    boxes = [((-0.25, -0.3, 0.0), (0.4, 0.3, 0.55)), ((-1.7, -1.5, 0.0), (-1.05, -0.85, 1.15))]
    boxes.append(((1.2, -0.4, 0.0), (1.8, 0.2, 0.3)))
    materials = [
        Material("checker", (0.9, 0.2, 0.15), (0.95, 0.85, 0.25), 0.22),  # spheres
        Material("stripes", (0.15, 0.35, 0.9), (0.92, 0.92, 0.95), 0.18, axis=2),
        Material("mosaic", (0.1, 0.65, 0.3), (0.65, 0.15, 0.6), 0.12),
        Material("mosaic", (0.75, 0.35, 0.3), (0.98, 0.9, 0.8), 0.3),  # walls: x min, x max
        Material("stripes", (0.3, 0.5, 0.72), (0.92, 0.95, 0.82), 0.25, axis=1),
        Material("checker", (0.45, 0.72, 0.38), (0.96, 0.95, 0.72), 0.35),  # y min, y max
        Material("mosaic", (0.55, 0.42, 0.75), (0.95, 0.88, 0.9), 0.25),
        Material("checker", (0.82, 0.8, 0.74), (0.25, 0.2, 0.2), 0.4),  # floor, ceiling
        Material("grid", (0.92, 0.92, 0.92), (0.3, 0.3, 0.36), 0.5),
        Material("checker", (0.88, 0.52, 0.12), (0.22, 0.1, 0.05), 0.1),  # boxes
        Material("rings", (0.3, 0.8, 0.8), (0.05, 0.25, 0.32), 0.3, axis=2),
        Material("mosaic", (0.95, 0.8, 0.2), (0.35, 0.2, 0.55), 0.1),
    ]
    return TexturedScene(
        sphere_centers=np.array([s[:3] for s in spheres]),
        sphere_radii=np.array([s[3] for s in spheres]),
        room_min=np.array([-3.0, -3.0, 0.0]),
        room_max=np.array([3.0, 3.0, 3.0]),
        box_min=np.array([b[0] for b in boxes], dtype=np.float64),
        box_max=np.array([b[1] for b in boxes], dtype=np.float64),
        materials=materials,
    )


def _camera(center: np.ndarray, target: np.ndarray, focal: float) -> Camera:
    intrinsics = np.array([focal, focal, WIDTH / 2, HEIGHT / 2])
    return Camera(WIDTH, HEIGHT, intrinsics, look_at(center, target))


def make(name: str) -> TexturedScene:
    """The benchmark scene ``name`` (``SCENES``), cameras in trajectory order with their split."""
    scene = _objects()
    if name == "room":
        views = 40
        for k in range(views):
            angle = 2 * np.pi * k / views
            radius = 2.2 + 0.25 * np.sin(3 * angle)
            center = np.array([radius * np.cos(angle), radius * np.sin(angle), 1.3 + 0.4 * np.sin(2 * angle + 0.7)])
            target = np.array([0.25 * np.cos(5 * angle), 0.25 * np.sin(4 * angle), 0.5])
            scene.cameras.append(_camera(center, target, FOCAL))
            scene.split.append("eval" if k % 8 == 4 else "train")
    elif name == "room_natural":
        scene.materials, scene.specular = list(NATURAL_MATERIALS), 0.15
        views = 30
        for k in range(views):
            angle = 2 * np.pi * k / views
            radius = 2.3 + 0.4 * np.sin(5 * angle + 1.2)
            center = np.array([radius * np.cos(angle), radius * np.sin(angle), 1.35 + 0.55 * np.sin(3 * angle + 0.4)])
            target = np.array([0.3 * np.cos(4 * angle), 0.3 * np.sin(3 * angle), 0.5])
            scene.cameras.append(_camera(center, target, FOCAL))
            scene.split.append("eval" if k % 6 == 3 else "train")
    elif name == "room_hard":
        views = 72
        rng = np.random.default_rng(2024)
        golden = np.pi * (3 - np.sqrt(5))
        k = 0
        while len(scene.cameras) < views:
            angle = golden * k + rng.uniform(-0.1, 0.1)
            radius, height = rng.uniform(1.0, 2.6), rng.uniform(0.5, 2.3)
            center = np.array([radius * np.cos(angle), radius * np.sin(angle), height])
            k += 1
            if scene.inside_object(center):
                continue
            target = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5), rng.uniform(0.2, 1.2)])
            if np.linalg.norm(target[:2] - center[:2]) < 1.2:  # aim across the room, not at the floor below
                target[:2] = -0.5 * center[:2]
            view = len(scene.cameras)
            scene.cameras.append(_camera(center, target, FOCAL * (1.4 if view % 2 else 1.0)))
            scene.split.append("eval" if view % 9 == 4 else "train")
    else:
        raise ValueError(f"unknown scene {name!r}; choose from {SCENES}")
    return scene


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: python {sys.argv[0]} {{{','.join(SCENES)}}} OUT_DIR")
    written = make(sys.argv[1]).write_images(Path(sys.argv[2]) / "images")
    print(f"wrote {len(written)} images to {Path(sys.argv[2]) / 'images'}")
