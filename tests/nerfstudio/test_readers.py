"""Readers other than nerfstudio's parsers open our dataset as written (issue 18).

COLMAP: pycolmap reads the model and its bundle adjuster runs on it (in a subprocess: on a point with one
observation COLMAP's check fails, which aborts the process in builds that do not raise; see the control test).
3DGS, gsplat, OpenSplat and Brush are not on PyPI: their tests check the exact files and keys each reader's
source requires (the source file is named in each test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pycolmap
import pytest
from plyfile import PlyData
from rich.console import Console
from synthetic_cameras import fake_reconstruct, make_reconstruction, write_images

from fast3r_ns.io.colmap import write_colmap_model
from fast3r_ns.io.readers import link_sparse
from fast3r_ns.process import ProcessConfig, process
from fast3r_ns.testing import OraclePredictor, make_scene

BUNDLE_ADJUST = (
    "import pycolmap, sys\n"
    "model = pycolmap.Reconstruction(sys.argv[1])\n"
    "before = model.compute_mean_reprojection_error()\n"
    "pycolmap.bundle_adjustment(model)\n"
    "print(before, model.compute_mean_reprojection_error(), model.num_points3D())\n"
)


def _bundle_adjust(folder) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BUNDLE_ADJUST, str(folder)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Exact pointmaps of a 6-view synthetic room, through process() without --refine."""
    from fast3r_ns.io.images import load_images

    root = tmp_path_factory.mktemp("readers")
    scene = make_scene(6, image_size=(160, 120), arc_degrees=60, seed=4)
    paths = scene.write_images(root / "imgs")
    predictor = OraclePredictor(scene, load_images(paths, size=128))
    config = ProcessConfig(data=root / "imgs", output_dir=root / "scene", image_size=128, num_downscales=1)
    result = process(config, console=Console(quiet=True), predictor=predictor)
    return result.output_dir, result.reconstruction, scene


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Three image sizes: per-frame intrinsics in transforms.json, one COLMAP camera per image."""
    root = tmp_path_factory.mktemp("mixed")
    write_images(root / "photos", [(96, 72), (72, 96), (80, 64)])
    config = ProcessConfig(data=root / "photos", output_dir=root / "scene", image_size=64, num_downscales=2)
    result = process(config, console=Console(quiet=True), predictor=object(), reconstruct_fn=fake_reconstruct)
    return result.output_dir, result.reconstruction


def test_every_colmap_point_has_two_observations_and_bundle_adjustment_runs(oracle):
    out, rec, _ = oracle
    model = pycolmap.Reconstruction(str(out / "colmap/sparse/0"))
    assert model.num_reg_images() == rec.num_images and model.num_points3D() > 300
    assert min(point.track.length() for point in model.points3D.values()) >= 2
    assert all(image.num_points3D > 50 for image in model.images.values())  # every view is constrained
    done = _bundle_adjust(out / "colmap/sparse/0")
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, points = (float(v) for v in done.stdout.split())
    assert before < 0.05 and after < 0.05 and points == model.num_points3D()  # exact pointmaps: already converged


def test_bundle_adjustment_aborts_on_single_observation_points(tmp_path):
    """The control: the model we used to write (one observation per point) fails COLMAP's check."""
    rec = make_reconstruction()
    model = pycolmap.Reconstruction()
    fx, fy, cx, cy = rec.intrinsics[0]
    camera = pycolmap.Camera.create_from_model_name(1, "PINHOLE", fx, *(int(v) for v in rec.image_sizes[0]))
    camera.params = [fx, fy, cx, cy]
    model.add_camera_with_trivial_rig(camera)
    for index in range(rec.num_images):  # the old layout: each point only in the image it came from
        keypoints = rec.point_pixel[rec.point_image == index].astype(np.float64)
        image = pycolmap.Image(name=f"{index}.png", keypoints=keypoints, camera_id=1, image_id=index + 1)
        model.add_image_with_trivial_frame(image, pycolmap.Rigid3d(rec.world_to_cam[index, :3, :4]))
        for k, row in enumerate(np.flatnonzero(rec.point_image == index)):
            track = pycolmap.Track()
            track.add_element(index + 1, k)
            model.add_point3D(rec.points[row].astype(np.float64), track, rec.colors[row])
    (tmp_path / "old").mkdir()
    model.write(str(tmp_path / "old"))
    done = _bundle_adjust(tmp_path / "old")
    assert done.returncode != 0 and "Length() > 1" in done.stderr  # pycolmap 4 raises; older ones abort


def test_written_tracks_reproject_onto_the_true_correspondences(oracle):
    """Against the oracle's truth: the true surface point behind each observation, projected with the TRUE camera
    of every other observation of its track, lands on that observation's pixel."""
    out, rec, scene = oracle
    model = pycolmap.Reconstruction(str(out / "colmap/sparse/0"))
    errors = []
    for point in model.points3D.values():
        observed = []
        for element in point.track.elements:
            view = element.image_id - 1
            xy = np.asarray(model.images[element.image_id].points2D[element.point2D_idx].xy)
            observed.append((view, xy, scene.cast_pixels(view, xy[None])[1][0]))
        for view, xy, _ in observed:
            camera = scene.cameras[view]
            for other, _, truth in observed:
                if other != view:
                    cam = np.linalg.inv(camera.cam_to_world) @ np.append(truth, 1.0)
                    fx, fy, cx, cy = camera.intrinsics
                    errors.append(np.hypot(fx * cam[0] / cam[2] + cx - xy[0], fy * cam[1] / cam[2] + cy - xy[1]))
    errors = np.array(errors)
    assert np.median(errors) < 0.05 and np.percentile(errors, 95) < 0.5, np.percentile(errors, [50, 95, 99])
    assert model.compute_mean_reprojection_error() < 0.05  # and with our cameras


