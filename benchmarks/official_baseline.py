"""Run the official Fast3R code as a benchmark baseline (never shipped, never committed).

The official repository (noncommercial licence) is read from a git-ignored checkout, e.g. third_party/fast3r
made with `git archive` of facebookresearch/fast3r; its training-only imports are stubbed here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch


def _stub(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def import_official(checkout: Path):
    """The official Fast3R class, importable without lightning/hydra/omegaconf."""
    sys.path.insert(0, str(checkout.resolve()))
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        _stub("omegaconf", DictConfig=dict, OmegaConf=types.SimpleNamespace(to_container=lambda c, **_: c))
    try:
        import lightning_utilities.core.rank_zero  # noqa: F401
    except ImportError:
        _stub("lightning_utilities")
        _stub("lightning_utilities.core")
        _stub(
            "lightning_utilities.core.rank_zero",
            rank_zero_only=lambda f: f,
            rank_prefixed_message=lambda message, rank: message,
        )
    import fast3r

    utils = types.ModuleType("fast3r.utils")  # its __init__ imports hydra/lightning: skip it, keep submodules
    utils.__path__ = [str(Path(fast3r.__file__).parent / "utils")]
    sys.modules["fast3r.utils"] = utils
    from fast3r.models.fast3r import Fast3R as OfficialFast3R

    return OfficialFast3R


def build_official(checkout: Path, config: dict, state_dict: dict[str, torch.Tensor], device: str):
    """Official model with our weights (non-strict, as its own loader: it has 8 alias keys)."""
    official = import_official(checkout)(**config)
    missing, unexpected = official.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if ".scratch.layer_rn." not in k]
    if missing or unexpected:
        raise RuntimeError(f"official model keys differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return official.to(device).eval()


def official_views(images: list[torch.Tensor]) -> list[dict]:
    """Our [1, 3, H, W] tensors as the official view dicts."""
    return [
        {"img": img, "true_shape": torch.tensor([img.shape[-2:]], dtype=torch.int32), "idx": i, "instance": str(i)}
        for i, img in enumerate(images)
    ]


@torch.no_grad()
def official_forward(model, images: list[torch.Tensor], autocast_dtype: torch.dtype | None = torch.float16):
    """The official forward in its fastest working mode (fp16 autocast, what its demo runs)."""
    views = official_views(images)
    device_type = images[0].device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        return model(views)
