"""Result records of the splatfacto benchmark (standard library + PIL only: runs on the GPU machine too).

    python benchmarks/splat_records.py record OUT.jsonl --eval EVAL.json --meta DATA/meta.json --scene room \
        --variant oracle_noisy --run oracle_noisy_camopt --steps 3000 --camera-opt SO3xR3 --train-seconds 80 ...
    python benchmarks/splat_records.py finalize IN.jsonl OUT.jsonl   # fill in the gt_cameras baseline per scene
    python benchmarks/splat_records.py picture OUT.png RENDER_DIR     # held-out view: truth | each run's render
    python benchmarks/splat_records.py table IN.jsonl

Field names follow ../shared/conventions/RESULTS.md (bench "splat", psnr, ssim, baseline "gt_cameras",
baseline_psnr, psnr_gap_db = baseline_psnr - psnr, rotation_err_deg / translation_err_rel / focal_err_rel: max
over views after the similarity alignment, computed on the CPU by ``bench_splat.py prepare`` into meta.json).
"""

from __future__ import annotations

import argparse
import fcntl
import json
from pathlib import Path

META_FIELDS = (
    "views",
    "train_views",
    "eval_views",
    "height",
    "width",
    "rotation_err_deg",
    "translation_err_rel",
    "focal_err_rel",
    "rotation_err_deg_median",
    "translation_err_rel_median",
    "untrusted_views",
    "points",
    "process_seconds",
    "noise",
    "level_deg",
    "splat_seed",
    "oracle_seed",
    "cross",
    "commit",
)
EVAL_FIELDS = {"psnr": "psnr", "psnr_std": "psnr_std", "ssim": "ssim", "ssim_std": "ssim_std"}


def make_record(
    eval_info: dict,
    meta: dict,
    *,
    scene: str,
    variant: str,
    run: str,
    steps: int,
    camera_opt: str,
    train_seconds: float | None,
    eval_seconds: float | None,
    device: str,
    extra: str = "",
    parallel: int = 1,
) -> dict:
    """One benchmark record from our eval JSON (``splat_eval.py``, same 'results' as ns-eval) and meta.json."""
    results = eval_info.get("results", {})
    record = {"bench": "splat", "scene": scene, "variant": variant, "run": run}
    record |= {"commit": meta.get("commit", "unknown"), "device": device, "gpus": 1}
    for ours, theirs in EVAL_FIELDS.items():
        if theirs in results:
            record[ours] = round(float(results[theirs]), 4)
    for key in ("train_psnr", "num_gaussians", "eval_images"):
        if key in eval_info:
            record[key] = eval_info[key]
    record |= {"steps": steps, "camera_opt": camera_opt, "seconds": train_seconds, "eval_seconds": eval_seconds}
    record |= {"parallel_runs": parallel, "extra_flags": extra}
    record |= {key: meta[key] for key in META_FIELDS if key in meta and key != "commit"}
    if "psnr" not in record:
        record["error"] = eval_info.get("error", "no evaluation result")
    return record


def append(path: str | Path, record: dict) -> None:
    """Append one JSON line under an exclusive lock (runs finish concurrently) and echo it."""
    line = json.dumps(record)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line + "\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)
    print(line, flush=True)


def with_baseline(records: list[dict]) -> list[dict]:
    """Each record gets baseline "gt_cameras": the psnr of the ground-truth run of its scene with the same steps
    (the 'gt' variant without camera optimisation), and psnr_gap_db = baseline_psnr - psnr; a refined run also gets
    gap_closed_frac = (psnr - psnr_before_refine) / (baseline_psnr - psnr_before_refine)."""
    baselines = {
        (r["scene"], r.get("steps")): r
        for r in records
        if r.get("variant") == "gt" and r.get("camera_opt", "off") == "off" and "psnr" in r
    }
    # a "<variant>_refined" run is also compared with "<variant>" (same scene and steps, no camera optimisation)
    unrefined = {
        (r["scene"], r.get("steps"), r["variant"] + "_refined"): r
        for r in records
        if r.get("camera_opt", "off") == "off" and "psnr" in r and "variant" in r
    }
    out = []
    for record in records:
        record = dict(record)
        base = baselines.get((record.get("scene"), record.get("steps")))
        if base is not None and "psnr" in record:
            record["baseline"] = "gt_cameras"
            record["baseline_psnr"] = base["psnr"]
            record["baseline_ssim"] = base.get("ssim")
            record["psnr_gap_db"] = round(base["psnr"] - record["psnr"], 4)
            before = unrefined.get((record.get("scene"), record.get("steps"), str(record.get("variant"))))
            if before is not None and base["psnr"] != before["psnr"]:
                record["psnr_before_refine"] = before["psnr"]
                record["gap_closed_frac"] = round(
                    (record["psnr"] - before["psnr"]) / (base["psnr"] - before["psnr"]), 4
                )
        out.append(record)
    return out


def gpu_tag(records: list[dict]) -> str:
    """'h200', 'h100', ... from the records' device names (the results file's suffix)."""
    names = {str(r.get("device", "")).lower() for r in records}
    for tag in ("h200", "h100", "a100", "l40"):
        if any(tag in name for name in names):
            return tag
    return "gpu"


