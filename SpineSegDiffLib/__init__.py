"""SpineSegDiff engine: lumbar spine MRI segmentation with a conditional diffusion model.

No Qt and no Slicer imports anywhere in this package: it runs from the command line,
in batch, in training, and as the separate process that the Slicer module starts.
"""

__version__ = "0.1.0"
