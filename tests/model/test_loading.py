"""from_pretrained: local folders, a real Hugging Face cache layout offline, strictness, pickles, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fast3r_ns.model import Fast3R, WeightsNotFoundError, save_pretrained
from fast3r_ns.model.loading import CheckpointError

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hf_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """The layout huggingface_hub keeps: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


def _run_offline(cache: Path, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_loads_from_local_folder_strictly(tiny_dir):
    model = Fast3R.from_pretrained(tiny_dir / "model")
    stored = load_file(str(tiny_dir / "model" / "model.safetensors"))
    assert set(model.state_dict()) == set(stored)
    for key, value in stored.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not model.training and model.dtype == torch.float32


def test_loads_through_offline_hf_cache(tiny_dir, tmp_path):
    cache = _hf_cache(tmp_path / "hub", "someone/fast3r-tiny", tiny_dir / "model")
    code = (
        "from fast3r_ns.model import Fast3R; import torch\n"
        "m = Fast3R.from_pretrained('someone/fast3r-tiny')\n"
        "print(sum(p.numel() for p in m.parameters()))"
    )
    result = _run_offline(cache, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "569000"


def test_offline_without_weights_names_repo_and_cache(tmp_path):
    code = (
        "from fast3r_ns.model import Fast3R\n"
        "try:\n    Fast3R.from_pretrained()\nexcept FileNotFoundError as e:\n    print(e); raise SystemExit(3)"
    )
    result = _run_offline(tmp_path / "empty-cache", code)
    assert result.returncode == 3, result.stderr
    assert "jedyang97/Fast3R_ViT_Large_512" in result.stdout
    assert str(tmp_path / "empty-cache") in result.stdout


def test_refuses_pickle_unless_allowed(tiny_dir, tmp_path):
    folder = tmp_path / "pth"
    folder.mkdir()
    shutil.copy(tiny_dir / "model" / "config.json", folder / "config.json")
    state = load_file(str(tiny_dir / "model" / "model.safetensors"))
    for head in ("downstream_head", "downstream_head_local"):  # the 8 alias keys of a full .pth state dict
        for k in range(4):
            state[f"{head}.dpt.scratch.layer_rn.{k}.weight"] = state[f"{head}.dpt.scratch.layer{k + 1}_rn.weight"]
    torch.save(state, folder / "model.pth")
    with pytest.raises(ValueError, match="pickled"):
        Fast3R.from_pretrained(folder)
    model = Fast3R.from_pretrained(folder, allow_pickle=True)
    assert torch.equal(model.state_dict()["decoder.decoder_embed.weight"], state["decoder.decoder_embed.weight"])


def test_strict_over_keys(tiny_dir, tmp_path):
    model = Fast3R.from_pretrained(tiny_dir / "model")
    folder = save_pretrained(model, tmp_path / "ok")
    assert torch.equal(Fast3R.from_pretrained(folder).encoder.enc_norm.weight, model.encoder.enc_norm.weight)
    from safetensors.torch import save_file

    state = load_file(str(folder / "model.safetensors"))
    state.pop("decoder.dec_norm.bias")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing keys: decoder.dec_norm.bias"):
        Fast3R.from_pretrained(folder)


def test_missing_folder_and_bad_names_are_clear(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        Fast3R.from_pretrained(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="exist: no such folder"):
        Fast3R.from_pretrained(tmp_path / "does" / "not" / "exist")
    with pytest.raises(WeightsNotFoundError, match="not a Hugging Face repo id"):
        Fast3R.from_pretrained("no such repo")


def test_dtype_does_what_it_says(tiny_dir):
    model = Fast3R.from_pretrained(tiny_dir / "model", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    views = [torch.rand(1, 3, 32, 48) * 2 - 1 for _ in range(2)]
    with torch.inference_mode():
        out = model(views)
    assert out[0]["pts3d_in_other_view"].dtype == torch.float32
    reference = Fast3R.from_pretrained(tiny_dir / "model")
    with torch.inference_mode():
        ref = reference(views)
    diff = (out[1]["pts3d_local"] - ref[1]["pts3d_local"]).abs().max()
    assert 0 < diff < 0.05 * ref[1]["pts3d_local"].abs().max()
