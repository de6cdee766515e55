"""Training: the loop, its data and targets, augmentation."""
