"""The cases the accuracy benchmarks score: unseen phantoms and real cases held out from training.

Each case is ``(set name, case id, image, reference labelmap (z, y, x), annotated (3,) bool,
body_only)``, the arguments ``evaluation.metrics.score_case`` needs besides the prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def phantom_cases(patients: int, seed: int = 1001) -> list[tuple]:
    """T1 and T2 of ``patients`` phantom patients of ``seed`` (1001: the model records' unseen phantoms)."""
    import SimpleITK as sitk

    from SpineSegDiffLib.data.phantom import generate_case
    from SpineSegDiffLib.data.spider_labels import spider_to_semantic

    cases = []
    for i in range(patients):
        case = generate_case(seed=seed, index=i)
        reference = spider_to_semantic(sitk.GetArrayFromImage(case.mask))
        cases += [("phantom", f"phantom{seed}_{i}_{seq}", image, reference, np.ones(3, bool), False)
                  for seq, image in case.images.items()]
    return cases


def real_cases(folder: Path, wanted: list[str]) -> list[tuple]:
    """The real cases of ``folder`` whose ids are in ``wanted``, in ``cases.csv`` order."""
    import SimpleITK as sitk

    from SpineSegDiffLib.data.realdata import read_real_folder

    cases = []
    for case in read_real_folder(folder):
        if case.case_id in wanted:
            image, semantic = case.load()
            annotated = np.array([k in case.annotated for k in ("spinal_canal", "vertebrae", "discs")])
            cases.append((f"real:{case.set}", case.case_id, image, sitk.GetArrayFromImage(semantic), annotated,
                          case.body_only))
    return cases
