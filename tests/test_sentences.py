"""Tests for relaxclip.sentences: report sections and radiology sentence splitting."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

from relaxclip import sentences as S
from relaxclip.sentences import (
    ABBREVIATIONS,
    HEADER_ALIASES,
    PREAMBLE_KEY,
    parse_report_sections,
    split_sentences,
)

# ----------------------------------------------------------------------------- sections

MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Mild
 bibasilar atelectasis.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_mimic_style_report() -> None:
    got = parse_report_sections(MIMIC_STYLE)
    assert list(got) == [
        PREAMBLE_KEY,
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]
    assert got[PREAMBLE_KEY] == "FINAL REPORT"
    assert got["examination"] == "CHEST (PA AND LAT)"
    assert got["comparison"] == "None."
    assert got["findings"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax.  Mild\n"
        " bibasilar atelectasis."
    )
    assert got["impression"] == "No acute cardiopulmonary process."


def test_inline_headers_in_running_text() -> None:
    got = parse_report_sections("FINDINGS: Heart is normal. IMPRESSION: No acute disease.")
    assert got == {"findings": "Heart is normal.", "impression": "No acute disease."}


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("FINDING:", "findings"),
        ("FINDINGS :", "findings"),
        ("IMPRESSIONS:", "impression"),
        ("IMPRESION:", "impression"),
        ("CONCLUSION:", "impression"),
        ("Conclusions:", "impression"),
        ("findings:", "findings"),
        ("CLINICAL HISTORY:", "history"),
        ("REASON FOR EXAMINATION:", "indication"),
        ("FINDINGS AND IMPRESSION:", "findings"),
        ("IMPRESSION", "impression"),  # alone on its line
    ],
)
def test_header_variants_at_line_start(header: str, key: str) -> None:
    got = parse_report_sections(f"PA view.\n  {header}\nLungs are clear.\n")
    assert got == {PREAMBLE_KEY: "PA view.", key: "Lungs are clear."}


def test_lower_case_inline_word_is_not_a_header() -> None:
    text = "No change in comparison: stable. The impression is normal."
    assert parse_report_sections(text) == {PREAMBLE_KEY: text}
    wrapped = "Unchanged since the prior\nstudy\nand no effusion."  # a wrapped word, not a header
    assert parse_report_sections(wrapped) == {PREAMBLE_KEY: wrapped}


def test_report_without_header_is_kept_whole() -> None:
    assert parse_report_sections("  Heart size normal.\nLungs clear. ") == {
        PREAMBLE_KEY: "Heart size normal.\nLungs clear."
    }
    assert parse_report_sections("") == {}
    assert parse_report_sections(" \n ") == {}


def test_repeated_and_empty_sections() -> None:
    got = parse_report_sections("FINDINGS:\nIMPRESSION: one.\nIMPRESSIONS: two.")
    assert got == {"findings": "", "impression": "one.\n\ntwo."}


def test_sections_type_error() -> None:
    with pytest.raises(TypeError, match="text must be str"):
        parse_report_sections(b"FINDINGS: x")  # type: ignore[arg-type]


_VARIANTS = [(key, v) for key, vs in HEADER_ALIASES.items() for v in vs]
_BODY = st.text(alphabet="abcdefghij klmnop.,;()0123456789-/\n\t", max_size=40)


def _body_ok(body: str) -> bool:
    header_words = {" ".join(v.lower().split()) for _, v in _VARIANTS}
    return all(" ".join(line.split()) not in header_words for line in body.splitlines())


@settings(max_examples=200, deadline=None)
@given(
    preamble=_BODY,
    parts=st.lists(
        st.tuples(st.sampled_from(_VARIANTS), _BODY, st.booleans(), st.booleans()),
        max_size=6,
    ),
)
def test_sections_round_trip(
    preamble: str, parts: list[tuple[tuple[str, str], str, bool, bool]]
) -> None:
    """A report assembled from known sections parses back to them, nothing lost."""
    assume(_body_ok(preamble) and all(_body_ok(b) for _, b, _, _ in parts))
    text = preamble
    expected: dict[str, list[str]] = {}
    if preamble.strip():
        expected[PREAMBLE_KEY] = [preamble.strip()]
    for (key, variant), body, inline, lower in parts:
        header = variant.lower() if lower and not inline else variant  # colon follows
        sep = " " if inline else "\n"
        text += f"{sep}{header}: {body}"
        expected.setdefault(key, []).append(body.strip())
    got = parse_report_sections(text)
    assert got == {k: "\n\n".join(p for p in v if p) for k, v in expected.items()}


# ----------------------------------------------------------------------------- sentences


def _nonspace(text: str) -> str:
    return "".join(text.split())


# Invisible marks the splitter drops before the first visible character (written out here,
# independently of relaxclip.sentences.INVISIBLE_MARKS).
_MARKS = frozenset(
    "\ufeff\u00ad\u180e"
    + "".join(map(chr, [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065)]))
    + "".join(map(chr, range(0x2066, 0x2070)))
)


def _visible(text: str) -> str:
    """``text`` from its first character that is neither whitespace nor an invisible mark."""
    i = 0
    while i < len(text) and (text[i].isspace() or text[i] in _MARKS):
        i += 1
    return text[i:]


def _check_invariants(text: str, sents: list[str]) -> None:
    assert _nonspace("".join(sents)) == _nonspace(_visible(text))
    assert (sents == []) == (_visible(text).strip() == "")
    for s in sents:
        assert s and s == s.strip() and s == " ".join(s.split())
    if len(sents) > 1:  # a lone marker or punctuation is a sentence only when nothing else is
        for s in sents:
            assert any(c.isalnum() for c in s), (text, sents)
            assert S._MARKER_ONLY.fullmatch(s) is None, (text, sents)
    if not any(c.isalnum() for c in text):
        assert len(sents) <= 1
    _assert_verbatim_pieces(text, sents)


def _assert_verbatim_pieces(text: str, sents: list[str]) -> None:
    """Each sentence is the next piece of the text, whitespace collapsed: nothing is added, not
    even a space (".!:" used to come back as ". ! :"); between two sentences the text has one
    space or none ("XXXX.In" is cut without one)."""
    flat = " ".join(_visible(text).split())
    pos = 0
    for s in sents:
        assert flat.startswith(s, pos), (text, sents, flat[pos:])
        pos += len(s)
        if pos < len(flat) and flat[pos] == " ":
            pos += 1
    assert pos == len(flat), (text, sents)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # numbered lists: the marker stays with its sentence
        (
            "1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.",
            ["1. Stable mild cardiomegaly.", "2. Hyperexpanded but clear lungs."],
        ),
        (
            "IMPRESSION:\n1) Effusion\n2) Atelectasis",
            ["IMPRESSION:", "1) Effusion", "2) Atelectasis"],
        ),
        (
            "1. Left effusion. Right effusion too.\n\n2. Cardiomegaly.",
            ["1. Left effusion.", "Right effusion too.", "2. Cardiomegaly."],
        ),
        (
            "1. Edema 2. Stable cardiomegaly 3. Low volumes",
            ["1. Edema", "2. Stable cardiomegaly", "3. Low volumes"],
        ),
        ("Grade 2. No effusion. Grade 3 lesion", ["Grade 2.", "No effusion.", "Grade 3 lesion"]),
        # decimals, sizes
        (
            "Nodule measures 1.2 x 0.8 cm. Tip is 2.5 cm above the carina.",
            ["Nodule measures 1.2 x 0.8 cm.", "Tip is 2.5 cm above the carina."],
        ),
        # times, dates, abbreviations
        (
            "Dr. Smith was paged at 7:34 p.m. on 12/03/2012. Findings c/w pneumonia",
            ["Dr. Smith was paged at 7:34 p.m. on 12/03/2012.", "Findings c/w pneumonia"],
        ),
        (
            "Small opacity, e.g. atelectasis vs. pneumonia, approx. 2 cm. No effusion.",
            ["Small opacity, e.g. atelectasis vs. pneumonia, approx. 2 cm.", "No effusion."],
        ),
        ("Seen on 03.12.2012. Stable.", ["Seen on 03.12.2012.", "Stable."]),
        # de-identification tokens
        (
            "Normal chest x-XXXX. Dr. ___ was notified at ___. XXXX XXXX are normal",
            ["Normal chest x-XXXX.", "Dr. ___ was notified at ___.", "XXXX XXXX are normal"],
        ),
        # semicolons are not boundaries; newlines are whitespace; blank lines are boundaries
        ("No effusion; no pneumothorax.", ["No effusion; no pneumothorax."]),
        (
            "heart and mediastinum are\nstable. lungs clear",
            ["heart and mediastinum are stable.", "lungs clear"],
        ),
        ("Heart size normal\n\nLungs clear", ["Heart size normal", "Lungs clear"]),
        # typos seen in Open-I: doubled period, period glued to the next word
        ("Effusion.. No pneumothorax.", ["Effusion..", "No pneumothorax."]),
        (
            "Clear right lung XXXX.In the left lobe a nodule.",
            ["Clear right lung XXXX.", "In the left lobe a nodule."],
        ),
        # fragments without letters attach to a neighbour
        ("No effusion. . Stable.", ["No effusion. .", "Stable."]),
        ("Cardiomegaly. 2.", ["Cardiomegaly. 2."]),
        ("... Heart normal.", ["... Heart normal."]),
        ("?", ["?"]),
        ("", []),
    ],
)
def test_split_examples(text: str, expected: list[str]) -> None:
    got = split_sentences(text)
    assert got == expected
    _check_invariants(text, got)


def test_split_type_error() -> None:
    with pytest.raises(TypeError, match="text must be str"):
        split_sentences(None)  # type: ignore[arg-type]


_PATHOLOGICAL = st.text(alphabet=" .?!;:,()\"'\n\t-1209aAbZxX_/…。", max_size=120)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=200), _PATHOLOGICAL))
@example(text="1.\n2.")
@example(text="a. 1. b")
@example(text="..\n\n1)")
@example(text="Ab.. Cd")
@example(text=".!:")
@example(text="CXR.; No effusion. ...")
def test_split_invariants(text: str) -> None:
    sents = split_sentences(text)
    _check_invariants(text, sents)
    assert split_sentences(text) == sents  # deterministic


def _plain_punkt() -> PunktSentenceTokenizer:
    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


_PLAIN = _plain_punkt()


def _stripped(pieces: list[str]) -> list[str]:
    return [p.strip() for p in pieces if p.strip()]


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        _PATHOLOGICAL,
        st.lists(
            st.sampled_from(
                [
                    "Heart",
                    "normal.",
                    "Dr.",
                    "e.g.",
                    "x.",
                    "2.",
                    "2.5",
                    "cm.",
                    "No",
                    "no",
                    "a.m.",
                    "(see",
                    "above.)",
                    '"Quote."',
                    "XXXX.",
                    "vs.",
                    "A.",
                    "?",
                    "lungs!",
                    "T4.",
                ]
            ),
            max_size=30,
        ).map(" ".join),
    )
)
def test_fast_path_equals_punkt(text: str) -> None:
    """The shortcut for plain 'word. Next' boundaries gives exactly Punkt's spans."""
    fast = _stripped([text[a:b] for a, b in S._punkt_spans(text)])
    assert fast == _stripped(_PLAIN.tokenize(text))


