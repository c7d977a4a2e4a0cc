"""Tests for relaxclip.sampling.SentenceSampler (the sentence-sampling collate_fn)."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import random
import subprocess
import sys
from collections import Counter
from itertools import combinations
from typing import Any

import numpy as np
import pytest
import torch
from _shared import needs_shared, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

import relaxclip.sentence_pool as sampling_mod
from relaxclip.sampling import SentenceSampler, group_text, sample_sentences, text_group_ids
from relaxclip.sentence_pool import SentencePool
from relaxclip.sentences import HEADER_ALIASES, PREAMBLE_KEY, split_sentences


def _sentence(i: int, j: int) -> str:
    return f"Finding {i} number {j} is seen."


def _report(i: int, n: int) -> str:
    return " ".join(_sentence(i, j) for j in range(n))


class WordTokenizer:
    """A word-level tokenizer callable: list[str] -> LongTensor (B, L), like open_clip's."""

    def __init__(self, length: int = 16) -> None:
        self.length = length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [sum(map(ord, w)) % 997 + 1 for w in t.split()][: self.length]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


class FakeHF:
    """Mimics a HF tokenizer's call: model_input_names, kwargs, a mapping of tensors."""

    model_input_names = ("input_ids", "attention_mask")

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def __call__(self, texts: list[str], **kwargs: Any) -> dict[str, torch.Tensor]:
        self.kwargs = kwargs
        ids = WordTokenizer(8)(texts)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _batch(reports: list[Any], image: bool = True) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(reports):
        sample: dict[str, Any] = {"report": r, "idx": i}
        if image:
            sample["image"] = torch.full((1, 2, 2), float(i))
        out.append(sample)
    return out


# ----------------------------------------------------------------------------- basics


def test_output_structure_and_order() -> None:
    reports = [_report(i, 3 + i % 3) for i in range(6)]
    out = SentenceSampler(WordTokenizer(), seed=0)(_batch(reports))
    assert list(out) == ["image", "text", "tokens", "idx"]
    assert out["image"].shape == (6, 1, 2, 2)
    assert out["image"][:, 0, 0, 0].tolist() == [float(i) for i in range(6)]
    assert out["idx"].tolist() == list(range(6))
    assert out["tokens"].dtype == torch.long and out["tokens"].shape == (6, 16)
    for i, text in enumerate(out["text"]):
        assert text in split_sentences(reports[i])
        assert torch.equal(out["tokens"][i], WordTokenizer()([text])[0])


def test_str_report_with_sections_uses_chosen_sections() -> None:
    report = "INDICATION: Cough. FINDINGS: Heart normal. Lungs clear. IMPRESSION: No disease."
    s = SentenceSampler(seed=0, image_key=None).eval()
    assert s([{"report": report}])["text"] == ["Heart normal. Lungs clear. No disease."]
    s2 = SentenceSampler(sections=("impression",), image_key=None).eval()
    assert s2([{"report": report}])["text"] == ["No disease."]
    s3 = SentenceSampler(sections=None, image_key=None).eval()
    assert s3([{"report": report}])["text"] == ["Cough. Heart normal. Lungs clear. No disease."]


def test_headerless_str_report_is_used_whole() -> None:
    s = SentenceSampler(image_key=None).eval()
    assert s([{"report": "Heart normal.\nLungs clear"}])["text"] == ["Heart normal. Lungs clear"]


def test_dict_report_and_openi_records() -> None:
    rec = {
        "uid": "CXR1",
        "findings": "Heart normal. Lungs clear.",
        "impression": "No disease.",
        "indication": "Cough.",
        "mesh": ["normal"],
        "images": ["a", "b"],
    }
    s = SentenceSampler(image_key=None).eval()
    assert s([{"report": rec}])["text"] == ["Heart normal. Lungs clear. No disease."]
    # the record itself as the sample (text_key=None); ragged lists via list_keys
    s2 = SentenceSampler(
        text_key=None, sections=("findings", "impression"), list_keys=("mesh", "images")
    )
    rec2 = {**rec, "mesh": ["a", "b", "c"], "images": []}
    out = s2.eval()([{**rec, "image": torch.zeros(2)}, {**rec2, "image": torch.ones(2)}])
    assert out["text"] == ["Heart normal. Lungs clear. No disease."] * 2
    assert out["uid"] == ["CXR1", "CXR1"] and out["indication"] == ["Cough."] * 2
    assert out["mesh"] == [["normal"], ["a", "b", "c"]] and out["images"] == [["a", "b"], []]
    assert "findings" not in out and out["image"].shape == (2, 2)
    with pytest.raises(TypeError, match="key 'mesh'.*list_keys"):
        SentenceSampler(text_key=None, sections=("findings",))(
            [{**rec, "image": 0}, {**rec2, "image": 1}]
        )


def test_tuple_samples() -> None:
    out = SentenceSampler(seed=1).eval()(
        [(torch.zeros(3), "Heart normal."), (torch.ones(3), "FINDINGS: Lungs clear.")]
    )
    assert list(out) == ["image", "text"]
    assert out["text"] == ["Heart normal.", "Lungs clear."]
    assert out["image"][:, 0].tolist() == [0.0, 1.0]


def test_eval_mode_is_full_and_deterministic() -> None:
    reports = [_report(i, 4) for i in range(3)]
    s = SentenceSampler(seed=0, num_sentences=1, train=False)
    a = s(_batch(reports))["text"]
    assert a == [" ".join(split_sentences(r)) for r in reports]
    assert s(_batch(reports))["text"] == a
    assert s.train() is s and s.training
    assert s.eval() is s and not s.training


