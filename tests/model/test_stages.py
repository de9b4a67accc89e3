"""The model's public stages are its forward, its runtime options live on the object, and a predictor leaves the
caller's model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fast3r_ns.model import AttentionOptions, Fast3R
from fast3r_ns.model.attention import DEFAULT_ATTENTION, Attention
from fast3r_ns.predictor import Fast3RPredictor


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    pre = np.load(tiny_dir / "preprocess.npz")
    views = [torch.from_numpy(pre[f"view{i}_img"]) for i in range(int(pre["num_views"]))]
    return tiny_dir / "model", views


def test_stages_are_the_forward(tiny):
    folder, views = tiny
    model = Fast3R.from_pretrained(folder)
    with torch.inference_mode():
        expected = model(views)
        prepared = model.prepare(views)
        ids = model.view_ids(len(prepared), prepared[0].shape[0])
        hooked = model.decode(model.encode(prepared), ids)
        staged = model.heads(prepared, hooked, output_device="cpu")
    for a, b in zip(expected, staged):
        assert set(a) == set(b)
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    assert ids.tolist() == model.view_ids(4, 1, ids[0]).tolist()
    with pytest.raises(ValueError, match="same B"):
        model.prepare([views[0], views[1].expand(2, -1, -1, -1)])


def test_attention_options_reach_every_block(tiny):
    folder, _ = tiny
    model = Fast3R.from_pretrained(folder)
    blocks = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(blocks) == 2 + 10  # encoder depth 2, decoder depth 10
    assert model.attention_options == DEFAULT_ATTENTION and all(b.options is DEFAULT_ATTENTION for b in blocks)
    chosen = AttentionOptions(kv_block_tokens=0, use_flash_attn=True)
    model.attention_options = chosen
    assert all(b.options is chosen for b in blocks)
    loaded = Fast3R.from_pretrained(folder, attention=chosen)
    assert all(m.options is chosen for m in loaded.modules() if isinstance(m, Attention))
    assert chosen.as_record()["sdpa_priority"][0] == "CUDNN_ATTENTION"
    assert model.overlap_output_copies  # the other runtime choice is an attribute too


def test_predictor_leaves_the_model_as_it_was(tiny):
    folder, views = tiny
    model = Fast3R.from_pretrained(folder)
    before = {k: v for k, v in vars(model).items() if not k.startswith("_")}
    predictor = Fast3RPredictor(model, "cpu")
    outputs = predictor(views)
    assert {k: v for k, v in vars(model).items() if not k.startswith("_")} == before
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for out in outputs for t in out.values())
