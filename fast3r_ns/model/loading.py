"""Loading Fast3R weights: a local folder or a Hugging Face repo holding config.json + model.safetensors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import InputError
from .config import DEFAULT_REPO, Fast3RConfig

if TYPE_CHECKING:
    from .attention import AttentionOptions
    from .fast3r import Fast3R

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.pth", "model.ckpt")
_ALIAS = re.compile(r"^(.*\.dpt\.scratch\.)layer_rn\.([0-3])\.weight$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class WeightsNotFoundError(FileNotFoundError):
    """The weights are neither on disk nor reachable."""


class CheckpointError(InputError):
    """The checkpoint's files exist but cannot be used (damaged file, keys or shapes not matching config.json)."""


def check_model_name(name_or_path: str | Path) -> Path | None:
    """The checkpoint folder ``name_or_path`` names, None for a Hugging Face repo id; else WeightsNotFoundError.

    Something that looks like a path (starts with ``.``, ``/`` or ``~``, has a backslash or more than one ``/``, or
    starts with an existing folder) and does not exist is "no such folder" at once, never a Hub look-up.
    """
    path = Path(name_or_path).expanduser()
    name = str(name_or_path)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise WeightsNotFoundError(f"{path} has no {CONFIG_NAME}: expected a Fast3R checkpoint folder")
        if not any((path / weights).is_file() for weights in (SAFETENSORS_NAME, *PICKLE_NAMES)):
            raise WeightsNotFoundError(f"{path} has no {SAFETENSORS_NAME}")
        if (path / SAFETENSORS_NAME).is_file():
            _check_safetensors(path / SAFETENSORS_NAME)
        return path
    if path.exists():
        raise WeightsNotFoundError(f"--model {name}: a file, not a checkpoint folder (config.json + model.safetensors)")
    first = Path(name.split("/")[0]).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or first.is_dir()
    if looks_like_path:
        raise WeightsNotFoundError(f"--model {name}: no such folder")
    if not _REPO_ID.match(name):
        raise WeightsNotFoundError(f"--model {name}: no such folder, and not a Hugging Face repo id (owner/name)")
    return None


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
    path = check_model_name(name_or_path)
    if path is None:
        return _download(str(name_or_path), revision, cache_dir)
    weights = next(path / name for name in (SAFETENSORS_NAME, *PICKLE_NAMES) if (path / name).is_file())
    return path / CONFIG_NAME, weights


def _check_safetensors(weights: Path) -> None:
    """A CheckpointError when the file's header or length is not that of a complete safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt"):  # reads and checks the header only
            pass
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError for damaged files
        size = weights.stat().st_size
        raise CheckpointError(f"{weights} ({size:,} bytes) is not a complete safetensors file: {error}") from None


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

        _check_safetensors(weights)
        return load_file(str(weights))
    if not allow_pickle:
        raise CheckpointError(
            f"{weights} is a pickled checkpoint, which can run arbitrary code when loaded: fast3r-ns reads only "
            f"{SAFETENSORS_NAME}; if you trust its source, convert it (torch.load, then safetensors.torch.save_file)"
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
    try:
        config = Fast3RConfig.from_dict(json.loads(config_file.read_text()))
        with torch.device("meta"):
            model = cls(config, attention=attention)
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{config_file}: not a usable Fast3R config ({type(error).__name__}: {error})") from None
    state_dict = canonical_state_dict(read_state_dict(weights, allow_pickle))
    check_keys(model.state_dict(), state_dict, weights)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def check_keys(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], weights: Path) -> None:
    """One CheckpointError naming the missing, unexpected and wrong-shape keys (a few of each), if any."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [
        f"{k} {list(found[k].shape)} (config.json wants {list(expected[k].shape)})"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    ]
    problems = [
        f"{len(items)} {what}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
        for what, items in (("missing keys", missing), ("unexpected keys", extra), ("keys of another shape", shapes))
        if items
    ]
    if problems:
        raise CheckpointError(
            f"{weights} does not match its config.json ({'; '.join(problems)}): is it a Fast3R checkpoint, "
            "and does config.json belong to it?"
        )


def save_pretrained(model: Fast3R, folder: str | Path) -> Path:
    """Write config.json + model.safetensors (the layout ``from_pretrained`` and the Hub use)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / SAFETENSORS_NAME))
    return folder