# ----------------------------------------------------------------------------- sampling laws


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=8),
    spec=st.one_of(
        st.integers(1, 8),
        st.tuples(st.integers(1, 4), st.integers(0, 4)).map(lambda t: (t[0], t[0] + t[1])),
        st.floats(0.01, 1.0),
    ),
    seed=st.integers(0, 2**32),
    keep_order=st.booleans(),
)
def test_sampling_properties(sizes: list[int], spec: Any, seed: int, keep_order: bool) -> None:
    """Never drops, duplicates or reorders samples; sentences belong to the report; k is right."""
    reports = [_report(i, n) for i, n in enumerate(sizes)]
    s = SentenceSampler(num_sentences=spec, seed=seed, keep_order=keep_order, image_key=None)
    out = s(_batch(reports, image=False))
    assert out["idx"].tolist() == list(range(len(sizes)))
    assert len(out["text"]) == len(sizes)
    for i, (n, text) in enumerate(zip(sizes, out["text"], strict=True)):
        got = split_sentences(text)
        pool = [_sentence(i, j) for j in range(n)]
        assert set(got) <= set(pool) and len(set(got)) == len(got)
        if keep_order:
            assert got == [p for p in pool if p in got]
        if isinstance(spec, int):
            assert len(got) == min(spec, n)
        elif isinstance(spec, tuple):
            assert min(spec[0], n) <= len(got) <= min(spec[1], n)
        else:
            assert len(got) == min(n, max(1, math.ceil(spec * n)))


def _chi2(counts: Counter[Any], cells: list[Any]) -> float:
    total = sum(counts.values())
    exp = total / len(cells)
    return sum((counts[c] - exp) ** 2 / exp for c in cells)


def test_uniform_over_sentences_and_subsets() -> None:
    n, draws = 5, 4000
    pool = [_sentence(0, j) for j in range(n)]
    s1 = SentenceSampler(seed=123, image_key=None)
    c1 = Counter(s1(_batch([_report(0, n)] * draws, image=False))["text"])
    assert set(c1) == set(pool)
    assert _chi2(c1, pool) < 30.0  # chi2, 4 dof: P(> 30) ~ 5e-6 under uniformity
    s2 = SentenceSampler(num_sentences=2, seed=7, image_key=None)
    c2 = Counter(
        tuple(split_sentences(t)) for t in s2(_batch([_report(0, n)] * draws, image=False))["text"]
    )
    pairs = list(combinations(pool, 2))
    assert set(c2) == set(pairs)
    assert _chi2(c2, pairs) < 45.0  # 9 dof: P(> 45) ~ 1e-6
    s3 = SentenceSampler(num_sentences=(1, 3), seed=9, image_key=None)
    c3 = Counter(
        len(split_sentences(t)) for t in s3(_batch([_report(0, n)] * 3000, image=False))["text"]
    )
    assert _chi2(c3, [1, 2, 3]) < 28.0  # 2 dof: P(> 28) ~ 1e-6


def test_never_more_than_the_report_has() -> None:
    s = SentenceSampler(num_sentences=10, seed=0, image_key=None)
    assert s([{"report": "One. Two."}])["text"] == ["One. Two."]


# ----------------------------------------------------------------------------- randomness


def test_seed_epoch_and_pickle_reproducibility() -> None:
    reports = [_report(i, 8) for i in range(16)]
    a, b = SentenceSampler(seed=5), SentenceSampler(seed=5)
    run_a = [a(_batch(reports))["text"] for _ in range(3)]
    run_b = [b(_batch(reports))["text"] for _ in range(3)]
    assert run_a == run_b
    assert run_a[0] != run_a[1]  # consecutive calls differ
    assert SentenceSampler(seed=6)(_batch(reports))["text"] != run_a[0]
    a.set_epoch(0)
    assert a(_batch(reports))["text"] == run_a[0]  # set_epoch restarts the stream
    a.set_epoch(1)
    epoch1 = a(_batch(reports))["text"]
    assert epoch1 != run_a[0]
    c = pickle.loads(pickle.dumps(a))
    assert c(_batch(reports))["text"] == a(_batch(reports))["text"]
    torch.manual_seed(3)
    u = SentenceSampler()(_batch(reports))["text"]
    torch.manual_seed(3)
    assert SentenceSampler()(_batch(reports))["text"] == u


class _Repeated(Dataset[dict[str, Any]]):
    def __init__(self, n: int) -> None:
        self.report = _report(0, 20)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": torch.zeros(2), "report": self.report, "idx": i}


def _epoch(collate: SentenceSampler, epoch: int) -> list[tuple[list[int], list[str]]]:
    collate.set_epoch(epoch)
    loader = DataLoader(_Repeated(32), batch_size=8, num_workers=2, collate_fn=collate)
    return [(b["idx"].tolist(), b["text"]) for b in loader]


def test_dataloader_two_workers_reproducible_and_distinct() -> None:
    collate = SentenceSampler(WordTokenizer(), seed=11)
    first = _epoch(collate, 0)
    assert [i for idx, _ in first for i in idx] == list(range(32))  # nothing dropped or reordered
    assert _epoch(SentenceSampler(WordTokenizer(), seed=11), 0) == first  # reproducible
    # batches 0 and 1 come from workers 0 and 1 with identical inputs: their samples differ
    assert first[0][1] != first[1][1]
    # workers 0 and 1 each process two batches: those differ too
    assert first[0][1] != first[2][1]
    assert _epoch(collate, 1) != first  # a new epoch draws anew


