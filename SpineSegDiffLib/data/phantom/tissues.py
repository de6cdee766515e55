"""Tissue classes the phantom paints (labels are separate: only bone, discs and the thecal sac carry one).

Muscles are separate classes although they look alike on T1/T2: with random contrasts
(``contrast.py``) each gets its own intensity, so a network cannot rely on one grey value
for "muscle" and has to learn where the spine ends by shape.
"""

from __future__ import annotations

(AIR, FAT, MUSCLE, VISCERA, BOWEL_FLUID, GAS, VISCERAL_FAT, AORTA, IVC, BLADDER,
 EPIDURAL_FAT, CSF, CORD, ROOT, MARROW, CORTEX, PE_MARROW, ANNULUS, CLEFT, BASIVERTEBRAL,
 LIGAMENT, NUCLEUS_1, NUCLEUS_2, NUCLEUS_3, NUCLEUS_4, NUCLEUS_5,
 MULTIFIDUS, ERECTOR_SPINAE, PSOAS, QUADRATUS, FATTY_MUSCLE, FASCIA, JOINT_FLUID,
 KIDNEY, BOWEL_WALL, ILIUM_MARROW) = range(36)
N_TISSUES = 36
TISSUE_NAMES = ("air", "fat", "muscle", "viscera", "bowel_fluid", "gas", "visceral_fat", "aorta", "ivc",
                "bladder", "epidural_fat", "csf", "cord", "root", "marrow", "cortex", "pe_marrow", "annulus",
                "cleft", "basivertebral", "ligament", "nucleus_1", "nucleus_2", "nucleus_3", "nucleus_4",
                "nucleus_5", "multifidus", "erector_spinae", "psoas", "quadratus_lumborum", "fatty_muscle",
                "fascia", "joint_fluid", "kidney", "bowel_wall", "ilium_marrow")
MUSCLES = (MUSCLE, MULTIFIDUS, ERECTOR_SPINAE, PSOAS, QUADRATUS)
NUCLEUS_BY_GRADE = {1: NUCLEUS_1, 2: NUCLEUS_2, 3: NUCLEUS_3, 4: NUCLEUS_4, 5: NUCLEUS_5}
