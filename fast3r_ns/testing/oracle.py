"""A Predictor made from a synthetic scene: exact (or deliberately corrupted) pointmaps on the network grid."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

from ..geometry.conventions import pixel_centers
from ..io.images import PreparedImage
from ..predictions import Output
from .scene import Scene


class OraclePredictor:
    """Implements the ``Predictor`` protocol from a ``Scene`` with known geometry.

    For each view the pointmaps are sampled on the NETWORK image grid of the corresponding ``PreparedImage``: the
    centre of network pixel (u, v) is mapped to the original image with ``PreparedImage.to_original`` and the ray
    of the original camera through that point is cast, so resize and crop of the preprocessing are honoured.
    Without ``images`` the views are taken to be the scene's images at their original size.

    Corruptions (all seeded, independent between the global and the local pointmap):
      depth_noise: relative std of a multiplicative factor on each point (along its ray), e.g. 0.02.
      point_noise: relative std (times depth) of isotropic Gaussian noise on each point.
      outlier_fraction: fraction of pixels with gross errors (depth x U[0.3, 3] plus a lateral offset of up to
        half the depth) that keep a normal confidence.
      low_conf_fraction: fraction of each image covered by rectangles whose points are garbage (30 % noise)
        and whose confidence is in [1, 1.3).
    View-level errors (one draw per view, from a generator of its own so the per-pixel draws above are unchanged):
      local_focal_noise: relative std of the local pointmap's field of view (its x, y are divided by 1 + e, so a
        focal estimated from it is off by the factor 1 + e).
      local_focal_bias: a field-of-view error shared by every view (the factor becomes (1 + bias)(1 + e)): a
        systematic focal error of the local head, which averaging over views does not remove.
      local_rotation_noise_deg, local_translation_noise: std of a rotation (degrees, about a random axis through
        the camera) and of a translation (relative to the view's median depth) of the local pointmap: the local
        and global heads disagree about the camera, so the pose solved between them is off.
      global_rotation_noise_deg, global_translation_noise, global_scale_noise: a similarity (about the camera
        centre) applied to the view's global pointmap: the view is misaligned with the others. Cameras solved from
        such a pointmap carry the same misalignment and agree with it exactly, so correspondences taken from the
        pointmaps themselves cannot reveal it (a photometric matcher could).
    Normal pixels get confidences uniform in [2, 10). With ``normalize`` the global pointmaps are divided by their
    mean distance to the origin over all views and each local pointmap by its own, as in training.

    Called on a subset of the views (as a ``ChunkedPredictor`` pass does; the views are recognised as the
    ``images``' tensors), it behaves like the network on that subset: the global pointmaps are in the camera frame
    of the FIRST view of the call, normalised over the call's views, with noise drawn afresh for that call.
    ``call_scale_jitter`` (std of a log-normal factor) and ``call_frame_jitter`` (std of a rotation angle in
    degrees and of a translation as a fraction of the mean point distance) move each call's global pointmaps by a
    random similarity, seeded by the call's views. Called on all views the defaults give the outputs above.
    """

    def __init__(
        self,
        scene: Scene,
        images: Sequence[PreparedImage] | None = None,
        depth_noise: float = 0.0,
        point_noise: float = 0.0,
        outlier_fraction: float = 0.0,
        low_conf_fraction: float = 0.0,
        normalize: bool = True,
        seed: int = 0,
        local_focal_noise: float = 0.0,
        local_focal_bias: float = 0.0,
        local_rotation_noise_deg: float = 0.0,
        local_translation_noise: float = 0.0,
        global_rotation_noise_deg: float = 0.0,
        global_translation_noise: float = 0.0,
        global_scale_noise: float = 0.0,
        call_scale_jitter: float = 0.0,
        call_frame_jitter: float = 0.0,
    ) -> None:
        if images is not None and len(images) != len(scene.cameras):
            raise ValueError(f"{len(images)} images for a scene of {len(scene.cameras)} cameras")
        self.scene = scene
        self.images = images
        self.depth_noise = depth_noise
        self.point_noise = point_noise
        self.outlier_fraction = outlier_fraction
        self.low_conf_fraction = low_conf_fraction
        self.normalize = normalize
        self.seed = seed
        self.local_focal_noise = local_focal_noise
        self.local_focal_bias = local_focal_bias
        self.local_rotation_noise_deg = local_rotation_noise_deg
        self.local_translation_noise = local_translation_noise
        self.global_rotation_noise_deg = global_rotation_noise_deg
        self.global_translation_noise = global_translation_noise
        self.global_scale_noise = global_scale_noise
        self.call_scale_jitter = call_scale_jitter
        self.call_frame_jitter = call_frame_jitter

    def network_pixels(self, view: int, height: int, width: int) -> np.ndarray:
        """[H, W, 2] continuous original-image coordinates of the centres of the network pixels of ``view``."""
        centers = pixel_centers(height, width)
        return centers if self.images is None else self.images[view].to_original(centers)

    def _corrupt(
        self, rng: np.random.Generator, points: np.ndarray, outliers: np.ndarray, garbage: np.ndarray
    ) -> np.ndarray:
        """points [H, W, 3] camera frame -> corrupted copy (float64)."""
        depth = points[..., 2:3]
        out = points * (1.0 + self.depth_noise * rng.standard_normal(depth.shape))
        if self.point_noise > 0:
            out = out + self.point_noise * depth * rng.standard_normal(points.shape)
        num = int(outliers.sum())
        if num:
            factor = rng.uniform(0.3, 3.0, size=(num, 1))
            lateral = rng.uniform(-0.5, 0.5, size=(num, 3)) * depth[outliers] * np.array([1.0, 1.0, 0.0])
            out[outliers] = points[outliers] * factor + lateral
        num = int(garbage.sum())
        if num:
            out[garbage] = points[garbage] * (1.0 + 0.3 * rng.standard_normal((num, 3)))
        return out

    def view_errors(self, view: int, depth: float) -> dict[str, np.ndarray]:
        """The view-level errors of ``view`` (depth: its median depth): ``local`` and ``global`` [4, 4] maps of
        camera-frame points (``global`` may scale) and ``focal_factor`` (local x, y are divided by it)."""
        rng = np.random.default_rng([self.seed, view, 1])
        draws = rng.standard_normal(12)

        def similarity(axis_angle_deg: np.ndarray, translation: np.ndarray, scale: float) -> np.ndarray:
            angle = np.linalg.norm(axis_angle_deg)
            out = np.eye(4)
            if angle > 0:
                axis = axis_angle_deg / angle
                skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
                radians = np.deg2rad(angle)
                out[:3, :3] = np.eye(3) + np.sin(radians) * skew + (1 - np.cos(radians)) * skew @ skew
            out[:3, :3] *= scale
            out[:3, 3] = translation
            return out

        return {
            "focal_factor": np.array((1.0 + self.local_focal_bias) * (1.0 + self.local_focal_noise * draws[0])),
            "local": similarity(
                self.local_rotation_noise_deg * draws[1:4], self.local_translation_noise * depth * draws[4:7], 1.0
            ),
            "global": similarity(
                self.global_rotation_noise_deg * draws[7:10],
                self.global_translation_noise * depth * np.array([draws[10], draws[11], draws[0]]),
                1.0 + self.global_scale_noise * draws[11],
            ),
        }

    def _low_conf_mask(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), dtype=bool)
        target = self.low_conf_fraction * height * width
        while mask.sum() < target:
            h = int(rng.integers(max(1, height // 8), max(2, height // 3)))
            w = int(rng.integers(max(1, width // 8), max(2, width // 3)))
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            mask[top : top + h, left : left + w] = True
        return mask

    def view_outputs(
        self, view: int, height: int, width: int, reference: int = 0, call: int | None = None
    ) -> dict[str, np.ndarray]:
        """Un-normalised float64 outputs of one view: pts3d_in_other_view (in camera ``reference``'s frame), conf,
        pts3d_local, conf_local. ``call``: a key mixed into the noise seed (None for a call on all views)."""
        rng = np.random.default_rng([self.seed, view] if call is None else [self.seed, view, call])
        points_cam = self.scene.cast_pixels(view, self.network_pixels(view, height, width))[0]
        outliers = rng.random((height, width)) < self.outlier_fraction
        garbage = self._low_conf_mask(rng, height, width) if self.low_conf_fraction > 0 else np.zeros_like(outliers)
        outliers &= ~garbage
        cams = self.scene.cameras
        view_to_cam0 = np.linalg.inv(cams[reference].cam_to_world) @ cams[view].cam_to_world
        errors = self.view_errors(view, float(np.median(points_cam[..., 2])))
        outputs = {}
        for name, conf_name in (("pts3d_in_other_view", "conf"), ("pts3d_local", "conf_local")):
            points = self._corrupt(rng, points_cam, outliers, garbage)
            if name == "pts3d_in_other_view":
                points = points @ errors["global"][:3, :3].T + errors["global"][:3, 3]
                points = points @ view_to_cam0[:3, :3].T + view_to_cam0[:3, 3]
            else:
                points[..., :2] /= errors["focal_factor"]
                points = points @ errors["local"][:3, :3].T + errors["local"][:3, 3]
            conf = rng.uniform(2.0, 10.0, size=(height, width))
            conf[garbage] = rng.uniform(1.0, 1.3, size=int(garbage.sum()))
            outputs[name], outputs[conf_name] = points, conf
        return outputs

    def view_indices(self, views: Sequence[torch.Tensor]) -> list[int]:
        """Scene views of a call: all of them in order, or the ``images`` whose tensors (or equal ones) were passed."""
        if len(views) == len(self.scene.cameras):
            return list(range(len(views)))
        images = self.images or []
        lookup = {id(image.tensor): i for i, image in enumerate(images)}
        indices = [lookup.get(id(view)) for view in views]
        for k, view in enumerate(views):  # the same pixels loaded again (e.g. by process())
            if indices[k] is None:
                same = (
                    i for i, im in enumerate(images) if im.tensor.shape == view.shape and torch.equal(im.tensor, view)
                )
                indices[k] = next(same, None)
        if not views or None in indices:
            raise ValueError(
                f"{len(views)} views for a scene of {len(self.scene.cameras)} cameras (a subset must be the "
                "tensors of the images= given to the oracle)"
            )
        return indices

    def _call_similarity(self, call: int) -> tuple[float, np.ndarray, np.ndarray]:
        """Random (scale, rotation [3, 3], translation direction [3]) of one call (identity without jitter)."""
        rng = np.random.default_rng([self.seed, call, 7919])
        scale = float(np.exp(self.call_scale_jitter * rng.standard_normal()))
        axis = rng.standard_normal(3)
        angle = np.deg2rad(self.call_frame_jitter * rng.standard_normal())
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / np.linalg.norm(axis)
        rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        return scale, rotation, self.call_frame_jitter / 30.0 * rng.standard_normal(3)

    def __call__(self, views: list[torch.Tensor]) -> list[Output]:
        indices = self.view_indices(views)
        full = indices == list(range(len(self.scene.cameras)))
        call = None if full else zlib.crc32(np.asarray(indices, dtype=np.int64).tobytes())
        outputs = []
        norm_sum, norm_count = 0.0, 0
        for index, view in zip(indices, views):
            raw = self.view_outputs(index, view.shape[-2], view.shape[-1], reference=indices[0], call=call)
            norm_sum += float(np.linalg.norm(raw["pts3d_in_other_view"], axis=-1).sum())
            norm_count += raw["conf"].size
            if self.normalize:
                raw["pts3d_local"] /= np.linalg.norm(raw["pts3d_local"], axis=-1).mean()
            outputs.append({k: torch.from_numpy(v.astype(np.float32))[None] for k, v in raw.items()})
        jitter = self.call_scale_jitter > 0 or self.call_frame_jitter != 0
        scale, rotation, shift = self._call_similarity(call or 0) if jitter else (1.0, np.eye(3), np.zeros(3))
        mean_distance = 1.0 if self.normalize else norm_sum / norm_count  # of the global points, once normalised
        for output, view in zip(outputs, views):
            if self.normalize:
                output["pts3d_in_other_view"] /= norm_sum / norm_count
            if jitter:
                points = output["pts3d_in_other_view"].double() @ torch.from_numpy(rotation).T
                points = scale * (points + torch.from_numpy(shift * mean_distance))
                output["pts3d_in_other_view"] = points.float()
            if view.shape[0] != 1:
                for key, value in output.items():
                    output[key] = value.expand(view.shape[0], *value.shape[1:])
        return outputs
