"""One segmentation per ensemble sample (for per-sample measurements and their spread).

Each sample's own fused steps are combined with the same weights as the ensemble
fusion, thresholded at 0.5 and cleaned like the fused result; nothing here changes
the fused result.
"""

from __future__ import annotations

import numpy as np

from SpineSegDiffLib.inference.postprocess import clean_masks, to_labelmap


def sample_labelmaps(sample_levels: list[np.ndarray], fused_steps: int, voxel_volume_mm3: float,
                     min_component_mm3: float) -> list[np.ndarray]:
    """Per-sample levels (each (Ts, n, C, H, W) uint8) -> one (n, H, W) uint8 labelmap per sample."""
    from SpineSegDiffLib.model.diffusion_config import fusion_weight_array
    from SpineSegDiffLib.model.levels import QUANT_LEVELS

    weights = fusion_weight_array(fused_steps)
    out = []
    for levels in sample_levels:
        probabilities = np.zeros(levels.shape[1:], np.float32)
        for t, w in enumerate(weights):  # step by step: no (Ts, ...) float temporary
            probabilities += (w / QUANT_LEVELS) * levels[t]
        masks = clean_masks(probabilities > 0.5, voxel_volume_mm3, min_component_mm3)
        out.append(to_labelmap(masks, probabilities))
    return out
