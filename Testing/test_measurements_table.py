"""The Slicer measurements table (real MRML library from slicer-core) from a real measurements JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from SpineSegDiffLib.data.phantom import generate_case, semantic_from_spider_values
from SpineSegDiffLib.measure.case import measure_case
from SpineSegDiffLib.measure.files import write_measurements
from SpineSegDiffSlicerLib.measurements_table import (COLUMNS, level_point_ras, measurements_table,
                                                      replace_measurements_table)


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    case = generate_case(8, 0, ("t2",))
    truth = sitk.GetArrayFromImage(case.mask)
    semantic = semantic_from_spider_values(truth)
    semantic[truth == 203] = 0  # L3/L4 disc missing: the table must say why, not invent a number
    image = sitk.GetImageFromArray(semantic)
    image.CopyInformation(case.mask)
    report, _ = measure_case(image, case.images["t2"])
    path = tmp_path_factory.mktemp("measure") / "measurements.json"
    write_measurements(report, path)
    return path


def test_table_has_a_row_per_measurement_with_reasons_and_warnings(report_path):
    report = json.loads(report_path.read_text())
    scene = slicer.vtkMRMLScene()
    table = measurements_table(scene, report_path)
    assert isinstance(table, slicer.vtkMRMLTableNode)
    assert table.GetNumberOfColumns() == len(COLUMNS)
    assert table.GetNumberOfRows() == len(report["warnings"]) + len(report["measurements"])
    assert report["warnings"]  # the missing disc makes the gap between two discs too wide
    assert table.GetCellText(0, COLUMNS.index("measure")) == "warning"
    level_col, fused_col, note_col = (COLUMNS.index(c) for c in ("level", "fused", "note"))
    texts = [(table.GetCellText(r, level_col), table.GetCellText(r, COLUMNS.index("measure")),
              table.GetCellText(r, fused_col), table.GetCellText(r, note_col)) for r in range(table.GetNumberOfRows())]
    # every empty value comes with a reason
    assert all(note for level, measure, fused, note in texts if fused == "")
    heights = [float(fused) for level, measure, fused, note in texts if measure == "disc_height_middle_mm" and fused]
    assert len(heights) >= 5 and all(3 < h < 20 for h in heights)


def test_a_row_gives_the_ras_point_of_its_level(report_path):
    report = json.loads(report_path.read_text())
    scene = slicer.vtkMRMLScene()
    table = measurements_table(scene, report_path)
    first_level_row = len(report["warnings"])
    name = table.GetCellText(first_level_row, COLUMNS.index("level"))
    lps = next(lv["centroid_lps"] for lv in report["levels"] if lv["name"] == name)
    np.testing.assert_allclose(level_point_ras(table, first_level_row), (-lps[0], -lps[1], lps[2]))
    assert level_point_ras(table, 0) is None  # a case-wide warning has no level


def test_a_rerun_replaces_the_volumes_table_and_a_bad_file_changes_nothing(report_path, tmp_path):
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mri")
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "other")
    first = replace_measurements_table(scene, volume, report_path)
    replace_measurements_table(scene, other, report_path)
    second = replace_measurements_table(scene, volume, report_path)
    tables = [scene.GetNthNodeByClass(i, "vtkMRMLTableNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode"))]
    assert len(tables) == 2 and first.GetScene() is None and second in tables
    assert second.GetName() == "mri measurements" and second.GetNumberOfRows() == first.GetNumberOfRows() > 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"levels": []}))
    with pytest.raises(ValueError, match="no levels/measurements"):
        replace_measurements_table(scene, volume, bad)
    assert second.GetScene() is scene and scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 2
