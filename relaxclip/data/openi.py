"""Reader for the Indiana University / Open-I chest X-ray report archive (``NLMCXR_reports.tgz``).

The archive holds one XML file per report (``ecgen-radiology/<n>.xml``, 3,955 reports). Each has
``<AbstractText Label="COMPARISON|INDICATION|FINDINGS|IMPRESSION">`` elements, MeSH terms under
``<MeSH><major>/<automatic>``, and ``<parentImage id="CXR<n>_...">`` elements for its images.
Licence of the data: CC BY-NC-ND 4.0 (read it in place; do not redistribute derived text).
Cite Demner-Fushman et al., JAMIA 2016;23(2):304-310.

Only the standard library is used (``tarfile``, ``xml.etree.ElementTree``).

Empty reports: 28 of the 3,955 reports have no text in any of the four sections (25 of them
have images and NegBio gold labels), so a sentence sampler finds nothing to draw from them.
``read_openi_reports`` keeps them by default (nothing is dropped silently);
``read_openi_reports(path, drop_empty=True)`` leaves them out and logs how many and which.
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

__all__ = ["OPENI_SECTIONS", "is_empty_report", "parse_openi_xml", "read_openi_reports"]

logger = logging.getLogger(__name__)

#: ``AbstractText`` labels read into the record, mapped to their lower-case keys.
OPENI_SECTIONS: tuple[str, ...] = ("comparison", "indication", "findings", "impression")

_NUMBER = re.compile(r"(\d+)")


def _text(el: ET.Element | None) -> str:
    """Whole text content of ``el`` (including children), whitespace-stripped; '' when absent."""
    if el is None:
        return ""
    return "".join(el.itertext()).strip()


def parse_openi_xml(data: bytes | str, *, source: str = "<xml>") -> dict[str, Any]:
    """Parse one Open-I report XML document into a record.

    Returns a dict with keys:

    * ``uid`` (str): the ``<uId id=...>`` value, e.g. ``"CXR1"``;
    * ``comparison``, ``indication``, ``findings``, ``impression`` (str): the section text,
      whitespace-stripped, ``""`` when the section is absent or empty (Open-I has many reports
      without findings or impression);
    * ``mesh`` (list[str]): MeSH terms, ``<major>`` terms first then ``<automatic>``, in document
      order, e.g. ``["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"]``;
    * ``mesh_major`` (list[str]): the ``<major>`` terms only;
    * ``images`` (list[str]): ``<parentImage id=...>`` values in document order
      (e.g. ``"CXR1_1_IM-0001-3001"``; the image file is ``<id>.png`` in the Open-I image archive);
    * ``source`` (str): ``source`` as given (the member name in the archive).

    Raises:
        ValueError: if the document is not well-formed XML or has no ``uId``, naming ``source``.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"parse_openi_xml: {source} is not well-formed XML: {exc}") from exc
    uid_el = root.find("uId")
    uid = uid_el.get("id") if uid_el is not None else None
    if not uid:
        raise ValueError(f"parse_openi_xml: {source} has no <uId id=...> element")
    record: dict[str, Any] = {"uid": uid}
    sections = dict.fromkeys(OPENI_SECTIONS, "")
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().lower()
        if label in sections:
            text = _text(el)
            sections[label] = f"{sections[label]}\n{text}".strip() if sections[label] else text
    record.update(sections)
    mesh_el = root.find("MeSH")
    major = [_text(e) for e in mesh_el.findall("major")] if mesh_el is not None else []
    auto = [_text(e) for e in mesh_el.findall("automatic")] if mesh_el is not None else []
    record["mesh"] = [t for t in major + auto if t]
    record["mesh_major"] = [t for t in major if t]
    record["images"] = [
        str(el.get("id")) for el in root.iter("parentImage") if el.get("id") is not None
    ]
    record["source"] = source
    return record


def _member_order(name: str) -> tuple[int, str]:
    """Sort key: the report number in ``ecgen-radiology/<n>.xml``, then the name."""
    m = _NUMBER.search(os.path.basename(name))
    return (int(m.group(1)) if m else -1, name)


