"""Evaluate one trained splatfacto run (GPU machine, nerfstudio 1.1.5): nerfstudio's own held-out metrics plus a
picture and the training-view PSNR.

    python benchmarks/splat_eval.py CONFIG_YML OUT_JSON [--render PNG] [--view 0]

OUT_JSON has ns-eval's layout ({"experiment_name", "method_name", "checkpoint", "results": {...}}, the results
from ``pipeline.get_average_eval_image_metrics(get_std=True)`` exactly as ``ns-eval`` computes them; LPIPS is
present but MEANINGLESS here: its AlexNet weights are a random placeholder offline), plus ``train_psnr`` (mean over
training views, rendered at the cameras splatfacto trained with: with camera optimisation, the optimised ones),
``num_gaussians``, ``eval_images`` and ``step``. ``--render`` writes held-out view ``--view`` as [truth | render].
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10.0 * torch.log10(((a - b) ** 2).mean().clamp_min(1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--render", type=Path)
    parser.add_argument("--view", type=int, default=0)
    args = parser.parse_args()

    from nerfstudio.utils.eval_utils import eval_setup

    start = time.perf_counter()
    config, pipeline, checkpoint_path, step = eval_setup(args.config)  # test_mode="test", as ns-eval
    metrics = pipeline.get_average_eval_image_metrics(output_path=None, get_std=True)
    info = {
        "experiment_name": config.experiment_name,
        "method_name": config.method_name,
        "checkpoint": str(checkpoint_path),
        "results": metrics,
        "step": int(step),
    }
    model, datamanager = pipeline.model, pipeline.datamanager
    model.eval()
    info["num_gaussians"] = int(model.num_points)
    info["eval_images"] = len(datamanager.eval_dataset)

    with torch.no_grad():
        train_psnr = []
        dataset = datamanager.train_dataset
        for index in range(len(dataset)):
            camera = dataset.cameras[index : index + 1].to(model.device)
            if camera.metadata is None:
                camera.metadata = {}
            camera.metadata["cam_idx"] = index
            optimised = model.camera_optimizer.apply_to_camera(camera)  # identity when camera optimisation is off
            camera.camera_to_worlds = optimised.to(camera.camera_to_worlds.dtype)
            truth = dataset.get_image_float32(index).to(model.device)[..., :3]
            rgb = model.get_outputs_for_camera(camera)["rgb"].clamp(0, 1)
            train_psnr.append(_psnr(rgb, truth))
        info["train_psnr"] = round(float(np.mean(train_psnr)), 4)

        if args.render is not None:
            dataset = datamanager.eval_dataset
            view = min(args.view, len(dataset) - 1)
            camera = dataset.cameras[view : view + 1].to(model.device)
            truth = dataset.get_image_float32(view).to(model.device)[..., :3]
            rgb = model.get_outputs_for_camera(camera)["rgb"].clamp(0, 1)
            pair = torch.cat([truth, rgb], dim=1).cpu().numpy()
            args.render.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((pair * 255 + 0.5).astype(np.uint8)).save(args.render)
            info["render_view"] = dataset.image_filenames[view].name
            info["render_psnr"] = round(_psnr(rgb, truth), 4)
    info["seconds"] = round(time.perf_counter() - start, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(info, indent=2))
    print(json.dumps({k: info[k] for k in ("results", "train_psnr", "num_gaussians", "step")}))


if __name__ == "__main__":
    main()
