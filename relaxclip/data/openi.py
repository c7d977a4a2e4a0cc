"""Reader for the Indiana University / Open-I chest X-ray report archive (``NLMCXR_reports.tgz``).

The archive holds one XML file per report (``ecgen-radiology/<n>.xml``, 3,955 reports). Each has
``<AbstractText Label="COMPARISON|INDICATION|FINDINGS|IMPRESSION">`` elements, MeSH terms under
``<MeSH><major>/<automatic>``, and ``<parentImage id="CXR<n>_...">`` elements for its images.
Licence of the data: CC BY-NC-ND 4.0 (read it in place; do not redistribute derived text).
Cite Demner-Fushman et al., JAMIA 2016;23(2):304-310.

Only the standard library is used (``tarfile``, ``xml.etree.ElementTree``).
"""

from __future__ import annotations

import os
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

__all__ = ["OPENI_SECTIONS", "parse_openi_xml", "read_openi_reports"]

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


def read_openi_reports(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every report of the Open-I archive ``NLMCXR_reports.tgz`` (or a directory of XMLs).

    Args:
        path: the ``.tgz``/``.tar``/``.tar.gz`` archive as distributed by Open-I, or a directory
            containing the extracted ``*.xml`` files (searched recursively).

    Returns:
        One record per XML file (3,955 for the full archive), sorted by report number (the ``<n>``
        in ``<n>.xml``), each as described in :func:`parse_openi_xml`: at least ``uid``,
        ``findings``, ``impression``, ``indication``, ``comparison`` (str), ``mesh`` and ``images``
        (list[str]). No report is dropped: a malformed XML raises.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is neither a tar archive nor a directory, holds no XML file,
            or one XML file is malformed (the member is named).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"read_openi_reports: path {str(p)!r} does not exist")
    records: list[dict[str, Any]] = []
    if p.is_dir():
        files = sorted(p.rglob("*.xml"), key=lambda f: _member_order(str(f)))
        for f in files:
            records.append(parse_openi_xml(f.read_bytes(), source=str(f.relative_to(p))))
    elif tarfile.is_tarfile(p):
        with tarfile.open(p, "r:*") as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".xml")]
            members.sort(key=lambda m: _member_order(m.name))
            for m in members:
                fh = tf.extractfile(m)
                if fh is None:  # pragma: no cover - isfile() members always have a file object
                    raise ValueError(f"read_openi_reports: cannot read member {m.name!r}")
                records.append(parse_openi_xml(fh.read(), source=m.name))
    else:
        raise ValueError(
            f"read_openi_reports: path {str(p)!r} must be a tar archive (.tgz) or a directory"
        )
    if not records:
        raise ValueError(f"read_openi_reports: no .xml report found in {str(p)!r}")
    return records
