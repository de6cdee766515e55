"""Package data: the model registry, its schema and the bundled model files."""
