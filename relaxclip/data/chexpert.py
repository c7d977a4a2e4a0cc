"""Readers for CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` and the test set.

Label coding in CheXpert CSVs: ``1`` positive, ``0`` negative, ``-1`` uncertain, blank
unmentioned. The **uncertainty policy** maps ``-1``:

* ``"ignore"`` (default) → ``NaN``: the label is treated like an unmentioned one and is
  excluded per label by ``relaxclip.metrics`` (``nan_policy="omit"``);
* ``"ones"`` → ``1.0`` (U-Ones); ``"zeros"`` → ``0.0`` (U-Zeros).

Blank (unmentioned) is always ``NaN``; map it yourself (e.g. ``np.nan_to_num``) if your
training treats unmentioned as negative.

Record keys (image-level, ``read_chexpert``): ``image_path`` (Path), ``patient_id``,
``study_id`` (``"patient00001/study1"``), ``view`` (``Frontal``/``Lateral`` or None),
``ap_pa``, ``sex``, ``age`` (str or None, as in the CSV), ``labels`` (float64 ``(K,)``),
``label_names`` (tuple), ``report`` (always None: CheXpert has no reports).

Test set layouts (``read_chexpert_test``): the 500-study radiologist test set as released
in ``cheXpert-test-set-labels`` (``groundtruth.csv`` with a ``Study`` column such as
``test/patient64741/study1`` and images under ``<image_root>/test/patient64741/study1/*.jpg``),
or an image-level CSV with a ``Path`` column (CheXlocalize ``test_labels.csv``). Both return
one record per study with ``image_paths`` (list of Path).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from relaxclip.data.labels import CHEXPERT_LABELS, check_labels, existing_file, read_csv_rows

UncertaintyPolicy = Literal["ignore", "ones", "zeros"]

__all__ = [
    "UncertaintyPolicy",
    "parse_chexpert_label",
    "read_chexpert",
    "read_chexpert_test",
]

_UNCERTAIN = {"ignore": math.nan, "ones": 1.0, "zeros": 0.0}
_PATIENT = re.compile(r"^patient\d+$")
_STUDY = re.compile(r"^study\d+$")


def _check_policy(uncertainty: str) -> float:
    if uncertainty not in _UNCERTAIN:
        raise ValueError(f"uncertainty: expected one of {sorted(_UNCERTAIN)}, got {uncertainty!r}")
    return _UNCERTAIN[uncertainty]


def parse_chexpert_label(raw: str, uncertainty: UncertaintyPolicy, *, where: str = "") -> float:
    """Map one CheXpert label cell to a float: ``1``→1.0, ``0``→0.0, blank→NaN, ``-1``→policy.

    Accepts ``"1"``, ``"1.0"``, ``"0"``, ``"0.0"``, ``"-1"``, ``"-1.0"`` and blank; anything else
    raises ``ValueError`` naming ``where`` (e.g. ``"train.csv line 3, column 'Edema'"``).
    """
    value_if_uncertain = _check_policy(uncertainty)
    s = raw.strip()
    if s == "":
        return math.nan
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"{where}: expected 1, 0, -1 or blank, got {raw!r}") from None
    if v == 1.0:
        return 1.0
    if v == 0.0:
        return 0.0
    if v == -1.0:
        return value_if_uncertain
    raise ValueError(f"{where}: expected 1, 0, -1 or blank, got {raw!r}")


def _patient_study(rel: str, where: str) -> tuple[str, str]:
    parts = Path(rel).parts
    for i in range(len(parts) - 1):
        if _PATIENT.match(parts[i]) and _STUDY.match(parts[i + 1]):
            return parts[i], f"{parts[i]}/{parts[i + 1]}"
    raise ValueError(f"{where}: cannot find 'patientNNNNN/studyN' in {rel!r}")


def _label_vector(
    row: dict[str, str], names: Sequence[str], uncertainty: UncertaintyPolicy, where: str
) -> np.ndarray:
    return np.array(
        [parse_chexpert_label(row[c], uncertainty, where=f"{where}, column {c!r}") for c in names],
        dtype=np.float64,
    )


def _missing_error(
    csv_path: Path, column: str, missing: list[tuple[int, Path]]
) -> FileNotFoundError:
    shown = ", ".join(f"line {ln}: {p}" for ln, p in missing[:3])
    return FileNotFoundError(
        f"{csv_path}: {len(missing)} path(s) in column {column!r} do not exist ({shown}"
        f"{', ...' if len(missing) > 3 else ''}); pass the right image_root or check_paths=False"
    )


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

    ``image_root``: the directory the ``Path`` column is relative to; default: the parent of
    the CSV's folder (the CSVs sit in ``CheXpert-v1.0-small/`` and their paths start with
    ``CheXpert-v1.0-small/``). ``labels``: which CheXpert observations, in this order
    (unknown names raise). ``frontal_only`` keeps rows whose ``Frontal/Lateral`` is
    ``Frontal`` in any letter case (explicit filter; the column must exist; keeping no row
    raises ``ValueError`` listing the values the column holds). The CSV must be UTF-8 (a
    byte-order mark is fine) with unique column names and at least one data row; errors
    name the file and the line where the offending record starts. ``check_paths``: every image must
    exist, else ``FileNotFoundError`` naming the CSV, the column and the first missing paths.
    """
    path = existing_file(csv_path, name="csv_path")
    names = check_labels(labels, CHEXPERT_LABELS, what="CheXpert labels")
    _check_policy(uncertainty)
    table = read_csv_rows(path, ["Path", *names])
    if frontal_only and "Frontal/Lateral" not in table.header:
        raise ValueError(f"{path}: frontal_only=True needs the column 'Frontal/Lateral'")
    root = Path(image_root) if image_root is not None else path.parent.parent
    if image_root is not None and not root.is_dir():
        raise FileNotFoundError(f"image_root: directory {root} does not exist")
    records: list[dict[str, Any]] = []
    missing: list[tuple[int, Path]] = []
    for i, row in enumerate(table.rows):
        line = table.lines[i]
        where = table.where(i)
        view = row.get("Frontal/Lateral") or None
        if frontal_only and (view or "").strip().lower() != "frontal":
            continue
        rel = row["Path"]
        if not rel:
            raise ValueError(f"{where}: empty column 'Path'")
        patient, study = _patient_study(rel, f"{where}, column 'Path'")
        image = root / rel
        if check_paths and not image.is_file():
            missing.append((line, image))
        records.append(
            {
                "image_path": image,
                "patient_id": patient,
                "study_id": study,
                "view": view,
                "ap_pa": row.get("AP/PA") or None,
                "sex": row.get("Sex") or None,
                "age": row.get("Age") or None,
                "labels": _label_vector(row, names, uncertainty, where),
                "label_names": names,
                "report": None,
            }
        )
    if missing:
        raise _missing_error(path, "Path", missing)
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

    * ``Study`` column (``groundtruth.csv``, 500 studies): images are the files matching
      ``image_glob`` in ``image_root / Study`` (sorted by name); a study folder with no image
      raises ``FileNotFoundError`` naming the CSV and the row when ``check_paths``.
    * ``Path`` column (image-level labels): rows are read as by ``read_chexpert`` and grouped
      by study with ``relaxclip.data.dataset.group_by_study`` (labels of a study's images
      must agree).

    Record keys: ``study_id``, ``patient_id``, ``image_paths`` (list of Path), ``labels``,
    ``label_names``, ``report`` (None).
    """
    path = existing_file(csv_path, name="csv_path")
    names = check_labels(labels, CHEXPERT_LABELS, what="CheXpert labels")
    _check_policy(uncertainty)
    root = Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"image_root: directory {root} does not exist")
    table = read_csv_rows(path, [])
    header = table.header
    if "Path" in header:
        from relaxclip.data.dataset import group_by_study

        images = read_chexpert(
            path, root, labels=names, uncertainty=uncertainty, check_paths=check_paths
        )
        return group_by_study(images)
    if "Study" not in header:
        raise ValueError(f"{path}: missing column 'Study' (or 'Path'); header is {header}")
    absent = [c for c in names if c not in header]
    if absent:
        raise ValueError(f"{path}: missing column(s) {absent}; header is {header}")
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    missing: list[tuple[int, Path]] = []
    for i, row in enumerate(table.rows):
        line = table.lines[i]
        where = table.where(i)
        study_rel = row["Study"].strip().rstrip("/")
        if not study_rel:
            raise ValueError(f"{where}: empty column 'Study'")
        patient, study = _patient_study(study_rel, f"{where}, column 'Study'")
        if study in seen:
            raise ValueError(f"{where}: study {study!r} appears twice in column 'Study'")
        seen.add(study)
        folder = root / study_rel
        paths = sorted(folder.glob(image_glob)) if folder.is_dir() else []
        if check_paths and not paths:
            missing.append((line, folder / image_glob))
        records.append(
            {
                "study_id": study,
                "patient_id": patient,
                "image_paths": paths,
                "labels": _label_vector(row, names, uncertainty, where),
                "label_names": names,
                "report": None,
            }
        )
    if missing:
        raise _missing_error(path, "Study", missing)
    return records
