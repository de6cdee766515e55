"""The regions that vertebral-body-only labels decide (body_only.py)."""

import numpy as np

from SpineSegDiffLib.data.body_only import disc_spaces, prevertebral_region, volume_regions


def _two_bodies(gap_rows: int) -> np.ndarray:
    body = np.zeros((80, 60), bool)
    body[10:25, 20:40] = True
    body[25 + gap_rows:40 + gap_rows, 22:42] = True  # the lower body sits 2 columns further back
    return body


def test_disc_space_is_the_gap_between_two_bodies_of_a_column():
    body = _two_bodies(gap_rows=5)
    gaps = disc_spaces(body, row_spacing_mm=2.0)
    assert gaps[25:30, 22:40].all()  # columns crossing both bodies
    assert not gaps[25:30, 20:22].any() and not gaps[25:30, 40:42].any()  # only one body there
    assert not gaps[:10].any() and not gaps[45:].any()  # above the first, below the last body
    assert not (gaps & body).any()
    assert gaps.sum() == 5 * 18


def test_gap_wider_than_a_disc_is_left_unknown():
    body = _two_bodies(gap_rows=12)  # 24 mm at 2 mm rows: a missing body label, not a disc
    assert not disc_spaces(body, row_spacing_mm=2.0).any()
    assert disc_spaces(body, row_spacing_mm=1.0).any()  # 12 mm: a disc


def test_prevertebral_region_lies_in_front_of_the_bodies_between_first_and_last():
    body = _two_bodies(gap_rows=5)
    front = prevertebral_region(body, spacing_mm=(2.0, 2.0), margin_mm=4.0, window_mm=0.0)
    assert not front[:10].any() and not front[45:].any()
    assert front[12, :18].all() and not front[12, 18:].any()  # 2 columns (4 mm) before column 20
    assert front[35, :20].all() and not front[35, 20:].any()  # the lower body starts at column 22
    assert not front[:, 40:].any()  # never behind the bodies
    # within reach of the upper body the most anterior edge applies
    wide = prevertebral_region(body, spacing_mm=(2.0, 2.0), margin_mm=4.0, window_mm=20.0)
    assert front[32, :20].all() and wide[32, :18].all() and not wide[32, 18:].any()


def test_volume_regions_skip_slices_without_bodies():
    vol = np.stack([_two_bodies(5), np.zeros((80, 60), bool)])
    gaps, front = volume_regions(vol, (2.0, 2.0))
    assert gaps[0].any() and front[0].any()
    assert not gaps[1].any() and not front[1].any()


def test_regions_of_a_real_body_only_case_land_between_its_bodies(real_data_dir):
    """Found on the model grid, mapped back: each disc-space voxel has a labelled body
    above and below it in its column of the input (rows z run superior -> inferior)."""
    import SimpleITK as sitk

    from SpineSegDiffLib.evaluation.metrics import body_only_regions
    from SpineSegDiffLib.grid.geometry import GridSpec, to_model_grid
    from SpineSegDiffLib.data.realdata import read_real_folder

    case = next(c for c in read_real_folder(real_data_dir) if c.case_id == "VB3_01")
    image, semantic = case.load()
    ref = sitk.GetArrayFromImage(semantic)
    gaps, front, beyond = body_only_regions(to_model_grid(image, GridSpec(spacing_mm=2.0, size=160)), ref)
    body = ref == 2
    assert gaps.sum() > 1000 and front.sum() > 1000 and beyond.sum() > 1000
    assert not (gaps & body).any() and not (front & body).any() and not (gaps & front).any()
    assert not (beyond & body).any() and not (beyond & gaps).any()
    z, y, x = np.nonzero(gaps)
    pick = np.random.default_rng(0).choice(len(z), 200, replace=False)
    between = [body[:z[i], y[i], x[i]].any() and body[z[i] + 1:, y[i], x[i]].any() for i in pick]
    assert np.mean(between) > 0.9  # a grid voxel's rim may miss a body in the input's finer column
    # the prevertebral region lies in front of (lower y than) the bodies at its level
    zs, ys, xs = np.nonzero(front)
    for i in np.random.default_rng(1).choice(len(zs), 50, replace=False):
        near = body[max(0, zs[i] - 15):zs[i] + 16, :, xs[i]]
        assert not near.any() or ys[i] < np.nonzero(near.any(axis=0))[0].min()


def _phantom_grid_case(phantom_folder):
    from SpineSegDiffLib.grid.geometry import GridSpec
    from SpineSegDiffLib.training.data import load_folder

    return load_folder(phantom_folder, GridSpec(2.0, 160, 2.0), limit=1)[0]


def test_beyond_posterior_elements_never_covers_a_vertebra_canal_or_disc(phantom_folder):
    """On a phantom (full labels, posterior elements included) keep only the bodies, as the
    real VB sets do: the region the rule calls "no spine" must miss every labelled voxel."""
    from SpineSegDiffLib.data.body_only import beyond_posterior_elements

    case = _phantom_grid_case(phantom_folder)
    vertebra, canal = case.labels == 2, case.labels == 1
    rows = np.nonzero(canal.any(axis=(0, 2)))[0]
    front_of_canal = np.full(vertebra.shape[1], 10 ** 6)
    for r in rows:
        front_of_canal[r] = np.nonzero(canal[:, r].any(axis=0))[0].min()
    cols = np.arange(vertebra.shape[2])[None, None, :]
    bodies = vertebra & (cols < front_of_canal[None, :, None] - 1)
    region = beyond_posterior_elements(bodies, case.spacing_mm)
    assert region.sum() > 0.05 * region.size  # it decides a real share of the field
    assert not (region & (case.labels > 0)).any()
    # the deep back muscles behind the spinous processes are in it, the bodies' rows only
    top, bottom = np.nonzero(bodies.any(axis=(0, 2)))[0][[0, -1]]
    assert not region[:, :top].any() and not region[:, bottom + 1:].any()


def test_beyond_posterior_elements_of_no_bodies_is_empty():
    from SpineSegDiffLib.data.body_only import beyond_posterior_elements

    assert not beyond_posterior_elements(np.zeros((4, 20, 20), bool), (2.0, 2.0, 2.0)).any()


def test_body_only_targets_add_the_region_as_known_background(phantom_folder):
    from SpineSegDiffLib.training.targets import SliceSet

    case = _phantom_grid_case(phantom_folder)
    case.labels = np.where(case.labels == 2, 2, 0).astype(np.uint8)  # crude "body-only" case
    case.annotated = np.array([False, True, False])
    case.body_only = True
    with_rule = SliceSet.from_cases([case], 1, 2.0)
    lateral = np.nonzero(~case.labels.reshape(len(case.labels), -1).any(1))[0]
    # slices without a body still get "no spine" weight where the rule decides
    if lateral.size:
        assert with_rule.weights[lateral, 1].sum() > 0
    assert with_rule.weights[:, 0].sum() > 0 and with_rule.weights[:, 2].sum() > 0
