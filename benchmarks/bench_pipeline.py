"""Whole pipeline: N JPEG images on disk -> transforms.json, sparse_pc.ply and the COLMAP model, time per stage.

Runs ``fast3r_ns.process.process`` exactly as ``ns-process-data fast3r`` does, with the released-size model on
random weights (benchmarks/common.py) handed in as the predictor, so no checkpoint is needed. With random weights the
pointmaps are meaningless: the camera and point stages do their usual work, but most poses are flagged and few
points survive the filters, so ``points`` and ``write model`` are lighter than on real data.

Usage (GPU): python benchmarks/bench_pipeline.py --views 1000
CPU smoke test: python benchmarks/bench_pipeline.py --views 4 --image-width 128 --image-height 96 --tiny
Writes JSON lines to benchmarks/results/pipeline_<gpu>.jsonl (fields: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, append, commit, device_name, device_slug, randomize_weights  # noqa: E402
from fast3r_ns.model import Fast3R, Fast3RConfig  # noqa: E402
from fast3r_ns.predictor import Fast3RPredictor  # noqa: E402
from fast3r_ns.process import ProcessConfig, process  # noqa: E402

TINY = {"encoder_args": {"embed_dim": 64, "depth": 2, "num_heads": 4}}
TINY_DECODER = {"enc_embed_dim": 64, "embed_dim": 48, "depth": 10, "num_heads": 4}


def write_images(folder: Path, views: int, width: int, height: int, seed: int = 0) -> list[Path]:
    """Textured JPEGs (smooth colour fields with a per-image shift), as a camera would leave them."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(base).resize((width + 32, height), Image.BICUBIC))
    paths = []
    for view in range(views):
        shift = (view * 7) % 32
        frame = np.ascontiguousarray(big[:, shift : shift + width])
        path = folder / f"img_{view:05d}.jpg"
        Image.fromarray(frame).save(path, quality=90)
        paths.append(path)
    return paths


def build(tiny: bool, dtype: torch.dtype, device: str) -> Fast3R:
    config = Fast3RConfig()
    if tiny:
        raw = config.to_dict()
        raw["encoder_args"].update(TINY["encoder_args"])
        raw["decoder_args"].update(TINY_DECODER)
        config = Fast3RConfig.from_dict(raw)
    with torch.device(device):
        model = Fast3R(config)
    randomize_weights(model)
    return model.to(dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=1000)
    parser.add_argument("--image-width", type=int, default=1024, help="size of the JPEGs on disk")
    parser.add_argument("--image-height", type=int, default=768)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (CPU smoke test)")
    parser.add_argument(
        "--image-writes",
        nargs="+",
        default=["background"],
        choices=["background", "after"],
        help="image copies written during the network pass (the default) or after it; several: one record each",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    out = args.out or RESULTS / f"pipeline_{device_slug()}.jsonl"
    dtype = torch.bfloat16 if cuda else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        images = Path(tmp) / "images"
        images.mkdir()
        write_images(images, args.views, args.image_width, args.image_height)
        write_seconds = time.perf_counter() - tic
        model = build(args.tiny, dtype, args.device)
        predictor = Fast3RPredictor(model, args.device)
        for mode in args.image_writes:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            config = ProcessConfig(data=images, output_dir=Path(tmp) / f"scene_{mode}", device=args.device)
            copies = "during" if mode == "background" else "after"
            result = process(config, console=Console(quiet=True), predictor=predictor, image_copies=copies)
            stages = {k: round(v, 3) for k, v in result.timings.items()}
            stages |= {k: round(v, 3) for k, v in result.reconstruction.timings.items()}
            append(
                out,
                {
                    "bench": "pipeline",
                    "commit": commit(),
                    "device": device_name(),
                    "gpus": 1,
                    "views": args.views,
                    "image_width": args.image_width,
                    "image_height": args.image_height,
                    "height": 384 if args.image_width > args.image_height else 512,
                    "width": 512 if args.image_width > args.image_height else 384,
                    "dtype": "bf16" if cuda else "fp32",
                    "model": "tiny random" if args.tiny else "released size, random weights",
                    "seconds": result.timings["total"],
                    "stages_seconds": stages,
                    "model_share": stages.get("predict", float("nan")) / result.timings["total"],
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                    "points": result.num_points,
                    "write_inputs_seconds": write_seconds,
                    "image_writes": mode,
                },
            )


if __name__ == "__main__":
    main()
