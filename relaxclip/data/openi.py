"""Reader for the Indiana University / Open-I report archive (``NLMCXR_reports.tgz``).

Layout, licence and empty reports: ``docs/data.md`` and ``docs/sentences.md``.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaxclip._checks import check_bool, check_type
from relaxclip.data.labels import as_path

__all__ = ["OPENI_SECTIONS", "is_empty_report", "parse_openi_xml", "read_openi_reports"]

logger = logging.getLogger(__name__)

#: ``AbstractText`` labels read into the record, mapped to their lower-case keys.
OPENI_SECTIONS: tuple[str, ...] = ("comparison", "indication", "findings", "impression")

_NUMBER = re.compile(r"(\d+)")


def _text(el: ET.Element) -> str:
    """Whole text content of ``el`` (including children), whitespace-stripped."""
    return "".join(el.itertext()).strip()


def parse_openi_xml(data: bytes | str, *, source: str = "<xml>") -> dict[str, Any]:
    """Parse one Open-I report XML document into a record.

    Args:
        data: the XML document (``bytes`` or ``str``).
        source: a name for the document in messages and in the record (the archive member).

    Returns:
        ``uid`` (``<uId id=...>`` stripped, e.g. ``"CXR1"``); ``comparison``, ``indication``,
        ``findings``, ``impression`` (stripped text, ``""`` when absent); ``mesh`` (``<major>``
        then ``<automatic>`` MeSH terms), ``mesh_major``; ``images`` (``<parentImage id=...>``,
        the image file being ``<id>.png``); ``source``.

    Raises:
        TypeError: ``data`` is not ``bytes``/``str`` or ``source`` not ``str``.
        ValueError: not well-formed XML, or no ``<uId id=...>`` with a non-blank id (``source`` named).

    Example:
        >>> parse_openi_xml(b'<eCitation><uId id="CXR1"/></eCitation>')["uid"]
        'CXR1'
    """
    check_type("parse_openi_xml: data", data, (bytes, str), "an XML document (bytes or str)")
    check_type("parse_openi_xml: source", source, str, "a str")
    try:
        root = ET.fromstring(data)
        uid_el = root.find("uId")
    except ET.ParseError as exc:
        raise ValueError(f"parse_openi_xml: {source} is not well-formed XML: {exc}") from exc
    uid = (uid_el.get("id") or "").strip() if uid_el is not None else ""
    if not uid:
        raise ValueError(f"parse_openi_xml: {source} has no <uId id=...> with a non-blank id")
    record: dict[str, Any] = {"uid": uid, **dict.fromkeys(OPENI_SECTIONS, "")}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().lower()
        if label in OPENI_SECTIONS:
            record[label] = "\n".join(t for t in (record[label], _text(el)) if t)
    mesh = root.find("MeSH")
    major = [_text(e) for e in mesh.findall("major")] if mesh is not None else []
    auto = [_text(e) for e in mesh.findall("automatic")] if mesh is not None else []
    record["mesh"] = [t for t in major + auto if t]
    record["mesh_major"] = [t for t in major if t]
    record["images"] = [
        str(el.get("id")) for el in root.iter("parentImage") if el.get("id") is not None
    ]
    record["source"] = source
    return record


def _order(member: tuple[str, bytes]) -> tuple[int, str]:
    """Sort key of a ``(name, data)`` member: the ``<n>`` of ``<n>.xml``, then the name."""
    m = _NUMBER.search(os.path.basename(member[0]))
    return (int(m.group(1)) if m else -1, member[0])


def is_empty_report(record: Mapping[str, Any]) -> bool:
    """True when none of ``OPENI_SECTIONS`` of an Open-I record holds any text (nothing to sample)."""
    return not any(str(record.get(key) or "").strip() for key in OPENI_SECTIONS)


def _read_members(p: Path) -> list[tuple[str, bytes]]:
    """``(member name, bytes)`` of every ``.xml`` file (any letter case) of ``p``, sorted."""
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(".xml")]
        return sorted(((str(f.relative_to(p)), f.read_bytes()) for f in files), key=_order)
    try:
        is_tar = tarfile.is_tarfile(p)
    except (EOFError, zlib.error, OSError):
        is_tar = True  # a truncated gzip stream: fail below, naming the path
    if not is_tar:
        raise ValueError(
            f"read_openi_reports: path {str(p)!r} must be a tar archive (.tgz) or a directory"
        )
    out: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(p, "r:*") as tf:
            for m in tf:
                fh = tf.extractfile(m) if m.isfile() and m.name.lower().endswith(".xml") else None
                if fh is not None:
                    out.append((m.name, fh.read()))
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"read_openi_reports: {str(p)!r} is truncated or corrupt after {len(out)} report(s) "
            f"({type(exc).__name__}: {exc}); expected a complete .tgz archive"
        ) from exc
    return sorted(out, key=_order)


def read_openi_reports(
    path: str | os.PathLike[str], *, drop_empty: bool = False
) -> list[dict[str, Any]]:
    """Read every report of the Open-I archive ``NLMCXR_reports.tgz`` (or a directory of XMLs).

    Args:
        path: the ``.tgz``/``.tar`` archive, or a directory searched recursively for ``.xml``.
        drop_empty: leave out (and log) reports with no text (:func:`is_empty_report`).

    Returns:
        One record (:func:`parse_openi_xml`) per XML file, sorted by the ``<n>`` of ``<n>.xml``.

    Raises:
        TypeError: ``path`` is not a ``str``/``os.PathLike`` or ``drop_empty`` not a bool.
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a tar archive or directory, a truncated archive, no or a malformed XML
            (member named), a ``uid`` in two files, or ``drop_empty=True`` keeping no report.
    """
    p = as_path("read_openi_reports: path", path)
    drop_empty = check_bool("read_openi_reports: drop_empty", drop_empty)
    if not p.exists():
        raise FileNotFoundError(f"read_openi_reports: path {str(p)!r} does not exist")
    records = [parse_openi_xml(data, source=name) for name, data in _read_members(p)]
    if not records:
        raise ValueError(f"read_openi_reports: no .xml report found in {str(p)!r}")
    source_of: dict[str, str] = {}
    for rec in records:
        if rec["uid"] in source_of:
            raise ValueError(
                f"read_openi_reports: uid {rec['uid']!r} appears in both "
                f"{source_of[rec['uid']]!r} and {rec['source']!r} of {str(p)!r}; expected one "
                "report per uid"
            )
        source_of[rec["uid"]] = rec["source"]
    if not drop_empty:
        return records
    empty = [rec["uid"] for rec in records if is_empty_report(rec)]
    kept = [rec for rec in records if not is_empty_report(rec)]
    if not kept:
        raise ValueError(
            f"read_openi_reports: drop_empty=True kept none of the {len(records)} reports of "
            f"{str(p)!r}: none has text in any of {OPENI_SECTIONS}; expected an archive with text"
        )
    if empty:
        shown = ", ".join(empty[:10]) + (", ..." if len(empty) > 10 else "")
        what = f"{len(empty)} of {len(records)} reports with no text in any section ({shown})"
        logger.warning("read_openi_reports: drop_empty=True dropped %s", what)
    return kept
