"""Names of the node attributes that tie SpineSegDiff's nodes to their input volume."""

INPUT_VOLUME_ID = "SpineSegDiff.InputVolumeID"  # the volume node a result belongs to
ROLE = "SpineSegDiff.Role"  # which result a node is (values below)
ROLE_SEGMENTATION = "segmentation"
ROLE_UNCERTAINTY = "uncertainty"
ROLE_MEASUREMENTS = "measurements"
IMPORTED_LABELS_SHA256 = "SpineSegDiff.ImportedLabelsSHA256"  # to tell whether a person edited
# JSON {structure key: SHA-256 of its mask}, to tell which structures a person edited
IMPORTED_STRUCTURES_SHA256 = "SpineSegDiff.ImportedStructuresSHA256"
SUMMARY_JSON = "SpineSegDiff.Summary"  # the engine's summary, kept for provenance on export


def find_result_node(scene, class_name: str, volume_node, role: str):
    """The scene's node of ``class_name`` holding ``role`` for ``volume_node``, or None."""
    volume_id = volume_node.GetID()
    for index in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(index, class_name)
        if node.GetAttribute(INPUT_VOLUME_ID) == volume_id and node.GetAttribute(ROLE) == role:
            return node
    return None
