"""Cross datasets that separate what the cameras and what the initial point cloud cost a splat.

From a full ``bench_splat.py prepare`` scene folder (``gt`` and a variant, each with transforms.json,
sparse_pc.ply and, for the variant, its COLMAP model), writes slim datasets into ``--into``:

    gt                       copied (true cameras, true surface points)
    gt__seed2                the same data, splatfacto seed 2 (``splat_seed`` in meta.json: run-to-run spread)
    <variant>                copied (its cameras, its cloud)
    <variant>__true_points   its cameras + the true points, mapped into its frame
    <variant>__true_cameras  the true cameras + its cloud, mapped into the true frame
    <variant>__tracks_only   its cameras + only the multi-view track points of its COLMAP model
    <variant>__snapped       the true cameras + its cloud with every point moved onto the nearest true surface
                             point (``--snap SCENE``: a sample of the true surface at twice the pixel density):
                             its coverage, density and colours with exact positions
    <variant>__snapped_true_colors  the same with the true colour of each snapped point (``--snap``)

The frames differ by a similarity (the pipeline's world is view 0's camera at its own scale): the one taking the
variant's camera centres onto the true ones (Umeyama), applied in transforms.json's (nerfstudio) frame.

    PYTHONPATH=. python benchmarks/splat_cross.py .out/levels/room_natural_full/room_natural \
        --variant oracle_noisy_refined --into .out/cross/room_natural
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from fast3r_ns.io.ply import read_ply, write_ply
from fast3r_ns.io.transforms import nerfstudio_points


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |s R source + t - target|^2 over rows [N, 3]."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(b.T @ a / len(source))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / (a**2).sum(1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def frames(directory: Path) -> dict[str, np.ndarray]:
    content = json.loads((directory / "transforms.json").read_text())
    return {f["file_path"]: np.array(f["transform_matrix"], dtype=np.float64) for f in content["frames"]}


def write_variant(
    source: Path,
    into: Path,
    points: np.ndarray | None,
    colors: np.ndarray | None,
    transforms_from: Path | None = None,
    meta: dict | None = None,
) -> None:
    """Copy ``source`` (images linked to ../gt/images) with another cloud and/or another transforms.json."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy(transforms_from / "transforms.json" if transforms_from else source / "transforms.json", into)
    content = json.loads((source / "meta.json").read_text()) | (meta or {})
    (into / "meta.json").write_text(json.dumps(content, indent=1))
    if points is None:
        shutil.copy(source / "sparse_pc.ply", into / "sparse_pc.ply")
    else:
        write_ply(into / "sparse_pc.ply", points.astype(np.float32), colors)
    if into.name != "gt" and not (into / "images").exists():
        (into / "images").symlink_to("../gt/images")


