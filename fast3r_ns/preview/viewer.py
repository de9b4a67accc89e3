"""``fast3r-ns view OUT``: the point cloud and cameras of an output folder in a viser scene in the browser.

Reads only OUT's files (transforms.json, its PLY, ``fast3r_preview/``); runs on the CPU. Also
``python -m fast3r_ns.preview.viewer OUT``.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tyro
from PIL import Image, ImageOps

from fast3r_ns.imports import MissingDependencyError, require
from fast3r_ns.io.ply import read_ply_vertices
from fast3r_ns.preview.files import (
    POINTS_CONFIDENCE_FILE,
    PREVIEW_DIR,
    Camera,
    PreviewView,
    match_views,
    read_cameras,
    read_preview,
    view_status,
)

if TYPE_CHECKING:  # viser is imported when the viewer starts, so that importing ViewConfig needs only tyro
    import viser

_STATUS_COLORS = {"ok": (46, 125, 50), "weak": (239, 108, 0), "untrusted": (198, 40, 40), "unknown": (60, 60, 60)}


@dataclass
class ViewConfig:
    """Show an output folder of ns-process-data fast3r or fast3r-ns process in a 3-D viewer in the browser."""

    out_dir: tyro.conf.Positional[Path]
    """The output folder (the one holding transforms.json)."""
    host: str = "127.0.0.1"
    """Address to listen on. Default is 127.0.0.1: this machine only (reach it from elsewhere with ssh -L)."""
    port: int = 7007
    """Port to listen on; 0 picks a free one. Default is 7007 (when taken, the next free port is used)."""
    max_points: int = 1_000_000
    """Most points sent to the browser (a fixed-seed random subset). Default is 1,000,000."""
    thumbnail_size: int = 128
    """Long side in pixels of the images drawn in the camera frusta; 0 draws none. Default is 128."""

    def main(self) -> None:
        """Serve until Ctrl-C (exit code 0); exit with code 2 when the folder cannot be shown."""
        code = run(self)
        if code:
            raise SystemExit(code)


@dataclass
class Scene:
    """What the viewer shows, in the world frame of transforms.json."""

    cameras: list[Camera]
    views: list[PreviewView | None]  # per camera, what the report step recorded (None when unknown)
    status: list[str]  # per camera: "ok", "weak", "untrusted" or "unknown"
    points: np.ndarray  # [M, 3] float32
    colors: np.ndarray  # [M, 3] uint8
    confidence: np.ndarray | None  # [M] float32 per-point confidence, None when the folder has none
    num_points_total: int  # points in the PLY before subsampling
    up: np.ndarray  # [3] unit vector: the mean camera up direction


def load_scene(out_dir: Path, max_points: int = 1_000_000) -> Scene:
    """Read OUT's cameras, points (subsampled to ``max_points``), per-point confidence and preview files."""
    out_dir = Path(out_dir)
    cameras, meta = read_cameras(out_dir)
    points = np.zeros((0, 3), np.float32)
    colors = np.zeros((0, 3), np.uint8)
    confidence = None
    if meta.get("ply_file_path") and (out_dir / meta["ply_file_path"]).is_file():
        vertices = read_ply_vertices(out_dir / meta["ply_file_path"])
        points = np.stack([vertices[k] for k in "xyz"], axis=1).astype(np.float32)
        if all(k in vertices for k in ("red", "green", "blue")):
            colors = np.stack([vertices[k] for k in ("red", "green", "blue")], axis=1).astype(np.uint8)
        else:
            colors = np.full((len(points), 3), 160, np.uint8)
        if "confidence" in vertices:
            confidence = vertices["confidence"].astype(np.float32)
        elif (out_dir / PREVIEW_DIR / POINTS_CONFIDENCE_FILE).is_file():
            saved = np.load(out_dir / PREVIEW_DIR / POINTS_CONFIDENCE_FILE)
            confidence = saved.astype(np.float32) if len(saved) == len(points) else None
    num_points_total = len(points)
    if len(points) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(points), max_points, replace=False))
        points, colors = points[keep], colors[keep]
        confidence = confidence[keep] if confidence is not None else None

    preview = read_preview(out_dir)
    if preview:
        views = match_views([c.file_path for c in cameras], preview, [c.original_file_path for c in cameras])
    else:
        views = [None] * len(cameras)
    known = [v for v in views if v is not None]
    known_status = view_status([v.confidence for v in known], [v.pose_ok for v in known])
    status_of = {id(v): s for v, s in zip(known, known_status)}
    status = [status_of[id(v)] if v is not None else "unknown" for v in views]

    up = np.mean([c.cam_to_world[:3, :3] @ [0.0, -1.0, 0.0] for c in cameras], axis=0) if cameras else np.zeros(3)
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
    return Scene(cameras, views, status, points, colors, confidence, num_points_total, up)