@pytest.mark.parametrize(
    "text",
    [
        "." * 100_000,
        "1. " * 20_000,
        "a." * 50_000,
        "a. " * 10_000,
        "e.g. " * 5_000,
        "? " * 10_000,
        "FINDINGS: " * 10_000,
        "\n\n" * 50_000,
        ("Heart normal. " * 5_000) + "x" * 50_000,
        "XXXX.In " * 10_000,
    ],
)
def test_never_hangs_on_long_inputs(text: str) -> None:
    t0 = time.perf_counter()
    sents = split_sentences(text)
    parse_report_sections(text)
    assert time.perf_counter() - t0 < 10.0  # about 1 s here; quadratic would be minutes
    assert _nonspace("".join(sents)) == _nonspace(text)


def test_runs_offline_without_nltk_data() -> None:
    """No nltk.download and no nltk data files are needed."""
    code = (
        "import nltk, nltk.data\n"
        "def boom(*a, **k): raise AssertionError('nltk.download called')\n"
        "nltk.download = boom\n"
        "nltk.data.path[:] = []\n"
        "from relaxclip.sentences import split_sentences\n"
        "print(split_sentences('Dr. X came. 1. Stable.'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"NLTK_DATA": "/nonexistent", "PATH": ""},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['Dr. X came.', '1. Stable.']"


# ----------------------------------------------------------------------------- issue 13: marks, corners

_MARK_LIST = sorted(_MARKS)


@pytest.mark.parametrize("mark", ["\ufeff", "\u200b", "\u200e", "\u2060", "\ufeff\u200b "])
def test_leading_invisible_marks_do_not_hide_headers(mark: str) -> None:
    """A UTF-8 byte-order mark (or another invisible mark) before the first header used to put
    FINDINGS into the preamble, so the sampler trained on the impression only."""
    text = "FINDINGS: Heart is enlarged.\nIMPRESSION: No acute disease."
    expected = {"findings": "Heart is enlarged.", "impression": "No acute disease."}
    assert parse_report_sections(mark + text) == expected
    # at the start of a later line (files concatenated with their marks)
    assert parse_report_sections(f"Heart is enlarged.\n{mark}IMPRESSION: No acute disease.") == {
        PREAMBLE_KEY: "Heart is enlarged.",
        "impression": "No acute disease.",
    }
    assert split_sentences(mark + "Heart normal. Lungs clear.") == ["Heart normal.", "Lungs clear."]
    assert split_sentences(mark) == []


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.lists(st.sampled_from([*_MARK_LIST, " ", "\n"]), min_size=1, max_size=4).map("".join),
    text=st.one_of(_PATHOLOGICAL, st.text(max_size=80)),
)
@example(prefix=" ", text=".!:")  # was ['.! :'] with the space, ['. ! :'] without
def test_leading_marks_are_ignored(prefix: str, text: str) -> None:
    assert split_sentences(prefix + text) == split_sentences(_visible(text))
    assert parse_report_sections(prefix + text) == parse_report_sections(_visible(text))


