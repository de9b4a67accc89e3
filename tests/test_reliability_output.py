"""Nothing a user owns is ever deleted; one output, one writer (issue #16, points 1 and 2).

Runs ``process`` with synthetic cameras (no network); the child-process cases use tests/reliability_runner.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from synthetic_cameras import fake_reconstruct, write_images

from fast3r_ns.errors import InputError
from fast3r_ns.io.output import MARKER_NAME, output_lock
from fast3r_ns.preview.report import REPORT_HTML
from fast3r_ns.process import ProcessConfig, process

RUNNER = Path(__file__).parent / "reliability_runner.py"


def run(data: Path, output: Path, **options):
    config = ProcessConfig(data=data, output_dir=output, image_size=64, num_downscales=1, **options)
    return process(config, console=Console(quiet=True), predictor=object(), reconstruct_fn=fake_reconstruct)


def photos(folder: Path, count: int = 3) -> list[str]:
    write_images(folder, [(64, 48)] * count)
    return sorted(p.name for p in folder.iterdir())


def test_overwrite_through_dotdot_keeps_the_input(tmp_path):
    names = photos(tmp_path / "in")
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="contains the input"):
        run(tmp_path / "x" / ".." / "in", tmp_path / "in", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == names


def test_overwrite_through_symlink_keeps_the_input(tmp_path):
    names = photos(tmp_path / "in")
    (tmp_path / "link").symlink_to(tmp_path / "in")
    with pytest.raises(InputError, match="contains the input"):
        run(tmp_path / "link", tmp_path / "in", overwrite=True)
    with pytest.raises(InputError, match="contains the input"):
        run(tmp_path / "in", tmp_path / "link", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == names


def test_overwrite_refuses_a_populated_folder_we_did_not_write(tmp_path):
    photos(tmp_path / "in")
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match=r"work holds files that fast3r-ns did not write \(no .fast3r_ns marker\)"):
        run(tmp_path / "in", work, overwrite=True)
    assert (work / "thesis.tex").read_text() == "years of work"


def test_overwrite_replaces_an_empty_folder_and_an_earlier_output(tmp_path):
    photos(tmp_path / "in")
    (tmp_path / "out").mkdir()
    run(tmp_path / "in", tmp_path / "out", overwrite=True)
    marker = json.loads((tmp_path / "out" / MARKER_NAME).read_text())
    assert marker["written_by"] == "fast3r-ns" and marker["version"]
    run(tmp_path / "in", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "transforms.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no staging, .old or .lock left


@pytest.mark.parametrize("value", ["", ".", "./"])
def test_empty_or_current_output_dir_refused(tmp_path, monkeypatch, value):
    names = photos(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")
    with pytest.raises(InputError, match="--output-dir"):
        run(tmp_path / "in", Path(value), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == names


def test_ancestor_of_cwd_refused(tmp_path, monkeypatch):
    photos(tmp_path / "in")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    with pytest.raises(InputError, match="is the current folder or holds it"):
        run(tmp_path / "in", Path(".."), overwrite=True)
    assert (tmp_path / "deep" / "er").is_dir()


def test_empty_output_dir_through_the_cli(tmp_path):
    photos(tmp_path / "in")
    result = subprocess.run(
        [sys.executable, str(RUNNER), "process", "--data", "in", "--output-dir", "", "--overwrite"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Error: --output-dir '.': give a new folder" in text, text
    assert "Traceback" not in text and len(list((tmp_path / "in").iterdir())) == 3


def test_second_writer_refused_while_the_first_runs(tmp_path):
    photos(tmp_path / "in")
    ready = tmp_path / "ready"
    env = {**os.environ, "RELIABILITY_READY": str(ready), "RELIABILITY_SLEEP": "3", "NO_COLOR": "1"}
    args = [sys.executable, str(RUNNER), "process", "--data", str(tmp_path / "in"), "--output-dir"]
    args += [str(tmp_path / "out"), "--image-size", "64", "--num-downscales", "0"]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    second = subprocess.run(args, env={**env, "RELIABILITY_READY": ""}, capture_output=True, text=True)
    text = " ".join((second.stdout + second.stderr).split())
    assert second.returncode == 1 and "another fast3r-ns run is writing it" in text and "Traceback" not in text
    assert first.wait(timeout=60) == 0, first.stdout.read()
    frames = json.loads((tmp_path / "out" / "transforms.json").read_text())["frames"]
    assert len(frames) == 3 and (tmp_path / "out" / REPORT_HTML).is_file()
    after = subprocess.run(args, env={**env, "RELIABILITY_READY": ""}, capture_output=True, text=True)
    assert after.returncode == 1 and "already exists: pass --overwrite" in " ".join(after.stdout.split())


def test_lock_is_exclusive_and_removed(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as lock:
        assert lock == tmp_path / "out.lock" and lock.exists()
        with pytest.raises(InputError, match="another fast3r-ns run is writing it"), output_lock(out):
            pass
    assert not lock.exists()
    with output_lock(out):  # free again
        pass


def test_report_is_inside_the_output_before_it_appears(tmp_path, monkeypatch):
    """The rename is the last step: the report and preview were already in the staging folder."""
    import fast3r_ns.io.output as output

    photos(tmp_path / "in")
    seen = []
    real_replace = output._replace

    def spy(staging: Path, output_dir: Path) -> None:
        seen.append(sorted(p.name for p in staging.iterdir()))
        real_replace(staging, output_dir)

    monkeypatch.setattr(output, "_replace", spy)
    result = run(tmp_path / "in", tmp_path / "out")
    assert {MARKER_NAME, REPORT_HTML, "fast3r_report.png", "fast3r_preview", "transforms.json"} <= set(seen[0])
    assert any(f"Report: {tmp_path / 'out' / REPORT_HTML}" in line for line in result.summary)


def test_full_disk_while_writing_the_report_fails_and_writes_nothing(tmp_path, monkeypatch):
    import errno

    import fast3r_ns.preview.report as report

    photos(tmp_path / "in")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.tmp-x" / REPORT_HTML))

    monkeypatch.setattr(report, "write_report", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_output_that_is_a_mount_point_refused_before_any_work(tmp_path, monkeypatch):
    photos(tmp_path / "in")
    (tmp_path / "mnt").mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(tmp_path / "mnt") or real_ismount(p))

    def never(*args, **kwargs):
        raise AssertionError("the network must not run")

    config = ProcessConfig(data=tmp_path / "in", output_dir=tmp_path / "mnt", image_size=64, overwrite=True)
    with pytest.raises(InputError, match=r"is a mount point, which cannot be replaced.*mnt/scene"):
        process(config, console=Console(quiet=True), predictor=object(), reconstruct_fn=never)
    assert list((tmp_path / "mnt").iterdir()) == []


def test_output_that_is_a_real_mount_point_refused(tmp_path, tmpfs):
    photos(tmp_path / "in")
    point = tmpfs(1 << 20)
    with pytest.raises(InputError, match="is a mount point"):
        run(tmp_path / "in", point, overwrite=True)
    run(tmp_path / "in", point / "scene")  # the suggested folder inside it works
    assert (point / "scene" / "transforms.json").is_file()
    assert sorted(p.name for p in point.iterdir()) == ["scene"]


def _disk_usage(folder: Path, names: set[str] | None = None) -> int:
    """Bytes in 4 KiB pages (as tmpfs counts them) of the files under ``folder`` (only top-level ``names``)."""
    total = 0
    for path in folder.rglob("*"):
        top = path.relative_to(folder).parts[0]
        if path.is_file() and (names is None or top in names):
            total += -(-path.stat().st_size // 4096) * 4096
    return total


def test_full_disk_fails_cleanly_wherever_it_happens(tmp_path, tmpfs, capsys, monkeypatch):
    """ENOSPC while writing images, the model or the report: exit 1, one line, nothing left on the disk."""
    import functools

    import fast3r_ns.process
    from fast3r_ns.cli import entrypoint

    fake = functools.partial(fast3r_ns.process.process, predictor=object(), reconstruct_fn=fake_reconstruct)
    monkeypatch.setattr(fast3r_ns.process, "process", fake)

    write_images(tmp_path / "in", [(160, 120)] * 4)
    run(tmp_path / "in", tmp_path / "reference")
    report_files = {REPORT_HTML, "fast3r_report.png", "fast3r_preview"}
    dataset = _disk_usage(tmp_path / "reference") - _disk_usage(tmp_path / "reference", report_files)
    sizes = [16 << 10, dataset // 2, dataset + 8192]  # in the first images, in the later ones, in the report
    for size in sizes:
        disk = tmpfs(size, name=f"disk{size}")
        args = ["process", "--data", str(tmp_path / "in"), "--output-dir", str(disk / "out"), "--image-size", "64"]
        with pytest.raises(SystemExit) as exit_info:
            entrypoint([*args, "--num-downscales", "1"])
        text = " ".join(capsys.readouterr().out.split())
        assert exit_info.value.code == 1, (size, text)
        assert f"Error: --output-dir {disk / 'out'}: No space left on device; nothing was written" in text
        assert "Traceback" not in text
        assert list(disk.iterdir()) == [], size
