"""Reader for MIMIC-CXR-JPG v2 (Johnson et al. 2019) with optional free-text reports.

Expected layout under ``root`` (each table as ``.csv`` or ``.csv.gz``)::

    mimic-cxr-2.0.0-metadata.csv   dicom_id, subject_id, study_id, ViewPosition, ...
    mimic-cxr-2.0.0-chexpert.csv   subject_id, study_id, <14 CheXpert labels> (1, 0, -1, blank)
    mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split (train/validate/test)
    files/p10/p10000032/s50414267/<dicom_id>.jpg

Reports (MIMIC-CXR, not -JPG) are read from ``reports_root/files/pXX/pXXXXXXXX/sXXXXXXXX.txt``
and split into sections with ``relaxclip.sentences.parse_report_sections``.

Labels follow the CheXpert coding and the same ``uncertainty`` policy as
``relaxclip.data.chexpert`` (``"ignore"`` → NaN, ``"ones"``, ``"zeros"``); blank is NaN. A study
with no row in the label table gets an all-NaN vector and ``has_labels=False``.

Record keys (one per image, metadata order): ``image_path``, ``dicom_id``, ``subject_id``,
``study_id`` (str, without the ``s`` prefix, as in the CSVs), ``view_position``, ``split``,
``labels`` (float64 ``(K,)``), ``label_names``, ``has_labels``, ``report`` (str or None),
``report_sections`` (dict or None). Use ``relaxclip.data.dataset.group_by_study`` to keep
the images of a study together.

MIMIC-CXR is credentialed-access data (PhysioNet); nothing of it ships with relaxclip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relaxclip.data.chexpert import UncertaintyPolicy, _check_policy, parse_chexpert_label
from relaxclip.data.labels import (
    CHEXPERT_LABELS,
    check_labels,
    find_table,
    read_csv_rows,
    read_text,
)

__all__ = ["MIMIC_SPLITS", "mimic_image_path", "mimic_report_path", "read_mimic_cxr"]

MIMIC_SPLITS: tuple[str, ...] = ("train", "validate", "test")

METADATA = "mimic-cxr-2.0.0-metadata"
CHEXPERT = "mimic-cxr-2.0.0-chexpert"
SPLIT = "mimic-cxr-2.0.0-split"


def _folder(subject_id: str) -> Path:
    return Path("files") / f"p{subject_id[:2]}" / f"p{subject_id}"


def mimic_image_path(root: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """``root/files/p<first 2 digits>/p<subject>/s<study>/<dicom>.jpg``."""
    return root / _folder(subject_id) / f"s{study_id}" / f"{dicom_id}.jpg"


def mimic_report_path(reports_root: Path, subject_id: str, study_id: str) -> Path:
    """``reports_root/files/p<first 2 digits>/p<subject>/s<study>.txt``."""
    return reports_root / _folder(subject_id) / f"s{study_id}.txt"


def _id(value: str, where: str) -> str:
    s = value.strip()
    if not s.isdigit():
        raise ValueError(f"{where}: expected a numeric id, got {value!r}")
    return s


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
    """Read MIMIC-CXR-JPG into one record per image.

    ``split``: keep images of these splits (``"train"``, ``"validate"``, ``"test"``); None keeps
    all. ``views``: keep images whose ``ViewPosition`` is in this set (e.g. ``{"PA", "AP"}``);
    None keeps all; compared case-insensitively (``"pa"`` matches ``PA``). Both are explicit
    filters; when they keep no image, ``ValueError`` lists the splits and views present.
    Every image in the metadata must have exactly one split row and one metadata row (else
    ``ValueError`` naming the file and both lines). Report files are read as UTF-8
    (``ValueError`` naming the file otherwise) with a leading byte-order mark or other
    invisible mark removed, so a ``FINDINGS:`` header on the first line is still found. With ``check_paths`` every kept image (and
    report, when ``reports_root`` is given) must exist: ``FileNotFoundError`` naming the table,
    the column and the first missing files. With ``check_paths=False`` a missing report
    leaves ``report``/``report_sections`` as None.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"root: directory {base} does not exist")
    names = check_labels(labels, CHEXPERT_LABELS, what="CheXpert labels")
    _check_policy(uncertainty)
    splits: set[str] | None = None
    if split is not None:
        splits = {split} if isinstance(split, str) else set(split)
        bad = sorted(splits - set(MIMIC_SPLITS))
        if bad or not splits:
            raise ValueError(
                f"split: expected names from {list(MIMIC_SPLITS)}, got {sorted(splits)}"
            )
    view_set = (
        None
        if views is None
        else {v.strip().upper() for v in ([views] if isinstance(views, str) else views)}
    )
    rep_root = Path(reports_root) if reports_root is not None else None
    if rep_root is not None and not rep_root.is_dir():
        raise FileNotFoundError(f"reports_root: directory {rep_root} does not exist")

    meta_path = find_table(base, METADATA)
    label_path = find_table(base, CHEXPERT)
    split_path = find_table(base, SPLIT)
    meta_table = read_csv_rows(meta_path, ["dicom_id", "subject_id", "study_id"])
    if view_set is not None and "ViewPosition" not in meta_table.header:
        raise ValueError(f"{meta_path}: views= needs the column 'ViewPosition'")
    label_table = read_csv_rows(label_path, ["subject_id", "study_id", *names])
    split_table = read_csv_rows(split_path, ["dicom_id", "split"])

    split_of: dict[str, str] = {}
    split_line: dict[str, int] = {}
    for i, row in enumerate(split_table.rows):
        where = split_table.where(i)
        value = row["split"].strip().lower()
        if value not in MIMIC_SPLITS:
            raise ValueError(f"{where}, column 'split': unknown split {row['split']!r}")
        dicom = row["dicom_id"].strip()
        if dicom in split_of:
            raise ValueError(
                f"{where}: dicom_id {dicom!r} already has a split row at line "
                f"{split_line[dicom]}; expected one row per image"
            )
        split_of[dicom] = value
        split_line[dicom] = split_table.lines[i]

    label_of: dict[tuple[str, str], np.ndarray] = {}
    for i, row in enumerate(label_table.rows):
        where = label_table.where(i)
        key = (
            _id(row["subject_id"], f"{where}, column 'subject_id'"),
            _id(row["study_id"], f"{where}, column 'study_id'"),
        )
        if key in label_of:
            raise ValueError(f"{where}: study {key[1]} of subject {key[0]} appears twice")
        label_of[key] = np.array(
            [
                parse_chexpert_label(row[c], uncertainty, where=f"{where}, column {c!r}")
                for c in names
            ],
            dtype=np.float64,
        )

    parse_sections: Callable[[str], dict[str, str]] | None = None
    if rep_root is not None:
        from relaxclip.sentences import parse_report_sections

        parse_sections = parse_report_sections

    reports: dict[tuple[str, str], tuple[str | None, dict[str, str] | None]] = {}
    records: list[dict[str, Any]] = []
    missing_images: list[str] = []
    missing_reports: list[str] = []
    no_split: list[str] = []
    empty = np.full(len(names), np.nan)
    meta_line: dict[str, int] = {}
    for i, row in enumerate(meta_table.rows):
        where = meta_table.where(i)
        dicom = row["dicom_id"].strip()
        if dicom in meta_line:
            raise ValueError(
                f"{where}: dicom_id {dicom!r} already appears at line {meta_line[dicom]}; "
                "expected one row per image"
            )
        meta_line[dicom] = meta_table.lines[i]
        subject = _id(row["subject_id"], f"{where}, column 'subject_id'")
        study = _id(row["study_id"], f"{where}, column 'study_id'")
        if dicom not in split_of:
            no_split.append(dicom)
            continue
        image_split = split_of[dicom]
        if splits is not None and image_split not in splits:
            continue
        view = row.get("ViewPosition", "").strip() or None
        if view_set is not None and (view or "").upper() not in view_set:
            continue
        image = mimic_image_path(base, subject, study, dicom)
        if check_paths and not image.is_file():
            missing_images.append(str(image))
        key = (subject, study)
        if key not in reports:
            text: str | None = None
            sections: dict[str, str] | None = None
            if rep_root is not None and parse_sections is not None:
                rpath = mimic_report_path(rep_root, subject, study)
                if rpath.is_file():
                    text = read_text(rpath)
                    sections = parse_sections(text)
                elif check_paths:
                    missing_reports.append(str(rpath))
            reports[key] = (text, sections)
        text, sections = reports[key]
        has = key in label_of
        records.append(
            {
                "image_path": image,
                "dicom_id": dicom,
                "subject_id": subject,
                "study_id": study,
                "view_position": view,
                "split": image_split,
                "labels": label_of[key].copy() if has else empty.copy(),
                "label_names": names,
                "has_labels": has,
                "report": text,
                "report_sections": sections,
            }
        )
    if no_split:
        raise ValueError(
            f"{split_path}: {len(no_split)} dicom_id(s) of {meta_path.name} have no row in "
            f"column 'dicom_id' (first: {no_split[:3]})"
        )
    if missing_images:
        raise FileNotFoundError(
            f"{meta_path}: {len(missing_images)} image(s) for column 'dicom_id' do not exist "
            f"(first: {missing_images[:3]}); check root or pass check_paths=False"
        )
    if missing_reports:
        raise FileNotFoundError(
            f"reports_root: {len(missing_reports)} report(s) for column 'study_id' of {meta_path.name} "
            f"do not exist (first: {missing_reports[:3]})"
        )
    if not records:
        raise ValueError(
            f"{meta_path}: the filters kept none of its {len(meta_table.rows)} images "
            f"(split={sorted(splits) if splits is not None else None}, views="
            f"{sorted(view_set) if view_set is not None else None}); splits present: "
            f"{sorted(set(split_of.values()))}, views present: "
            f"{sorted({r.get('ViewPosition', '').strip() for r in meta_table.rows})}"
        )
    return records
