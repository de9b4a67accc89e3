"""The refinement's correspondences on real pixels: DIS flow (``fast3r_ns.geometry.flow``) on a Middlebury pair.

scikit-image's wheel ships the Middlebury 2014 "motorcycle" stereo pair (down-sampled 4x, 741x500) with its
ground-truth disparity (``skimage.data.stereo_motorcycle()``; ``pip install fast3r-ns[bench]``). Both images are
prepared as ``process()`` prepares them (``load_images``, network size 512x336) and matched exactly as the
refinement's flow stage matches a view pair: ``PairFlow.correspondences`` with the pipeline's ``FlowOptions``
(DIS ``medium`` on the warped residual, forward-backward check 0.5 px, correction gate 6 px, textured grid
anchors every 8 network pixels). The refinement starts the flow from a prediction by the pointmaps; here the
prediction is the true flow plus a smooth error of a chosen size (``PRIORS``: none, 3 px, the 9 px median that
issue #17 measured on the 3x stress level) or no prediction at all (a constant flow: the median disparity).

Scores (network pixels, left -> right, anchors with a valid true disparity): the share of anchors kept by the
gates, the end-point error (EPE) of the kept matches against the truth (median, mean, 90th percentile), the share
of kept matches within 1 and 3 px, the same EPE figures for the raw flow at every anchor before the gates, and the
share kept without the correction gate and its EPE figures (``ungated_*``).

    PYTHONPATH=. python benchmarks/bench_matcher.py      # appends to benchmarks/results/matcher_cpu.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import RESULTS, append, commit
from fast3r_ns.geometry.flow import FlowOptions, PairFlow, grey_image, texture_mask
from fast3r_ns.io import load_images

PRIORS = ("exact", "error_3px", "error_9px", "constant")


def motorcycle(size: int = 512):
    """Left and right PreparedImages of the Middlebury motorcycle pair and the true left -> right network flow
    [H, W, 2] (NaN where the disparity is unknown)."""
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "left.png", Path(tmp) / "right.png"]
        Image.fromarray(left).save(paths[0])
        Image.fromarray(right).save(paths[1])
        images = load_images(paths, size=size)
    width, height = images[0].size
    ys, xs = np.mgrid[0:height, 0:width]
    original = images[0].to_original(np.stack([xs + 0.5, ys + 0.5], axis=-1))
    col = np.clip(original[..., 0].astype(np.int64), 0, disparity.shape[1] - 1)
    row = np.clip(original[..., 1].astype(np.int64), 0, disparity.shape[0] - 1)
    d = disparity[row, col].astype(np.float64)  # nearest: no blending across depth edges
    d[~np.isfinite(d)] = np.nan
    # right x = left x - d (original pixels); in network pixels divided by the resize factor
    flow = np.stack([-d / images[0].scale_to_original[0], np.zeros_like(d)], axis=-1)
    return images, flow


def backward_of(flow: np.ndarray) -> np.ndarray:
    """Right -> left flow [H, W, 2] by forward-splatting the left -> right flow (nearest pixel; the larger
    disparity, i.e. the nearer surface, wins); NaN where nothing lands."""
    height, width = flow.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    valid = np.isfinite(flow).all(-1)
    target_x = np.where(valid, np.round(xs + np.nan_to_num(flow[..., 0])), -1).astype(np.int64)
    target_y = np.where(valid, np.round(ys + np.nan_to_num(flow[..., 1])), -1).astype(np.int64)
    inside = valid & (target_x >= 0) & (target_x < width) & (target_y >= 0) & (target_y < height)
    order = np.argsort(-flow[..., 0][inside])  # most negative x flow (largest disparity) last: it wins
    out = np.full_like(flow, np.nan)
    out[target_y[inside][order], target_x[inside][order]] = -flow[inside][order]
    return out


def smooth_error(shape: tuple[int, int], magnitude: float, seed: int) -> np.ndarray:
    """[H, W, 2] smooth error field of median length about ``magnitude``: a random shift plus a random affine
    warp over the image (what a misplaced, depth-warped pointmap does to its predicted flow)."""
    rng = np.random.default_rng(seed)
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width]
    u, v = xs / width - 0.5, ys / height - 0.5
    field = rng.standard_normal((2, 1, 1)) + rng.standard_normal((2, 1, 1)) * u + rng.standard_normal((2, 1, 1)) * v
    field = np.moveaxis(field, 0, -1)
    return field * magnitude / np.median(np.linalg.norm(field, axis=-1))


def prediction(true_flow: np.ndarray, prior: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted flows (left -> right, right -> left) of one prior."""
    if prior == "constant":
        median = np.nanmedian(true_flow.reshape(-1, 2), axis=0)
        forward = np.broadcast_to(median, true_flow.shape).astype(np.float32)
        return forward, -forward
    magnitude = {"exact": 0.0, "error_3px": 3.0, "error_9px": 9.0}[prior]
    forward = true_flow + smooth_error(true_flow.shape[:2], magnitude, seed) if magnitude else true_flow
    return forward.astype(np.float32), backward_of(forward).astype(np.float32)


