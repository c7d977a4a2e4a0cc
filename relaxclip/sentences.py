"""Radiology report sections and sentence splitting (Punkt with shipped parameters), offline.

Rules, invariants and measurements: ``docs/sentences.md``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from relaxclip._checks import check_type, describe

if TYPE_CHECKING:
    from nltk.tokenize.punkt import PunktSentenceTokenizer

__all__ = [
    "HEADER_ALIASES",
    "INVISIBLE_MARKS",
    "PREAMBLE_KEY",
    "parse_report_sections",
    "split_sentences",
]

#: Key of the text before the first recognised header (the whole report when there is none).
PREAMBLE_KEY = "preamble"

#: Invisible format characters removed before a text and a line-start header (a regex class body).
INVISIBLE_MARKS = "\ufeff\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
_LEADING_MARKS = re.compile(rf"[\s{INVISIBLE_MARKS}]*[{INVISIBLE_MARKS}]")


def strip_leading_marks(text: str) -> str:
    """``text`` without the invisible marks (and whitespace) before its first visible character."""
    m = _LEADING_MARKS.match(text)
    return text[m.end() :] if m else text


#: Canonical section name -> header spellings recognised (plurals, MIMIC-CXR typos, synonyms).
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "findings": (
        "FINDINGS",
        "FINDING",
        "FINDNGS",
        "FINDIGNS",
        "FINDINGS AND IMPRESSION",
        "FINDINGS AND IMPRESSIONS",
        "FINDINGS/IMPRESSION",
        "FINDINGS / IMPRESSION",
    ),
    "impression": (
        "IMPRESSION",
        "IMPRESSIONS",
        "IMPRESION",
        "IMPRESSSION",
        "IMPRESSON",
        "IMPESSION",
        "CONCLUSION",
        "CONCLUSIONS",
        "SUMMARY",
        "OPINION",
    ),
    "comparison": ("COMPARISON", "COMPARISONS", "PRIOR STUDY", "PRIOR STUDIES", "PRIORS"),
    "indication": (
        "INDICATION",
        "INDICATIONS",
        "CLINICAL INDICATION",
        "CLINICAL INDICATIONS",
        "REASON FOR EXAM",
        "REASON FOR EXAMINATION",
        "REASON FOR STUDY",
        "REASON",
    ),
    "history": (
        "HISTORY",
        "CLINICAL HISTORY",
        "CLINICAL INFORMATION",
        "CLINICAL DATA",
        "CLINICAL HX",
        "HX",
    ),
    "technique": ("TECHNIQUE", "TECHNIQUES", "PROCEDURE"),
    "examination": ("EXAMINATION", "EXAM", "STUDY", "TYPE OF EXAMINATION", "TYPE OF EXAM"),
    "recommendation": ("RECOMMENDATION", "RECOMMENDATIONS", "RECOMMENDATION(S)"),
    "notification": ("NOTIFICATION", "NOTIFICATIONS"),
    "wet_read": ("WET READ",),
    "addendum": ("ADDENDUM",),
}


def _build_header_regex() -> tuple[re.Pattern[str], dict[str, str]]:
    lookup: dict[str, str] = {}
    for key, variants in HEADER_ALIASES.items():
        for variant in variants:
            norm = " ".join(variant.upper().split())
            if norm in lookup:  # pragma: no cover - guards the table above
                raise AssertionError(f"header {variant!r} listed twice")
            lookup[norm] = key
    ordered = sorted(lookup, key=len, reverse=True)
    alt = "|".join(re.escape(v).replace(r"\ ", r"[ \t]+") for v in ordered)  # longest first
    pattern = (  # (a) line start, any case, colon; (c) upper case alone on its line;
        rf"^[ \t{INVISIBLE_MARKS}]*(?P<a>(?i:{alt}))[ \t]*:"
        rf"|^[ \t{INVISIBLE_MARKS}]*(?P<c>(?:{alt}))[ \t]*(?=\r?\n|\Z)"
        rf"|(?<!\S)(?P<b>(?:{alt}))[ \t]*:"  # (b) inline after whitespace, upper case, colon
    )
    return re.compile(pattern, re.MULTILINE), lookup


_HEADER_RE, _HEADER_LOOKUP = _build_header_regex()


def check_names(name: str, value: object, expected: str = "a sequence of str") -> tuple[str, ...]:
    """``value`` as a tuple of ``str``; a single ``str`` or any other type raises ``TypeError``."""
    out = tuple(check_type(name, value, Iterable, expected, exclude=str))
    if not all(isinstance(v, str) for v in out):
        raise TypeError(f"{name} must be {expected}, got {describe(value)}")
    return out


def parse_report_sections(text: str) -> dict[str, str]:
    """Split a radiology report into sections keyed by canonical lower-case names.

    Headers (:data:`HEADER_ALIASES`) are recognised as ``docs/sentences.md`` describes.

    Args:
        text: the report.

    Returns:
        A dict in order of first appearance of stripped section texts (a repeated section's
        parts joined by a blank line); text before the first header under :data:`PREAMBLE_KEY`.

    Raises:
        TypeError: ``text`` is not a ``str``.

    Example:
        >>> parse_report_sections("FINDINGS: Heart normal. IMPRESSION: No disease.")
        {'findings': 'Heart normal.', 'impression': 'No disease.'}
    """
    check_type("parse_report_sections: text", text, str, "str")
    text = strip_leading_marks(text)
    parts: dict[str, list[str]] = {}
    key = PREAMBLE_KEY
    start = 0
    for m in _HEADER_RE.finditer(text):
        chunk = text[start : m.start()].strip()
        if chunk or key != PREAMBLE_KEY:
            parts.setdefault(key, []).append(chunk)
        header = m.group("a") or m.group("b") or m.group("c")
        key = _HEADER_LOOKUP[" ".join(header.upper().split())]
        start = m.end()
    chunk = text[start:].strip()
    if chunk or key != PREAMBLE_KEY:
        parts.setdefault(key, []).append(chunk)
    return {k: "\n\n".join(p for p in v if p) for k, v in parts.items()}


#: Abbreviations shipped as Punkt parameters (lower case, no final period): never a sentence end.
ABBREVIATIONS: frozenset[str] = frozenset(
    {
        # titles and names
        "dr", "drs", "mr", "mrs", "ms", "prof", "st", "jr", "sr",
        # latin and general
        "e.g", "i.e", "eg", "ie", "etc", "vs", "v", "cf", "viz", "approx", "appx", "incl",
        "esp", "fig", "figs", "ref",
        # times
        "a.m", "p.m",
        # clinical shorthand written with a period
        "c/w", "w/o", "s/p", "r/o", "pt", "pts", "hx", "dx", "sx", "fx", "tx", "y/o",
        "a.p", "p.a", "ant", "post", "lat", "mid", "sup", "inf", "rt", "lt", "bilat",
    }
)  # fmt: skip


@functools.cache
def _punkt() -> PunktSentenceTokenizer:
    """Punkt with the shipped parameters, built on first use (importing nltk costs about a second)."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


