"""The shipped Slicer terminology agrees with the engine's label table and loads in Slicer's logic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from SpineSegDiffLib.core.labels import DISC_LEVELS, STRUCTURES, TERMINOLOGY_CONTEXT, VERTEBRA_LEVELS
from SpineSegDiffLib.core.terminology_json import build_terminology

REPO = Path(__file__).resolve().parents[1]
TERM_FILE = REPO / "SpineSegDiff" / "Resources" / "Terminology" / "SpineSegDiff.term.json"


def test_shipped_term_json_is_generated_from_the_label_table():
    shipped = json.loads(TERM_FILE.read_text(encoding="utf-8"))
    assert shipped == build_terminology(), "run scripts/make_terminology.py after changing core/labels.py"


def test_make_terminology_script_writes_the_same_file(tmp_path):
    out = tmp_path / "t.term.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_terminology.py"), "--output", str(out)],
                   check=True, capture_output=True, timeout=60)
    assert out.read_bytes() == TERM_FILE.read_bytes()


def test_codes_are_those_of_the_dicom_standard_where_it_has_them():
    # pydicom's concept dictionary is generated from DICOM PS3.16: an independent check
    # of each code value and of the context group that lists it
    import pydicom.sr._concepts_dict as concepts

    def cids_of(code):
        return {cid for entry in concepts.concepts["SCT"].values()
                for value, (_, cids) in entry.items() if value == code for cid in cids}

    assert 7150 in cids_of(STRUCTURES[0].category[1])
    by_key = {s.key: s for s in STRUCTURES}
    assert {6115, 8134} <= cids_of(by_key["spinal_canal"].type[1])
    assert 7151 in cids_of(by_key["vertebrae"].type[1])
    for level in VERTEBRA_LEVELS:
        if level.name != "S1":  # CID 7603 stops at L5; S1's source is named in labels.py
            assert 7603 in cids_of(level.type[1]), level
    for level in DISC_LEVELS:
        assert 7604 in cids_of(level.type[1]), level


def test_slicer_terminology_logic_loads_it_and_finds_every_segment_type():
    import slicer

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert logic.LoadTerminologyFromFile(str(TERM_FILE)) == TERMINOLOGY_CONTEXT
    assert logic.GetNumberOfCategoriesInTerminology(TERMINOLOGY_CONTEXT) == 1
    category = slicer.vtkSlicerTerminologyCategory()
    assert logic.GetNthCategoryInTerminology(TERMINOLOGY_CONTEXT, 0, category)
    assert category.GetCodeValue() == STRUCTURES[0].category[1]
    found = set()
    for i in range(logic.GetNumberOfTypesInTerminologyCategory(TERMINOLOGY_CONTEXT, category)):
        type_object = slicer.vtkSlicerTerminologyType()
        assert logic.GetNthTypeInTerminologyCategory(TERMINOLOGY_CONTEXT, category, i, type_object)
        found.add((type_object.GetCodingSchemeDesignator(), type_object.GetCodeValue(),
                   type_object.GetCodeMeaning()))
    expected = {s.type for s in STRUCTURES} | {lv.type for lv in VERTEBRA_LEVELS + DISC_LEVELS}
    assert found == expected


def test_the_module_helper_loads_the_shipped_terminology_into_the_real_logic():
    import slicer
    from SpineSegDiffSlicerLib.terminology import CATEGORY_TYPE_CONTEXT, load_terminology

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert load_terminology(logic, REPO / "SpineSegDiff") == CATEGORY_TYPE_CONTEXT
    category = slicer.vtkSlicerTerminologyCategory()
    assert logic.GetNthCategoryInTerminology(CATEGORY_TYPE_CONTEXT, 0, category)
    n_types = logic.GetNumberOfTypesInTerminologyCategory(CATEGORY_TYPE_CONTEXT, category)
    assert n_types == len(STRUCTURES) + len(VERTEBRA_LEVELS) + len(DISC_LEVELS)
