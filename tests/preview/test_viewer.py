"""The viewer serves a scene on a free loopback port, headless Chromium renders it, and Ctrl-C ends it with code 0."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import viser
from PIL import Image
from preview_scene import UNTRUSTED_VIEW, make_confidence_maps, make_reconstruction, write_nerfstudio_folder

from fast3r_ns.preview.report import write_report
from fast3r_ns.preview.viewer import ViewConfig, _free_port, build_scene, load_scene, run

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",  # software WebGL for the 3-D canvas
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,768",
    "--virtual-time-budget=8000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    raise FileNotFoundError("chromium not found: `./install.sh test` installs Debian's chromium package")


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def wait_for_url(lines: queue.Queue, output: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        output.append(line)
        match = re.search(r"Open (http://127\.0\.0\.1:\d+/)", line)
        if match:
            return match.group(1)
    raise TimeoutError("viewer printed no URL:\n" + "".join(output))


def wait_for_http(url: str, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_viewer_serves_renders_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    rec = make_reconstruction(tmp_path / "input")
    out = tmp_path / "out"
    frame_paths = write_nerfstudio_folder(out, rec, ply_confidence=True)
    write_report(out, rec, make_confidence_maps(rec), command="test", frame_paths=frame_paths)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    viewer = subprocess.Popen(
        [sys.executable, "-m", "fast3r_ns.preview.viewer", str(out), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(viewer.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        url = wait_for_url(lines, output, timeout=60)
        assert b"<html" in wait_for_http(url, timeout=30).lower()

        screenshot = tmp_path / "viewer.png"
        profile = tmp_path / "chromium"
        browser = subprocess.Popen(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            browser.wait(timeout=120)
        finally:
            if browser.poll() is None:
                os.killpg(browser.pid, signal.SIGKILL)
                browser.wait()
        assert screenshot.is_file(), "chromium wrote no screenshot"
        image = np.asarray(Image.open(screenshot).convert("RGB")).astype(np.float32)
        assert image.shape[:2] == (768, 1024)
        assert image.std() > 5 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50
        # The 3-D canvas (left of the control panel) shows the points and frusta, not an empty page.
        canvas = image[100:650, 50:650]
        colourful = (canvas.max(axis=2) - canvas.min(axis=2)) > 60
        assert canvas.std() > 5 and colourful.sum() > 500

        viewer.send_signal(signal.SIGINT)
        assert viewer.wait(timeout=30) == 0
    finally:
        if viewer.poll() is None:
            viewer.kill()
            viewer.wait()
    time.sleep(0.2)
    while not lines.empty():
        output.append(lines.get())
    text = "".join(output)
    assert "ssh -L" in text and "stopped" in text and "Traceback" not in text


def test_viewer_refuses_a_folder_without_transforms(tmp_path: Path) -> None:
    assert run(ViewConfig(out_dir=tmp_path)) == 2


def test_selecting_a_camera_shows_its_image_and_confidence_map(tmp_path: Path) -> None:
    rec = make_reconstruction(tmp_path / "input")
    out = tmp_path / "out"
    frame_paths = write_nerfstudio_folder(out, rec)
    write_report(out, rec, make_confidence_maps(rec), command="test", frame_paths=frame_paths)
    scene = load_scene(out)
    server = viser.ViserServer(host="127.0.0.1", port=_free_port("127.0.0.1"), verbose=False)
    try:
        controls = build_scene(server, scene, out)
        assert len(controls.frusta) == len(rec.image_paths)
        assert not controls.hide.disabled  # the folder has per-point confidence
        controls.camera.value = controls.camera.options[UNTRUSTED_VIEW]
        deadline = time.monotonic() + 10
        while "frame_00003.png" not in controls.details.content and time.monotonic() < deadline:
            time.sleep(0.05)  # callbacks run on viser's thread pool
        details = controls.details.content
        assert "frame_00003.png" in details and "untrusted" in details and "too few confident points" in details
        assert details.count("](data:image/") == 2  # the image and its confidence map
        controls.hide.value = 50  # re-sends the point cloud without the least confident half
    finally:
        server.stop()