# "word. Next": Punkt (shipped parameters) always breaks here unless the word is an abbreviation.
_EASY_BREAK = re.compile(r"(?<!\S)([A-Za-z]{2,})([.?!])\s+(?=[^\W_])")
# A superset of where Punkt finds a candidate boundary (nltk's period-context pattern).
_ANY_CANDIDATE = re.compile(r"[.?!](?:[)\";}\]*:@'({\[\u2018\u2019\u201c\u201d\xab\xbb!?]|\s+\S)")
# Hard boundaries: a blank line, "radiographs.. No", "XXXX.In the left", "zone A. Lungs clear".
_HARD = re.compile(
    r"(?P<blank>\n[^\S\n]*\n)"
    r"|(?<![.\s])\.\.(?P<dd>\s)"
    r"|(?<!\S)(?P<word>[A-Za-z]{2,})\.(?P<glued>[A-Z][a-z])"
    r"|(?<!\S)(?P<lword>[a-z]{2,})\s+[A-Z]\.(?P<letter>\s+)(?=[A-Z])"
)
_LETTER_QUICK = re.compile(r"[a-z]\s+[A-Z]\.\s+[A-Z]")
#: Words after which a number is a value, never a list marker ("grade 2. Recommend").
NUMBERED_WORDS: frozenset[str] = frozenset(
    {
        "grade", "stage", "type", "level", "class", "category", "zone", "segment", "rib", "ribs",
        "size", "score", "phase", "step", "series", "image", "images", "view", "views", "day",
        "days", "week", "weeks", "month", "months", "year", "years", "number", "no", "times",
        "x", "by", "of", "measuring", "measures", "vertebra", "vertebrae", "birads", "bi-rads",
        "version", "figure", "fig", "page", "bed", "room", "lumen", "french", "fr",
    }
)  # fmt: skip
# A list marker: 1-2 digits then "." or ")", a whole token, followed by whitespace and more text
# (group 2: the first character of that text).
_MARKER = re.compile(r"(?<!\S)(\d{1,2}[.)])(?=\s+(\S))")
_HAS_MARKER_CHAR = re.compile(r"\d[.)]")
_MARKER_ONLY = re.compile(r"\d{1,2}[.)]")
_END_PUNCT = frozenset(".!?:;")
_ALNUM = re.compile(r"[^\W_]")  # a character for which str.isalnum() is true
_GLUED_QUICK = re.compile(r"\.[A-Z]")


def _punkt_spans(text: str) -> Iterator[tuple[int, int]]:
    """Sentence spans of ``text`` (no blank lines, no list markers) as Punkt would give them."""
    start = 0
    for m in _EASY_BREAK.finditer(text):
        if m.group(2) == "." and m.group(1).lower() in ABBREVIATIONS:
            continue
        yield from _punkt_chunk(text, start, m.end(2))
        start = m.end()
    yield from _punkt_chunk(text, start, len(text))


