"""Tissue intensities per case, the way SynthSeg draws them.

Prototype contrasts (T1 and T2 spin echo, STIR/TIRM, Dixon water and fat images) give each
tissue a mean relative to T1 fat and a texture amplitude; every case draws its own
values around the prototype (scanner, patient, age), and ``"random"`` draws every tissue's
mean uniformly (SynthSeg's fully random contrast), so only shapes stay informative.
"""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.data.phantom.tissues import (
    AIR,
    ANNULUS,
    AORTA,
    BASIVERTEBRAL,
    BLADDER,
    BOWEL_FLUID,
    BOWEL_WALL,
    CLEFT,
    CORD,
    CORTEX,
    CSF,
    EPIDURAL_FAT,
    ERECTOR_SPINAE,
    FASCIA,
    FAT,
    FATTY_MUSCLE,
    GAS,
    ILIUM_MARROW,
    IVC,
    JOINT_FLUID,
    KIDNEY,
    LIGAMENT,
    MARROW,
    MULTIFIDUS,
    MUSCLE,
    N_TISSUES,
    NUCLEUS_1,
    NUCLEUS_2,
    NUCLEUS_3,
    NUCLEUS_4,
    NUCLEUS_5,
    PE_MARROW,
    PSOAS,
    QUADRATUS,
    ROOT,
    VISCERA,
    VISCERAL_FAT,
)

SEQUENCES = ("t1", "t2")  # what a phantom case holds unless asked otherwise
CONTRASTS = SEQUENCES + ("stir", "dixon_water", "dixon_fat", "random")