def test_dataloader_unseeded_follows_torch_seed() -> None:
    """seed=None: workers derive from their DataLoader seed, itself from torch.manual_seed."""
    torch.manual_seed(0)
    a = _epoch(SentenceSampler(), 0)
    torch.manual_seed(0)
    assert _epoch(SentenceSampler(), 0) == a
    assert a[0][1] != a[1][1]
    torch.manual_seed(1)
    assert _epoch(SentenceSampler(), 0) != a


# ----------------------------------------------------------------------------- cache


def test_cache_is_bounded_and_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter[str]()
    real = sampling_mod.split_sentences

    def counting(text: str) -> list[str]:
        calls[text] += 1
        return real(text)

    monkeypatch.setattr(sampling_mod, "split_sentences", counting)
    reports = [_report(i, 3) for i in range(10)]
    s = SentenceSampler(seed=0, cache_size=4, image_key=None)
    s(_batch(reports[:4], image=False))
    s(_batch(reports[:4], image=False))
    assert all(v == 1 for v in calls.values()) and len(calls) == 4  # second epoch: cache only
    s(_batch(reports, image=False))
    assert len(s.pool) == 4
    assert len(pickle.loads(pickle.dumps(s)).pool) == 0
    off = SentenceSampler(seed=0, cache_size=0, image_key=None)
    off(_batch(reports, image=False))
    assert len(off.pool) == 0


# ----------------------------------------------------------------------------- tokenizers


def test_hf_style_tokenizer_outputs() -> None:
    tok = FakeHF()
    out = SentenceSampler(tok, seed=0)(_batch([_report(i, 3) for i in range(4)]))
    assert tok.kwargs == {"padding": True, "truncation": True, "return_tensors": "pt"}
    assert set(out) == {"image", "text", "input_ids", "attention_mask", "idx"}
    assert out["input_ids"].shape == out["attention_mask"].shape == (4, 8)
    SentenceSampler(tok, tokenizer_kwargs={"padding": "max_length"})(_batch([_report(0, 3)]))
    assert tok.kwargs == {"padding": "max_length"}


def test_real_fast_hf_tokenizer() -> None:
    pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    corpus = [_report(i, 5) for i in range(20)]
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"])
    core.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
    out = SentenceSampler(tok, seed=0, num_sentences=(1, 3))(_batch(corpus[:6]))
    assert out["input_ids"].dtype == torch.long and out["input_ids"].shape[0] == 6
    assert out["attention_mask"].shape == out["input_ids"].shape
    for i, text in enumerate(out["text"]):
        words = [w for w, _ in core.pre_tokenizer.pre_tokenize_str(text)]
        assert tok.decode(out["input_ids"][i], skip_special_tokens=True) == " ".join(words)


def test_bad_tokenizer_outputs() -> None:
    with pytest.raises(ValueError, match="first dimension of 2"):
        SentenceSampler(lambda t: torch.zeros(3, 4))(_batch(["A.", "B."]))
    with pytest.raises(TypeError, match="tensor or a mapping"):
        SentenceSampler(lambda t: [[1]] * len(t))(_batch(["A.", "B."]))
    with pytest.raises(TypeError, match="callable"):
        SentenceSampler(3)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("batch", "exc", "pattern"),
    [
        ([{"image": 0, "report": "A."}, {"image": 0}], KeyError, "position 1 lacks key 'report'"),
        ([{"report": "A."}], KeyError, "position 0 lacks key 'image'"),
        (
            [{"image": 0, "report": "A."}, {"image": 0, "report": 3}],
            TypeError,
            "position 1, key 'report'.*got int",
        ),
        (
            [{"image": 0, "report": "INDICATION: Cough."}],
            ValueError,
            "position 0, key 'report' has no sentence.*fallback='report'",
        ),
        (
            [{"image": 0, "report": {"findings": " ", "impression": None}}],
            ValueError,
            "position 0.*no sentence",
        ),
        ([{"image": 0, "report": {"findings": 3}}], TypeError, "section 'findings' must be str"),
        ([{"image": 0, "report": ""}], ValueError, "position 0.*no sentence"),
        ([{"image": 0, "report": "A."}, 5], TypeError, "position 1 must be a mapping or an"),
        ([(0, "A.", 1)], TypeError, "position 0 must be a mapping.*length 3"),
        (
            [{"image": 0, "report": "A.", "x": 1}, {"image": 0, "report": "B."}],
            KeyError,
            "differ in keys \\['x'\\]",
        ),
        ([{"image": 0, "report": "A.", "text": "t"}], ValueError, "'text' collides"),
        ([], ValueError, "empty batch"),
        ("A.", TypeError, "batch must be a list of samples, got str 'A.'"),
        ({"image": 0, "report": "A."}, TypeError, "batch must be a list of samples, got dict"),
    ],
)
def test_bad_batches(batch: list[Any], exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        SentenceSampler(seed=0)(batch)


def test_fallback_is_opt_in() -> None:
    s = SentenceSampler(fallback="report", image_key=None).eval()
    assert s([{"report": "INDICATION: Cough. COMPARISON: None."}])["text"] == ["Cough. None."]
    assert s([{"report": {"indication": "Cough.", "findings": ""}}])["text"] == ["Cough."]
    with pytest.raises(ValueError, match="no sentence in the whole report"):
        s([{"report": {"findings": ""}}])


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"num_sentences": 0}, ValueError),
        ({"num_sentences": True}, TypeError),
        ({"num_sentences": 1.5}, ValueError),
        ({"num_sentences": 0.0}, ValueError),
        ({"num_sentences": (3, 2)}, ValueError),
        ({"num_sentences": (1, 2.0)}, TypeError),
        ({"num_sentences": "1"}, TypeError),
        ({"sections": "findings"}, TypeError),
        ({"sections": ()}, ValueError),
        ({"seed": 1.0}, TypeError),
        ({"fallback": "whole"}, ValueError),
        ({"cache_size": -1}, ValueError),
        ({"text_key": None, "sections": None}, ValueError),
        ({"text_key": None, "fallback": "report"}, ValueError),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc, match="SentenceSampler"):
        SentenceSampler(**kwargs)


