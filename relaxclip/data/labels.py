"""Label-name constants shared by the dataset readers and the zero-shot evaluation.

The orders below are the ones the public label files use, so a label vector read by a
reader lines up with these tuples index by index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: The 14 CheXpert observations, in the column order of CheXpert's ``train.csv`` /
#: ``valid.csv`` and of MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv``.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: The 5 CheXpert competition pathologies (Irvin et al. 2019), on which CheXzero and the
#: paper compare against radiologists.
CHEXPERT_COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

#: The 14 ChestX-ray14 findings in the order of the NIH label files (``Data_Entry_2017*.csv``
#: spells them this way in its ``Finding Labels`` column, '|'-separated).
CHESTXRAY14_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

#: The token ChestX-ray14 uses for an image with none of the 14 findings.
CHESTXRAY14_NO_FINDING: str = "No Finding"

#: Columns of the Open-I gold standard (NegBio ``openi_gld_std14.csv``): the 14
#: ChestX-ray14 findings plus ``normal``.
OPENI_LABELS: tuple[str, ...] = CHESTXRAY14_LABELS + ("normal",)


def check_labels(labels: Iterable[str], known: Sequence[str], *, what: str) -> tuple[str, ...]:
    """Return ``labels`` as a tuple after checking each one is in ``known``.

    Raises ``ValueError`` naming ``what`` (e.g. ``"CheXpert labels"``) and the unknown names,
    and on duplicates or an empty selection. Order is preserved exactly as given.
    """
    if isinstance(labels, str):
        raise TypeError(f"labels must be a sequence of label names, not a single string {labels!r}")
    out = tuple(labels)
    if not out:
        raise ValueError(f"labels: expected at least one of the {what}, got an empty selection")
    unknown = [name for name in out if name not in known]
    if unknown:
        raise ValueError(f"labels: unknown {what} {unknown}; expected names from {list(known)}")
    dup = sorted({name for name in out if out.count(name) > 1})
    if dup:
        raise ValueError(f"labels: duplicated names {dup}")
    return out
