"""The model grid: sagittal slices at the model's spacing and the exact way back to the input geometry."""
