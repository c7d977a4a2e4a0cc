"""Label-name constants and the small CSV helpers shared by the dataset readers.

The orders below are the ones the public label files use, so a label vector read by a
reader lines up with these tuples index by index.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

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


# --------------------------------------------------------------------------- CSV helpers
# Small helpers the readers share (standard library only).


def open_text(path: Path) -> TextIO:
    """Open a ``.csv`` or ``.csv.gz`` (any ``.gz``) file as UTF-8 text."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def existing_file(path: str | os.PathLike[str], *, name: str) -> Path:
    """``Path(path)`` after checking it is an existing file (``FileNotFoundError`` naming ``name``)."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name}: file {p} does not exist")
    return p


def read_csv_rows(path: Path, required: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV (or ``.csv.gz``) with a header into ``(header, rows)``.

    Raises ``ValueError`` naming the file and the missing columns when a ``required`` column
    is absent, and naming the file and line when a row has the wrong number of fields.
    """
    with open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a CSV header") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        rows: list[dict[str, str]] = []
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise ValueError(
                    f"{path}: line {reader.line_num} has {len(values)} fields, header has {len(header)}"
                )
            rows.append(dict(zip(header, values, strict=True)))
    return header, rows


def find_table(root: Path, stem: str) -> Path:
    """``root/stem.csv`` or ``root/stem.csv.gz``, whichever exists (``FileNotFoundError`` otherwise)."""
    for candidate in (root / f"{stem}.csv", root / f"{stem}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: neither {stem}.csv nor {stem}.csv.gz exists")
