"""Regenerate the bundled example: 24 views of the synthetic textured room (benchmarks/splat_scene.py) as JPEG.

usage: python examples/make_room.py  (writes examples/room/images/room_XX.jpg)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import splat_scene  # noqa: E402


def main() -> None:
    scene = splat_scene.make("room")
    views = list(range(0, len(scene.cameras), max(1, len(scene.cameras) // 24)))[:24]
    scene = scene.reordered(views)
    out = ROOT / "examples" / "room" / "images"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(scene.write_images(tmp)):
            Image.open(path).convert("RGB").save(out / f"room_{i:02d}.jpg", quality=92)
    print(f"wrote {len(views)} images to {out}")


if __name__ == "__main__":
    main()