# ============================================================================= the split (issue 11)


def test_sentence_pool_alone() -> None:
    pool = SentencePool(cache_size=2)
    report = "INDICATION: Cough. FINDINGS: Heart normal. Lungs clear. IMPRESSION: No disease."
    assert pool.candidates(report) == ("Heart normal.", "Lungs clear.", "No disease.")
    assert pool.candidates({"impression": "No disease.", "findings": "Heart normal."}) == (
        "Heart normal.",
        "No disease.",
    )
    assert pool.candidates("INDICATION: Cough.") == ()  # nothing usable: empty, no raise
    assert len(pool) == 2  # bounded: the oldest of three reports was evicted
    assert len(pickle.loads(pickle.dumps(pool))) == 0
    with pytest.raises(TypeError, match="SentencePool: the report must be a str or a mapping"):
        pool.candidates(3)
    # the sampler's candidates are the pool's
    s = SentenceSampler(image_key=None).eval()
    assert s([{"report": report}])["text"] == [" ".join(s.pool.candidates(report))]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    spec=st.one_of(st.integers(1, 6), st.floats(0.01, 1.0)),
    seed=st.integers(0, 2**32),
)
def test_sample_sentences_keeps_every_sample_and_report_order(
    sizes: list[int], spec: Any, seed: int
) -> None:
    """The sampling function alone: one text per sample, in order, sentences of its own report,
    in report order; the collate gives exactly what the function gives with the same stream."""
    pools = [tuple(_sentence(i, j) for j in range(n)) for i, n in enumerate(sizes)]
    texts = sample_sentences(pools, random.Random(seed), num_sentences=spec)
    assert len(texts) == len(pools)
    for pool, text in zip(pools, texts, strict=True):
        got = split_sentences(text)
        assert got == [p for p in pool if p in got] and got  # a non-empty ordered sub-list
    with pytest.raises(
        ValueError, match=r"candidates\[1\] must hold at least one sentence, got an empty"
    ):
        sample_sentences([("A.",), ()], random.Random(0))


# ============================================================================= per-epoch randomness (issue 12.1)


class _Reports(Dataset[dict[str, Any]]):
    """Report i has ``sizes[i]`` distinct sentences; samples carry their index."""

    def __init__(self, sizes: list[int]) -> None:
        self.reports = [_report(i, n) for i, n in enumerate(sizes)]

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"report": self.reports[i], "idx": i}


def _run_epochs(
    collate: SentenceSampler,
    dataset: Dataset[Any],
    *,
    epochs: int = 3,
    workers: int = 2,
    persistent: bool = False,
    batch_size: int = 32,
) -> list[list[str]]:
    """The issue's scenario: shuffle off, no set_epoch; per epoch, the text of each sample."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        persistent_workers=persistent,
        collate_fn=collate,
    )
    out = []
    for _ in range(epochs):
        texts: list[str] = []
        order: list[int] = []
        for b in loader:
            texts += b["text"]
            order += b["idx"].tolist()
        assert order == list(range(len(texts)))  # nothing dropped or reordered
        out.append(texts)
    return out


def _pair_agreement(runs: list[list[str]]) -> list[float]:
    """Per pair of epochs, the share of samples that got the same text."""
    return [
        sum(a == b for a, b in zip(runs[e], runs[f], strict=True)) / len(runs[e])
        for e, f in combinations(range(len(runs)), 2)
    ]


def _chance(pool_sizes: list[int]) -> tuple[float, float]:
    """Expected agreement of two independent uniform draws, and its standard deviation."""
    p = [1.0 / n for n in pool_sizes]
    return sum(p) / len(p), math.sqrt(sum(q * (1 - q) for q in p)) / len(p)


@pytest.mark.parametrize("persistent", [False, True])
def test_epochs_differ_in_workers_without_set_epoch(persistent: bool) -> None:
    """Issue 12.1: 2 workers, shuffle off, no set_epoch. Before: every sample got the same
    sentence in every epoch (agreement 1.0) with non-persistent workers."""
    sizes = [2 + i % 7 for i in range(448)]
    runs = _run_epochs(
        SentenceSampler(seed=0, image_key=None), _Reports(sizes), persistent=persistent
    )
    mean, sd = _chance(sizes)
    for agreement in _pair_agreement(runs):
        assert abs(agreement - mean) < 5 * sd, (agreement, mean, sd)


def test_identical_runs_are_identical() -> None:
    """Reproducible across runs for a fixed torch.manual_seed and seed; workers differ."""
    sizes = [6] * 128
    torch.manual_seed(0)
    a = _run_epochs(SentenceSampler(seed=0, image_key=None), _Reports(sizes), epochs=2)
    torch.manual_seed(0)
    b = _run_epochs(SentenceSampler(seed=0, image_key=None), _Reports(sizes), epochs=2)
    assert a == b
    torch.manual_seed(0)
    c = _run_epochs(SentenceSampler(seed=1, image_key=None), _Reports(sizes), epochs=2)
    assert c != a  # the user's seed matters too
    # batches 0 and 1 (workers 0 and 1) hold the same 6-sentence reports: they draw differently
    assert a[0][:32] != a[0][32:64]


def test_main_process_stream_advances_hf_trainer_style() -> None:
    """num_workers=0 and no set_epoch (the HF Trainer recipe): each epoch draws anew."""
    sizes = [2 + i % 5 for i in range(400)]
    runs = _run_epochs(SentenceSampler(seed=0, image_key=None), _Reports(sizes), workers=0)
    mean, sd = _chance(sizes)
    assert all(abs(a - mean) < 5 * sd for a in _pair_agreement(runs))


def test_hf_trainer_epochs_differ(tmp_path: Any) -> None:
    """The HF Trainer recipe (data_collator=SentenceSampler, no set_epoch hook), 2 workers, 3
    epochs, sequential order. Before: agreement 1.0 between every pair of epochs."""
    transformers = pytest.importorskip("transformers")
    from torch.utils.data import SequentialSampler

    sizes = [2 + i % 7 for i in range(256)]
    data = [{"report": _report(i, n), "idx": i} for i, n in enumerate(sizes)]
    seen: dict[int, list[str]] = {}

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    class Recording(transformers.Trainer):  # type: ignore[misc]
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return SequentialSampler(self.train_dataset)

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            for i, t in zip(inputs["idx"].tolist(), inputs["text"], strict=True):
                seen.setdefault(i, []).append(t)
            return (model.w**2).sum()

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=3,
        per_device_train_batch_size=32,
        dataloader_num_workers=2,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    collate = SentenceSampler(seed=0, image_key=None)
    Recording(model=Tiny(), args=args, train_dataset=data, data_collator=collate).train()
    runs = [[seen[i][e] for i in range(len(data))] for e in range(3)]
    mean, sd = _chance(sizes)
    for agreement in _pair_agreement(runs):
        assert abs(agreement - mean) < 5 * sd, (agreement, mean, sd)


def test_set_epoch_stays_an_explicit_override() -> None:
    """With set_epoch, a worker's stream is (seed, epoch, worker, call): the same epoch replays,
    independently of torch's generator, and another epoch differs."""
    sizes = [6] * 64
    collate = SentenceSampler(seed=3, image_key=None)
    collate.set_epoch(4)
    torch.manual_seed(0)
    a = _run_epochs(collate, _Reports(sizes), epochs=1)
    torch.manual_seed(1)
    assert _run_epochs(collate, _Reports(sizes), epochs=1) == a
    collate.set_epoch(5)
    assert _run_epochs(collate, _Reports(sizes), epochs=1) != a


