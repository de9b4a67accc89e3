"""Loading Fast3R weights: a local folder or a Hugging Face repo holding config.json + model.safetensors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import DEFAULT_REPO, Fast3RConfig

if TYPE_CHECKING:
    from .attention import AttentionOptions
    from .fast3r import Fast3R

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.pth", "model.ckpt")
_ALIAS = re.compile(r"^(.*\.dpt\.scratch\.)layer_rn\.([0-3])\.weight$")


class WeightsNotFoundError(FileNotFoundError):
    """The weights are neither on disk nor reachable."""


def canonical_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the 8 alias keys (``<head>.dpt.scratch.layer_rn.K.weight`` = ``layer{K+1}_rn``) of full state dicts.

    An alias is accepted only when its twin is present and identical (or missing, then it is renamed).
    """
    out = dict(state_dict)
    for key in list(out):
        match = _ALIAS.match(key)
        if not match:
            continue
        twin = f"{match.group(1)}layer{int(match.group(2)) + 1}_rn.weight"
        alias = out.pop(key)
        if twin not in out:
            out[twin] = alias
        elif out[twin].shape != alias.shape or not torch.equal(out[twin], alias):
            raise ValueError(f"checkpoint: {key} differs from {twin}, which it should alias")
    return out


def resolve_files(
    name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None
) -> tuple[Path, Path]:
    """(config.json, weights file) from a local folder, or from the Hub / its local cache for a repo id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        config = path / CONFIG_NAME
        if not config.is_file():
            raise WeightsNotFoundError(f"{path} has no {CONFIG_NAME}: expected a Fast3R checkpoint folder")
        for name in (SAFETENSORS_NAME, *PICKLE_NAMES):
            if (path / name).is_file():
                return config, path / name
        raise WeightsNotFoundError(f"{path} has no {SAFETENSORS_NAME}")
    name = str(name_or_path)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise WeightsNotFoundError(f"{name}: not a checkpoint folder, and not a Hugging Face repo id (owner/name)")
    return _download(name, revision, cache_dir)


def _download(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> tuple[Path, Path]:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    try:
        files = [
            Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir))
            for name in (CONFIG_NAME, SAFETENSORS_NAME)
        ]
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise WeightsNotFoundError(
            f"Fast3R weights '{repo_id}' are not in the Hugging Face cache ({cache}) and could not be "
            f"downloaded{offline}: {type(error).__name__}. Download them on a machine with internet access "
            f"(huggingface-cli download {repo_id}) and copy the cache, or pass a local folder holding "
            f"{CONFIG_NAME} and {SAFETENSORS_NAME}."
        ) from None
    return files[0], files[1]


def read_state_dict(weights: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; pickled files (.bin/.pth/.ckpt) only when ``allow_pickle``."""
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(weights))
    if not allow_pickle:
        raise ValueError(
            f"{weights} is a pickled checkpoint, which can run arbitrary code when loaded; convert it to "
            f"{SAFETENSORS_NAME} or pass allow_pickle=True if you trust its source"
        )
    state = torch.load(weights, map_location="cpu", weights_only=False)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_pretrained(
    cls: type[Fast3R],
    name_or_path: str | Path = DEFAULT_REPO,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
    attention: AttentionOptions | None = None,
) -> Fast3R:
    """Build the model from config.json and load its weights strictly (every real key, nothing else).

    ``name_or_path``: a folder, or a Hub repo id (``HF_HUB_OFFLINE=1`` reads the local cache only).
    ``dtype``: the weights' and activations' dtype (fp32, bf16 or fp16); outputs are always float32.
    ``attention``: how CUDA attention runs (``AttentionOptions``; None: the defaults).
    """
    config_file, weights = resolve_files(name_or_path, revision, cache_dir)
    config = Fast3RConfig.from_dict(json.loads(config_file.read_text()))
    state_dict = canonical_state_dict(read_state_dict(weights, allow_pickle))
    with torch.device("meta"):
        model = cls(config, attention=attention)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def save_pretrained(model: Fast3R, folder: str | Path) -> Path:
    """Write config.json + model.safetensors (the layout ``from_pretrained`` and the Hub use)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / SAFETENSORS_NAME))
    return folder
