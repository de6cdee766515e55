"""Export a reviewed segmentation with its MRI as one case of the retraining data set."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import SimpleITK as sitk
import slicer

from SpineSegDiffLib.data.dataset_format import DATASET_JSON, add_case, create_dataset
from SpineSegDiffLib.core.errors import InputError

from . import labelmaps, node_tags, volumes
from .segments import structure_segment_values


def edited_by_person(segmentation_node, labels) -> bool:
    """True unless the labels are exactly those this node received at import."""
    imported = segmentation_node.GetAttribute(node_tags.IMPORTED_LABELS_SHA256)
    return imported is None or imported != labelmaps.checksum(labels)


def edited_structures(segmentation_node, labels) -> list[str]:
    """Keys of the structures whose voxels differ from what this node received at import
    (all present structures when the import's checksums are unknown)."""
    try:
        imported = json.loads(segmentation_node.GetAttribute(node_tags.IMPORTED_STRUCTURES_SHA256) or "{}")
    except json.JSONDecodeError:
        imported = {}
    now = labelmaps.structure_checksums(labels)
    return [key for key, digest in now.items() if imported.get(key) != digest]


def _model_provenance(segmentation_node) -> dict:
    text = segmentation_node.GetAttribute(node_tags.SUMMARY_JSON)
    try:
        summary = json.loads(text) if text else {}
    except json.JSONDecodeError:
        summary = {}
    model = summary.get("model") or {}
    settings = summary.get("settings") or {}
    found = {"source": summary.get("input"), "model_id": model.get("id"),
             "model_version": model.get("version"), "samples": settings.get("samples")}
    return {key: value for key, value in found.items() if value is not None}


def slicer_provenance(volume_node, steps: int) -> dict:
    """What the Slicer module records about an exported case: source file (or node name), steps, date."""
    storage = volume_node.GetStorageNode() if volume_node is not None else None
    source = storage.GetFileName() if storage is not None and storage.GetFileName() else (
        volume_node.GetName() if volume_node is not None else "")
    return {"source": source, "steps": steps,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "exported_by": "SpineSegDiff Slicer module"}


def export_for_training(scene: slicer.vtkMRMLScene, segmentations_logic, segmentation_node,
                        volume_node, dataset_folder, provenance: dict) -> Path:
    """Write the (possibly edited) segments and the volume as a new training case.

    Returns the path of the label file written. The label is on the volume's exact
    voxel grid; a segmentation made on another grid is refused, never resampled.
    """
    if segmentation_node is None or volume_node is None or volume_node.GetImageData() is None:
        raise InputError("select both the segmentation and the MRI volume it belongs to before exporting")
    values = structure_segment_values(segmentation_node)
    if not values:
        raise InputError(f"segmentation '{segmentation_node.GetName()}' has no spinal canal, vertebrae or discs "
                         "segment: import SpineSegDiff results first")
    labels = labelmaps.label_array(segmentations_logic, segmentation_node, volume_node, values)
    image = volumes.sitk_from_node(volume_node)
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    record = {**_model_provenance(segmentation_node), **dict(provenance)}
    record["edited_by_person"] = edited_by_person(segmentation_node, labels)
    record["edited_structures"] = edited_structures(segmentation_node, labels)
    record.setdefault("annotated_structures", list(values))
    folder = Path(dataset_folder)
    if not (folder / DATASET_JSON).exists():
        create_dataset(folder, name=folder.name, exist_ok=True)
    return Path(add_case(folder, image, label, record).label_path)