@needs_shared("iu_xray/NLMCXR_reports.tgz")
def test_epochs_differ_on_real_openi_reports() -> None:
    """The issue's run on the real Open-I reports (3,927 with findings or impression): 2 workers,
    3 epochs, shuffle off, no set_epoch. Before: 3,927 of 3,927 identical in every epoch."""
    from relaxclip.data.openi import read_openi_reports

    records = read_openi_reports(shared_path("iu_xray/NLMCXR_reports.tgz"))
    pool = SentencePool()
    samples = [
        {"report": {"findings": r["findings"], "impression": r["impression"]}, "idx": i}
        for i, r in enumerate(rec for rec in records if pool.candidates(rec))
    ]
    sizes = [len(pool.candidates(s["report"])) for s in samples]
    runs = _run_epochs(SentenceSampler(seed=0, image_key=None), samples, batch_size=64)  # type: ignore[arg-type]
    mean, sd = _chance(sizes)
    for agreement in _pair_agreement(runs):
        assert abs(agreement - mean) < 5 * sd, (agreement, mean, sd)


# ============================================================================= empty reports (issue 12.2)


def test_errors_name_the_sample_and_the_sections_tried() -> None:
    """Before: 'batch position 1' only, which does not identify the report."""
    rec = {"uid": "CXR16", "findings": "", "impression": "", "indication": ""}
    batch = [{"image": 0, "report": "Heart normal."}, {"image": 1, "report": rec}]
    with pytest.raises(
        ValueError,
        match=r"sample uid='CXR16' at batch position 1, key 'report' has no sentence in "
        r"sections \('findings', 'impression'\).*on_empty='drop'",
    ):
        SentenceSampler()(batch)
    batch = [{"image": 0, "report": "A.", "study_id": 7}, {"image": 1, "report": "", "study_id": 8}]
    with pytest.raises(ValueError, match="sample study_id=8 at batch position 1"):
        SentenceSampler()(batch)
    with pytest.raises(TypeError, match="sample study_id=8 at batch position 1, key 'report'"):
        SentenceSampler()([batch[0], {**batch[1], "report": 3}])
    with pytest.raises(KeyError, match="sample uid='x' at batch position 0 lacks key 'report'"):
        SentenceSampler()([{"image": 0, "uid": "x"}])


def test_fallback_chain_over_named_sections() -> None:
    s = SentenceSampler(
        sections=("findings",), fallback=("impression", "indication"), image_key=None
    )
    s.eval()
    reports = [
        {"findings": "Heart normal.", "impression": "Fine."},
        {"findings": "", "impression": "Fine.", "indication": "Cough."},
        {"findings": None, "indication": "Cough."},
        "INDICATION: Cough.\nIMPRESSION: Fine.",
        "INDICATION: Cough.",
    ]
    out = s([{"report": r} for r in reports])
    assert out["text"] == ["Heart normal.", "Fine.", "Cough.", "Fine.", "Cough."]
    with pytest.raises(
        ValueError,
        match=r"sections \('findings',\), then section 'impression', then section 'indication'",
    ):
        s([{"report": {"comparison": "None."}}])
    whole = SentenceSampler(
        sections=("findings",), fallback=("impression", "report"), image_key=None
    )
    assert whole.eval()([{"report": {"comparison": "Prior."}}])["text"] == ["Prior."]