def test_3dgs_finds_the_model(oracle):
    """graphdeco-inria/gaussian-splatting, scene/__init__.py: ``os.path.exists(join(source_path, "sparse"))``
    selects COLMAP; scene/dataset_readers.py readColmapSceneInfo reads sparse/0/{images,cameras,points3D}.bin
    (it writes sparse/0/points3D.ply beside them), readColmapCameras takes only PINHOLE or SIMPLE_PINHOLE and
    opens images/<basename of the image name>."""
    out, rec, _ = oracle
    assert (out / "sparse").is_symlink() and os.readlink(out / "sparse") == os.path.join("colmap", "sparse")
    for name in ("images.bin", "cameras.bin", "points3D.bin"):
        assert (out / "sparse/0" / name).read_bytes() == (out / "colmap/sparse/0" / name).read_bytes()
    model = pycolmap.Reconstruction(str(out / "sparse/0"))
    assert {camera.model.name for camera in model.cameras.values()} <= {"PINHOLE", "SIMPLE_PINHOLE"}
    for image in model.images.values():
        assert (out / "images" / os.path.basename(image.name)).is_file()
    (out / "sparse/0/points3D.ply").write_bytes(b"")  # 3DGS writes here: it lands in the one real model folder
    assert (out / "colmap/sparse/0/points3D.ply").exists()
    (out / "sparse/0/points3D.ply").unlink()


def test_gsplat_parser_finds_the_model(oracle):
    """nerfstudio-project/gsplat, examples/datasets/colmap.py Parser: colmap_dir = data_dir/sparse/0/ (else
    data_dir/sparse), read by pycolmap.Reconstruction; every observation's point3D_id must be a point of the
    model; images/ and images_<factor>/ are paired by their sorted file lists."""
    out, rec, _ = oracle
    model = pycolmap.Reconstruction(os.path.join(out, "sparse/0/"))
    for image in model.images.values():
        assert all(obs.point3D_id in model.points3D for obs in image.get_observation_points2D())
    full = sorted(p.name for p in (out / "images").iterdir())
    half = sorted(p.name for p in (out / "images_2").iterdir())
    assert full == half == sorted(image.name for image in model.images.values())


def test_opensplat_reads_transforms_with_per_frame_cameras(mixed):
    """pierotofy/OpenSplat, input_data.cpp: transforms.json at the root wins; nerfstudio.cpp from_json(Transforms):
    ``j.at("camera_model")`` (required at the top level), ``j.at("frames")``; ply_file_path must be non-empty and
    readable; each Frame needs file_path and transform_matrix and takes w, h, fl_x, fl_y, cx, cy from the frame
    or the top level. point_io.cpp fastPlyReadPointSet: "ply", the format line, then the element line; float x, y,
    z first, then (binary) float32 xyz and uchar red, green, blue per vertex."""
    out, rec = mixed
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and "fl_x" not in meta  # per-frame intrinsics, key still at the top
    assert meta["ply_file_path"] and (out / meta["ply_file_path"]).is_file()
    data = (out / meta["ply_file_path"]).read_bytes()
    header = data[: data.index(b"end_header\n")].decode().splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {len(rec.points)}"]
    colors = [f"property uchar {c}" for c in ("red", "green", "blue")]
    assert header[3:] == [f"property float {a}" for a in "xyz"] + colors
    for frame, size in zip(meta["frames"], rec.image_sizes):
        assert (out / frame["file_path"]).is_file() and np.asarray(frame["transform_matrix"]).shape == (4, 4)
        assert (frame["w"], frame["h"]) == tuple(size) and all(frame[k] > 0 for k in ("fl_x", "fl_y", "cx", "cy"))


def test_brush_takes_init_ply_in_the_colmap_frame(mixed):
    """ArthurBrussee/brush, crates/brush-dataset/src/formats/mod.rs load_dataset: colmap is tried first
    (formats/colmap.rs: the folder of a file ending in cameras.bin, images found by name); then a PLY named
    init.ply, else the last *.ply in sorted order, replaces the initial points. So init.ply must be in the COLMAP
    model's frame (sparse_pc.ply is in nerfstudio's rotated one); crates/brush-serde/src/ply_gaussian.rs reads
    x, y, z and red, green, blue."""
    out, rec = mixed
    ply = PlyData.read(str(out / "init.ply"))["vertex"]
    assert {"x", "y", "z", "red", "green", "blue"} <= {p.name for p in ply.properties}
    points = np.stack([ply["x"], ply["y"], ply["z"]], axis=1)
    np.testing.assert_array_equal(points, rec.points)
    model = pycolmap.Reconstruction(str(out / "colmap/sparse/0"))
    written = np.array([point.xyz for point in model.points3D.values()])
    assert len(written) and np.isin(written.astype(np.float32).view("V12"), points.view("V12")).all()
    for image in model.images.values():
        assert min(str(p.relative_to(out)) for p in out.rglob(image.name)) == f"images/{image.name}"


def test_sparse_is_a_copy_where_symlinks_fail(tmp_path, monkeypatch):
    rec = make_reconstruction()
    write_colmap_model(tmp_path / "colmap/sparse/0", rec, [f"{i}.png" for i in range(4)])

    def refuse(*args, **kwargs):
        raise OSError("symbolic links are not available")

    monkeypatch.setattr(os, "symlink", refuse)
    assert link_sparse(tmp_path) == "copy"
    assert not (tmp_path / "sparse").is_symlink()
    assert pycolmap.Reconstruction(str(tmp_path / "sparse/0")).num_points3D() == rec.tracks.num_tracks
