"""Reader for MIMIC-CXR-JPG v2 (Johnson et al. 2019) with optional free-text reports.

Labels follow the CheXpert coding. Layout, record keys and data access: ``docs/data.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relaxclip._checks import check_bool
from relaxclip.data import labels as tables
from relaxclip.data.chexpert import UncertaintyPolicy, _check_policy, label_vector
from relaxclip.data.labels import CHEXPERT_LABELS
from relaxclip.sentences import check_names, parse_report_sections

__all__ = ["MIMIC_SPLITS", "mimic_image_path", "mimic_report_path", "read_mimic_cxr"]

MIMIC_SPLITS: tuple[str, ...] = ("train", "validate", "test")

METADATA = "mimic-cxr-2.0.0-metadata"
CHEXPERT = "mimic-cxr-2.0.0-chexpert"
SPLIT = "mimic-cxr-2.0.0-split"

_Report = tuple[str | None, dict[str, str] | None]


def mimic_image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """``root/files/p<first 2 digits>/p<subject>/s<study>/<dicom>.jpg``."""
    return mimic_report_path(root, subject_id, study_id).with_suffix("") / f"{dicom_id}.jpg"


def mimic_report_path(reports_root: Path, subject_id: str, study_id: str) -> Path:
    """``reports_root/files/p<first 2 digits>/p<subject>/s<study>.txt``."""
    return reports_root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"


def _ids(row: dict[str, str], where: str) -> tuple[str, str]:
    """``(subject_id, study_id)`` of a row; a non-numeric id raises naming the column."""
    tables.check_cells(row, ("subject_id", "study_id"), str.isdigit, where, "a numeric id")
    return row["subject_id"].strip(), row["study_id"].strip()


def _name_set(
    name: str, value: str | Iterable[str] | None, known: Sequence[str] = (), upper: bool = False
) -> set[str] | None:
    """A filter argument as a set of names (``None``: no filter); ``known`` limits the names."""
    if value is None:
        return None
    expected = "a name or an iterable of names (str)"
    out = {value} if isinstance(value, str) else set(check_names(name, value, expected))
    if not out or not out <= set(known or out):
        expected = f"names from {list(known)}" if known else "at least one name"
        raise ValueError(f"{name} must hold {expected}, got {sorted(out)}")
    return {v.strip().upper() for v in out} if upper else out


def _read_splits(base: Path, meta: tables.CsvTable) -> dict[str, str]:
    """``dicom_id -> split`` of the split table (one row per image, one for each of ``meta``)."""
    table = tables.read_csv_rows(tables.find_table(base, SPLIT), ["dicom_id", "split"])
    tables.unique_column(table, "dicom_id", "image")
    split_of: dict[str, str] = {}
    for i, row in enumerate(table.rows):
        value = row["split"].strip().lower()
        if value not in MIMIC_SPLITS:
            raise ValueError(f"{table.where(i)}, column 'split': unknown split {row['split']!r}")
        split_of[row["dicom_id"].strip()] = value
    no_split = [d for d in tables.unique_column(meta, "dicom_id", "image") if d not in split_of]
    if no_split:
        raise ValueError(
            f"{table.path}: {len(no_split)} dicom_id(s) of {meta.path.name} have no row in "
            f"column 'dicom_id' (first: {no_split[:3]})"
        )
    return split_of


def _read_labels(
    base: Path, names: Sequence[str], uncertainty: UncertaintyPolicy
) -> dict[tuple[str, str], np.ndarray]:
    """``(subject_id, study_id) -> label vector`` of the label table (one row per study)."""
    path = tables.find_table(base, CHEXPERT)
    table = tables.read_csv_rows(path, ["subject_id", "study_id", *names])
    label_of: dict[tuple[str, str], np.ndarray] = {}
    for i, row in enumerate(table.rows):
        where = table.where(i)
        key = _ids(row, where)
        if key in label_of:  # row j is label_of's j-th key: every row before i added one
            line = table.lines[list(label_of).index(key)]
            raise ValueError(
                f"{where}: study {key[1]} of subject {key[0]} already appears at line {line}; "
                "expected one row per study"
            )
        label_of[key] = label_vector(row, names, uncertainty, where)
    return label_of


def _report(rep_root: Path | None, key: tuple[str, str], missing: list[Path]) -> _Report:
    """``(text, sections)`` of a study's report; a missing file is appended to ``missing``."""
    if rep_root is None:
        return None, None
    path = mimic_report_path(rep_root, *key)
    if not path.is_file():
        missing.append(path)
        return None, None
    text = tables.read_text(path)
    return text, parse_report_sections(text)


