"""The phantom's anatomy where the model fails on real MRI (muscle behind and beside the
spine, posterior elements) and its SynthSeg-style random contrasts."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SpineSegDiffLib.data.phantom import CONTRASTS, VERTEBRA_VALUES, generate_case
from SpineSegDiffLib.data.phantom import bones
from SpineSegDiffLib.data.phantom.anatomy import SUBSLICES, draw_anatomy
from SpineSegDiffLib.data.phantom.contrast import draw_contrast
from SpineSegDiffLib.data.phantom.tissues import (CSF, FASCIA, FAT, FATTY_MUSCLE, JOINT_FLUID, LIGAMENT, MULTIFIDUS,
                                                  MUSCLES, PSOAS)

SEED = 23


@pytest.fixture(scope="module")
def anatomy():
    return draw_anatomy(SEED, 0)


def _row(anatomy, name: str) -> int:
    seg = next(s for s in anatomy.segments if s.name == name)
    return int(np.argmin(np.abs(anatomy.grid.s - seg.centre[0])))


def test_muscles_fascia_ligaments_are_background(anatomy):
    grid = anatomy.grid
    soft = np.isin(grid.tissue, MUSCLES + (FATTY_MUSCLE, FASCIA, LIGAMENT, JOINT_FLUID, FAT))
    assert soft.sum() > 10_000
    assert not grid.label[soft].any()  # only bone, discs and the thecal sac carry labels


def test_multifidus_behind_the_laminae_and_psoas_beside_the_bodies(anatomy):
    grid, prof = anatomy.grid, anatomy.prof
    k = _row(anatomy, "L4")
    p = grid.p[:, None]
    l = np.abs(grid.l[k])[None, :]
    tissue, label = grid.tissue[k], grid.label[k]
    behind_laminae = p > prof["canal_p"][k] + prof["canal_r"][k] + 6
    multifidus = (tissue == MULTIFIDUS) & behind_laminae
    assert multifidus.sum() > 50
    side = np.broadcast_to(grid.l[k][None, :], tissue.shape)
    assert (multifidus & (side > 0)).sum() > 20 and (multifidus & (side < 0)).sum() > 20  # both sides
    assert (np.abs(side[multifidus]) < 35).all()  # a medial muscle
    # behind the canal, between the spinous process and 40 mm lateral, muscle outnumbers
    # labelled bone: what the model called vertebra there on real MRI
    band = behind_laminae & (l > 6) & (l < 40)
    assert (np.isin(tissue, MUSCLES + (FATTY_MUSCLE,)) & band).sum() > 2 * ((label > 0) & band).sum()
    psoas = tissue == PSOAS
    assert psoas.sum() > 50 and not label[psoas].any()
    body_half_width = prof["body_w"][k]
    assert np.median(np.abs(side[psoas])) > body_half_width  # beside the body, not in it


def test_posterior_elements_have_adult_proportions(anatomy):
    """L3 in mm: spinous process 20-40 long behind the canal, transverse processes reaching
    25-50 from the midline, the whole vertebra 1.3-2.6 times its body (real: about 1.5-2.5)."""
    grid, prof = anatomy.grid, anatomy.prof
    value = VERTEBRA_VALUES["L3"]
    mask = grid.label == value
    rows_, cols, planes = np.nonzero(mask)
    p = grid.p[cols]
    l = grid.l[rows_, planes]
    canal_back = prof["canal_p"][rows_] + prof["canal_r"][rows_]
    canal_front = prof["canal_p"][rows_] - prof["canal_r"][rows_]
    spinous = (np.abs(l) < 4) & (p > canal_back)
    length = (p[spinous] - canal_back[spinous]).max()
    assert 20 <= length <= 45, length
    reach = np.abs(l).max()
    assert 25 <= reach <= 55, reach
    body = (p < canal_front).sum()
    ratio = mask.sum() / body
    assert 1.3 <= ratio <= 2.6, ratio
    # pedicles: bone beside the canal at the canal's depth, on both sides
    beside = (np.abs(p - prof["canal_p"][rows_]) < 0.5 * prof["canal_r"][rows_]) \
        & (np.abs(l) > prof["canal_w"][rows_]) & (np.abs(l) < prof["canal_w"][rows_] + 12)
    assert (beside & (l > 0)).sum() > 20 and (beside & (l < 0)).sum() > 20


def test_facet_joints_and_canal_contents(anatomy):
    grid = anatomy.grid
    joint = grid.tissue == JOINT_FLUID
    assert joint.sum() > 20 and not grid.label[joint].any()
    flavum = grid.tissue == LIGAMENT
    assert flavum.sum() > 100
    assert (grid.label[grid.tissue == CSF] == 100).all()


def test_endplate_label_inset_moves_only_endplate_voxels_to_the_disc_they_face(anatomy, monkeypatch):
    monkeypatch.setattr(bones, "ENDPLATE_LABEL_INSET_MM", 1.3)
    inset = draw_anatomy(SEED, 0)
    np.testing.assert_array_equal(inset.grid.tissue, anatomy.grid.tissue)  # the image is the same
    changed = inset.grid.label != anatomy.grid.label
    assert changed.any()
    faces = {(disc.value, seg.value) for disc in anatomy.discs for seg in (disc.upper, disc.lower)}
    pairs = set(zip(inset.grid.label[changed].tolist(), (anatomy.grid.label[changed] % 100).tolist()))
    assert pairs <= faces, pairs - faces  # vertebra -> the disc that body faces, nothing else
    # about 1.3 mm at each of L3's endplates, in the column through its centre
    seg = next(s for s in anatomy.segments if s.name == "L3")
    rows = np.abs(anatomy.grid.s - seg.centre[0]) <= seg.height / 2 + 4
    col = int(np.argmin(np.abs(anatomy.grid.p - seg.centre[1])))
    moved_mm = changed[rows, col, :].sum(axis=0).max() * float(anatomy.grid.s[1] - anatomy.grid.s[0])
    assert 2 * 1.3 - 1.5 <= moved_mm <= 2 * 1.3 + 1.5, moved_mm
    assert generate_case(SEED, 0, ("t2",)).metadata["endplate_label_inset_mm"] == 1.3


def test_random_contrasts_differ_between_cases_and_repeat_for_a_seed():
    a = draw_contrast("random", np.random.default_rng(1))
    b = draw_contrast("random", np.random.default_rng(2))
    np.testing.assert_array_equal(a[0], draw_contrast("random", np.random.default_rng(1))[0])
    assert np.corrcoef(a[0], b[0])[0, 1] < 0.9
    # prototypes keep their order per case: fat over muscle on T1, CSF over marrow on T2
    for seed in range(5):
        t1, _ = draw_contrast("t1", np.random.default_rng(seed))
        t2, _ = draw_contrast("t2", np.random.default_rng(seed))
        assert t1[FAT] > t1[MULTIFIDUS] and t2[CSF] > t2[14]  # 14: vertebral marrow
    one = generate_case(SEED, 1, ("random",))
    again = generate_case(SEED, 1, ("random",))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(one.images["random"]),
                                  sitk.GetArrayFromImage(again.images["random"]))


def test_every_contrast_renders_and_stir_suppresses_fat():
    case = generate_case(SEED, 2, CONTRASTS)
    assert list(case.images) == list(CONTRASTS)
    anatomy = draw_anatomy(SEED, 2)
    tissue = anatomy.grid.tissue[:, :, SUBSLICES // 2::SUBSLICES]
    stir = sitk.GetArrayFromImage(case.images["stir"]).astype(float)
    t1 = sitk.GetArrayFromImage(case.images["t1"]).astype(float)
    fat, csf = tissue == FAT, tissue == CSF
    assert stir[fat].mean() < 0.5 * stir[csf].mean()  # fat dark, fluid bright on STIR
    assert t1[fat].mean() > 1.5 * t1[csf].mean()
    for seq, image in case.images.items():
        assert image.GetSize() == case.mask.GetSize(), seq
        assert set(case.metadata["acquisition"][seq]) >= {"resolution_mm", "noise_sd", "motion_mm"}


def test_cli_writes_the_new_contrasts(tmp_path):
    from conftest import run_cli

    out = tmp_path / "phantoms"
    result = run_cli("phantom", "--out", out, "--cases", "1", "--seed", "3", "--sequences", "stir,random")
    assert result.returncode == 0, result.stderr
    assert {f.name for f in (out / "images").iterdir()} == {"1_stir.mha", "1_random.mha"}
    stir = sitk.ReadImage(str(out / "images" / "1_stir.mha"))
    assert stir.GetSize() == sitk.ReadImage(str(out / "masks" / "1_stir.mha")).GetSize()
