"""Dataset readers (CheXpert, MIMIC-CXR-JPG, ChestX-ray14, Open-I) returning plain dict records.

:class:`ImageLabelDataset` loads images lazily (Pillow, the ``data`` extra). See ``docs/data.md``.
"""

from relaxclip.data.chexpert import read_chexpert, read_chexpert_test
from relaxclip.data.dataset import ImageLabelDataset, group_by_study, load_image
from relaxclip.data.labels import (
    CHESTXRAY14_LABELS,
    CHEXPERT_COMPETITION_LABELS,
    CHEXPERT_LABELS,
    OPENI_LABELS,
)
from relaxclip.data.mimic import read_mimic_cxr
from relaxclip.data.nih import read_chestxray14
from relaxclip.data.openi import is_empty_report, parse_openi_xml, read_openi_reports
from relaxclip.data.openi_labels import OpenIJoin, join_openi, read_openi_labels

__all__ = [
    "CHESTXRAY14_LABELS",
    "CHEXPERT_COMPETITION_LABELS",
    "CHEXPERT_LABELS",
    "ImageLabelDataset",
    "OPENI_LABELS",
    "OpenIJoin",
    "group_by_study",
    "is_empty_report",
    "join_openi",
    "load_image",
    "parse_openi_xml",
    "read_chestxray14",
    "read_chexpert",
    "read_chexpert_test",
    "read_mimic_cxr",
    "read_openi_labels",
    "read_openi_reports",
]
