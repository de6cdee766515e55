"""The model: network, diffusion, uncertainty, calibration, model files (metadata torch-free), registry, devices."""
