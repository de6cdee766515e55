"""PNG previews: size, physical aspect ratio, label and uncertainty colours, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffLib.core.labels import STRUCTURES
from SpineSegDiffLib.evaluation.preview import TITLE_HEIGHT, PreviewPanel, mid_sagittal, save_preview


def _panel_data():
    rows, cols = 60, 40
    image = np.add.outer(np.arange(rows), np.arange(cols)).astype(np.float32)
    labels = np.zeros((rows, cols), np.uint8)
    labels[5:20, 5:20] = 1
    labels[25:40, 5:30] = 2
    labels[45:55, 10:35] = 3
    heat = np.zeros((rows, cols), np.float32)
    heat[:, 30:] = 1.0
    return image, labels, heat


def test_preview_size_aspect_and_colours(tmp_path):
    image, labels, heat = _panel_data()
    path = tmp_path / "p.png"
    save_preview(path, [PreviewPanel(image, "labels", labels=labels, spacing=(1.0, 1.5)),
                        PreviewPanel(image, "heat", heat=heat)], height=120)
    png = np.asarray(Image.open(path).convert("RGB"))
    # widths follow the physical aspect: 40 cols x 1.5 mm over 60 rows x 1 mm -> 120 px; then 80 px
    assert png.shape == (120 + TITLE_HEIGHT, 120 + 4 + 80, 3)
    left, right = png[TITLE_HEIGHT:, :120], png[TITLE_HEIGHT:, 124:]
    for structure in STRUCTURES:
        colour = (np.array(structure.color) * 255).astype(np.uint8)
        assert (left == colour).all(axis=-1).sum() > 20, f"{structure.key} outline missing"
    assert not any((right == (np.array(s.color) * 255).astype(np.uint8)).all(axis=-1).any() for s in STRUCTURES)
    hot, cold = right[:, 65:].astype(int), right[:, :55].astype(int)
    assert (hot[..., 0] - hot[..., 2]).mean() > 60  # warm colours where uncertain
    assert np.abs(cold[..., 0] - cold[..., 2]).max() <= 2  # plain grey where sure
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left


def test_bad_panels_are_refused(tmp_path):
    image, labels, _ = _panel_data()
    with pytest.raises(InputError):
        save_preview(tmp_path / "a.png", [PreviewPanel(np.zeros((4, 4, 4)))])
    with pytest.raises(InputError):
        save_preview(tmp_path / "b.png", [PreviewPanel(image, labels=labels[:10])])
    with pytest.raises(InputError):
        save_preview(tmp_path / "c.png", [])
    assert list(tmp_path.iterdir()) == []


def test_mid_sagittal_takes_middle_slice():
    volume = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    np.testing.assert_array_equal(mid_sagittal(volume), volume[:, :, 2])
    np.testing.assert_array_equal(mid_sagittal(volume, axis=0), volume[1])
