"""Images and data sets on disk: MRI I/O, outputs, SPIDER, the real development set, phantoms, retraining sets."""
