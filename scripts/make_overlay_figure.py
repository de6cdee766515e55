#!/usr/bin/env python
"""Make docs/images/slicer_overlay.png: what the SpineSegDiff module shows, drawn offline.

3D Slicer cannot run where the docs are built, so this is not a screenshot: it draws what
the module puts in the sagittal slice view - the MRI with the segments on top and, beside
it, the uncertainty as a colour overlay - with the module's review table underneath
(structure, volume, mean uncertainty, most uncertain first). The figure's title says so.

Usage (from the repository root):
    python scripts/make_overlay_figure.py [--model SpineSegDiffLib/resources/models/spinesegdiff-demo.zip]
        [--image SpineSegDiff/Resources/SampleData/spinesegdiff_phantom_t2.nrrd]
        [--samples S] [--steps K] [--seed 0] [--device cpu] [--out docs/images/slicer_overlay.png]

Same model, image, settings and seed give the same figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineSegDiffLib.model.registry import BUNDLED_DEMO_MODEL  # noqa: E402

from SpineSegDiffLib.core.atomic import atomic_path  # noqa: E402
from SpineSegDiffLib.core.errors import InputError, SpineSegDiffError  # noqa: E402
from SpineSegDiffLib.core.labels import BY_KEY  # noqa: E402
from SpineSegDiffLib.evaluation.preview import PreviewPanel, mid_sagittal, save_preview  # noqa: E402

DEFAULT_MODEL = BUNDLED_DEMO_MODEL
DEFAULT_IMAGE = REPO / "SpineSegDiff" / "Resources" / "SampleData" / "spinesegdiff_phantom_t2.nrrd"
DEFAULT_OUT = REPO / "docs" / "images" / "slicer_overlay.png"
PANEL_HEIGHT = 480
MARGIN = 10
BACKGROUND = (24, 24, 28)  # Slicer's dark slice-view surround
TEXT = (235, 235, 235)
DIM_TEXT = (170, 170, 170)
# DICOM orientation string: voxel axes pointing to patient Left, Posterior, Inferior, so a
# numpy (z, y, x) array has rows superior->inferior and columns anterior->posterior, as
# Slicer's sagittal view draws them (anterior on the left).
DISPLAY_ORIENTATION = "LPI"


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def segment(image_path: Path, model_path: Path, samples: int | None, steps: int | None, seed: int,
            device: str):
    """Run the engine in this process (same code path as `spinesegdiff segment`)."""
    from SpineSegDiffLib.data.imageio import read_mri
    from SpineSegDiffLib.inference.loading import load_model
    from SpineSegDiffLib.inference.pipeline import segment_image
    from SpineSegDiffLib.inference.settings import SegmentSettings

    if not model_path.is_file():
        raise InputError(f"{model_path}: model file not found: train or download the demo model, "
                         "or pass --model MODEL.zip")
    image = read_mri(image_path)
    model = load_model(model_path, device)
    settings = SegmentSettings(samples=samples or model.default("samples", 5),
                               steps=steps or model.default("steps", 10), seed=seed)
    return image, segment_image(image, model, settings, input_name=image_path.name)


def sagittal_views(image: sitk.Image, labelmap: sitk.Image, uncertainty: sitk.Image):
    """The mid-sagittal slice of each volume as Slicer shows it, and its (row, column) spacing."""
    oriented = [sitk.DICOMOrient(volume, DISPLAY_ORIENTATION) for volume in (image, labelmap, uncertainty)]
    slices = [mid_sagittal(sitk.GetArrayFromImage(volume), axis=2) for volume in oriented]
    spacing = oriented[0].GetSpacing()
    return slices, (spacing[2], spacing[1])


def review_table(summary: dict) -> list[tuple[str, str, float, float]]:
    """(key, name, volume ml, mean uncertainty) per structure, the most uncertain first."""
    rows = [(key, entry.get("name", key), float(entry["volume_ml"]), float(entry["mean_uncertainty"]))
            for key, entry in summary["structures"].items()]
    return sorted(rows, key=lambda row: row[3], reverse=True)


def _colour_bar(folder: Path, width: int) -> Image.Image:
    """The uncertainty colour ramp 0..1, drawn by the preview code itself over black."""
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (6, 1))
    path = folder / "bar.png"
    save_preview(path, [PreviewPanel(np.zeros_like(ramp), heat=ramp, spacing=(width / 6 / 6, 1.0))],
                 height=6 * 3)
    bar = Image.open(path).convert("RGB")
    return bar.crop((0, bar.height - 18, bar.width, bar.height))


def compose(path: Path, panels_png: Path, bar: Image.Image, title: str, subtitle: str,
            rows: list[tuple[str, str, float, float]]) -> None:
    """Title above, the two slice views, then the colour bar and the review table."""
    panels = Image.open(panels_png).convert("RGB")
    title_font, text_font, small_font = _font(18), _font(15), _font(13)
    line = 22
    table_height = line * (len(rows) + 2) + MARGIN
    width = panels.width + 2 * MARGIN
    height = 2 * MARGIN + 2 * line + panels.height + MARGIN + bar.height + line + table_height
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    draw.text((MARGIN, y), title, fill=TEXT, font=title_font)
    draw.text((MARGIN, y + line), subtitle, fill=DIM_TEXT, font=small_font)
    y += 2 * line + 4
    canvas.paste(panels, (MARGIN, y))
    y += panels.height + MARGIN
    bar_x = width - MARGIN - bar.width
    draw.text((bar_x - 150, y + 1), "uncertainty  0 (sure)", fill=DIM_TEXT, font=small_font)
    canvas.paste(bar, (bar_x, y))
    draw.text((bar_x + bar.width - 56, y + bar.height + 2), "1 (unsure)", fill=DIM_TEXT, font=small_font)
    y += bar.height + line
    columns = (MARGIN + 22, MARGIN + 260, MARGIN + 400)
    draw.text((MARGIN, y), "Review (most uncertain first)", fill=TEXT, font=text_font)
    y += line
    for x, header in zip(columns, ("Structure", "Volume (ml)", "Mean uncertainty")):
        draw.text((x, y), header, fill=DIM_TEXT, font=text_font)
    for key, name, volume_ml, mean_uncertainty in rows:
        y += line
        if key in BY_KEY:  # the segment's colour, as in Slicer's segment list
            colour = tuple(int(round(255 * c)) for c in BY_KEY[key].color)
            draw.rectangle((MARGIN, y + 3, MARGIN + 13, y + 16), fill=colour)
        draw.text((columns[0], y), name, fill=TEXT, font=text_font)
        draw.text((columns[1], y), f"{volume_ml:10.1f}", fill=TEXT, font=text_font)
        draw.text((columns[2], y), f"{mean_uncertainty:10.3f}", fill=TEXT, font=text_font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def make_figure(image_path: Path, model_path: Path, out: Path, samples: int | None = None,
                steps: int | None = None, seed: int = 0, device: str = "cpu") -> dict:
    """Segment ``image_path`` with ``model_path`` and write the figure; returns the summary."""
    image, result = segment(image_path, model_path, samples, steps, seed, device)
    (mri, labels, uncertainty), spacing = sagittal_views(image, result.labelmap, result.uncertainty)
    summary = result.summary
    settings = summary["settings"]
    with tempfile.TemporaryDirectory() as scratch:
        panels_png = Path(scratch) / "panels.png"
        save_preview(panels_png, [
            PreviewPanel(mri, "Yellow (sagittal) view: MRI + segments", labels=labels, spacing=spacing),
            PreviewPanel(mri, "Yellow (sagittal) view: uncertainty overlay", heat=np.clip(uncertainty, 0, 1),
                         spacing=spacing),
        ], height=PANEL_HEIGHT)
        bar = _colour_bar(Path(scratch), 200)
        model = summary["model"]
        compose(out, panels_png, bar,
                "SpineSegDiff module view - rendered offline (3D Slicer cannot run here; not a screenshot)",
                f"{image_path.name}, mid-sagittal slice | model {model.get('id')} {model.get('version')} | "
                f"{settings['samples']} samples x {settings['steps']} DDIM steps, seed {settings['seed']}, "
                f"{settings['device']}",
                review_table(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--samples", type=int, default=None, help="default: the model's")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        summary = make_figure(args.image, args.model, args.out, args.samples, args.steps, args.seed, args.device)
    except SpineSegDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for key, name, volume_ml, mean_uncertainty in review_table(summary):
        print(f"{name:<22} {volume_ml:8.1f} ml  mean uncertainty {mean_uncertainty:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