def _true_surface(scene_name: str):
    """(cKDTree, points [N, 3], colours [N, 3] uint8) of the scene's true surface seen by its views at twice the
    pixel density, in transforms.json's (nerfstudio) frame as the gt dataset's points; colours as the view that
    sampled the point sees it (without antialiasing)."""
    from scipy.spatial import cKDTree

    from benchmarks import splat_scene
    from fast3r_ns.geometry.conventions import pixel_centers

    scene = splat_scene.make(scene_name)
    samples, colors = [], []
    for view, camera in enumerate(scene.cameras):
        xy = pixel_centers(2 * camera.height, 2 * camera.width).reshape(-1, 2) / 2.0
        _, world, obj = scene.cast_pixels(view, xy)
        hit = np.isfinite(world).all(-1)
        samples.append(world[hit])
        colors.append(np.round(255 * scene.texture(world[hit], obj[hit], camera.cam_to_world[:3, 3])).astype(np.uint8))
    points = nerfstudio_points(np.concatenate(samples).astype(np.float32)).astype(np.float64)
    return cKDTree(points), points, np.concatenate(colors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path, help="full scene folder of bench_splat.py prepare")
    parser.add_argument("--variant", action="append", required=True, help="variant to cross (repeatable)")
    parser.add_argument("--into", type=Path, required=True)
    parser.add_argument("--snap", help="scene name (splat_scene.SCENES): also write <variant>__snapped[_true_colors]")
    args = parser.parse_args()
    surface = _true_surface(args.snap) if args.snap else None
    gt = args.scene / "gt"
    (args.into / "gt").mkdir(parents=True, exist_ok=True)
    if not (args.into / "gt" / "images").exists():
        shutil.copytree(gt / "images", args.into / "gt" / "images")
    write_variant(gt, args.into / "gt", None, None)
    write_variant(
        gt,
        args.into / "gt__seed2",
        None,
        None,
        meta={"splat_seed": 2, "variant": "gt__seed2", "cross": "gt, splatfacto seed 2"},
    )
    true_frames = frames(gt)
    true_points, true_colors = read_ply(gt / "sparse_pc.ply")
    gt_meta = json.loads((gt / "meta.json").read_text())
    true_errors = {
        k: v for k, v in gt_meta.items() if k.endswith(("_deg", "_rel", "_median")) or k == "untrusted_views"
    }
    for variant in args.variant:
        source = args.scene / variant
        own = frames(source)
        names = sorted(own)
        scale, rotation, shift = umeyama(
            np.array([own[n][:3, 3] for n in names]), np.array([true_frames[n][:3, 3] for n in names])
        )
        points, colors = read_ply(source / "sparse_pc.ply")
        in_true_frame = scale * points @ rotation.T + shift
        write_variant(source, args.into / variant, None, None)
        write_variant(
            source,
            args.into / f"{variant}__true_points",
            (true_points - shift) @ rotation / scale,
            true_colors,
            meta={"variant": f"{variant}__true_points", "cross": f"cameras of {variant}, true points"},
        )
        write_variant(
            source,
            args.into / f"{variant}__true_cameras",
            in_true_frame,
            colors,
            transforms_from=gt,
            meta=true_errors | {"variant": f"{variant}__true_cameras", "cross": f"true cameras, cloud of {variant}"},
        )
        if surface is not None:
            nearest = surface[0].query(in_true_frame)[1]
            for suffix, point_colors, what in (
                ("snapped", colors, ""),
                ("snapped_true_colors", surface[2][nearest], ", true colours there"),
            ):
                write_variant(
                    source,
                    args.into / f"{variant}__{suffix}",
                    surface[1][nearest],
                    point_colors,
                    transforms_from=gt,
                    meta=true_errors
                    | {
                        "variant": f"{variant}__{suffix}",
                        "cross": f"true cameras, cloud of {variant} snapped to the surface{what}",
                    },
                )
        model = source / "colmap" / "sparse" / "0"
        if model.is_dir():
            import pycolmap

            rec = pycolmap.Reconstruction(str(model))
            xyz = np.array([p.xyz for p in rec.points3D.values()])
            rgb = np.array([p.color for p in rec.points3D.values()], dtype=np.uint8)
            write_variant(
                source,
                args.into / f"{variant}__tracks_only",
                nerfstudio_points(xyz),
                rgb,
                meta={
                    "variant": f"{variant}__tracks_only",
                    "points": len(xyz),
                    "cross": f"cameras of {variant}, its COLMAP track points only",
                },
            )
        dense = len(points) - (len(xyz) if model.is_dir() else 0)
        from scipy.spatial import cKDTree

        true_tree = cKDTree(true_points)
        dist = true_tree.query(in_true_frame[:dense])[0]
        spacing = true_tree.query(true_points, k=2)[0][:, 1]
        print(
            f"{variant}: similarity scale {scale:.4f}; dense cloud to the true surface points: median "
            f"{np.median(dist):.4f}, p90 {np.quantile(dist, 0.9):.4f} (true points' spacing median "
            f"{np.median(spacing):.4f}); {len(points)} points"
        )


if __name__ == "__main__":
    main()
