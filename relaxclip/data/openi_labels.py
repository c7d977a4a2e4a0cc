"""Open-I gold-standard labels (NegBio ``openi_gld_std14.csv``) and their join with reports."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from relaxclip._checks import check_choice
from relaxclip.data import labels as tables
from relaxclip.data.labels import OPENI_LABELS

__all__ = ["OpenIJoin", "join_openi", "read_openi_labels"]


def read_openi_labels(
    csv_path: str | os.PathLike[str], *, labels: Sequence[str] = OPENI_LABELS
) -> list[dict[str, Any]]:
    """One record per CSV row: ``uid`` (str), ``labels`` (float64 ``(K,)`` 0/1),
    ``label_names``. Values other than 0/1 and duplicated uids raise ``ValueError`` naming
    the file, line and column."""
    path = tables.existing_file(csv_path, name="csv_path")
    names = tables.check_labels(labels, OPENI_LABELS, what="Open-I labels")
    table = tables.read_csv_rows(path, ["filename", *names])
    tables.unique_column(table, "filename", "report")
    records: list[dict[str, Any]] = []
    for i, row in enumerate(table.rows):
        where = table.where(i)
        uid = row["filename"].strip()
        if not uid:
            raise ValueError(f"{where}: empty column 'filename'")
        tables.check_cells(row, names, {"0", "1", "0.0", "1.0"}.__contains__, where, "0 or 1")
        vec = np.array([float(row[n].strip()) for n in names], dtype=np.float64)
        records.append({"uid": uid, "labels": vec, "label_names": names})
    return records


@dataclass(frozen=True)
class OpenIJoin:
    """Result of ``join_openi``: the joined ``records`` (label-file order) and the uids that
    had no partner on either side."""

    records: list[dict[str, Any]]
    labels_without_report: tuple[str, ...]
    reports_without_labels: tuple[str, ...]


def join_openi(
    label_records: Iterable[Mapping[str, Any]],
    reports: Iterable[Mapping[str, Any]],
    *,
    missing: Literal["raise", "report"] = "raise",
) -> OpenIJoin:
    """Join label records with report records on ``uid`` (report keys + labels, label_names).

    A labelled uid without a report raises ``ValueError`` (``missing="raise"``) or is listed in
    ``labels_without_report`` (``"report"``); a uid on two records of one side raises.
    """
    check_choice("missing", missing, ("raise", "report"))
    by_uid = _by_uid("reports", reports, ("uid",))
    labelled = _by_uid("label_records", label_records, ("uid", "labels"))
    out: list[dict[str, Any]] = []
    lacking: list[str] = []
    for uid, lab in labelled.items():
        if uid not in by_uid:
            lacking.append(uid)
            continue
        out.append({**by_uid[uid], "labels": lab["labels"], "label_names": lab.get("label_names")})
    if lacking and missing == "raise":
        raise ValueError(
            f"label_records: {len(lacking)} uid(s) have no report (first: {lacking[:5]}); "
            "pass missing='report' to list them instead"
        )
    extra = tuple(u for u in by_uid if u not in labelled)
    return OpenIJoin(out, tuple(lacking), extra)


def _by_uid(name: str, records: object, keys: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """``uid -> record`` of records holding ``keys``; a uid seen twice raises naming the second."""
    out: dict[str, Mapping[str, Any]] = {}
    for i, rec in enumerate(tables.check_records(name, records, keys)):
        if rec["uid"] in out:
            raise ValueError(f"{name}[{i}]: uid {rec['uid']!r} appears twice")
        out[rec["uid"]] = rec
    return out
