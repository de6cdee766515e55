"""Synthetic lumbar spine MRI phantoms with full ground truth, written in SPIDER format.

Real training data cannot be downloaded everywhere, so the project draws its own:
T12..S1 (plus whatever of T9..T11 the field of view catches) with vertebral bodies,
posterior elements, discs (nucleus, annulus, Pfirrmann grade 1-5), the thecal sac with
cord / cauda equina, and the soft tissue around them, in T1 and T2 contrast, with
partial volume, a smooth bias field and Rician noise.

Geometry (the same convention as the real data in ``../shared/data/real``):
  * SimpleITK axes: x = left->right (the sagittal slice axis), y = anterior->posterior,
    z = superior->inferior as the index grows; direction diag(1, 1, -1) in LPS, so
    numpy arrays are (z, y, x) and ``array[:, :, i]`` is a sagittal slice with rows
    running superior->inferior and columns anterior->posterior.
  * Spacing (x, y, z) = (slice spacing 3.3-4.5 mm, in-plane 0.5-0.9 mm, same in-plane),
    12-20 slices, a random field of view that always holds T12 top .. S1 bottom.

Internally everything is built in an "anatomical" millimetre frame: ``s`` grows
inferior, ``p`` grows posterior, ``l`` is the left-right distance from the (scoliotic)
spine midline. Each vertebra/disc has a centre and a tilt ``phi`` (how far its axis
leans anteriorly, lordosis), and shapes are signed-distance-like inequalities on
coordinate grids restricted to bounding boxes, so there is no per-voxel Python loop.
Everything is deterministic per ``(seed, case index)``.

Modules: ``labels`` (SPIDER values), ``tissues`` (tissue classes and contrasts),
``spine`` (the chain of segments and discs), ``grid`` (voxel frame, smooth noise),
``bones`` (bodies, posterior elements, discs), ``soft_tissue`` (everything else),
``rendering`` (image formation), ``case`` (``generate_case``), ``spider_writer``.
"""

from SpineSegDiffLib.data.phantom.case import (
                                                 PhantomCase,
                                                 check_sequences,
                                                 generate_case,
)
from SpineSegDiffLib.data.phantom.contrast import CONTRASTS, SEQUENCES
from SpineSegDiffLib.data.phantom.labels import (
                                                 CANAL_VALUE,
                                                 DISC_OFFSET,
                                                 PARTIAL_VERTEBRA_OFFSET,
                                                 REQUIRED_VERTEBRAE,
                                                 SACRUM_VALUE,
                                                 VERTEBRA_VALUES,
                                                 disc_value,
                                                 semantic_from_spider_values,
)
from SpineSegDiffLib.data.phantom.spider_writer import write_spider_folder

__all__ = ["CANAL_VALUE", "CONTRASTS", "DISC_OFFSET", "PARTIAL_VERTEBRA_OFFSET", "REQUIRED_VERTEBRAE", "SACRUM_VALUE",
           "SEQUENCES", "VERTEBRA_VALUES", "PhantomCase", "check_sequences", "disc_value", "generate_case",
           "semantic_from_spider_values", "write_spider_folder"]
