"""Refinement stress benchmark (CPU): camera errors before/after ``--refine`` as Fast3R's errors grow, and COLMAP.

For each scene of ``benchmarks/splat_scene.py`` ("room", "room_hard", "room_natural") the images are rendered once
and prepared as ``process()`` prepares them (``load_images``, network size 512x384). For each error level and seed
``bench_splat.FastLikeOracle`` predicts pointmaps with ``bench_splat.level_noise(level)``: the per-view
misplacement of the global pointmap (rotation ``level`` degrees; translation and depth warp scaled with it as
``bench_splat.NOISY`` has them at 0.2 degrees) plus the local-head focal error, local/global disagreement, outliers
and depth noise of ``bench_splat.STRESS_EXTRAS``. The cameras are recovered without and with the refinement
(``reconstruct_from_predictions``, the pipeline's defaults, as ``ns-process-data fast3r`` runs them) and their
errors measured after the similarity alignment (``fast3r_ns.testing.metrics``). COLMAP (pycolmap: SIFT
extraction, exhaustive matching, ``incremental_mapping``) runs once per scene on the same image files, for the
time ratio and its own errors.

    PYTHONPATH=. python benchmarks/bench_stress.py                       # every scene, level and seed
    PYTHONPATH=. python benchmarks/bench_stress.py --scenes room --levels 0.2 0.6 --seeds 11
    PYTHONPATH=. python benchmarks/bench_stress.py --quick               # smoke run: 8 views of room, 256x192
    PYTHONPATH=. python benchmarks/bench_stress.py --scenes room_natural --image-scale 4 --supersample 1   # 1024x768
    PYTHONPATH=. python benchmarks/bench_stress.py --table benchmarks/results/stress_cpu.jsonl   # markdown table

One JSON line per scene / level / seed / method ("fast3r", "fast3r_refined") and one per scene for "colmap", in
``benchmarks/results/stress_cpu.jsonl`` (fields of ../shared/conventions/RESULTS.md). Refined records carry the
errors before refinement as ``before_*`` and COLMAP's time as ``baseline_seconds`` (``ratio_to_baseline`` = refined
reconstruction time / COLMAP time, measured in the same run). The oracle stands in for the network, so
``seconds`` is the reconstruction from predictions (cameras, refinement, point cloud), not the network's time;
``cpu_seconds`` is the process's CPU time over the same part (all threads), steadier than wall time on a shared
machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import splat_scene  # noqa: E402
from bench_splat import STRESS_LEVELS, FastLikeOracle, level_noise  # noqa: E402

from benchmarks.common import RESULTS, append, commit  # noqa: E402
from fast3r_ns import PointOptions, ReconstructOptions, RefineOptions, reconstruct_from_predictions  # noqa: E402
from fast3r_ns.io import load_images  # noqa: E402
from fast3r_ns.testing.metrics import camera_errors, reconstruction_errors  # noqa: E402

SEEDS = (11, 23, 37)
QUICK = {"scenes": ["room"], "levels": [0.2], "seeds": [11], "views": 8, "size": 256, "supersample": 1}


def scene_views(name: str, views: int | None, image_scale: int = 1) -> splat_scene.TexturedScene:
    """The scene in the order process() sees its images (train, then held out); ``views``: its first N cameras
    along the trajectory only (a small, connected subset); ``image_scale``: images that many times wider and
    higher (the same cameras, intrinsics scaled)."""
    scene = splat_scene.make(name)
    if views:
        scene = scene.reordered(list(range(min(views, len(scene.cameras)))))
    if image_scale != 1:
        cameras = [
            dataclasses.replace(
                c, width=c.width * image_scale, height=c.height * image_scale, intrinsics=c.intrinsics * image_scale
            )
            for c in scene.cameras
        ]
        scene = dataclasses.replace(scene, cameras=cameras)
    return scene.reordered(scene.process_order())


def _summary(errors: dict) -> dict:
    keys = ("rotation_err_deg", "translation_err_rel", "focal_err_rel")
    return {f"{k}{s}": errors[f"{k}{s}"] for k in keys for s in ("", "_median")}


def colmap_baseline(
    image_dir: Path, scene: splat_scene.TexturedScene, work: Path, threads: int, max_seconds: float = 0.0
) -> dict:
    """pycolmap 4.x on the image files: SIFT (CPU), exhaustive matching, incremental mapping (default options, one
    camera per image, i.e. focal lengths unknown as for us); times and the errors of the largest model after the
    similarity alignment, over its registered views."""
    import pycolmap

    pycolmap.logging.minloglevel = 1  # warnings and errors only
    database, sparse = work / "database.db", work / "sparse"
    sparse.mkdir(parents=True, exist_ok=True)
    times = {}
    cpu = time.process_time()
    tic = time.perf_counter()
    extraction = pycolmap.FeatureExtractionOptions(num_threads=threads, use_gpu=False)
    pycolmap.extract_features(database, image_dir, extraction_options=extraction, device=pycolmap.Device.cpu)
    times["features"] = time.perf_counter() - tic
    tic = time.perf_counter()
    matching = pycolmap.FeatureMatchingOptions(num_threads=threads, use_gpu=False)
    pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    times["matching"] = time.perf_counter() - tic
    tic = time.perf_counter()
    mapping = pycolmap.IncrementalPipelineOptions(num_threads=threads)
    if max_seconds > 0:  # COLMAP stops mapping after this and keeps what it has
        mapping.max_runtime_seconds = int(max_seconds)
    models = pycolmap.incremental_mapping(database, image_dir, sparse, options=mapping)
    times["mapping"] = time.perf_counter() - tic
    record = {"seconds": sum(times.values()), "cpu_seconds": time.process_time() - cpu, "timings": times}
    record |= {"models": len(models), "max_runtime_seconds": max_seconds or None}
    if not models:
        return record | {"registered": 0, "error": "incremental_mapping found no model"}
    model = max(models.values(), key=lambda m: m.num_reg_images())
    index = {name: i for i, name in enumerate(scene.image_names())}
    estimate = np.full((len(index), 4, 4), np.nan)
    focal = np.full(len(index), np.nan)
    for image in model.images.values():
        if not image.has_pose:
            continue
        view = index[image.name]
        world_to_cam = np.eye(4)
        world_to_cam[:3] = image.cam_from_world().matrix()
        estimate[view] = np.linalg.inv(world_to_cam)
        focal[view] = image.camera.mean_focal_length()
    registered = np.isfinite(focal)
    record |= {"registered": int(registered.sum()), "unregistered_views": np.flatnonzero(~registered).tolist()}
    if registered.sum() < 3:
        return record | {"error": f"only {int(registered.sum())} views registered"}
    errors = camera_errors(estimate[registered], scene.cam_to_world_in_view0()[registered], scene.size)
    true_focal = np.array([c.intrinsics[0] for c in scene.cameras])[registered]
    errors["focal_err_rel"] = np.abs(focal[registered] / true_focal - 1)
    for key, values in errors.items():
        record[key], record[f"{key}_median"] = float(values.max()), float(np.median(values))
    return record


def run_scene(name: str, args: argparse.Namespace, out: Path) -> None:
    scene = scene_views(name, args.views, args.image_scale)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        paths = scene.write_images(Path(tmp) / "images", supersample=args.supersample)
        render_seconds = time.perf_counter() - tic
        images = load_images(paths, size=args.size)
        width, height = images[0].size
        base = {
            "bench": "stress",
            "commit": commit(),
            "device": "cpu",
            "threads": threads,
            "scene": name,
            "views": len(paths),
            "height": height,
            "width": width,
            "image_scale": args.image_scale,
            "dtype": "fp32",
        }
        _warm_up(scene, images)
        colmap = None
        if not args.no_colmap:
            try:
                work = Path(tmp) / "colmap"
                colmap = colmap_baseline(Path(tmp) / "images", scene, work, threads, args.colmap_max_seconds)
            except Exception as error:  # noqa: BLE001 - failures are recorded too
                colmap = {"error": repr(error)}
            append(out, base | {"method": "colmap", "pycolmap": _pycolmap_version()} | colmap)
        for level in args.levels:
            for seed in args.seeds:
                record = base | {"level_deg": level, "seed": seed, "render_seconds": render_seconds}
                try:
                    for method_record in run_case(scene, images, level, seed, colmap):
                        append(out, record | method_record)
                except Exception as error:  # noqa: BLE001
                    append(out, record | {"method": "fast3r_refined", "error": repr(error)})


def _warm_up(scene, images) -> None:
    """One small reconstruction first, so the first timed case does not pay for imports and first-call set-up."""
    few = scene.reordered([0, 1])
    predictions = FastLikeOracle(few, images[:2])([image.tensor for image in images[:2]])
    reconstruct_from_predictions(
        images[:2], predictions, ReconstructOptions(points=PointOptions(colors="network"), device="cpu")
    )


def run_case(scene, images, level: float, seed: int, colmap: dict | None) -> list[dict]:
    """Records of the unrefined and the refined reconstruction at one error level and seed."""
    noise = level_noise(level)
    tic = time.perf_counter()
    predictions = FastLikeOracle(scene, images, seed=seed, **noise)([image.tensor for image in images])
    generate_seconds = time.perf_counter() - tic
    options = ReconstructOptions(points=PointOptions(colors="network", max_points=100_000), device="cpu")
    cpu = time.process_time()
    before = reconstruct_from_predictions(images, predictions, options)
    cpu_before, cpu = time.process_time() - cpu, time.process_time()
    after = reconstruct_from_predictions(
        images, predictions, dataclasses.replace(options, refine=RefineOptions(enabled=True))
    )
    cpu_after = time.process_time() - cpu
    errors_before = reconstruction_errors(before, scene)
    errors_after = reconstruction_errors(after, scene)
    common = {"noise": noise, "generate_seconds": generate_seconds}
    unrefined = {"method": "fast3r", "seconds": sum(before.timings.values()), "cpu_seconds": cpu_before}
    unrefined["timings"] = before.timings
    unrefined |= _summary(errors_before) | {"untrusted_views": int((~np.asarray(before.pose_ok)).sum())}
    refined = {"method": "fast3r_refined", "seconds": sum(after.timings.values()), "cpu_seconds": cpu_after}
    refined["timings"] = after.timings
    refined |= _summary(errors_after) | {f"before_{k}": v for k, v in _summary(errors_before).items()}
    refined |= {"refine_stats": after.refine_stats}
    if colmap and colmap.get("seconds"):
        refined |= {
            "baseline": "colmap",
            "baseline_seconds": colmap["seconds"],
            "ratio_to_baseline": refined["seconds"] / colmap["seconds"],
            "baseline_cpu_seconds": colmap.get("cpu_seconds"),
            "baseline_rotation_err_deg_median": colmap.get("rotation_err_deg_median"),
        }
    return [common | unrefined, common | refined]


def table(records: list[dict], commit_prefix: str | None = None) -> list[str]:
    """Markdown rows, one per scene and level (seeds listed): rotation max / median before -> after (deg), focal
    max before -> after, held views, refined time; COLMAP's row per scene; records of ``commit_prefix`` only."""
    chosen = [r for r in records if "error" not in r and (not commit_prefix or r["commit"].startswith(commit_prefix))]
    rows = [
        "| scene | level (deg) | seeds | rotation max / median, before -> after | focal max, before -> after | "
        "held views | refined s (refine s) | refined / COLMAP time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scene in dict.fromkeys(r["scene"] for r in chosen):
        for r in (r for r in chosen if r["scene"] == scene and r["method"] == "colmap"):
            rows.append(
                f"| {scene} | COLMAP | - | {r['rotation_err_deg']:.2f} / {r['rotation_err_deg_median']:.2f} "
                f"({r['registered']}/{r['views']} registered) | {100 * r['focal_err_rel']:.1f} % | - | "
                f"{r['seconds']:.0f} | 1 |"
            )
        refined = [r for r in chosen if r["scene"] == scene and r["method"] == "fast3r_refined"]
        for level in sorted({r["level_deg"] for r in refined}):
            cases = [r for r in refined if r["level_deg"] == level]
            rotation = " ; ".join(
                f"{r['before_rotation_err_deg']:.2f} / {r['before_rotation_err_deg_median']:.2f} -> "
                f"{r['rotation_err_deg']:.3f} / {r['rotation_err_deg_median']:.3f}"
                for r in cases
            )
            focal = " ; ".join(
                f"{100 * r['before_focal_err_rel']:.1f} -> {100 * r['focal_err_rel']:.2f} %" for r in cases
            )
            held = " ; ".join(str(int(r["refine_stats"].get("held_views", 0))) for r in cases)
            times = " ; ".join(f"{r['seconds']:.0f} ({r['timings']['refine']:.0f})" for r in cases)
            ratios = " ; ".join(f"{r['ratio_to_baseline']:.2f}" for r in cases if "ratio_to_baseline" in r) or "-"
            seeds = ", ".join(str(r["seed"]) for r in cases)
            rows.append(f"| {scene} | {level:g} | {seeds} | {rotation} | {focal} | {held} | {times} | {ratios} |")
    return rows


def _pycolmap_version() -> str:
    import pycolmap

    return pycolmap.__version__


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=list(splat_scene.SCENES), choices=splat_scene.SCENES)
    parser.add_argument("--levels", type=float, nargs="+", default=list(STRESS_LEVELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--views", type=int, help="only the first N cameras of each scene's trajectory")
    parser.add_argument("--size", type=int, default=512, help="network input size (load_images), default 512")
    parser.add_argument("--supersample", type=int, default=2, help="rays per pixel per axis when rendering")
    parser.add_argument(
        "--image-scale",
        type=int,
        default=1,
        help="render the images N times wider and higher (256x192 by default; the network still sees --size): COLMAP "
        "then reads captures of a realistic size, as it would a camera's photos",
    )
    parser.add_argument("--no-colmap", action="store_true", help="skip the pycolmap baseline")
    parser.add_argument(
        "--colmap-max-seconds",
        type=float,
        default=0.0,
        help="stop COLMAP's incremental mapping after this many seconds (its max_runtime_seconds; 0: no limit)",
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    parser.add_argument("--out", default=str(RESULTS / "stress_cpu.jsonl"))
    parser.add_argument("--table", metavar="JSONL", help="print the records of JSONL as a markdown table, no run")
    parser.add_argument("--commit", help="with --table: only the records of this commit")
    args = parser.parse_args(argv)
    if args.table:
        records = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
        print("\n".join(table(records, args.commit)))
        return
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    for name in args.scenes:
        run_scene(name, args, Path(args.out))


if __name__ == "__main__":
    main()
