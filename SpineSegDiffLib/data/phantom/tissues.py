"""Tissue classes the phantom paints, and their T1 / T2 prototype contrasts."""

from __future__ import annotations

SEQUENCES = ("t1", "t2")

# --- tissues and their contrast ------------------------------------------------------
(AIR, FAT, MUSCLE, VISCERA, BOWEL_FLUID, GAS, VISCERAL_FAT, AORTA, IVC, BLADDER,
 EPIDURAL_FAT, CSF, CORD, ROOT, MARROW, CORTEX, PE_MARROW, ANNULUS, CLEFT, BASIVERTEBRAL,
 LIGAMENT, NUCLEUS_1, NUCLEUS_2, NUCLEUS_3, NUCLEUS_4, NUCLEUS_5) = range(26)
N_TISSUES = 26

# (mean relative to T1 fat, texture amplitude). T1 spin echo: fat brightest, marrow
# intermediate-bright, CSF dark. T2 FSE: CSF and healthy nuclei brightest, fat still
# bright, muscle and annulus dark, degenerated nuclei lose signal (Pfirrmann).
PROTOTYPE_CONTRAST = {
    "t1": {AIR: (0.0, 0), FAT: (1.0, .06), MUSCLE: (.30, .10), VISCERA: (.36, .3),
           BOWEL_FLUID: (.20, .10), GAS: (.03, 0), VISCERAL_FAT: (.90, .08), AORTA: (.08, .2),
           IVC: (.25, .2), BLADDER: (.12, .05), EPIDURAL_FAT: (.88, .08), CSF: (.14, .05),
           CORD: (.36, .05), ROOT: (.30, .05), MARROW: (.70, .14), CORTEX: (.07, .1),
           PE_MARROW: (.55, .14), ANNULUS: (.30, .08), CLEFT: (.26, .05),
           BASIVERTEBRAL: (.45, .05), LIGAMENT: (.09, .1), NUCLEUS_1: (.38, .05),
           NUCLEUS_2: (.36, .06), NUCLEUS_3: (.33, .08), NUCLEUS_4: (.29, .1),
           NUCLEUS_5: (.22, .12)},
    "t2": {AIR: (0.0, 0), FAT: (.78, .06), MUSCLE: (.17, .12), VISCERA: (.30, .35),
           BOWEL_FLUID: (.85, .1), GAS: (.03, 0), VISCERAL_FAT: (.70, .08), AORTA: (.05, .3),
           IVC: (.30, .3), BLADDER: (1.0, .03), EPIDURAL_FAT: (.70, .08), CSF: (1.0, .04),
           CORD: (.42, .06), ROOT: (.55, .05), MARROW: (.42, .15), CORTEX: (.04, .1),
           PE_MARROW: (.34, .15), ANNULUS: (.13, .1), CLEFT: (.35, .05),
           BASIVERTEBRAL: (.75, .05), LIGAMENT: (.05, .1), NUCLEUS_1: (.95, .05),
           NUCLEUS_2: (.80, .08), NUCLEUS_3: (.50, .12), NUCLEUS_4: (.28, .15),
           NUCLEUS_5: (.12, .15)},
}
NUCLEUS_BY_GRADE = {1: NUCLEUS_1, 2: NUCLEUS_2, 3: NUCLEUS_3, 4: NUCLEUS_4, 5: NUCLEUS_5}