def test_repeated_section_parts_are_never_joined_into_one_sentence() -> None:
    """Two IMPRESSION blocks without full stops used to give 'no pneumothorax stable effusion'."""
    report = "IMPRESSION: no pneumothorax\nFINDINGS: Heart normal.\nIMPRESSION: stable effusion"
    impression = parse_report_sections(report)["impression"]
    assert split_sentences(impression) == ["no pneumothorax", "stable effusion"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a number after a value word ends the sentence; it is not list item 2
        (
            "1. Small effusion, grade 2. Recommend follow-up.",
            ["1. Small effusion, grade 2.", "Recommend follow-up."],
        ),
        ("1. Nodule, stage 2. No effusion.", ["1. Nodule, stage 2.", "No effusion."]),
        # ... but continued numbering after another word still starts an item
        ("1. Edema 2. Cardiomegaly", ["1. Edema", "2. Cardiomegaly"]),
        (
            "1. Small effusion 2. Recommend follow-up.",
            ["1. Small effusion", "2. Recommend follow-up."],
        ),
        # a single capital letter after a lower-case word, before a capitalised word
        ("zone A. Lungs clear.", ["zone A.", "Lungs clear."]),
        ("Low vitamin D. Normal heart.", ["Low vitamin D.", "Normal heart."]),
        # initials of names are not boundaries; nor after a shipped abbreviation
        ("Dr. John A. Smith was paged.", ["Dr. John A. Smith was paged."]),
        ("Seen by pt A. Jones", ["Seen by pt A. Jones"]),
        ("zone A. lungs clear.", ["zone A. lungs clear."]),
    ],
)
def test_splitter_corner_cases(text: str, expected: list[str]) -> None:
    got = split_sentences(text)
    assert got == expected
    _check_invariants(text, got)
