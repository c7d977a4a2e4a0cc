"""Tests for relaxclip.sampling.SentenceSampler (the sentence-sampling collate_fn)."""

from __future__ import annotations

import math
import pickle
from collections import Counter
from itertools import combinations
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

import relaxclip.sentence_pool as sampling_mod
from relaxclip.sampling import SentenceSampler
from relaxclip.sentences import split_sentences


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
    assert len(s._cache) == 4
    assert len(pickle.loads(pickle.dumps(s))._cache) == 0
    off = SentenceSampler(seed=0, cache_size=0, image_key=None)
    off(_batch(reports, image=False))
    assert len(off._cache) == 0


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
