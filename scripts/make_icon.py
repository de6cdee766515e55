"""Draw the module icon (128x128 PNG): a sagittal lumbar spine with a spinal canal.

Run from the repository root: `python scripts/make_icon.py`. The PNG is committed; rerun
only to change the design.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.core.atomic import atomic_path  # noqa: E402
from SpineSegDiffLib.core.labels import BY_KEY  # noqa: E402

SIZE = 128
DEFAULT_OUTPUT = REPO / "SpineSegDiff" / "Resources" / "Icons" / "SpineSegDiff.png"


def _rgb(key: str) -> tuple[int, int, int]:
    # the icon uses the same colours as the segments, so it reads as "this module's output"
    return tuple(int(round(255 * c)) for c in BY_KEY[key].color)


def draw_icon(size: int = SIZE) -> Image.Image:
    """A lordotic column of five vertebral bodies and discs beside a canal, on transparency."""
    scale = 4  # draw large and downsample: smooth edges without an anti-aliasing API
    big = size * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((2 * scale, 2 * scale, big - 2 * scale, big - 2 * scale),
                           radius=22 * scale, fill=(28, 34, 48, 255))
    bodies, body_h, disc_h = 5, 15 * scale, 5 * scale
    top = 12 * scale
    for i in range(bodies):
        y0 = top + i * (body_h + disc_h)
        # lumbar lordosis: the middle levels sit further anterior (left)
        shift = int(round(6 * scale * (1 - abs(i - 2) / 2)))
        x0 = 26 * scale - shift
        draw.rounded_rectangle((x0, y0, x0 + 44 * scale, y0 + body_h), radius=4 * scale,
                               fill=_rgb("vertebrae") + (255,))
        # posterior elements: a small process behind the canal
        draw.polygon([(x0 + 66 * scale, y0 + 3 * scale), (x0 + 86 * scale, y0 + 8 * scale),
                      (x0 + 66 * scale, y0 + 12 * scale)], fill=_rgb("vertebrae") + (255,))
        if i < bodies - 1:
            yd = y0 + body_h
            draw.ellipse((x0 + 1 * scale, yd - scale, x0 + 43 * scale, yd + disc_h + scale),
                         fill=_rgb("discs") + (255,))
        draw.rounded_rectangle((x0 + 50 * scale, y0 - disc_h // 2, x0 + 60 * scale,
                                y0 + body_h + disc_h // 2), radius=3 * scale,
                               fill=_rgb("spinal_canal") + (255,))
    return image.resize((size, size), Image.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    with atomic_path(args.output) as tmp:
        draw_icon().save(tmp, format="PNG")
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