def test_whole_report_fallback_uses_sections_only() -> None:
    """Before: fallback='report' on an empty Open-I record trained on 'CXR16 ecgen-radiology/16.xml'
    (its uid and file name)."""
    rec = {"uid": "CXR16", "findings": "", "impression": "", "indication": "", "comparison": "",
           "mesh": [], "images": ["CXR16_1"], "source": "ecgen-radiology/16.xml"}  # fmt: skip
    s = SentenceSampler(fallback="report", image_key=None)
    with pytest.raises(ValueError, match="uid='CXR16'.*no sentence in the whole report"):
        s([{"report": rec}])
    assert s.eval()([{"report": {**rec, "indication": "Chest pain."}}])["text"] == ["Chest pain."]


@pytest.mark.parametrize(
    ("fallback", "exc"),
    [
        (("report", "indication"), ValueError),
        (("findings",), ValueError),
        (("indication", "indication"), ValueError),
        ((), ValueError),
        ("indication", ValueError),
        (3, TypeError),
        (("indication", 3), TypeError),
    ],
)
def test_bad_fallback_chains(fallback: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="SentenceSampler.*fallback"):
        SentenceSampler(fallback=fallback)


def test_on_empty_drop_removes_samples_with_all_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports = ["A one.", "", "C one. C two.", {"uid": "CXR9", "findings": " "}, "E one."]
    batch = [
        {"image": torch.full((2,), float(i)), "report": r, "idx": i, "meta": [i]}
        for i, r in enumerate(reports)
    ]
    s = SentenceSampler(on_empty="drop", list_keys=("meta",), group_key="text_group", seed=0)
    with caplog.at_level(logging.WARNING, logger="relaxclip.sampling"):
        out = s.eval()(batch)
    assert out["num_dropped"] == 2 and s.num_dropped == 2
    assert out["idx"].tolist() == [0, 2, 4]
    assert out["image"][:, 0].tolist() == [0.0, 2.0, 4.0]
    assert out["meta"] == [[0], [2], [4]]
    assert out["text"] == ["A one.", "C one. C two.", "E one."]
    assert out["text_group"].shape == (3,)
    assert "dropped 2 of 5" in caplog.text and "idx=1" in caplog.text and "CXR9" in caplog.text
    full = s(batch[:1])
    assert full["num_dropped"] == 0  # present in every batch
    with pytest.raises(ValueError, match="every sample of the batch has no sentence"):
        s([batch[1], batch[3]])
    with pytest.raises(ValueError, match="on_empty"):
        SentenceSampler(on_empty="skip")  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(empty=st.lists(st.booleans(), min_size=2, max_size=10).filter(lambda e: not all(e)))
def test_drop_never_loses_or_reorders_kept_samples(empty: list[bool]) -> None:
    batch = [
        {"image": torch.tensor([float(i)]), "report": "" if e else _report(i, 3), "idx": i}
        for i, e in enumerate(empty)
    ]
    out = SentenceSampler(on_empty="drop", seed=0)(batch)
    kept = [i for i, e in enumerate(empty) if not e]
    assert out["idx"].tolist() == kept and out["image"][:, 0].tolist() == [float(i) for i in kept]
    assert out["num_dropped"] == sum(empty)
    for i, text in zip(kept, out["text"], strict=True):
        assert text in split_sentences(_report(i, 3))


@needs_shared("iu_xray/NLMCXR_reports.tgz")
def test_real_openi_empty_reports() -> None:
    """Open-I has reports with no findings and no impression. Default: the error names the first
    one by uid. on_empty='drop': exactly those are dropped, counted."""
    from relaxclip.data.openi import read_openi_reports

    records = read_openi_reports(shared_path("iu_xray/NLMCXR_reports.tgz"))
    empty = [r["uid"] for r in records if not (r["findings"].strip() or r["impression"].strip())]
    assert empty  # 28 in the distributed archive
    samples = [{"report": r} for r in records]
    batches = [samples[i : i + 64] for i in range(0, len(samples), 64)]
    with pytest.raises(ValueError, match=f"uid='{empty[0]}'"):
        for b in batches:
            SentenceSampler(image_key=None, list_keys=())(b)
    s = SentenceSampler(image_key=None, on_empty="drop")
    kept = sum(len(s(b)["text"]) for b in batches)
    assert s.num_dropped == len(empty) and kept == len(records) - len(empty)


# ============================================================================= bad input (issue 13)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_key": "text"},
        {"text_key": "text"},
        {"text_key": "image"},
        {"tokenizer": WordTokenizer(), "token_key": "text"},
        {"tokenizer": WordTokenizer(), "token_key": "image"},
        {"group_key": "text"},
        {"group_key": "image"},
        {"tokenizer": WordTokenizer(), "group_key": "tokens"},
        {"on_empty": "drop", "group_key": "num_dropped"},
        {"text_key": None, "sections": ("findings",), "image_key": "findings"},
    ],
)
def test_output_key_collisions_raise(kwargs: dict[str, Any]) -> None:
    """Before: SentenceSampler(image_key='text') let the texts overwrite the images."""
    with pytest.raises(ValueError, match="SentenceSampler: .* collides with"):
        SentenceSampler(**kwargs)


def test_sample_keys_colliding_with_new_outputs_raise() -> None:
    batch = [{"image": 0, "report": "A.", "text_group": 1}]
    with pytest.raises(ValueError, match="'text_group' collides"):
        SentenceSampler(group_key="text_group")(batch)
    with pytest.raises(ValueError, match="'num_dropped' collides"):
        SentenceSampler(on_empty="drop")([{"image": 0, "report": "A.", "num_dropped": 0}])
    with pytest.raises(ValueError, match="'image' collides"):
        SentenceSampler(lambda t: {"image": torch.zeros(len(t), 2)})(_batch(["A."]))