def is_empty_report(record: Mapping[str, Any]) -> bool:
    """True when none of ``OPENI_SECTIONS`` of an Open-I record holds any text.

    Such a report has nothing to sample a sentence from. The real archive holds 28 of them
    (3,955 reports; 25 of the 28 have images and NegBio gold labels), e.g. ``CXR16``.
    """
    return not any(str(record.get(key) or "").strip() for key in OPENI_SECTIONS)


def _is_xml(name: str) -> bool:
    return name.lower().endswith(".xml")


def _read_members(p: Path) -> list[tuple[str, bytes]]:
    """``(member name, bytes)`` of every ``.xml`` file (any letter case) in the tar ``p``."""
    out: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(p, "r:*") as tf:
            for m in tf:
                if not (m.isfile() and _is_xml(m.name)):
                    continue
                fh = tf.extractfile(m)
                if fh is None:  # pragma: no cover - isfile() members always have a file object
                    raise ValueError(f"read_openi_reports: cannot read member {m.name!r}")
                out.append((m.name, fh.read()))
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"read_openi_reports: {str(p)!r} is truncated or corrupt after {len(out)} report(s) "
            f"({type(exc).__name__}: {exc}); expected a complete .tgz archive"
        ) from exc
    return out


def read_openi_reports(
    path: str | os.PathLike[str], *, drop_empty: bool = False
) -> list[dict[str, Any]]:
    """Read every report of the Open-I archive ``NLMCXR_reports.tgz`` (or a directory of XMLs).

    Args:
        path: the ``.tgz``/``.tar``/``.tar.gz`` archive as distributed by Open-I, or a directory
            containing the extracted ``*.xml`` files (searched recursively). Member names are
            matched case-insensitively (``.xml`` and ``.XML``).
        drop_empty: leave out the reports with no text in any section (see
            :func:`is_empty_report`; 28 in the real archive). The number dropped and their
            uids are logged at WARNING level on the ``relaxclip.data.openi`` logger. Default
            ``False``: every report is returned, empty ones included (with ``""`` sections).

    Returns:
        One record per XML file (3,955 for the full archive, 3,927 with ``drop_empty=True``),
        sorted by report number (the ``<n>`` in ``<n>.xml``), each as described in
        :func:`parse_openi_xml`: at least ``uid``, ``findings``, ``impression``,
        ``indication``, ``comparison`` (str), ``mesh`` and ``images`` (list[str]). Nothing else
        is dropped: a malformed XML raises.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is neither a tar archive nor a directory, is a truncated or
            corrupt archive (the path is named), holds no XML file, one XML file is
            malformed (the member is named), or two files carry the same ``uid`` (both named).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"read_openi_reports: path {str(p)!r} does not exist")
    if p.is_dir():
        files = sorted(
            (f for f in p.rglob("*") if f.is_file() and _is_xml(f.name)),
            key=lambda f: _member_order(str(f)),
        )
        members = [(str(f.relative_to(p)), f.read_bytes()) for f in files]
    elif _looks_like_tar(p):
        members = sorted(_read_members(p), key=lambda m: _member_order(m[0]))
    else:
        raise ValueError(
            f"read_openi_reports: path {str(p)!r} must be a tar archive (.tgz) or a directory"
        )
    records = [parse_openi_xml(data, source=name) for name, data in members]
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
    if drop_empty:
        empty = [rec["uid"] for rec in records if is_empty_report(rec)]
        if empty:
            logger.warning(
                "read_openi_reports: drop_empty=True dropped %d of %d reports with no text in "
                "any section (%s%s)",
                len(empty),
                len(records),
                ", ".join(empty[:10]),
                ", ..." if len(empty) > 10 else "",
            )
            records = [rec for rec in records if not is_empty_report(rec)]
    return records


def _looks_like_tar(p: Path) -> bool:
    """``tarfile.is_tarfile``, with a truncated gzip stream counted as a tar (it is read, and
    then fails with the path named) rather than as "not an archive"."""
    try:
        return tarfile.is_tarfile(p)
    except (EOFError, zlib.error, OSError):
        return True
