"""Readers for CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` and the test set.

Record keys and the test-set layouts: ``docs/data.md``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np

from relaxclip._checks import check_bool, check_choice, check_type
from relaxclip.data import labels as tables
from relaxclip.data.dataset import group_by_study
from relaxclip.data.labels import CHEXPERT_LABELS

UncertaintyPolicy = Literal["ignore", "ones", "zeros"]

__all__ = ["UncertaintyPolicy", "parse_chexpert_label", "read_chexpert", "read_chexpert_test"]

_UNCERTAIN = {"ignore": math.nan, "ones": 1.0, "zeros": 0.0}
_PATIENT = re.compile(r"^patient\d+$")
_STUDY = re.compile(r"^study\d+$")
_MISSING_HINT = "pass the right image_root or check_paths=False"


def _check_policy(uncertainty: object) -> float:
    """The value an uncertain (``-1``) label becomes under the policy ``uncertainty``."""
    return _UNCERTAIN[str(check_choice("uncertainty", uncertainty, tuple(_UNCERTAIN)))]


def parse_chexpert_label(raw: str, uncertainty: UncertaintyPolicy, *, where: str = "") -> float:
    """Map one CheXpert label cell to a float: ``1``→1.0, ``0``→0.0, blank→NaN, ``-1``→policy.

    Any other cell raises ``ValueError`` naming ``where`` (e.g. ``"train.csv line 3"``).
    """
    uncertain = _check_policy(uncertainty)
    s = raw.strip()
    if s == "":
        return math.nan
    try:
        return {1.0: 1.0, 0.0: 0.0, -1.0: uncertain}[float(s)]
    except (ValueError, KeyError):
        raise ValueError(f"{where}: expected 1, 0, -1 or blank, got {raw!r}") from None


def label_vector(
    row: dict[str, str], names: Sequence[str], uncertainty: UncertaintyPolicy, where: str
) -> np.ndarray:
    """The float64 label vector of a CSV row in the CheXpert coding (columns ``names``)."""
    return np.array(
        [parse_chexpert_label(row[c], uncertainty, where=f"{where}, column {c!r}") for c in names],
        dtype=np.float64,
    )


def _check_common(
    csv_path: str | os.PathLike[str],
    labels: Sequence[str],
    uncertainty: object,
    check_paths: object,
) -> tuple[Path, tuple[str, ...], bool]:
    """The arguments both readers share, checked: the CSV path, the labels and the flag."""
    path = tables.existing_file(csv_path, name="csv_path")
    names = tables.check_labels(labels, CHEXPERT_LABELS, what="CheXpert labels")
    _check_policy(uncertainty)
    return path, names, check_bool("check_paths", check_paths)


def _study_record(
    table: tables.CsvTable,
    i: int,
    column: str,
    names: Sequence[str],
    uncertainty: UncertaintyPolicy,
) -> tuple[str, dict[str, Any]]:
    """Row ``i``'s ``column`` (a relative path) and its record's patient, study and labels."""
    where = table.where(i)
    rel = table.rows[i][column].strip().rstrip("/")
    if not rel:
        raise ValueError(f"{where}: empty column {column!r}")
    pairs = [(p, s) for p, s in pairwise(Path(rel).parts) if _PATIENT.match(p) and _STUDY.match(s)]
    if not pairs:
        raise ValueError(
            f"{where}, column {column!r}: cannot find 'patientNNNNN/studyN' in {rel!r}"
        )
    patient, study = pairs[0][0], "/".join(pairs[0])
    labels = label_vector(table.rows[i], names, uncertainty, where)
    return rel, {"patient_id": patient, "study_id": study, "labels": labels, "label_names": names}


def read_chexpert(
    csv_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[str] = CHEXPERT_LABELS,
    uncertainty: UncertaintyPolicy = "ignore",
    frontal_only: bool = False,
    check_paths: bool = True,
) -> list[dict[str, Any]]:
    """Read CheXpert's ``train.csv`` / ``valid.csv`` into one record per image (CSV order).

    Args:
        csv_path: the CSV.
        image_root: the folder ``Path`` is relative to (default: the CSV's grandparent).
        labels: which CheXpert observations, in this order.
        uncertainty: what ``-1`` becomes: ``"ignore"`` (NaN), ``"ones"`` or ``"zeros"``.
        frontal_only: keep rows whose ``Frontal/Lateral`` is ``Frontal`` (any letter case).
        check_paths: every image must exist.

    Returns:
        One record per kept row (keys: ``docs/data.md``).

    Raises:
        TypeError: a path, label list, policy or flag of the wrong type.
        FileNotFoundError: a missing file or folder (the first ones named).
        ValueError: unknown labels or policy, a bad cell or a repeated ``Path`` (file and lines
            named) or no row kept.
    """
    path, names, check_paths = _check_common(csv_path, labels, uncertainty, check_paths)
    frontal_only = check_bool("frontal_only", frontal_only)
    root = tables.optional_folder(image_root, name="image_root") or path.parent.parent
    table = tables.read_csv_rows(path, ["Path", *names])
    tables.unique_column(table, "Path", "image")
    if frontal_only and "Frontal/Lateral" not in table.header:
        raise ValueError(f"{path}: frontal_only=True needs the column 'Frontal/Lateral'")
    records: list[dict[str, Any]] = []
    for i, row in enumerate(table.rows):
        view = row.get("Frontal/Lateral") or None
        if frontal_only and (view or "").strip().lower() != "frontal":
            continue
        rel, record = _study_record(table, i, "Path", names, uncertainty)
        extra = {
            k: row.get(c) or None for k, c in (("ap_pa", "AP/PA"), ("sex", "Sex"), ("age", "Age"))
        }
        records.append({"image_path": root / rel, **record, "view": view, **extra, "report": None})
    if check_paths:
        tables.check_found(path, "path", "Path", [r["image_path"] for r in records], _MISSING_HINT)
    if not records:
        seen = sorted({row.get("Frontal/Lateral", "") for row in table.rows})
        raise ValueError(
            f"{path}: frontal_only=True kept none of the {len(table.rows)} rows; column "
            f"'Frontal/Lateral' holds {seen}, expected 'Frontal' (any case) for frontal images"
        )
    return records


def read_chexpert_test(
    csv_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    labels: Sequence[str] = CHEXPERT_LABELS,
    uncertainty: UncertaintyPolicy = "ignore",
    check_paths: bool = True,
    image_glob: str = "*.jpg",
) -> list[dict[str, Any]]:
    """Read the CheXpert test set into one record per study (CSV order of first appearance).

    Args:
        csv_path: ``groundtruth.csv`` (a ``Study`` column) or an image-level CSV with a ``Path``
            column (read as by :func:`read_chexpert`, grouped by study).
        image_root: the folder the ``Study``/``Path`` values are relative to.
        labels, uncertainty: as in :func:`read_chexpert`.
        check_paths: every study folder must hold an image matching ``image_glob``.
        image_glob: the images of a study folder (sorted by name).

    Returns:
        One record per study (keys: ``docs/data.md``).

    Raises:
        TypeError, FileNotFoundError, ValueError: as :func:`read_chexpert`, or a study twice
            (or, image-level, with images of different labels).
    """
    path, names, check_paths = _check_common(csv_path, labels, uncertainty, check_paths)
    check_type("image_glob", image_glob, str, "a glob pattern (str)")
    root = tables.existing_file(image_root, name="image_root", folder=True)
    table = tables.read_csv_rows(path, [])
    if "Path" in table.header:
        images = read_chexpert(
            path, root, labels=names, uncertainty=uncertainty, check_paths=check_paths
        )
        first: dict[str, int] = {}
        for i, rec in enumerate(images):  # images[i] is the row at table.lines[i]
            j = first.setdefault(rec["study_id"], i)
            if not np.array_equal(rec["labels"], images[j]["labels"], equal_nan=True):
                raise ValueError(
                    f"{table.where(i)}: study {rec['study_id']!r} has other labels than at line "
                    f"{table.lines[j]}; expected the same labels on every image of a study"
                )
        return group_by_study(images)
    table = tables.read_csv_rows(path, ["Study", *names])
    records: dict[str, dict[str, Any]] = {}
    missing: list[Path] = []
    for i in range(len(table.rows)):
        rel, record = _study_record(table, i, "Study", names, uncertainty)
        study = record["study_id"]
        if study in records:  # row j is records' j-th study: every row before i added one
            j = list(records).index(study)
            raise ValueError(
                f"{table.where(i)}: study {study!r} of column 'Study' already appears at line "
                f"{table.lines[j]}; expected one row per study"
            )
        folder = root / rel
        paths = sorted(folder.glob(image_glob)) if folder.is_dir() else []
        if check_paths and not paths:
            missing.append(folder / image_glob)
        records[study] = {**record, "image_paths": paths, "report": None}
    tables.check_found(path, "path", "Study", missing, _MISSING_HINT)
    return list(records.values())
