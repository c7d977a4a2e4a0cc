"""Tests of the embedded synthetic benchmark (relaxclip.demo.synthetic)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxclip.demo.synthetic import (
    FINDING_TERMS,
    FINDINGS,
    NEGATION_CUES,
    SYNTHETIC_FINDINGS,
    SyntheticCXRDataset,
    label_prevalence,
    make_synthetic_records,
    make_synthetic_splits,
)
from relaxclip.sampling import SentenceSampler

_HEADER = re.compile(r"^FINDINGS: (?P<findings>.+) IMPRESSION: (?P<impression>.+)$")


def _sentences(report: str) -> list[str]:
    m = _HEADER.match(report)
    assert m is not None, report
    text = m["findings"] + " " + m["impression"]
    return [s.strip() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def _mentions(sentence: str) -> set[str]:
    low = sentence.lower()
    return {f for f, terms in FINDING_TERMS.items() if any(t in low for t in terms)}


def _is_negated(sentence: str) -> bool:
    return sentence.lower().startswith(NEGATION_CUES)


def _check_consistency(record: dict, findings: tuple[str, ...]) -> None:
    labels = dict(zip(findings, record["labels"].tolist(), strict=True))
    positive_mentions: set[str] = set()
    for sentence in _sentences(record["report"]):
        mentioned = _mentions(sentence)
        assert mentioned <= set(findings), (sentence, findings)
        if _is_negated(sentence):
            for f in mentioned:
                assert labels[f] == 0.0, f"negated {f!r} is labelled positive: {record['report']}"
        else:
            positive_mentions |= mentioned
            for f in mentioned:
                assert labels[f] == 1.0, f"{f!r} mentioned positively but labelled 0: {sentence}"
    for f, v in labels.items():
        if v == 1.0:
            assert f in positive_mentions, f"positive {f!r} is never mentioned: {record['report']}"
    if any(labels.get(f) == 1.0 for f in ("atelectasis", "consolidation", "edema", "nodule")):
        assert "lungs are clear" not in record["report"].lower()
    if labels.get("cardiomegaly") == 1.0:
        assert "heart size is normal" not in record["report"].lower()


def test_records_shapes_and_types() -> None:
    recs = make_synthetic_records(5, image_size=32, seed=1)
    assert len(recs) == 5
    for i, r in enumerate(recs):
        assert r["image"].shape == (1, 32, 32) and r["image"].dtype == torch.float32
        assert torch.isfinite(r["image"]).all()
        assert r["labels"].shape == (len(SYNTHETIC_FINDINGS),)
        assert r["labels"].dtype == torch.float32
        assert set(r["labels"].tolist()) <= {0.0, 1.0}
        assert r["report"].startswith("FINDINGS: ") and " IMPRESSION: " in r["report"]
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
    for r in recs:
        _check_consistency(r, SYNTHETIC_FINDINGS)
    # the report really describes several findings at once and uses every kind of sentence
    n_multi = sum(int(r["labels"].sum().item() >= 2) for r in recs)
    assert n_multi > 40
    all_sentences = [s for r in recs for s in _sentences(r["report"])]
    assert any(_is_negated(s) for s in all_sentences)
    assert any(not _mentions(s) for s in all_sentences)  # normal / irrelevant statements


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), split=st.sampled_from(["train", "val", "test"]))
def test_label_report_consistency_property(seed: int, split: str) -> None:
    for r in make_synthetic_records(4, split, image_size=16, seed=seed):
        _check_consistency(r, SYNTHETIC_FINDINGS)


def test_findings_subset() -> None:
    subset = ("pleural effusion", "cardiomegaly")
    recs = make_synthetic_records(200, image_size=16, seed=0, findings=subset)
    for r in recs:
        assert r["labels"].shape == (2,)
        _check_consistency(r, subset)
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
        for sentence in spec.negations:
            assert _is_negated(sentence) and _mentions(sentence) == {spec.name}, sentence
        given = spec.prevalence.given
        assert given is None or given[0] in SYNTHETIC_FINDINGS


def test_every_phrasing_mentions_its_finding() -> None:
    from relaxclip.demo.synthetic import _Finding, _words

    for spec in FINDINGS:
        for severity in range(3):
            for side in ("left", "right", "bilateral"):
                for lobe in ("upper", "lower"):
                    f = _Finding(spec.name, severity, side, lobe, 0.3, 0.2)
                    for sentence in (t.format(**_words(f)) for t in spec.say):
                        assert _mentions(sentence) == {spec.name}, sentence
                        assert not _is_negated(sentence), sentence


def test_unilateral_findings_are_never_bilateral() -> None:
    from relaxclip.demo.synthetic import _attributes

    rng = np.random.default_rng(0)
    for spec in FINDINGS:
        sides = {_attributes(rng, spec.name).side for _ in range(200)}
        assert ("bilateral" in sides) != spec.unilateral, (spec.name, sides)
