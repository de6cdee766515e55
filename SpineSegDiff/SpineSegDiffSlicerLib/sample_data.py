"""The bundled lumbar phantom offered in Slicer's Sample Data module."""

from __future__ import annotations

import logging
from pathlib import Path


def sample_checksum(sample_file: Path) -> str | None:
    """The SHA-256 that scripts/make_sample_data.py wrote beside the sample, if any."""
    sidecar = sample_file.with_name(sample_file.name + ".sha256")
    if not sidecar.is_file():
        return None
    text = sidecar.read_text(encoding="utf-8").split()
    return text[0].lower() if text else None


def register_sample_data(sample_file: Path, sample_name: str, thumbnail: Path) -> bool:
    """Register the phantom with Sample Data (needs the Slicer application); False when it is absent."""
    if not sample_file.is_file():
        logging.info(f"SpineSegDiff: no sample volume at {sample_file}; run scripts/make_sample_data.py")
        return False
    import SampleData

    checksum = sample_checksum(sample_file)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SpineSegDiff",
        sampleName=sample_name,
        thumbnailFileName=str(thumbnail),
        # a local file URI: the phantom ships with the extension, nothing is downloaded
        uris=sample_file.as_uri(),
        fileNames=sample_file.name,
        checksums=f"SHA256:{checksum}" if checksum else None,
        nodeNames=sample_name,
    )
    return True
