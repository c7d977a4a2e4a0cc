"""Tests of the embedded synthetic benchmark (relaxclip.demo.synthetic)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxclip.demo.synthetic import (
    FINDING_TERMS,
    FINDINGS,
    NEGATION_CUES,
    SPLIT_NAMES,
    SYNTHETIC_FINDINGS,
    SyntheticCXRDataset,
    SyntheticReport,
    label_prevalence,
    make_synthetic_records,
    make_synthetic_reports,
    make_synthetic_splits,
    mentions,
)
from relaxclip.sampling import SentenceSampler

_HEADER = re.compile(r"^(?:FINDINGS: (?P<findings>.+) )?IMPRESSION: (?P<impression>.+)$")
_CUE = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in NEGATION_CUES) + r")\b")


def _sentences(report: str) -> list[str]:
    """The report's sentences, split as the sampler splits them (a list number such as "1." is
    part of its sentence)."""
    m = _HEADER.match(report)
    assert m is not None, report
    text = (m["findings"] or "") + " " + m["impression"]
    return [s.strip() for s in re.split(r"(?<=\.)(?<!\d\.)\s+", text.strip()) if s.strip()]


def _mentions(sentence: str) -> set[str]:
    low = sentence.lower()
    return {f for f, terms in FINDING_TERMS.items() if any(t in low for t in terms)}


def _negated(sentence: str) -> set[str]:
    """Mentioned findings that a negation word precedes (lexically denied in the sentence)."""
    low = sentence.lower()
    cue = _CUE.search(low)
    out = set()
    for f in _mentions(sentence):
        first = min(low.find(t) for t in FINDING_TERMS[f] if t in low)
        if cue is not None and cue.start() < first:
            out.add(f)
    return out


def _is_negated(sentence: str) -> bool:
    return bool(_negated(sentence))


def _check_consistency(record: dict, findings: tuple[str, ...]) -> None:
    """Lexical check of the report against the labels (independent of the generator's tags)."""
    labels = dict(zip(findings, record["labels"].tolist(), strict=True))
    positive_mentions: set[str] = set()
    for sentence in _sentences(record["report"]):
        mentioned = _mentions(sentence)
        assert mentioned <= set(findings), (sentence, findings)
        denied = _negated(sentence)
        for f in denied:
            assert labels[f] == 0.0, f"negated {f!r} is labelled positive: {record['report']}"
        positive_mentions |= mentioned - denied
        for f in mentioned - denied:
            assert labels[f] == 1.0, f"{f!r} mentioned positively but labelled 0: {sentence}"
    for f, v in labels.items():
        if v == 1.0:
            assert f in positive_mentions, f"positive {f!r} is never mentioned: {record['report']}"
    if any(labels.get(f) == 1.0 for f in ("atelectasis", "consolidation", "edema", "nodule")):
        assert "lungs are clear" not in record["report"].lower()
    if labels.get("cardiomegaly") == 1.0:
        assert "heart size is normal" not in record["report"].lower()


def _check_tags(text: SyntheticReport, record: dict, findings: tuple[str, ...]) -> None:
    """The generator's own tags: every positive stated present, nothing else; no positive
    denied; each tag agrees with the words of its sentence."""
    assert text.report == record["report"]
    labels = {f for f, v in zip(findings, record["labels"].tolist(), strict=True) if v == 1.0}
    assert set(text.positive) == labels
    present = set().union(*(s.present for s in text.sentences))
    absent = set().union(*(s.absent for s in text.sentences))
    assert present == labels, (present, labels, text.report)
    assert not absent & labels, (absent, labels, text.report)
    for s in text.sentences:
        assert (s.present | s.absent) <= set(findings), s
        mentioned, denied = _mentions(s.text), _negated(s.text)
        assert mentioned <= s.present | s.absent, s  # nothing named without a tag
        assert s.present <= mentioned - denied, s  # stated present by name, not denied
        assert mentioned & s.absent <= denied, s  # a named absent finding is denied


def test_records_shapes_and_types() -> None:
    recs = make_synthetic_records(5, image_size=32, seed=1)
    assert len(recs) == 5
    for i, r in enumerate(recs):
        assert r["image"].shape == (1, 32, 32) and r["image"].dtype == torch.float32
        assert torch.isfinite(r["image"]).all()
        assert r["labels"].shape == (len(SYNTHETIC_FINDINGS),)
        assert r["labels"].dtype == torch.float32
        assert set(r["labels"].tolist()) <= {0.0, 1.0}
        assert _HEADER.match(r["report"]) is not None, r["report"]
        assert r["index"] == i


def test_deterministic_and_prefix_stable() -> None:
    a = make_synthetic_records(6, "val", image_size=32, seed=7)
    b = make_synthetic_records(6, "val", image_size=32, seed=7)
    short = make_synthetic_records(3, "val", image_size=32, seed=7)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"])
        assert torch.equal(x["labels"], y["labels"])
        assert x["report"] == y["report"]
    for x, y in zip(short, a[:3], strict=True):
        assert torch.equal(x["image"], y["image"]) and x["report"] == y["report"]


def test_seeds_and_splits_differ() -> None:
    s = make_synthetic_splits(8, 8, 8, image_size=32, seed=0)
    other = make_synthetic_records(8, "train", image_size=32, seed=1)
    reports = [r["report"] for r in s.train]
    assert reports != [r["report"] for r in s.val]
    assert reports != [r["report"] for r in s.test]
    assert reports != [r["report"] for r in other]
    assert not torch.equal(s.train[0]["image"], s.val[0]["image"])


def test_label_report_consistency_many() -> None:
    recs = make_synthetic_records(400, image_size=16, seed=3)
    texts = make_synthetic_reports(400, seed=3)
    for r, text in zip(recs, texts, strict=True):
        _check_consistency(r, SYNTHETIC_FINDINGS)
        _check_tags(text, r, SYNTHETIC_FINDINGS)
    # the report really describes several findings at once and uses every kind of sentence
    n_multi = sum(int(r["labels"].sum().item() >= 2) for r in recs)
    assert n_multi > 40
    all_sentences = [s for r in recs for s in _sentences(r["report"])]
    assert any(_is_negated(s) for s in all_sentences)
    assert any(not _mentions(s) for s in all_sentences)  # normal / irrelevant statements


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), split=st.sampled_from(list(SPLIT_NAMES)))
def test_label_report_consistency_property(seed: int, split: str) -> None:
    recs = make_synthetic_records(4, split, image_size=16, seed=seed)
    for r, text in zip(recs, make_synthetic_reports(4, split, seed=seed), strict=True):
        _check_consistency(r, SYNTHETIC_FINDINGS)
        _check_tags(text, r, SYNTHETIC_FINDINGS)


