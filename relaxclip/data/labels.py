"""Label names (in the public label files' column order) and CSV helpers shared by the readers."""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaxclip._checks import check_type
from relaxclip.sentences import check_names, strip_leading_marks

#: The 14 CheXpert observations (CheXpert's and MIMIC-CXR-JPG's CSV column order).
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

#: The 5 CheXpert competition pathologies (Irvin et al. 2019).
CHEXPERT_COMPETITION_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

#: The 14 ChestX-ray14 findings as the NIH label files order and spell them.
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

#: Columns of the Open-I gold standard (NegBio ``openi_gld_std14.csv``).
OPENI_LABELS: tuple[str, ...] = CHESTXRAY14_LABELS + ("normal",)


def check_labels(labels: Iterable[str], known: Sequence[str], *, what: str) -> tuple[str, ...]:
    """``labels`` as a tuple; empty, unknown (``what`` names the set) or repeated names raise."""
    out = check_names("labels", labels, "a sequence of label names (str)")
    if not out:
        raise ValueError(f"labels must hold at least one of the {what}, got an empty selection")
    unknown = [name for name in out if name not in known]
    if unknown:
        raise ValueError(f"labels: unknown {what} {unknown}; expected names from {list(known)}")
    if len(set(out)) < len(out):
        dup = sorted({name for name in out if out.count(name) > 1})
        raise ValueError(f"labels must not repeat a name, got duplicated names {dup}")
    return out


def read_text(path: Path) -> str:
    """``path`` (``.gz`` decompressed) as UTF-8 without leading marks; ValueError naming a line."""
    try:
        if path.suffix != ".gz":
            raw = path.read_bytes()
        else:
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        what = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: truncated or corrupt gzip file ({what})") from exc
    try:
        return strip_leading_marks(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"{path}: not UTF-8 text (byte {raw[exc.start : exc.start + 1]!r} at line {line}, "
            f"offset {exc.start}); expected a UTF-8 file (re-save it as UTF-8)"
        ) from exc


def as_path(name: str, path: object) -> Path:
    """``Path(path)`` of a ``str`` or ``os.PathLike`` (``TypeError`` naming ``name`` otherwise)."""
    return Path(
        check_type(name, path, (str, os.PathLike), "a path (str or os.PathLike)", exclude=bytes)
    )


def existing_file(path: str | os.PathLike[str], *, name: str, folder: bool = False) -> Path:
    """``Path(path)`` after checking it is an existing file (a directory with ``folder=True``)."""
    p = as_path(name, path)
    if not (p.is_dir() if folder else p.is_file()):
        raise FileNotFoundError(f"{name}: {'directory' if folder else 'file'} {p} does not exist")
    return p


def optional_folder(path: str | os.PathLike[str] | None, *, name: str) -> Path | None:
    """``None``, or ``Path(path)`` after checking it is an existing directory."""
    return None if path is None else existing_file(path, name=name, folder=True)


def check_found(source: Path, what: str, column: str, paths: Iterable[Path], hint: str) -> None:
    """Raise ``FileNotFoundError`` for ``paths`` of ``column`` that are no files (three named)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:3])) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(
            f"{source}: {len(missing)} {what}(s) in column {column!r} do not exist ({shown}); {hint}"
        )


@dataclass(frozen=True)
class CsvTable:
    """A CSV read by :func:`read_csv_rows`; ``lines[i]``: the file line where row ``i`` starts."""

    path: Path
    header: list[str]
    rows: list[dict[str, str]]
    lines: list[int]

    def where(self, i: int) -> str:
        """``"<path> line <n>"`` for row ``i``."""
        return f"{self.path} line {self.lines[i]}"


def read_csv_rows(path: Path, required: Sequence[str]) -> CsvTable:
    """A UTF-8 CSV (or ``.csv.gz``) with a header, blank lines skipped (before it too);
    ``ValueError`` naming the file and line for bad text, a missing or repeated column, a ragged
    row or no data row."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header: list[str] = []
    try:
        while not header:
            header = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: empty file, expected a CSV header") from None
    except csv.Error as exc:
        raise ValueError(f"{path} line {reader.line_num}: {exc}") from exc
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ValueError(
            f"{path}: column name(s) {dup} appear more than once in the header; expected "
            "unique column names"
        )
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    start = reader.line_num + 1
    try:
        for values in reader:
            if values and len(values) != len(header):
                raise ValueError(
                    f"{path}: line {start} has {len(values)} fields, header has {len(header)}"
                )
            if values:
                rows.append(dict(zip(header, values, strict=True)))
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ValueError(f"{path} line {start}: {exc}") from exc
    if not rows:
        raise ValueError(f"{path}: the CSV has a header but no data row; expected at least one row")
    return CsvTable(path, header, rows, lines)


def unique_column(table: CsvTable, column: str, what: str) -> dict[str, int]:
    """``value -> line`` of ``column`` (values stripped); a value on two rows raises naming both."""
    seen: dict[str, int] = {}
    for i, row in enumerate(table.rows):
        value = row[column].strip()
        if value in seen:
            raise ValueError(
                f"{table.where(i)}: {column!r} {value!r} already appears at line {seen[value]}; "
                f"expected one row per {what}"
            )
        seen[value] = table.lines[i]
    return seen


def check_cells(
    row: dict[str, str], columns: Iterable[str], ok: Callable[[str], bool], where: str, what: str
) -> None:
    """``ValueError`` ``"<where>, column 'c': expected <what>, ..."`` for the first cell not ok."""
    bad = next((c for c in columns if not ok(row[c].strip())), None)
    if bad is not None:
        raise ValueError(f"{where}, column {bad!r}: expected {what}, got {row[bad]!r}")


def check_records(
    name: str, records: object, keys: Sequence[str], *, sequence: bool = False
) -> list[Mapping[str, Any]]:
    """``records`` as a list of mappings holding ``keys`` (errors name ``name[i]``)."""
    kind, expected = (Sequence, "a sequence") if sequence else (Iterable, "an iterable")
    expected += " of record mappings"
    out = list(check_type(name, records, kind, expected, exclude=(str, Mapping)))
    for i, rec in enumerate(out):
        check_type(f"{name}[{i}]", rec, Mapping, "a record mapping")
    for i, rec in enumerate(out):
        absent = next((key for key in keys if key not in rec), None)
        if absent is not None:
            raise ValueError(f"{name}[{i}]: missing key {absent!r}")
    return out


def find_table(root: Path, stem: str) -> Path:
    """``root/stem.csv`` or ``root/stem.csv.gz``, whichever exists (``FileNotFoundError`` otherwise)."""
    for candidate in (root / f"{stem}.csv", root / f"{stem}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: neither {stem}.csv nor {stem}.csv.gz exists")
