"""Our model against the official code's fp32 CPU outputs on the tiny random-weight fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fast3r_ns.model import Fast3R
from fast3r_ns.model.decoder import image_index_embedding

KEYS = ("pts3d_in_other_view", "conf", "pts3d_local", "conf_local")


@pytest.fixture(scope="module")
def fixture(tiny_dir):
    model = Fast3R.from_pretrained(tiny_dir / "model")
    pre = np.load(tiny_dir / "preprocess.npz")
    out = np.load(tiny_dir / "outputs.npz")
    views = [torch.from_numpy(pre[f"view{i}_img"]) for i in range(int(pre["num_views"]))]
    return model, views, out


def test_outputs_match_official(fixture):
    model, views, ref = fixture
    with torch.inference_mode():
        outputs = model(views, image_ids=torch.from_numpy(ref["image_idx_ids"]))
    assert len(outputs) == len(views)
    for i, out in enumerate(outputs):
        assert set(out) == set(KEYS)
        for key in KEYS:
            expected = ref[f"view{i}_{key}"]
            assert out[key].dtype == torch.float32
            assert out[key].shape == expected.shape, key
            np.testing.assert_allclose(out[key].numpy(), expected, rtol=1e-4, atol=1e-4, err_msg=f"view{i} {key}")
        assert (out["conf"] > 1).all() and (out["conf_local"] > 1).all()


def test_intermediates_match_official(fixture):
    model, views, ref = fixture
    ids = torch.from_numpy(ref["image_idx_ids"]).long()
    with torch.inference_mode():
        features = []
        for i, view in enumerate(views):
            tokens, pos = model.encoder(view)
            np.testing.assert_allclose(tokens.numpy(), ref[f"view{i}_enc_tokens"], atol=1e-5, rtol=0)
            np.testing.assert_array_equal(pos.numpy(), ref[f"view{i}_enc_pos"])
            features.append(tokens)
        assert [f.shape[1] for f in features] == list(ref["num_patches"])
        rows = image_index_embedding(ids, model.config.decoder.embed_dim)
        np.testing.assert_allclose(rows.numpy(), ref["image_idx_emb_rows"], atol=1e-7, rtol=0)
        counts = torch.tensor([f.shape[1] for f in features])
        dec_input = model.decoder.decoder_embed(torch.cat(features, 1)) + torch.repeat_interleave(rows, counts, 0)
        np.testing.assert_allclose(dec_input.numpy(), ref["dec_input_tokens"], atol=1e-5, rtol=0)
        hooked = model.decoder(features, ids[None])
    assert list(model.config.hooks) == list(ref["dpt_hooks"]) == [0, 5, 7, 10]
    assert len(hooked) == 4
    np.testing.assert_array_equal(hooked[0].numpy(), torch.cat(features, 1).numpy())
    for tensor, layer in zip(hooked[1:], (5, 7, 10)):
        np.testing.assert_allclose(tensor.numpy(), ref[f"dec_layer{layer}_tokens"], atol=1e-5, rtol=0)


def test_batch_of_two_samples_equals_two_calls(fixture):
    """B=2 with per-sample ids gives each sample's single-sample result."""
    model, views, ref = fixture
    ids = torch.tensor([[0, 538, 530, 631], [0, 5, 900, 17]])
    with torch.inference_mode():
        pair = model([torch.cat([v, v.flip(-1)]) for v in views], image_ids=ids)
        second = model([v.flip(-1) for v in views], image_ids=ids[1])
    for i in range(len(views)):
        np.testing.assert_allclose(
            pair[i]["pts3d_in_other_view"][0].numpy(), ref[f"view{i}_pts3d_in_other_view"][0], rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(pair[i]["pts3d_local"][1], second[i]["pts3d_local"][0], rtol=1e-4, atol=1e-4)


def test_head_chunking_does_not_change_outputs(fixture):
    model, views, ref = fixture
    ids = torch.from_numpy(ref["image_idx_ids"])
    same_size = [views[0], views[3], views[0].flip(-1)]
    with torch.inference_mode():
        whole = model(same_size, image_ids=ids[:3])
        model.head_chunk_size, model.encoder_chunk_size = 1, 1
        try:
            chunked = model(same_size, image_ids=ids[:3])
        finally:
            model.head_chunk_size, model.encoder_chunk_size = 25, 400
    for a, b in zip(whole, chunked):
        for key in KEYS:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