def test_findings_subset() -> None:
    subset = ("pleural effusion", "cardiomegaly")
    recs = make_synthetic_records(200, image_size=16, seed=0, findings=subset)
    texts = make_synthetic_reports(200, seed=0, findings=subset)
    for r, text in zip(recs, texts, strict=True):
        assert r["labels"].shape == (2,)
        _check_consistency(r, subset)
        _check_tags(text, r, subset)
    assert label_prevalence(recs).min() > 0


def test_prevalences_realistic_and_images_carry_signal() -> None:
    recs = make_synthetic_records(600, image_size=32, seed=0)
    prev = label_prevalence(recs)
    assert ((prev > 0.03) & (prev < 0.5)).all(), prev
    normal = torch.stack([r["labels"] for r in recs]).sum(1) == 0
    assert 0.2 < normal.float().mean() < 0.6
    # effusion brightens the lung bases: the lower-lung mean intensity separates the classes
    k = SYNTHETIC_FINDINGS.index("pleural effusion")
    images = torch.stack([r["image"][0] for r in recs])
    base = images[:, 20:27, 4:28].mean((1, 2))
    y = torch.stack([r["labels"][k] for r in recs]).bool()
    assert base[y].mean() > base[~y].mean()


def test_sampler_compatible() -> None:
    recs = make_synthetic_records(4, image_size=16, seed=0)
    batch = SentenceSampler(seed=0)(recs)
    assert batch["image"].shape == (4, 1, 16, 16)
    assert batch["labels"].shape == (4, len(SYNTHETIC_FINDINGS))
    for text, r in zip(batch["text"], recs, strict=True):
        assert text in _sentences(r["report"])
    full = SentenceSampler(train=False)(recs)["text"]
    for text, r in zip(full, recs, strict=True):
        assert text == " ".join(_sentences(r["report"]))
    ds = SyntheticCXRDataset(recs)
    assert len(ds) == 4 and ds[2] is recs[2]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="findings"):
        make_synthetic_records(2, findings=["pneumonia"])
    with pytest.raises(ValueError, match="findings"):
        make_synthetic_records(2, findings=[])
    with pytest.raises(ValueError, match="duplicates"):
        make_synthetic_records(2, findings=["edema", "edema"])
    with pytest.raises(TypeError, match="findings"):
        make_synthetic_records(2, findings="edema")
    with pytest.raises(ValueError, match="n must be"):
        make_synthetic_records(-1)
    with pytest.raises(TypeError, match="n must be an int"):
        make_synthetic_records(True)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_records(1, image_size=8)
    with pytest.raises(ValueError, match="split"):
        make_synthetic_records(1, "dev")
    with pytest.raises(TypeError, match="records"):
        SyntheticCXRDataset(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        label_prevalence([])


def test_findings_table_is_the_one_place() -> None:
    """Every per-finding fact comes from one FindingSpec record of FINDINGS."""
    assert SYNTHETIC_FINDINGS == tuple(spec.name for spec in FINDINGS)
    assert FINDING_TERMS == {spec.name: spec.terms for spec in FINDINGS}
    for spec in FINDINGS:
        for form in spec.negated:
            assert _mentions(form) == {spec.name}, form
            assert _negated(f"No {form}.") == {spec.name}, form
        for noun in (*spec.nouns, *spec.impression_nouns):
            assert _mentions(noun) == {spec.name}, noun
        assert len(spec.descriptors) == 3
        given = spec.prevalence.given
        assert given is None or given[0] in SYNTHETIC_FINDINGS


def test_every_phrasing_mentions_its_finding() -> None:
    """Positive sentences for every finding, severity, side and lobe (many random fillings of
    the frames): each names its finding, no other, and is not negated."""
    from relaxclip.demo.synthetic import _Finding, _Writer

    writer = _Writer(SYNTHETIC_FINDINGS)
    rng = np.random.default_rng(0)
    for spec in FINDINGS:
        seen = set()
        for severity in range(3):
            for side in ("left", "right", "bilateral"):
                for lobe in ("upper", "lower"):
                    f = _Finding(spec.name, severity, side, lobe, 0.3, 0.2)
                    for _ in range(40):
                        s = writer._positive(rng, f)
                        seen.add(s.text)
                        assert s.present == {spec.name} and not s.absent, s
                        assert _mentions(s.text) == {spec.name}, s.text
                        assert not _is_negated(s.text), s.text
                        item = writer._impression_item(rng, f)
                        assert _mentions(item) == {spec.name} and not _is_negated(item), item
        assert len(seen) > 100, (spec.name, len(seen))  # rich phrasing, not a few templates


def test_grammar_articles_and_doubled_words() -> None:
    """No "a" before a vowel, no doubled word, no empty slot or stray brace, every sentence
    capitalised and ending with one period."""
    bad_article = re.compile(r"\ba [aeiou]", re.IGNORECASE)
    doubled = re.compile(r"\b(\w+) \1\b", re.IGNORECASE)
    for text in make_synthetic_reports(1500, seed=5):
        for s in text.sentences:
            assert not bad_article.search(s.text), s.text
            assert not doubled.search(s.text), s.text
            assert "{" not in s.text and "}" not in s.text and "  " not in s.text, s.text
            assert s.text[:1].isupper() or s.text[:1].isdigit(), s.text
            assert s.text.endswith(".") and not s.text.endswith(".."), s.text
            assert " ," not in s.text and ",," not in s.text, s.text
            assert s.text.lower().count("without") <= 1, s.text
            assert not s.text.endswith(", infection."), s.text


def test_text_has_its_own_stream() -> None:
    """The text does not depend on image_size; make_synthetic_reports gives the records' text;
    findings outside the label set are never mentioned by a tagged sentence either."""
    a = make_synthetic_records(30, "test", image_size=16, seed=2)
    b = make_synthetic_records(30, "test", image_size=32, seed=2)
    texts = make_synthetic_reports(30, "test", seed=2)
    assert [r["report"] for r in a] == [r["report"] for r in b] == [t.report for t in texts]
    for r, t in zip(a, texts, strict=True):
        assert mentions(t.report) <= set(SYNTHETIC_FINDINGS)
        _check_tags(t, r, SYNTHETIC_FINDINGS)


def test_report_shape_like_real_archives() -> None:
    """About 13 % of reports have no FINDINGS section; clean normal studies are often written
    from a shared pool of whole-report templates, so whole reports repeat (as in real archives);
    the template pool is the same in every split."""
    texts = make_synthetic_reports(1500, seed=0)
    no_findings = np.mean([not t.findings for t in texts])
    assert 0.07 < no_findings < 0.2, no_findings
    reports = [t.report for t in texts]
    repeated = sum(c for c in Counter(reports).values() if c > 1) / len(reports)
    assert 0.1 < repeated < 0.35, repeated
    test_reports = {t.report for t in make_synthetic_reports(1500, "test", seed=0)}
    assert Counter(reports).most_common(1)[0][0] in test_reports


def test_unilateral_findings_are_never_bilateral() -> None:
    from relaxclip.demo.synthetic import _attributes

    rng = np.random.default_rng(0)
    for spec in FINDINGS:
        sides = {_attributes(rng, spec.name).side for _ in range(200)}
        assert ("bilateral" in sides) != spec.unilateral, (spec.name, sides)


def test_findings_table_file_is_checked() -> None:
    """FINDINGS is read from the package data file; a broken entry is a clear error naming the
    file and the finding (unknown drawer, missing/unknown/mistyped field, duplicate name)."""
    import copy
    import importlib.resources
    import json

    from relaxclip.demo import synthetic

    text = importlib.resources.files("relaxclip.demo").joinpath("findings.json").read_text("utf-8")
    entries = json.loads(text)
    assert [e["name"] for e in entries] == list(SYNTHETIC_FINDINGS)
    assert synthetic._findings_table(text, "t.json") == FINDINGS
    assert FINDINGS[0].draw is synthetic._DRAWERS[entries[0]["draw"]]

    def broken(change: Callable[[list[dict[str, Any]]], None]) -> str:
        bad = copy.deepcopy(entries)
        change(bad)
        return json.dumps(bad)

    cases: list[tuple[Callable[[list[dict[str, Any]]], None], str]] = [
        (lambda t: t[2].update(draw="kidney"), r"'consolidation'.*unknown drawer 'kidney'"),
        (lambda t: t[1].pop("negated"), r"'cardiomegaly'.*missing fields \['negated'\]"),
        (lambda t: t[0].update(colour="red"), r"'atelectasis'.*unknown fields \['colour'\]"),
        (lambda t: t[3].update(nouns="edema"), r"'edema'\.nouns: expected a list of strings"),
        (lambda t: t[4].update(layer="top"), r"'pleural effusion'\.layer: expected one of"),
        (lambda t: t[5].update(unilateral=1), r"'pneumothorax'\.unilateral: expected true"),
        (lambda t: t[6].update(measure=[[0.4, 0.9]]), r"'nodule'\.measure: expected a list of 3"),
        (lambda t: t[6]["prevalence"].pop("base"), r"'nodule'\.prevalence: expected an object"),
        (lambda t: t[6].update(name="edema"), r"finding names must be unique"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=r"t\.json: .*" + message):
            synthetic._findings_table(broken(change), "t.json")