def _extent(scene: Scene) -> tuple[np.ndarray, float]:
    """(centre, size) of the scene: the median point and the 5-95 percentile box's longest side."""
    centres = np.array([c.cam_to_world[:3, 3] for c in scene.cameras]).reshape(-1, 3)
    stuff = scene.points if len(scene.points) else centres
    if not len(stuff):
        return np.zeros(3), 1.0
    low, high = np.percentile(np.concatenate([stuff, centres]), [5, 95], axis=0)
    return np.median(stuff, axis=0), float(max(high - low)) or 1.0


def _read_image(path: Path, size: int) -> np.ndarray | None:
    """[h, w, 3] uint8 image with its long side at most ``size``, or None when unreadable."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # fast JPEG decoding at reduced size
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((size, size), Image.Resampling.BILINEAR)
            return np.asarray(image)
    except OSError:
        return None


def _data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _camera_markdown(scene: Scene, out_dir: Path, index: int) -> str:
    camera, view, status = scene.cameras[index], scene.views[index], scene.status[index]
    lines = [f"**{Path(camera.file_path).name}** (camera {index + 1} of {len(scene.cameras)}): {status}"]
    if view is not None:
        lines.append(f"original image {view.name}, confidence {view.confidence:.3g}")
        if view.note:
            lines.append(f"note: {view.note}")
    lines.append(f"fx {camera.fx:.1f} px, fy {camera.fy:.1f} px, {camera.width} x {camera.height}")
    image = _read_image(out_dir / camera.file_path, 320)
    if image is not None:
        lines.append(f"![image]({_data_url(image)})")
    if view is not None and view.confidence_map is not None:
        png = base64.b64encode(view.confidence_map.read_bytes()).decode("ascii")
        lines.append("confidence (dark low, yellow high):")
        lines.append(f"![confidence](data:image/png;base64,{png})")
    else:
        lines.append("(no confidence map saved for this camera)")
    return "\n\n".join(lines)


@dataclass
class Controls:
    """Handles of what ``build_scene`` added (for tests and scripting)."""

    hide: viser.GuiInputHandle  # slider: percentage of least confident points hidden
    point_size: viser.GuiInputHandle  # slider: point size relative to the scene
    camera: viser.GuiDropdownHandle  # the selected camera; clicking a frustum selects it
    details: viser.GuiMarkdownHandle  # image and confidence map of the selected camera
    frusta: list[viser.CameraFrustumHandle]


def build_scene(server: viser.ViserServer, scene: Scene, out_dir: Path, thumbnail_size: int = 128) -> Controls:
    """Add the point cloud, the camera frusta and the controls to ``server``."""
    import viser.transforms as vtf

    centre, size = _extent(scene)
    server.scene.set_up_direction(tuple(float(v) for v in scene.up))
    base_point_size = size / 500.0
    lock = threading.Lock()

    with server.gui.add_folder("Point cloud"):
        server.gui.add_markdown(
            f"{len(scene.points):,} points shown"
            + (f" of {scene.num_points_total:,}" if scene.num_points_total > len(scene.points) else "")
        )
        hide = server.gui.add_slider(
            "Hide least confident %",
            min=0,
            max=95,
            step=1,
            initial_value=0,
            disabled=scene.confidence is None,
            hint="Hides this percentage of the points, least confident first."
            if scene.confidence is not None
            else "This folder has no per-point confidence.",
        )
        point_size = server.gui.add_slider(
            "Point size", min=0.2, max=5.0, step=0.1, initial_value=1.0, hint="Relative to the scene size."
        )
    with server.gui.add_folder("Cameras"):
        counts = {s: scene.status.count(s) for s in _STATUS_COLORS if scene.status.count(s)}
        server.gui.add_markdown(
            f"{len(scene.cameras)} cameras: "
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + ". Frustum colours: green ok, orange weak, red untrusted, grey unknown. Click a camera to see it."
        )
        show_cameras = server.gui.add_checkbox("Show cameras", initial_value=True)
        labels = [f"{i + 1}: {Path(c.file_path).name}" for i, c in enumerate(scene.cameras)] or ["(no cameras)"]
        chosen = server.gui.add_dropdown("Camera", options=labels, initial_value=labels[0])
        look_through = server.gui.add_button("View from this camera")
        details = server.gui.add_markdown("Click a camera in the scene, or choose one above.", image_root=out_dir)

    def update_points(_=None) -> None:
        with lock:
            keep = slice(None)
            if scene.confidence is not None and hide.value > 0:
                keep = scene.confidence >= np.percentile(scene.confidence, hide.value)
            server.scene.add_point_cloud(
                "/points", scene.points[keep], scene.colors[keep], point_size=base_point_size * point_size.value
            )

    hide.on_update(update_points)
    point_size.on_update(update_points)
    update_points()

    frusta = []
    for i, camera in enumerate(scene.cameras):
        image = _read_image(out_dir / camera.file_path, thumbnail_size) if thumbnail_size > 0 else None
        frustum = server.scene.add_camera_frustum(
            f"/cameras/{i:05d}",
            fov=float(2 * np.arctan(camera.height / (2 * camera.fy))),
            aspect=camera.width / camera.height,
            scale=0.05 * size,
            color=_STATUS_COLORS[scene.status[i]],
            image=image,
            wxyz=vtf.SO3.from_matrix(camera.cam_to_world[:3, :3]).wxyz,
            position=camera.cam_to_world[:3, 3],
        )
        frustum.on_click(lambda _event, label=labels[i]: setattr(chosen, "value", label))
        frusta.append(frustum)

    @show_cameras.on_update
    def _(_) -> None:
        for frustum in frusta:
            frustum.visible = show_cameras.value

    @chosen.on_update
    def _(_) -> None:
        if scene.cameras:
            details.content = _camera_markdown(scene, out_dir, labels.index(chosen.value))

    @look_through.on_click
    def _(event: viser.GuiEvent) -> None:
        if not scene.cameras:
            return
        camera = scene.cameras[labels.index(chosen.value)]
        clients = [event.client] if event.client is not None else list(server.get_clients().values())
        for client in clients:
            client.camera.wxyz = vtf.SO3.from_matrix(camera.cam_to_world[:3, :3]).wxyz
            client.camera.position = camera.cam_to_world[:3, 3]
            client.camera.fov = float(2 * np.arctan(camera.height / (2 * camera.fy)))

    @server.on_client_connect
    def _(client: viser.ClientHandle) -> None:
        if not scene.cameras:
            return
        first = scene.cameras[0].cam_to_world
        away = first[:3, 3] - centre
        if np.linalg.norm(away) < 1e-3 * size:
            away = -first[:3, 2] * 0.5 * size
        client.camera.position = centre + 1.5 * away + scene.up * 0.5 * max(np.linalg.norm(away), 0.2 * size)
        client.camera.look_at = centre
        client.camera.up_direction = scene.up

    return Controls(hide, point_size, chosen, details, frusta)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run(config: ViewConfig) -> int:
    """Serve the scene until Ctrl-C; returns the exit code (0)."""
    out_dir = Path(config.out_dir)
    if not (out_dir / "transforms.json").is_file():
        print(f"fast3r-ns view: {out_dir / 'transforms.json'} not found; pass a folder written by fast3r-ns.")
        return 2
    if not 0 <= config.port <= 65535:
        print(f"fast3r-ns view: --port {config.port} is not a port number (0-65535; 0 picks a free one).")
        return 2
    try:
        viser = require("viser", extra="preview", feature="fast3r-ns view")
    except MissingDependencyError as error:
        print(error)
        return 2
    try:
        scene = load_scene(out_dir, config.max_points)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        detail = f"{type(error).__name__}: {error}"
        print(f"fast3r-ns view: cannot read the scene in {out_dir} ({detail}); is it a folder written by fast3r-ns?")
        return 2
    server = None
    try:
        port = config.port or _free_port(config.host)
        server = viser.ViserServer(host=config.host, port=port, label=f"fast3r-ns: {out_dir.name}", verbose=False)
        build_scene(server, scene, out_dir, config.thumbnail_size)
        port = server.get_port()
        shown_host = "localhost" if config.host in ("0.0.0.0", "::") else config.host
        if ":" in shown_host:
            shown_host = f"[{shown_host}]"
        print(f"fast3r-ns view: {len(scene.cameras)} cameras, {scene.num_points_total:,} points from {out_dir}")
        print(f"Open http://{shown_host}:{port}/ in a browser. Ctrl-C stops the viewer.")
        print(
            f"Over SSH: ssh -L {port}:localhost:{port} USER@THIS_MACHINE, then open http://localhost:{port}/ "
            "on your own machine.",
            flush=True,
        )
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("fast3r-ns view: stopped.", flush=True)
    finally:
        if server is not None:
            server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m fast3r_ns.preview.viewer OUT [--port 0]``."""
    return run(tyro.cli(ViewConfig, args=argv, prog="fast3r-ns view"))


if __name__ == "__main__":
    raise SystemExit(main())