def read_mimic_cxr(
    root: str | os.PathLike[str],
    *,
    split: str | Iterable[str] | None = None,
    labels: Sequence[str] = CHEXPERT_LABELS,
    uncertainty: UncertaintyPolicy = "ignore",
    views: Iterable[str] | None = None,
    reports_root: str | os.PathLike[str] | None = None,
    check_paths: bool = True,
) -> list[dict[str, Any]]:
    """Read MIMIC-CXR-JPG into one record per image (metadata order).

    Args:
        root: the folder with the three tables (``.csv`` or ``.csv.gz``) and ``files/``.
        split: keep images of these splits (``"train"``, ``"validate"``, ``"test"``); None: all.
        labels, uncertainty: CheXpert observations and ``-1`` policy, as in ``read_chexpert``.
        views: keep images whose ``ViewPosition`` is one of these (any letter case); None: all.
        reports_root: folder of the ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` reports; None: none.
        check_paths: every kept image and report must exist (else a missing report is None).

    Returns:
        One record per kept image (keys: ``docs/data.md``).

    Raises:
        TypeError: a path, flag or filter of the wrong type.
        FileNotFoundError: a missing folder, table, image or report (the first ones named).
        ValueError: a bad cell, an image without one split and metadata row, or no image kept.
    """
    base = tables.existing_file(root, name="root", folder=True)
    names = tables.check_labels(labels, CHEXPERT_LABELS, what="CheXpert labels")
    _check_policy(uncertainty)
    splits = _name_set("split", split, MIMIC_SPLITS)
    view_set = _name_set("views", views, upper=True)
    check_paths = check_bool("check_paths", check_paths)
    rep_root = tables.optional_folder(reports_root, name="reports_root")
    meta = tables.read_csv_rows(
        tables.find_table(base, METADATA), ["dicom_id", "subject_id", "study_id"]
    )
    if view_set is not None and "ViewPosition" not in meta.header:
        raise ValueError(f"{meta.path}: views= needs the column 'ViewPosition'")
    label_of = _read_labels(base, names, uncertainty)
    split_of = _read_splits(base, meta)
    keys = [_ids(row, meta.where(i)) for i, row in enumerate(meta.rows)]
    reports: dict[tuple[str, str], _Report] = {}
    records: list[dict[str, Any]] = []
    missing_reports: list[Path] = []
    for row, (subject, study) in zip(meta.rows, keys, strict=True):
        dicom = row["dicom_id"].strip()
        view = row.get("ViewPosition", "").strip() or None
        if (splits is not None and split_of[dicom] not in splits) or (
            view_set is not None and (view or "").upper() not in view_set
        ):
            continue
        key = (subject, study)
        if key not in reports:
            reports[key] = _report(rep_root, key, missing_reports)
        has = key in label_of
        records.append(
            {
                "image_path": mimic_image_path(base, subject, study, dicom),
                "dicom_id": dicom,
                "subject_id": subject,
                "study_id": study,
                "view_position": view,
                "split": split_of[dicom],
                "labels": label_of[key].copy() if has else np.full(len(names), np.nan),
                "label_names": names,
                "has_labels": has,
                "report": reports[key][0],
                "report_sections": reports[key][1],
            }
        )
    if check_paths:
        hint = "check the folders or pass check_paths=False"
        tables.check_found(meta.path, "image", "dicom_id", [r["image_path"] for r in records], hint)
        tables.check_found(meta.path, "report", "study_id", missing_reports, hint)
    if not records:
        raise _nothing_kept(meta, split_of, (splits, view_set))
    return records


def _nothing_kept(
    meta: tables.CsvTable, split_of: dict[str, str], filters: tuple[set[str] | None, ...]
) -> ValueError:
    """The error for filters that kept none of the images of ``meta``."""
    splits, views = (None if f is None else sorted(f) for f in filters)
    return ValueError(
        f"{meta.path}: the filters kept none of its {len(meta.rows)} images "
        f"(split={splits}, views={views}); splits present: "
        f"{sorted(set(split_of.values()))}, views present: "
        f"{sorted({r.get('ViewPosition', '').strip() for r in meta.rows})}"
    )
