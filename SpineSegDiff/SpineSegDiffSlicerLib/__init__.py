"""Slicer-side library of SpineSegDiff: MRML nodes in and out, the engine process runner.

Imports neither torch nor MONAI, and nothing on import: each module is imported where it
is used, so importing this package never needs the engine on ``sys.path``. Every function
takes the scene (and the segmentations logic) as arguments, so the same code runs inside
Slicer and under pytest with the slicer-core wheel.
"""
