"""Reader for NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Data_Entry_2017*.csv`` (or ``.csv.gz``).

The ``Finding Labels`` column holds '|'-separated findings from the 14 of
``CHESTXRAY14_LABELS`` or the single token ``No Finding``. Every finding is either
mentioned or not, so label vectors are 0/1 without NaN.

Record keys: ``image_index`` (e.g. ``00000001_000.png``), ``image_path`` (``image_root /
image_index`` or None without ``image_root``), ``study_id`` (= ``image_index``: one image per
study), ``patient_id`` (str), ``follow_up`` (int), ``age`` (int), ``sex``, ``view_position``,
``findings`` (tuple of str), ``labels`` (float64 ``(K,)``), ``label_names``, ``report``
(None: ChestX-ray14 has no reports).

Data: NIH Clinical Center, no restrictions on use; cite Wang et al. 2017 and acknowledge the
NIH Clinical Center.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relaxclip.data.labels import (
    CHESTXRAY14_LABELS,
    CHESTXRAY14_NO_FINDING,
    check_labels,
    existing_file,
    read_csv_rows,
    read_text,
)

__all__ = ["read_chestxray14"]

_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
_KNOWN = (*CHESTXRAY14_LABELS, CHESTXRAY14_NO_FINDING)


def _read_image_list(images: Iterable[str] | str | os.PathLike[str]) -> list[str]:
    if isinstance(images, (str, os.PathLike)):
        p = existing_file(images, name="images")
        out = [line.strip() for line in read_text(p).splitlines() if line.strip()]
        source = f"file {p}"
    else:
        out = list(images)
        source = "the iterable"
        if not all(isinstance(x, str) for x in out):
            raise TypeError("images: expected image file names (str)")
    if not out:
        raise ValueError(f"images: {source} names no image; expected at least one name")
    return out


def _int_or_none(value: str | None, where: str) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{where}: expected an integer, got {value!r}") from None


def read_chestxray14(
    csv_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[str] = CHESTXRAY14_LABELS,
    images: Iterable[str] | str | os.PathLike[str] | None = None,
    check_paths: bool = True,
) -> list[dict[str, Any]]:
    """Read ChestX-ray14's label table into one record per image (CSV order).

    ``labels``: names from ``CHESTXRAY14_LABELS`` and/or ``"No Finding"``, in output order.
    ``images``: keep only these image names (an iterable, or a path to a list file such as
    ``test_list.txt``), in CSV order; a name absent from the CSV raises ``ValueError``.
    ``image_root``: folder with the PNGs; with ``check_paths`` every kept image must exist
    (``FileNotFoundError`` naming the CSV, the column and the first missing files). An
    unknown finding, or ``No Finding`` together with a finding, raises ``ValueError`` naming
    the file, the line and the column; so does an ``Image Index`` that appears on two rows.
    The CSV (``.csv`` or ``.csv.gz``) must be UTF-8 (a byte-order mark is fine) with unique
    column names and at least one data row; a truncated ``.gz`` raises naming the file.
    """
    path = existing_file(csv_path, name="csv_path")
    names = check_labels(labels, _KNOWN, what="ChestX-ray14 labels")
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"image_root: directory {root} does not exist")
    table = read_csv_rows(path, _REQUIRED)
    rows = table.rows
    first_line: dict[str, int] = {}
    for i, row in enumerate(rows):
        index = row["Image Index"]
        if index in first_line:
            raise ValueError(
                f"{table.where(i)}: 'Image Index' {index!r} already appears at line "
                f"{first_line[index]}; expected one row per image"
            )
        first_line[index] = table.lines[i]
    wanted: set[str] | None = None
    if images is not None:
        wanted_list = _read_image_list(images)
        wanted = set(wanted_list)
        absent = [x for x in wanted_list if x not in first_line]
        if absent:
            raise ValueError(
                f"images: {len(absent)} name(s) not in column 'Image Index' of {path}: {absent[:5]}"
            )
    column = {name: j for j, name in enumerate(names)}
    records: list[dict[str, Any]] = []
    missing: list[str] = []
    for i, row in enumerate(rows):
        index = row["Image Index"]
        if wanted is not None and index not in wanted:
            continue
        where = table.where(i)
        findings = tuple(f.strip() for f in row["Finding Labels"].split("|"))
        unknown = [f for f in findings if f not in _KNOWN]
        if unknown:
            raise ValueError(f"{where}, column 'Finding Labels': unknown finding(s) {unknown}")
        if CHESTXRAY14_NO_FINDING in findings and len(findings) > 1:
            raise ValueError(
                f"{where}, column 'Finding Labels': 'No Finding' together with {findings}"
            )
        vec = np.zeros(len(names), dtype=np.float64)
        for f in findings:
            if f in column:
                vec[column[f]] = 1.0
        image_path = root / index if root is not None else None
        if check_paths and image_path is not None and not image_path.is_file():
            missing.append(str(image_path))
        records.append(
            {
                "image_index": index,
                "image_path": image_path,
                "study_id": index,
                "patient_id": row["Patient ID"],
                "follow_up": _int_or_none(row.get("Follow-up #"), f"{where}, column 'Follow-up #'"),
                "age": _int_or_none(row.get("Patient Age"), f"{where}, column 'Patient Age'"),
                "sex": row.get("Patient Gender") or None,
                "view_position": row.get("View Position") or None,
                "findings": findings,
                "labels": vec,
                "label_names": names,
                "report": None,
            }
        )
    if missing:
        raise FileNotFoundError(
            f"{path}: {len(missing)} image(s) named in column 'Image Index' are missing under "
            f"{root}: {missing[:3]}; select existing ones with images=[...] or check_paths=False"
        )
    return records
