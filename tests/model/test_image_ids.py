"""Image-index ids: the official draw, our deterministic default, and more than 1000 views."""

from __future__ import annotations

import numpy as np
import torch

from fast3r_ns.model import Fast3R, default_image_ids, official_image_ids


def test_official_rule_reproduces_fixture_ids(tiny_dir):
    expected = np.load(tiny_dir / "outputs.npz")["image_idx_ids"]
    torch.manual_seed(int(np.load(tiny_dir / "outputs.npz")["forward_seed"]))
    assert official_image_ids(4).tolist() == [expected.tolist()]


def test_default_ids_are_deterministic_and_leave_global_rng_alone():
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    a = default_image_ids(50, batch=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a, default_image_ids(50, batch=2))
    assert a.shape == (2, 50) and (a[:, 0] == 0).all()
    for row in a:
        assert len(set(row[1:].tolist())) == 49 and row[1:].min() >= 1 and row[1:].max() <= 999
    assert not torch.equal(a[0], a[1])  # each sample draws its own order, as in training
    assert default_image_ids(5, random=False).tolist() == [[0, 1, 2, 3, 4]]


def test_more_than_1000_views_cycle_inside_trained_range():
    ids = default_image_ids(2500)[0]
    assert ids[0] == 0 and (ids[1:] >= 1).all() and (ids[1:] <= 999).all()
    assert len(set(ids[1:1000].tolist())) == 999  # the first 999 non-reference views are all distinct
    assert torch.equal(ids[1000:1999], ids[1:1000])  # then the same permutation again


def test_model_runs_1200_views_with_default_ids(tiny_dir):
    model = Fast3R.from_pretrained(tiny_dir / "model")
    views = [torch.rand(1, 3, 16, 16) * 2 - 1 for _ in range(1200)]
    with torch.inference_mode():
        out = model(views)
    assert len(out) == 1200
    assert all(o["pts3d_in_other_view"].shape == (1, 16, 16, 3) for o in (out[0], out[1000], out[-1]))
    assert all(torch.isfinite(o["pts3d_in_other_view"]).all() for o in out)


def test_default_ids_are_those_used_by_forward(tiny_dir):
    model = Fast3R.from_pretrained(tiny_dir / "model")
    views = [torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(3)]
    with torch.inference_mode():
        implicit = model(views)
        explicit = model(views, image_ids=default_image_ids(3)[0])
        other = model(views, image_ids=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(implicit[2]["pts3d_in_other_view"], explicit[2]["pts3d_in_other_view"])
    assert not torch.allclose(implicit[2]["pts3d_in_other_view"], other[2]["pts3d_in_other_view"])
