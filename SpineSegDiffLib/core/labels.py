"""The project's semantic labels, one place for every consumer.

Internal label values: 0 background (implicit), 1 spinal canal, 2 vertebrae,
3 intervertebral discs. The network's output channel ``c`` is label ``c + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Structure:
    value: int  # label value in labelmaps
    key: str  # machine name, used in JSON summaries and file names
    name: str  # human name, used as segment name
    color: tuple[float, float, float]  # RGB in [0, 1]
    # DICOM terminology (SCT codes) so Slicer shows the standard anatomy
    category: tuple[str, str, str]  # (scheme, code, meaning)
    type: tuple[str, str, str]


# The DICOM master list holds Vertebra (51282000); Slicer's General Anatomy list does not.
# 360499006 (disc) and 31658008 (canal) are in neither of Slicer's bundled lists:
# Slicer shows them as custom codes.
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMICAL = ("SCT", "123037004", "Anatomical Structure")

STRUCTURES: tuple[Structure, ...] = (
    Structure(1, "spinal_canal", "Spinal canal", (0.35, 0.75, 1.0), _ANATOMICAL,
              ("SCT", "31658008", "Spinal canal")),
    Structure(2, "vertebrae", "Vertebrae", (0.95, 0.85, 0.55), _ANATOMICAL,
              ("SCT", "51282000", "Vertebra")),
    Structure(3, "discs", "Intervertebral discs", (0.55, 0.95, 0.45), _ANATOMICAL,
              ("SCT", "360499006", "Intervertebral disc")),
)

NUM_CLASSES = len(STRUCTURES)
BY_KEY = {s.key: s for s in STRUCTURES}
BY_VALUE = {s.value: s for s in STRUCTURES}
