"""Reader for NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Data_Entry_2017*.csv`` (or ``.csv.gz``).

Label vectors are 0/1 (no NaN). Record keys and data terms: ``docs/data.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from relaxclip._checks import check_bool
from relaxclip.data import labels as tables
from relaxclip.data.labels import CHESTXRAY14_LABELS, CHESTXRAY14_NO_FINDING
from relaxclip.sentences import check_names

__all__ = ["read_chestxray14"]

_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
_KNOWN = (*CHESTXRAY14_LABELS, CHESTXRAY14_NO_FINDING)


def _check_rows(table: tables.CsvTable, images: Any) -> set[str] | None:
    """Check ``Image Index`` is unique; the names ``images`` selects (``None``: every row)."""
    first_line = tables.unique_column(table, "Image Index", "image")
    if images is None:
        return None
    if isinstance(images, (str, os.PathLike)):
        p = tables.existing_file(images, name="images")
        out = [line.strip() for line in tables.read_text(p).splitlines() if line.strip()]
        source = f"file {p}"
    else:
        out = list(check_names("images", images, "a path or image names (str)"))
        source = "the iterable"
    absent = [x for x in out if x not in first_line]
    if absent:
        where = f"column 'Image Index' of {table.path}"
        raise ValueError(f"images: {len(absent)} name(s) not in {where}: {absent[:5]}")
    if not out:
        raise ValueError(f"images: {source} names no image; expected at least one name")
    return set(out)


def _int_or_none(value: str | None, where: str) -> int | None:
    """``int(value)``, ``None`` for an absent or blank cell."""
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
    images: Iterable[str] | str | os.PathLike[str] | None = None,
    labels: Sequence[str] = CHESTXRAY14_LABELS,
    check_paths: bool = True,
) -> list[dict[str, Any]]:
    """Read ChestX-ray14's label table into one record per image (CSV order).

    Args:
        csv_path: ``Data_Entry_2017*.csv[.gz]``.
        image_root: folder with the PNGs; None: ``image_path`` is None.
        images: keep only these image names (an iterable, or a file such as ``test_list.txt``).
        labels: names from ``CHESTXRAY14_LABELS`` and/or ``"No Finding"``, in output order.
        check_paths: with ``image_root``, every kept image must exist.

    Returns:
        One record per kept row (keys: ``docs/data.md``).

    Raises:
        TypeError: a path, flag or ``images`` of the wrong type.
        FileNotFoundError: a missing file or folder (the first ones named).
        ValueError: a bad cell or duplicate row (file and line named), or unknown ``images``.
    """
    path = tables.existing_file(csv_path, name="csv_path")
    names = tables.check_labels(labels, _KNOWN, what="ChestX-ray14 labels")
    check_paths = check_bool("check_paths", check_paths)
    root = tables.optional_folder(image_root, name="image_root")
    table = tables.read_csv_rows(path, _REQUIRED)
    wanted = _check_rows(table, images)
    records: list[dict[str, Any]] = []
    for i, row in enumerate(table.rows):
        where = table.where(i)
        tables.check_cells(row, ("Image Index", "Patient ID"), bool, where, "a non-blank value")
        index = row["Image Index"].strip()
        if wanted is not None and index not in wanted:
            continue
        findings = tuple(f.strip() for f in row["Finding Labels"].split("|"))
        unknown = [f for f in findings if f not in _KNOWN]
        if unknown:
            raise ValueError(f"{where}, column 'Finding Labels': unknown finding(s) {unknown}")
        if CHESTXRAY14_NO_FINDING in findings and len(findings) > 1:
            raise ValueError(
                f"{where}, column 'Finding Labels': 'No Finding' together with {findings}"
            )
        records.append(
            {
                "image_index": index,
                "image_path": root / index if root is not None else None,
                "study_id": index,
                "patient_id": row["Patient ID"].strip(),
                "follow_up": _int_or_none(row.get("Follow-up #"), f"{where}, column 'Follow-up #'"),
                "age": _int_or_none(row.get("Patient Age"), f"{where}, column 'Patient Age'"),
                "sex": row.get("Patient Gender") or None,
                "view_position": row.get("View Position") or None,
                "findings": findings,
                "labels": np.array([float(n in findings) for n in names], dtype=np.float64),
                "label_names": names,
                "report": None,
            }
        )
    if check_paths and root is not None:
        hint = f"select images that exist under {root} with images=[...] or pass check_paths=False"
        tables.check_found(path, "image", "Image Index", [r["image_path"] for r in records], hint)
    return records