def test_bom_in_reports_does_not_hide_findings() -> None:
    """Before: the BOM put FINDINGS into the preamble and the sampler used the impression only."""
    s = SentenceSampler(image_key=None).eval()
    report = "\ufeffFINDINGS: Heart is enlarged.\nIMPRESSION: No acute disease."
    assert s([{"report": report}])["text"] == ["Heart is enlarged. No acute disease."]
    assert s([{"report": {"findings": "\ufeff\u200bHeart.", "impression": "Fine."}}])["text"] == [
        "Heart. Fine."
    ]


def test_numpy_integers_accepted() -> None:
    reports = [_report(i, 6) for i in range(8)]
    a = SentenceSampler(num_sentences=np.int64(2), seed=np.int64(3), cache_size=np.int32(5))
    b = SentenceSampler(num_sentences=2, seed=3, cache_size=5)
    assert a(_batch(reports))["text"] == b(_batch(reports))["text"]
    assert a.seed == 3 and type(a.seed) is int and type(a.num_sentences) is int
    r = SentenceSampler(num_sentences=(np.int32(1), np.int64(3)), seed=0)
    assert (
        r(_batch(reports))["text"]
        == SentenceSampler(num_sentences=(1, 3), seed=0)(_batch(reports))["text"]
    )
    a.set_epoch(np.int64(2))
    assert a.epoch == 2


# ============================================================================= text groups (issue 14)


def _reference_normal_form(text: str) -> str:
    """group_text's documented rule, written independently."""
    invisible = {0xFEFF, 0xAD, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F)}
    invisible |= {*range(0x2060, 0x2065), *range(0x2066, 0x2070)}
    t = "".join(c for c in text if ord(c) not in invisible).casefold()
    t = " ".join(t.split())
    while t and (t[-1] in ".,;:!?" or t[-1].isspace()):
        t = t[:-1]
    return t


_GROUP_TEXT = st.one_of(
    st.text(alphabet="abAB .!?,;:\t\n\ufeff\u200b", max_size=8),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(a=_GROUP_TEXT, b=_GROUP_TEXT)
def test_equal_texts_iff_equal_ids(a: str, b: str) -> None:
    ids = text_group_ids([a, b])
    assert ids.dtype == torch.int64 and ids.shape == (2,) and bool((ids >= 0).all())
    assert group_text(a) == _reference_normal_form(a)
    assert (ids[0] == ids[1]).item() == (_reference_normal_form(a) == _reference_normal_form(b))


def test_group_examples_and_errors() -> None:
    ids = text_group_ids(
        ["No pneumothorax.", "no  PNEUMOTHORAX", "No pneumothorax !", "No effusion."]
    )
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert text_group_ids([]).shape == (0,)
    with pytest.raises(TypeError, match="text_group_ids: texts must be a sequence of str"):
        text_group_ids("No pneumothorax.")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str"):
        text_group_ids(["a", 1])  # type: ignore[list-item]


_TEXTS = ["No pneumothorax.", "The lungs are clear.", "Heart size normal", "Ünïcode ß."]


@pytest.mark.slow
def test_group_ids_stable_across_processes() -> None:
    """Same ids in separate interpreters with different hash seeds (Python's hash() would not)."""
    code = (
        "import json, sys\n"
        "from relaxclip.sampling import text_group_ids\n"
        "print(json.dumps(text_group_ids(json.loads(sys.argv[1])).tolist()))\n"
    )
    results = []
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(_TEXTS)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=True,
        )
        results.append(json.loads(out.stdout))
    assert results[0] == results[1] == text_group_ids(_TEXTS).tolist()


@pytest.mark.slow
def test_group_key_in_batches_from_spawned_workers() -> None:
    """Ids made in DataLoader workers (spawned: fresh interpreters with their own hash salt)
    equal the main process's, and equal texts across batches and workers share ids."""
    samples = [{"report": t, "idx": i} for i, t in enumerate(_TEXTS * 4)]
    loader = DataLoader(
        samples,  # type: ignore[arg-type]
        batch_size=4,
        num_workers=2,
        multiprocessing_context="spawn",
        collate_fn=SentenceSampler(image_key=None, group_key="text_group", seed=0),
    )
    seen: dict[str, int] = {}
    for b in loader:
        assert b["text_group"].dtype == torch.int64
        assert b["text_group"].tolist() == text_group_ids(b["text"]).tolist()
        for text, gid in zip(b["text"], b["text_group"].tolist(), strict=True):
            assert seen.setdefault(text, gid) == gid
    assert len(seen) == len(_TEXTS)


# ----------------------------------------------------------------------------- ranks draw apart

_RANK_REPORTS = [{"uid": f"S{i}", "report": _report(i, 6)} for i in range(16)]


def _positions(texts: list[str]) -> list[int]:
    return [int(t.split()[3]) for t in texts]  # "Finding i number j is seen." -> j


def _rank_draws(case: str) -> list[int]:
    """The sentence positions one rank draws for the same 16 reports, in ``case``'s setting."""
    sampler = SentenceSampler(seed=0, image_key=None)
    if case == "main":
        sampler.set_epoch(5)
        return _positions(sampler(_RANK_REPORTS)["text"])
    torch.manual_seed(0)
    if case == "spawned-worker":
        sampler.set_epoch(3)
    loader = DataLoader(
        _RANK_REPORTS,  # type: ignore[arg-type]
        batch_size=16,
        num_workers=1,
        collate_fn=sampler,
        multiprocessing_context="spawn" if case == "spawned-worker" else "fork",
    )
    return _positions(next(iter(loader))["text"])


_RANK_CASES = ("main", "forked-worker", "spawned-worker")


