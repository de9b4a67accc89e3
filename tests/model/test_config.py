"""The released configuration: parsing, and the exact state-dict layout of the released checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fast3r_ns.model import Fast3R, Fast3RConfig
from fast3r_ns.model.loading import canonical_state_dict


@pytest.fixture(scope="module")
def released(spec_dir):
    return Fast3RConfig.from_json(spec_dir / "fast3r_vitl512_config.json")


def test_released_config_parses(released):
    assert released.encoder.embed_dim == 1024 and released.encoder.depth == 24 and released.encoder.num_heads == 16
    assert released.encoder.rope_base == 100.0
    assert released.decoder.depth == 24 and released.decoder.random_image_idx_embedding
    assert released.head.depth_mode == ("exp", -math.inf, math.inf)
    assert released.head.conf_mode == ("exp", 1.0, math.inf)
    assert released.head.feature_dim == 256 and released.head.layer_dims == (96, 192, 384, 768)
    assert released.hooks == (0, 12, 18, 24)


def test_tiny_config_reads_extra_head_keys(tiny_dir):
    cfg = Fast3RConfig.from_json(tiny_dir / "model" / "config.json")
    assert cfg.head.feature_dim == 16 and cfg.head.layer_dims == (8, 16, 24, 32)
    assert (cfg.encoder.embed_dim, cfg.decoder.embed_dim, cfg.decoder.depth) == (64, 48, 10)


def test_config_round_trips_through_official_layout(released):
    text = json.dumps(released.to_dict())
    assert "Infinity" in text
    assert Fast3RConfig.from_dict(json.loads(text)) == released


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("encoder_args", "encoder_type", "dino"),
        ("decoder_args", "decoder_type", "llama"),
        ("head_args", "landscape_only", True),
        ("head_args", "depth_mode", ["linear", 0, 1]),
    ],
)
def test_unsupported_config_is_refused(spec_dir, section, key, value):
    raw = json.loads((spec_dir / "fast3r_vitl512_config.json").read_text())
    raw[section][key] = value
    with pytest.raises(ValueError, match=key):
        Fast3RConfig.from_dict(raw)


def test_released_model_has_exact_keys_shapes_and_size(spec_dir, released):
    rows = [line.split("\t") for line in (spec_dir / "fast3r_vitl512_state_dict.tsv").read_text().splitlines()[1:]]
    stored = {key: tuple(int(d) for d in shape.split("x")) for key, shape, _, in_file, _ in rows if in_file == "yes"}
    aliases = {key: alias for key, _, _, in_file, alias in rows if in_file == "no"}
    assert len(stored) == 712 and len(aliases) == 8
    with torch.device("meta"):
        model = Fast3R(released)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == stored
    assert sum(p.numel() for p in model.parameters()) == 647_551_368
    # a full .pth state dict (with the 8 alias keys) maps onto the same keys
    full = {k: torch.empty(0) for k in stored} | {k: torch.empty(0) for k in aliases}
    assert set(canonical_state_dict(full)) == set(stored)