def read(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def table(records: list[dict]) -> list[str]:
    """A readable summary, one line per run."""
    lines = [
        f"{'scene':10} {'run':22} {'steps':>5} {'psnr':>6} {'ssim':>6} {'gap dB':>7} {'rot max':>8} {'train s':>7}"
    ]
    for r in records:
        gap, nan = r.get("psnr_gap_db"), float("nan")
        lines.append(
            f"{r.get('scene', '?'):10} {r.get('run', '?'):22} {r.get('steps', 0):>5} {r.get('psnr', nan):>6.2f} "
            f"{r.get('ssim', nan):>6.3f} {'' if gap is None else f'{gap:+.2f}':>7} "
            f"{r.get('rotation_err_deg', nan):>8.3f} {r.get('seconds') or 0:>7.1f}"
            + (f"  ERROR {r['error'][:60]}" if "error" in r else "")
        )
    return lines


def picture(out: str | Path, render_dir: str | Path, scale: int = 1) -> Path:
    """Compose the renders ``<scene>__<run>.png`` (each [truth | render] side by side, written by splat_eval.py)
    into one picture: one row per scene, the truth first, then each run's render, labelled."""
    from PIL import Image, ImageDraw

    files = sorted(Path(render_dir).glob("*__*.png"))
    rows: dict[str, list[tuple[str, Path]]] = {}
    order = ["gt", "oracle_clean", "oracle_noisy", "oracle_noisy_camopt", "oracle_noisy_refined"]
    for path in files:
        scene, run = path.stem.split("__", 1)
        rows.setdefault(scene, []).append((run, path))
    if not rows:
        raise FileNotFoundError(f"no renders in {render_dir}")
    for runs in rows.values():
        runs.sort(key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]))
    tiles = []
    for scene, runs in rows.items():
        row = []
        for index, (run, path) in enumerate(runs):
            pair = Image.open(path).convert("RGB")
            half = pair.width // 2
            if index == 0:
                row.append((f"{scene}: ground truth", pair.crop((0, 0, half, pair.height))))
            label = {"gt": "true cameras"}.get(run, run.replace("oracle_", "ours, ").replace("_camopt", " + cam opt"))
            row.append((label, pair.crop((half, 0, pair.width, pair.height))))
        tiles.append(row)
    width = max(len(row) for row in tiles) * max(t.width for row in tiles for _, t in row)
    tile_w = max(t.width for row in tiles for _, t in row)
    tile_h = max(t.height for row in tiles for _, t in row) + 14
    canvas = Image.new("RGB", (width, tile_h * len(tiles)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(tiles):
        for c, (label, tile) in enumerate(row):
            canvas.paste(tile, (c * tile_w, r * tile_h + 14))
            draw.text((c * tile_w + 3, r * tile_h + 1), label, fill="black")
    if scale != 1:
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale))
    canvas.save(out, optimize=True)
    return Path(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="append one run's record")
    r.add_argument("out")
    r.add_argument("--eval", required=True, help="splat_eval.py's JSON (may be missing: an error record)")
    r.add_argument("--meta", required=True, help="the dataset's meta.json")
    r.add_argument("--scene", required=True)
    r.add_argument("--variant", required=True)
    r.add_argument("--run", required=True)
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--camera-opt", default="off")
    r.add_argument("--train-seconds", type=float)
    r.add_argument("--eval-seconds", type=float)
    r.add_argument("--device", default="unknown")
    r.add_argument("--extra", default="")
    r.add_argument("--parallel", type=int, default=1)
    r.add_argument("--error", default="", help="error text when training or evaluation failed")
    f = sub.add_parser("finalize", help="add the gt_cameras baseline to every record")
    f.add_argument("input")
    f.add_argument("output")
    p = sub.add_parser("picture", help="compose the held-out renders into one PNG")
    p.add_argument("out")
    p.add_argument("render_dir")
    t = sub.add_parser("table", help="print a summary")
    t.add_argument("input")
    args = parser.parse_args()

    if args.command == "record":
        eval_path, meta_path = Path(args.eval), Path(args.meta)
        eval_info = json.loads(eval_path.read_text()) if eval_path.is_file() else {}
        if args.error:
            eval_info["error"] = args.error
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        record = make_record(
            eval_info,
            meta,
            scene=args.scene,
            variant=args.variant,
            run=args.run,
            steps=args.steps,
            camera_opt=args.camera_opt,
            train_seconds=args.train_seconds,
            eval_seconds=args.eval_seconds,
            device=args.device,
            extra=args.extra,
            parallel=args.parallel,
        )
        append(args.out, record)
    elif args.command == "finalize":
        records = with_baseline(read(args.input))
        Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in records))
        print("\n".join(table(records)))
    elif args.command == "picture":
        print(picture(args.out, args.render_dir))
    elif args.command == "table":
        print("\n".join(table(with_baseline(read(args.input)))))


if __name__ == "__main__":
    main()