def _rank_stream_worker(rank: int, world: int, out_dir: str) -> None:
    from _workers import gloo_rank

    with gloo_rank(rank, world, out_dir):
        draws = {case: _rank_draws(case) for case in _RANK_CASES}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(draws, f)


def test_ranks_draw_independently_and_rank0_keeps_the_single_process_stream(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Before: with one seed on every rank (the documented DDP usage) each rank drew the same
    sentence positions for its samples, in the main process and in DataLoader workers."""
    from _workers import run_ranks

    run_ranks(_rank_stream_worker, 2, (2, str(tmp_path)), 240, "the sampler rank job")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for case in _RANK_CASES:
        assert ranks[0][case] != ranks[1][case], case  # 16 draws from 6: 6**-16 by chance
        assert ranks[0][case] == _rank_draws(case), case  # rank 0 = no torch.distributed


def test_collate_errors_name_the_odd_sample() -> None:
    """Before: only default_collate's 'got [2] at entry 0 and [3] at entry 2' (batch entries)."""
    sampler = SentenceSampler()
    batch = [
        {"uid": "S0", "image": torch.zeros(2), "report": "A b. C d."},
        {"uid": "S1", "image": torch.zeros(2), "report": "A b."},
        {"uid": "S2", "image": torch.zeros(3), "report": "E f."},
    ]
    with pytest.raises(
        TypeError, match=r"key 'image'.*uid='S0'.*shape \(2,\).*uid='S2'.*shape \(3,\)"
    ):
        sampler(batch)
    batch = [{**b, "image": torch.zeros(2)} for b in batch]
    batch[1]["view"] = "PA"
    batch[0]["view"] = batch[2]["view"] = 1
    with pytest.raises(TypeError, match=r"key 'view'.*uid='S0'.*int.*uid='S1'.*str"):
        sampler(batch)


@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_flags_are_exactly_true_or_false(value: object) -> None:
    """Before: train="no" and keep_order="no" were read as True."""
    for arg in ("train", "keep_order"):
        with pytest.raises(TypeError, match=f"{arg} must be True or False"):
            SentenceSampler(**{arg: value})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mode must be True or False"):
        SentenceSampler().train(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keep_order must be True or False"):
        sample_sentences([["a."]], random.Random(0), keep_order=value)  # type: ignore[arg-type]


# ============================================================ section names the parser never produces


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sections": ("impresion",), "fallback": "report"},
        {"sections": ("findings", "Impression")},
        {"sections": ("findings",), "fallback": ("indications", "report")},
    ],
)
def test_unknown_section_names_raise_at_construction(kwargs: dict[str, Any]) -> None:
    """Before: ``sections=("impresion",), fallback="report"`` trained on whole reports without a
    word (the parser never produces "impresion", so every report fell back)."""
    unknown = next(
        n
        for n in (*kwargs["sections"], *kwargs.get("fallback", ()))
        if n in {"impresion", "Impression", "indications"}
    )
    pattern = (
        r"sections and fallback must be section names the report parser produces \(.*'impression'"
        rf".*\), got \['{unknown}'\]"
    )
    with pytest.raises(ValueError, match="SentenceSampler: " + pattern):
        SentenceSampler(**kwargs)
    with pytest.raises(ValueError, match="SentencePool: " + pattern):
        SentencePool(**kwargs)
    with pytest.raises(ValueError, match="custom_sections=True"):
        SentencePool(**kwargs)


def test_custom_sections_allow_other_mapping_keys() -> None:
    pool = SentencePool(("caption",), custom_sections=True)
    assert pool.candidates({"caption": "Heart normal. Lungs clear.", "uid": "x"}) == (
        "Heart normal.",
        "Lungs clear.",
    )
    s = SentenceSampler(text_key=None, sections=("caption",), image_key=None, custom_sections=True)
    assert s.eval()([{"caption": "No effusion."}])["text"] == ["No effusion."]
    with pytest.raises(TypeError, match="custom_sections must be True or False, got str 'yes'"):
        SentencePool(("caption",), custom_sections="yes")  # type: ignore[arg-type]
    # every name the parser produces is accepted without it
    SentencePool(tuple(HEADER_ALIASES) + (PREAMBLE_KEY,))


def test_sample_sentences_names_bad_candidates_rng_and_separator() -> None:
    """Before: a sample given as one string (``["ab"]``) was read as the sentences "a" and "b"
    (``['b']`` here), and ``rng=None``, ``separator=3`` or ``candidates=3`` failed with errors
    that did not name the argument."""
    rng = random.Random(0)
    with pytest.raises(
        TypeError, match=r"candidates\[0\] must be a sequence of sentences, got str"
    ):
        sample_sentences(["ab"], rng)
    with pytest.raises(TypeError, match="candidates must be a sequence of sequences of sentences"):
        sample_sentences(3, rng)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng must be a random.Random, got NoneType"):
        sample_sentences([["a."]], None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="separator must be a str, got int 3"):
        sample_sentences([["a.", "b."]], rng, num_sentences=2, separator=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("sample", [[1, 2], [None], ("a.", b"b."), ["a.", float("nan")]])
@pytest.mark.parametrize("k", [1, 2])
def test_sample_sentences_refuses_non_str_sentences(
    sample: list[Any] | tuple[Any, ...], k: int
) -> None:
    """Before: ``[[1, 2]]`` returned ``[2]`` and ``[[None]]`` ``[None]`` for k = 1, and k = 2
    failed inside ``str.join`` without naming ``candidates``."""
    with pytest.raises(TypeError, match=r"candidates\[1\] must hold str sentences, got "):
        sample_sentences([("x.",), sample], random.Random(0), num_sentences=k)