# (mean relative to T1 fat, texture amplitude). T1 spin echo: fat brightest, marrow
# intermediate-bright, CSF dark. T2 FSE: CSF and healthy nuclei brightest, fat still
# bright, muscle and annulus dark, degenerated nuclei lose signal (Pfirrmann). STIR: fat
# nulled, fluid brightest, fatty marrow dark. Dixon water: fat gone, T1-weighted rest;
# Dixon fat: only fat (and fatty marrow, fatty muscle) shows.
_BASE = {
    "t1": {AIR: (0.0, 0), FAT: (1.0, .06), MUSCLE: (.30, .10), VISCERA: (.36, .3),
           BOWEL_FLUID: (.20, .10), GAS: (.03, 0), VISCERAL_FAT: (.90, .08), AORTA: (.08, .2),
           IVC: (.25, .2), BLADDER: (.12, .05), EPIDURAL_FAT: (.88, .08), CSF: (.14, .05),
           CORD: (.36, .05), ROOT: (.30, .05), MARROW: (.70, .14), CORTEX: (.07, .1),
           PE_MARROW: (.55, .14), ANNULUS: (.30, .08), CLEFT: (.26, .05),
           BASIVERTEBRAL: (.45, .05), LIGAMENT: (.09, .1), NUCLEUS_1: (.38, .05),
           NUCLEUS_2: (.36, .06), NUCLEUS_3: (.33, .08), NUCLEUS_4: (.29, .1),
           NUCLEUS_5: (.22, .12), FATTY_MUSCLE: (.55, .15), FASCIA: (.08, .1), JOINT_FLUID: (.15, .05),
           KIDNEY: (.40, .15), BOWEL_WALL: (.35, .1), ILIUM_MARROW: (.72, .14)},
    "t2": {AIR: (0.0, 0), FAT: (.78, .06), MUSCLE: (.17, .12), VISCERA: (.30, .35),
           BOWEL_FLUID: (.85, .1), GAS: (.03, 0), VISCERAL_FAT: (.70, .08), AORTA: (.05, .3),
           IVC: (.30, .3), BLADDER: (1.0, .03), EPIDURAL_FAT: (.70, .08), CSF: (1.0, .04),
           CORD: (.42, .06), ROOT: (.55, .05), MARROW: (.42, .15), CORTEX: (.04, .1),
           PE_MARROW: (.34, .15), ANNULUS: (.13, .1), CLEFT: (.35, .05),
           BASIVERTEBRAL: (.75, .05), LIGAMENT: (.05, .1), NUCLEUS_1: (.95, .05),
           NUCLEUS_2: (.80, .08), NUCLEUS_3: (.50, .12), NUCLEUS_4: (.28, .15),
           NUCLEUS_5: (.12, .15), FATTY_MUSCLE: (.45, .15), FASCIA: (.05, .1), JOINT_FLUID: (.85, .05),
           KIDNEY: (.55, .15), BOWEL_WALL: (.25, .1), ILIUM_MARROW: (.44, .15)},
    "stir": {AIR: (0.0, 0), FAT: (.06, .2), MUSCLE: (.14, .12), VISCERA: (.35, .35),
             BOWEL_FLUID: (.80, .1), GAS: (.03, 0), VISCERAL_FAT: (.07, .2), AORTA: (.05, .3),
             IVC: (.35, .3), BLADDER: (1.0, .03), EPIDURAL_FAT: (.07, .2), CSF: (.95, .04),
             CORD: (.45, .06), ROOT: (.55, .05), MARROW: (.16, .2), CORTEX: (.03, .1),
             PE_MARROW: (.14, .2), ANNULUS: (.12, .1), CLEFT: (.30, .05),
             BASIVERTEBRAL: (.60, .05), LIGAMENT: (.04, .1), NUCLEUS_1: (.85, .05),
             NUCLEUS_2: (.70, .08), NUCLEUS_3: (.45, .12), NUCLEUS_4: (.25, .15),
             NUCLEUS_5: (.12, .15), FATTY_MUSCLE: (.10, .15), FASCIA: (.04, .1), JOINT_FLUID: (.90, .05),
             KIDNEY: (.60, .15), BOWEL_WALL: (.30, .1), ILIUM_MARROW: (.15, .2)},
    "dixon_water": {AIR: (0.0, 0), FAT: (.05, .2), MUSCLE: (.45, .08), VISCERA: (.45, .3),
                    BOWEL_FLUID: (.25, .1), GAS: (.03, 0), VISCERAL_FAT: (.06, .2), AORTA: (.30, .3),
                    IVC: (.35, .3), BLADDER: (.15, .05), EPIDURAL_FAT: (.06, .2), CSF: (.15, .05),
                    CORD: (.40, .05), ROOT: (.35, .05), MARROW: (.32, .15), CORTEX: (.04, .1),
                    PE_MARROW: (.26, .15), ANNULUS: (.35, .08), CLEFT: (.30, .05),
                    BASIVERTEBRAL: (.40, .05), LIGAMENT: (.08, .1), NUCLEUS_1: (.42, .05),
                    NUCLEUS_2: (.40, .06), NUCLEUS_3: (.36, .08), NUCLEUS_4: (.30, .1),
                    NUCLEUS_5: (.24, .12), FATTY_MUSCLE: (.25, .15), FASCIA: (.10, .1),
                    JOINT_FLUID: (.18, .05), KIDNEY: (.55, .15), BOWEL_WALL: (.45, .1), ILIUM_MARROW: (.30, .15)},
    "dixon_fat": {AIR: (0.0, 0), FAT: (1.0, .05), MUSCLE: (.05, .3), VISCERA: (.08, .4),
                  BOWEL_FLUID: (.03, .1), GAS: (.02, 0), VISCERAL_FAT: (.92, .06), AORTA: (.03, .2),
                  IVC: (.03, .2), BLADDER: (.02, .05), EPIDURAL_FAT: (.9, .06), CSF: (.02, .05),
                  CORD: (.03, .05), ROOT: (.03, .05), MARROW: (.55, .2), CORTEX: (.03, .1),
                  PE_MARROW: (.50, .2), ANNULUS: (.04, .1), CLEFT: (.04, .05),
                  BASIVERTEBRAL: (.10, .05), LIGAMENT: (.03, .1), NUCLEUS_1: (.03, .05),
                  NUCLEUS_2: (.03, .05), NUCLEUS_3: (.04, .08), NUCLEUS_4: (.05, .1),
                  NUCLEUS_5: (.06, .12), FATTY_MUSCLE: (.45, .2), FASCIA: (.05, .1),
                  JOINT_FLUID: (.02, .05), KIDNEY: (.04, .15), BOWEL_WALL: (.05, .1), ILIUM_MARROW: (.60, .2)},
}
# the paraspinal muscles and psoas share the generic muscle's prototype
PROTOTYPE_CONTRAST = {name: {**table, **{m: table[MUSCLE] for m in (MULTIFIDUS, ERECTOR_SPINAE, PSOAS, QUADRATUS)}}
                      for name, table in _BASE.items()}


def draw_contrast(sequence: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(mean, texture amplitude) per tissue class for one case and sequence."""
    if sequence == "random":
        means = rng.uniform(0.0, 1.0, N_TISSUES)
        means[AIR] = rng.uniform(0.0, 0.05)
        amps = rng.uniform(0.0, 0.25, N_TISSUES)
        return means.astype(np.float32), amps.astype(np.float32)
    table = PROTOTYPE_CONTRAST[sequence]
    means = np.array([table[t][0] for t in range(N_TISSUES)], np.float64)
    amps = np.array([table[t][1] for t in range(N_TISSUES)], np.float64)
    # scanner / patient variation: a few percent per tissue on top of a shared gamma
    means = means ** rng.uniform(0.8, 1.25)
    means *= np.exp(rng.normal(0.0, 0.1, N_TISSUES))
    amps *= rng.uniform(0.6, 1.5)
    return means.astype(np.float32), amps.astype(np.float32)