def score(images, true_flow: np.ndarray, prior: str, seed: int, options: FlowOptions) -> dict:
    greys = (grey_image(images[0].tensor), grey_image(images[1].tensor))
    height, width = greys[0].shape
    rows, cols = np.meshgrid(
        np.arange(options.stride // 2, height, options.stride),
        np.arange(options.stride // 2, width, options.stride),
        indexing="ij",
    )
    usable = texture_mask(greys[0], options.min_gradient)[rows, cols] & np.isfinite(true_flow[rows, cols]).all(-1)
    rows, cols = rows[usable], cols[usable]
    anchors = np.stack([cols + 0.5, rows + 0.5], axis=-1).astype(np.float64)
    truth = anchors + true_flow[rows, cols]
    predicted = prediction(true_flow, prior, seed)
    matcher = PairFlow(options)
    tic = time.perf_counter()
    kept, targets, _ = matcher.correspondences(greys, predicted, anchors)
    seconds = time.perf_counter() - tic
    ungated = PairFlow(dataclasses.replace(options, max_correction=np.inf)).correspondences(greys, predicted, anchors)
    raw = anchors + matcher.flow(greys[0], greys[1], predicted[0])[rows, cols]
    epe, raw_epe = np.linalg.norm(targets - truth[kept], axis=-1), np.linalg.norm(raw - truth, axis=-1)
    prior_epe = np.linalg.norm(predicted[0][rows, cols] - true_flow[rows, cols], axis=-1)
    record = {
        "prior": prior,
        "prior_epe_median": float(np.median(prior_epe)),
        "anchors": len(anchors),
        "kept": len(kept),
        "kept_frac": len(kept) / max(len(anchors), 1),
        "kept_frac_without_correction_gate": len(ungated[0]) / max(len(anchors), 1),
        "seconds": seconds,
        "raw_epe_median": float(np.median(raw_epe)),
        "raw_within_1px": float((raw_epe < 1).mean()),
        "raw_within_3px": float((raw_epe < 3).mean()),
    }
    ungated_epe = np.linalg.norm(ungated[1] - truth[ungated[0]], axis=-1)
    if len(ungated_epe):
        record |= {
            "ungated_epe_median": float(np.median(ungated_epe)),
            "ungated_within_1px": float((ungated_epe < 1).mean()),
            "ungated_within_3px": float((ungated_epe < 3).mean()),
        }
    if len(kept):
        record |= {
            "epe_median": float(np.median(epe)),
            "epe_mean": float(epe.mean()),
            "epe_p90": float(np.percentile(epe, 90)),
            "within_1px": float((epe < 1).mean()),
            "within_3px": float((epe < 3).mean()),
        }
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), choices=PRIORS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="of the prediction errors")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", default=str(RESULTS / "matcher_cpu.jsonl"))
    args = parser.parse_args(argv)
    import skimage

    images, true_flow = motorcycle(args.size)
    options = FlowOptions()
    width, height = images[0].size
    base = {
        "bench": "matcher",
        "commit": commit(),
        "device": "cpu",
        "pair": "middlebury2014_motorcycle (scikit-image)",
        "scikit_image": skimage.__version__,
        "method": "dis_flow",
        "preset": options.preset,
        "max_roundtrip": options.max_roundtrip,
        "max_correction": options.max_correction,
        "height": height,
        "width": width,
    }
    for prior in args.priors:
        for seed in args.seeds if prior.startswith("error") else args.seeds[:1]:
            append(Path(args.out), base | {"seed": seed} | score(images, true_flow, prior, seed, options))


if __name__ == "__main__":
    main()
