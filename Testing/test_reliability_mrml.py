"""The Slicer import refuses a truncated result file (ITK and Slicer would fill the
missing voxels with zeros) with one line, and leaves the scene as it was."""

from __future__ import annotations

import pytest

from SpineSegDiffLib.core.errors import InputError
from SpineSegDiffSlicerLib import volumes
from test_mrml_results import import_case, make_case, make_scene, scene_state


@pytest.mark.parametrize("which,suffix", [("segmentation", ".nii.gz"), ("segmentation", ".seg.nrrd"),
                                          ("segmentation", ".nrrd"), ("uncertainty", ".nii.gz")])
def test_truncated_result_file_is_refused_and_the_scene_untouched(tmp_path, which, suffix):
    case = make_case(tmp_path / "case", segmentation_suffix=suffix)
    kit = make_scene()
    volume = volumes.load_volume(kit.scene, case.image_path)
    path = case.segmentation_path if which == "segmentation" else case.uncertainty_path
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # the end cut off, as a full disk or a killed copy leaves it
    before = scene_state(kit.scene)
    with pytest.raises(InputError) as raised:
        import_case(kit, volume, case)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    assert "incomplete" in message
    assert scene_state(kit.scene) == before