def _punkt_chunk(text: str, start: int, stop: int) -> Iterator[tuple[int, int]]:
    chunk = text[start:stop]
    if not chunk.strip():
        return
    if _ANY_CANDIDATE.search(chunk) is None:
        yield start, stop
        return
    for s, e in _punkt().span_tokenize(chunk):
        yield start + s, start + e


def _marker_starts(text: str) -> list[int]:
    """Offsets where a list item starts (its marker), in order; see :func:`split_sentences`."""
    if _HAS_MARKER_CHAR.search(text) is None:
        return []
    starts = []
    last = -1  # number of the previous accepted marker
    for m in _MARKER.finditer(text):
        number = int(m.group(1)[:-1])
        j = m.start() - 1
        while j >= 0 and text[j].isspace():
            j -= 1
        if (
            j < 0
            or text[j] in _END_PUNCT
            or "\n" in text[j + 1 : m.start()]
            or (  # "1. Edema 2. Cardiomegaly", but not "grade 2. Recommend"
                number == last + 1
                and m.group(2).isupper()
                and _word_ending_at(text, j) not in NUMBERED_WORDS
            )
        ):
            starts.append(m.start())
            last = number
    return starts


def _word_ending_at(text: str, j: int) -> str:
    """The lower-cased run of letters and hyphens ending at ``text[j]`` (``""`` if none)."""
    i = j
    while i >= 0 and (text[i].isalpha() or text[i] == "-"):
        i -= 1
    return text[i + 1 : j + 1].lower()


def _split_segment(text: str, start: int, stop: int, out: list[tuple[int, int]]) -> None:
    """Append the spans of the segment ``text[start:stop]`` (a marker stays with its sentence)."""
    segment = text[start:stop]
    starts = _marker_starts(segment)
    bounds = sorted({0, *starts, len(segment)})
    marked = set(starts)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        item = segment[a:b]
        skip = 0
        if a in marked:
            m = _MARKER.match(segment, a)
            assert m is not None
            skip = len(m.group(1))
        first = True
        for s, e in _punkt_spans(item[skip:]):
            if not item[skip + s : skip + e].strip():
                continue
            out.append((start + a + (0 if first and skip else skip + s), start + a + skip + e))
            first = False
        if first and skip:  # marker followed only by whitespace: keep it (merged later)
            out.append((start + a, start + a + skip))


def _is_content(sentence: str) -> bool:
    if sentence[0].isalpha():  # fast path: most sentences start with a letter
        return True
    return _MARKER_ONLY.fullmatch(sentence) is None and _ALNUM.search(sentence) is not None


def _merge_fragments(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """The sentences of ``spans``; a punctuation-only or marker-only span joins a neighbour."""
    out: list[tuple[int, int]] = []
    pending: tuple[int, int] | None = None  # fragments before the first content, or a marker
    for a, b in spans:
        piece = " ".join(text[a:b].split())
        if _is_content(piece):
            out.append((pending[0], b) if pending else (a, b))
            pending = None
        elif out and not pending and _MARKER_ONLY.fullmatch(piece) is None:
            out[-1] = (out[-1][0], b)
        else:  # before the first content, or a marker: held for the next sentence
            pending = (pending[0], b) if pending else (a, b)
    if pending:
        if out:
            out[-1] = (out[-1][0], pending[1])
        else:
            out.append(pending)
    return [" ".join(text[a:b].split()) for a, b in out]


def split_sentences(text: str) -> list[str]:
    """Split radiology text into sentences with Punkt and radiology rules (``docs/sentences.md``).

    Args:
        text: any text (a report section).

    Returns:
        The sentences in order, each the next piece of ``text`` with whitespace runs collapsed;
        ``[]`` exactly when ``text`` is blank.

    Raises:
        TypeError: ``text`` is not a ``str``.

    Example:
        >>> split_sentences("1. Nodule 1.2 x 0.8 cm. 2. No effusion.")
        ['1. Nodule 1.2 x 0.8 cm.', '2. No effusion.']
    """
    check_type("split_sentences: text", text, str, "str")
    spans: list[tuple[int, int]] = []
    pos = 0
    text = strip_leading_marks(text).lstrip()
    hard = "\n" in text or ".." in text or _GLUED_QUICK.search(text) or _LETTER_QUICK.search(text)
    for m in _HARD.finditer(text) if hard else ():  # scan only where a hard boundary can be
        if m.group("blank") is not None:
            cut = m.start()
        elif m.group("dd") is not None:
            cut = m.start("dd")
        elif m.group("letter") is not None:
            if m.group("lword") in ABBREVIATIONS:
                continue
            cut = m.start("letter")
        elif m.group("word").lower() not in ABBREVIATIONS:
            cut = m.start("glued")
        else:
            continue
        _split_segment(text, pos, cut, spans)
        pos = cut
    _split_segment(text, pos, len(text), spans)
    return _merge_fragments(text, spans)
