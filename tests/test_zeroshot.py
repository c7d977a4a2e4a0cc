"""relaxclip.zeroshot: CheXzero-style positive/negative prompt classifier."""

from __future__ import annotations

import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from _shared import needs_shared, shared_path

from relaxclip.metrics import AUROCResult, bootstrap_auroc, macro_auroc
from relaxclip.zeroshot import (
    NON_FINDING_NAMES,
    PROMPT_NAMES,
    NoFindingTemplateWarning,
    ZeroShotClassifier,
    hf_text_encoder,
    is_non_finding_label,
    normalize_label_name,
    open_clip_text_encoder,
    plot_roc,
)

D = 16


def vec(text: str) -> torch.Tensor:
    """A fixed pseudo-random float64 embedding per string (unnormalised)."""
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return torch.randn(D, generator=g, dtype=torch.float64) * (1.0 + len(text) % 3)


class FakeEncoder:
    """Records every batch it sees and whether grad was enabled."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.batches: list[list[str]] = []
        self.grad_enabled: list[bool] = []
        self.dtype = dtype
        self.weight = torch.ones(D, requires_grad=True)

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.batches.append(list(texts))
        self.grad_enabled.append(torch.is_grad_enabled())
        return torch.stack([vec(t) for t in texts]).to(self.dtype) * self.weight


def reference_proba(
    img: torch.Tensor, labels: list[str], templates: list[tuple[str, str]]
) -> torch.Tensor:
    """CheXzero's formula written out in float64: exp(s+) / (exp(s+) + exp(s-)), on prompts
    filled with the lower-cased label (the default prompt name of these clean labels)."""

    def class_emb(side: int, label: str) -> torch.Tensor:
        e = torch.stack([vec(t[side].format(label.lower())) for t in templates])
        e = e / e.norm(dim=-1, keepdim=True)
        m = e.mean(0)
        return m / m.norm()

    x = img.double() / img.double().norm(dim=-1, keepdim=True)
    pos = torch.stack([class_emb(0, c) for c in labels])
    neg = torch.stack([class_emb(1, c) for c in labels])
    sp, sn = torch.exp(x @ pos.T), torch.exp(x @ neg.T)
    return sp / (sp + sn)


LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]
TEMPLATES = [("{}", "no {}"), ("{} is present", "no evidence of {}"), ("shows {}", "without {}")]


def test_predict_proba_equals_chexzero_formula() -> None:
    img = torch.randn(7, D)
    enc = FakeEncoder(torch.float64)
    clf = ZeroShotClassifier(enc, LABELS, TEMPLATES)
    got = clf.predict_proba(img)
    assert got.shape == (7, 3)
    torch.testing.assert_close(got, reference_proba(img, LABELS, TEMPLATES), rtol=0, atol=1e-12)
    single = ZeroShotClassifier(FakeEncoder(torch.float64), LABELS)
    torch.testing.assert_close(
        single(img), reference_proba(img, LABELS, [("{}", "no {}")]), rtol=0, atol=1e-12
    )


def test_text_embeddings_cached_batched_unique_and_without_grad() -> None:
    enc = FakeEncoder()
    clf = ZeroShotClassifier(enc, LABELS, TEMPLATES, batch_size=4)
    pos, neg = clf.text_embeddings()
    seen = [t for b in enc.batches for t in b]
    assert all(len(b) <= 4 for b in enc.batches)
    assert len(seen) == len(set(seen)) == 3 * 3 * 2  # each distinct prompt once
    assert not any(enc.grad_enabled)
    assert not pos.requires_grad and not neg.requires_grad
    torch.testing.assert_close(pos.norm(dim=-1), torch.ones(3))
    n_calls = len(enc.batches)
    clf.predict_proba(torch.randn(2, D))
    clf.predict_proba(torch.randn(3, D))
    assert len(enc.batches) == n_calls  # cached
    clf.clear_cache()
    clf.predict_proba(torch.randn(2, D))
    assert len(enc.batches) == 2 * n_calls


def test_gradient_flows_to_image_features_only() -> None:
    img = torch.randn(4, D, requires_grad=True)
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    clf.predict_proba(img).sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert img.grad.abs().sum() > 0


def test_normalize_false_uses_raw_dot_products() -> None:
    img = torch.randn(5, D, dtype=torch.float64)
    clf = ZeroShotClassifier(FakeEncoder(torch.float64), ["Edema"], normalize=False)
    p, n = vec("edema"), vec("no edema")
    expected = torch.sigmoid(img @ p - img @ n)
    torch.testing.assert_close(clf.predict_proba(img)[:, 0], expected, rtol=0, atol=1e-12)


def test_per_label_prompts_and_exclusion() -> None:
    enc = FakeEncoder(torch.float64)
    prompts = {
        "No Finding": [("no acute cardiopulmonary process", "acute cardiopulmonary process")]
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the override avoids the No Finding warning
        clf = ZeroShotClassifier(
            enc, ["No Finding", *LABELS], label_prompts=prompts, exclude=["Edema"]
        )
    assert clf.labels == ("No Finding", "Atelectasis", "Cardiomegaly")
    assert clf.excluded == ("Edema",)
    assert clf.prompts("No Finding") == tuple(prompts["No Finding"])
    assert clf.prompts("Atelectasis") == (("atelectasis", "no atelectasis"),)
    img = torch.randn(3, D, dtype=torch.float64)
    out = clf.predict_proba(img)
    assert out.shape == (3, 3)
    x = img / img.norm(dim=-1, keepdim=True)
    p = vec("no acute cardiopulmonary process")
    n = vec("acute cardiopulmonary process")
    expected = torch.sigmoid(x @ (p / p.norm()) - x @ (n / n.norm()))
    torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-12)
    assert not any("edema" in t.lower() for b in enc.batches for t in b)
    with pytest.raises(ValueError, match="exclude"):
        ZeroShotClassifier(enc, LABELS, exclude=["Fracture"])
    with pytest.raises(ValueError, match="label_prompts"):
        ZeroShotClassifier(enc, LABELS, label_prompts={"Fracture": [("a", "b")]})


def test_no_finding_trap_warns() -> None:
    enc = FakeEncoder()
    for name in ["No Finding", "no_finding", "NO FINDINGS"]:
        with pytest.warns(NoFindingTemplateWarning, match="inverted"):
            ZeroShotClassifier(enc, [name, "Edema"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ZeroShotClassifier(enc, ["No Finding", "Edema"], exclude=["No Finding"])
        ZeroShotClassifier(enc, ["No Finding"], templates=[("{}", "not {}")])
        ZeroShotClassifier(enc, ["Nodule", "Normal heart size"])  # merely starting with "no"


def test_no_finding_trap_inverts_scores() -> None:
    """A bag-of-words encoder in which each "no" adds a *normal* component and "finding" an
    *abnormal* one: "no No Finding" lies closer to normal than "No Finding" does, so normal
    images (No Finding = 1) get the lower score — the inversion CheXzero reports."""

    def bag_of_words(texts: list[str]) -> torch.Tensor:
        words = [t.lower().split() for t in texts]
        return torch.tensor(
            [[w.count("no"), w.count("finding")] for w in words], dtype=torch.float32
        )

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)  # 1 = No Finding (normal image)
    img = torch.tensor(np.where(y[:, None] == 1, [1.0, 0.0], [0.0, 1.0]), dtype=torch.float32)
    img = img + 0.2 * torch.rand(200, 2)
    with pytest.warns(NoFindingTemplateWarning):
        trapped = ZeroShotClassifier(bag_of_words, ["No Finding"])
    assert trapped.prompts("No Finding") == (("no finding", "no no finding"),)
    assert macro_auroc(y[:, None], trapped.predict_proba(img).numpy()).macro < 0.1
    fixed = ZeroShotClassifier(
        bag_of_words, ["No Finding"], label_prompts={"No Finding": [("no finding", "finding")]}
    )
    assert macro_auroc(y[:, None], fixed.predict_proba(img).numpy()).macro > 0.9


def test_end_to_end_auroc_on_separable_features() -> None:
    enc = FakeEncoder()
    clf = ZeroShotClassifier(enc, LABELS)
    pos, neg = clf.text_embeddings()
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 3))
    yt = torch.tensor(y, dtype=torch.float32)
    img = (yt @ (pos - neg)) + 0.5 * torch.randn(300, D)
    res = macro_auroc(y, clf.predict_proba(img).numpy(), clf.labels)
    assert res.macro > 0.8 and not res.skipped


def test_dtypes_and_devices() -> None:
    clf = ZeroShotClassifier(FakeEncoder(torch.float16), LABELS)
    out = clf.predict_proba(torch.randn(3, D, dtype=torch.float16))
    assert out.dtype == torch.float32
    assert ((out > 0) & (out < 1)).all()


def test_bad_input() -> None:
    enc = FakeEncoder()
    with pytest.raises(TypeError, match="encode_text must be a callable"):
        ZeroShotClassifier("not callable", LABELS)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match="labels must be a sequence of label names, not a single string, got str 'Edema'",
    ):
        ZeroShotClassifier(enc, "Edema")
    with pytest.raises(
        ValueError, match=r"labels must be unique, got duplicated names \['Edema'\]"
    ):
        ZeroShotClassifier(enc, ["Edema", "Edema"])
    with pytest.raises(ValueError, match=r"templates\[0\] must contain exactly one .*placeholder"):
        ZeroShotClassifier(enc, LABELS, templates=[("{}", "no")])
    with pytest.raises(TypeError, match=r"templates\[0\] must be a \(positive, negative\) pair"):
        ZeroShotClassifier(enc, LABELS, templates=[("{}",)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        ZeroShotClassifier(enc, LABELS, batch_size=0)
    clf = ZeroShotClassifier(enc, LABELS)
    with pytest.raises(
        ValueError, match=rf"image_features must have D={D} columns .*\(2, {D + 1}\)"
    ):
        clf.predict_proba(torch.randn(2, D + 1))
    with pytest.raises(ValueError, match=rf"image_features must be 2-D, got shape \({D},\)"):
        clf.predict_proba(torch.randn(D))
    with pytest.raises(TypeError, match="image_features must be a torch.Tensor, got ndarray"):
        clf.predict_proba(np.zeros((2, D)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"encode_text output must have shape \(6, D\)"):
        ZeroShotClassifier(lambda t: torch.zeros(len(t) + 1, D), LABELS).text_embeddings()
    with pytest.raises(TypeError, match="encode_text must return a torch.Tensor, got list"):
        ZeroShotClassifier(lambda t: [[0.0] * D] * len(t), LABELS).text_embeddings()  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="text embedding must not hold a zero vector"):
        ZeroShotClassifier(lambda t: torch.zeros(len(t), D), LABELS).text_embeddings()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_huge_finite_features_keep_their_direction(dtype: torch.dtype) -> None:
    """Issue 13 item 3: from ~1e19 in fp32/bf16 the squared norm overflowed, every image row became
    zero and predict_proba returned 0.5. Cosine similarity is scale-invariant: scaled rows must give
    the same probabilities as the unscaled ones."""
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    img = torch.randn(5, D, generator=torch.Generator().manual_seed(3))
    expected = clf.predict_proba(img.to(dtype))
    scale = torch.finfo(dtype).max / 8  # finite, far beyond sqrt(max)
    got = clf.predict_proba(img.to(dtype) * scale)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=2e-2 if dtype != torch.float32 else 1e-5, rtol=0)
    assert not torch.allclose(got, torch.full_like(got, 0.5))


def test_zero_image_rows_are_named() -> None:
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    img = torch.randn(4, D)
    img[2] = 0.0
    with pytest.raises(
        ValueError, match=r"image_features must not hold a zero vector.*\[2\] \(1 of 4\)"
    ):
        clf.predict_proba(img)


def test_non_finite_and_non_float_image_rows_are_named() -> None:
    """Before: NaN/inf rows came back as NaN probabilities, integer features were accepted."""
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    img = torch.randn(4, D)
    img[1, 0] = float("nan")
    img[3, 2] = float("inf")
    for fn in (clf.predict_proba, clf.similarities):
        with pytest.raises(
            ValueError,
            match=r"image_features must be finite, got NaN or Inf in rows \[1, 3\] \(2 of 4\)",
        ):
            fn(img)
    with pytest.raises(TypeError, match="image_features must be a floating-point tensor"):
        clf.predict_proba(torch.ones(2, D, dtype=torch.int64))
    clf_raw = ZeroShotClassifier(FakeEncoder(), LABELS, normalize=False)
    with pytest.raises(
        ValueError, match=r"image_features must be finite, got NaN or Inf in rows \[1, 3\]"
    ):
        clf_raw.predict_proba(img)


def test_flags_numpy_batch_size_and_escaped_braces() -> None:
    with pytest.raises(TypeError, match="normalize must be True or False"):
        ZeroShotClassifier(FakeEncoder(), LABELS, normalize="no")  # type: ignore[arg-type]
    clf = ZeroShotClassifier(FakeEncoder(), LABELS, batch_size=np.int64(3))  # type: ignore[arg-type]
    assert clf.batch_size == 3 and type(clf.batch_size) is int
    clf = ZeroShotClassifier(FakeEncoder(), LABELS, templates=[("{} {{x}}", "no {}")])
    assert clf.prompts(LABELS[0])[0][0] == f"{clf.prompt_names[LABELS[0]]} {{x}}"
    for bad in ("{0}", "{x}", "{}{}", "{", "{{}}", "{:>3}"):
        with pytest.raises(ValueError, match="exactly one"):
            ZeroShotClassifier(FakeEncoder(), LABELS, templates=[(bad, "no {}")])


# --------------------------------------------------------------------------- wrappers


class FakeOpenClip(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens.float())


def fake_tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[len(t), t.count(" "), ord(t[0]), 1] for t in texts])


def test_open_clip_wrapper() -> None:
    model = FakeOpenClip()
    encode = open_clip_text_encoder(model, fake_tokenizer)
    out = encode(["a b", "cd"])
    torch.testing.assert_close(out, model.encode_text(fake_tokenizer(["a b", "cd"])))
    with pytest.raises(TypeError, match="encode_text"):
        open_clip_text_encoder(object(), fake_tokenizer)


class FakeHF(torch.nn.Module):
    def __init__(self, style: str) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, D)
        self.style = style
        self.seen: dict[str, Any] = {}

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        self.seen = {"input_ids": input_ids, "attention_mask": attention_mask}
        feats = self.proj(input_ids.float())
        if self.style == "tensor":  # transformers < 5
            return feats
        if self.style == "pooling":  # transformers 5: BaseModelOutputWithPooling
            return SimpleNamespace(last_hidden_state=feats[:, None], pooler_output=feats)
        return SimpleNamespace(text_embeds=feats)


def fake_hf_tokenizer(texts: list[str], **kwargs: Any) -> dict[str, torch.Tensor]:
    assert kwargs["padding"] is True and kwargs["return_tensors"] == "pt"
    ids = torch.tensor([[len(t), 1, 2] for t in texts])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("style", ["tensor", "pooling", "embeds"])
def test_hf_wrapper_handles_transformers_4_and_5_outputs(style: str) -> None:
    model = FakeHF(style)
    encode = hf_text_encoder(model, fake_hf_tokenizer)
    out = encode(["x", "yy"])
    assert isinstance(out, torch.Tensor) and out.shape == (2, D)
    torch.testing.assert_close(out, model.proj(torch.tensor([[1, 1, 2], [2, 1, 2]]).float()))
    clf = ZeroShotClassifier(encode, LABELS)
    assert clf.predict_proba(torch.randn(2, D)).shape == (2, 3)


def test_hf_wrapper_rejects_unknown_output() -> None:
    class Odd(FakeHF):
        def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            return SimpleNamespace(hidden=1)

    with pytest.raises(TypeError, match="pooler_output"):
        hf_text_encoder(Odd("x"), fake_hf_tokenizer)(["a"])


def test_module_import_is_light() -> None:
    code = (
        "import sys, relaxclip.zeroshot, relaxclip.metrics;"
        "heavy = [m for m in ('open_clip', 'transformers', 'matplotlib', 'sklearn', 'PIL') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- plot


def test_plot_roc_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (50, 3)).astype(float)
    y[:, 2] = 0.0  # skipped label is shown as skipped, not dropped
    s = rng.normal(size=(50, 3)) + y
    y[:5, 0] = np.nan
    out = plot_roc(y, s, ["a", "b", "c"], tmp_path / "roc.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(FileNotFoundError, match="directory"):
        plot_roc(y, s, ["a", "b", "c"], tmp_path / "missing" / "roc.png")


# --------------------------------------------------------------------------- docs numbers

BENCH = shared_path("benchmarks")
DOC = Path(__file__).resolve().parents[1] / "docs" / "zeroshot.md"


@needs_shared("benchmarks/chexzero_chexpert_test_auc.csv")
@pytest.mark.skipif(not DOC.is_file(), reason="docs/zeroshot.md absent")
def test_docs_table_is_derived_from_the_benchmark_csv() -> None:
    import csv

    with open(BENCH / "chexzero_chexpert_test_auc.csv", newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    header, table = (
        rows[0],
        {r[0]: dict(zip(rows[0][1:], map(float, r[1:]), strict=True)) for r in rows[1:]},
    )
    mean = table["mean"]
    five = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    text = DOC.read_text(encoding="utf-8")
    derived = {
        "5 competition labels": np.mean([mean[c] for c in five]),
        "all 14": np.mean(list(mean.values())),
        "13 labels": np.mean([v for k, v in mean.items() if k != "No Finding"]),
        "swapped": np.mean([1 - v if k == "No Finding" else v for k, v in mean.items()]),
    }
    assert len(header) == 15
    for what, value in derived.items():
        assert f"{value:.3f}" in text, what
    assert f"{1 - mean['No Finding']:.3f}" in text


def test_evaluate_over_batches_equals_macro_auroc_on_everything() -> None:
    enc = FakeEncoder()
    clf = ZeroShotClassifier(enc, LABELS, exclude=[LABELS[1]])
    pos, neg = ZeroShotClassifier(enc, LABELS).text_embeddings()
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (90, len(LABELS))).astype(float)
    y[::7, 0] = np.nan  # unmentioned labels are omitted per label
    img = torch.tensor(np.nan_to_num(y), dtype=torch.float32) @ (pos - neg) + torch.randn(90, D)
    encode_image = lambda x: 2.0 * x  # noqa: E731  (any callable batch -> (B, D))
    batches = [
        {"pixels": img[i : i + 32], "target": torch.tensor(y[i : i + 32])} for i in range(0, 90, 32)
    ]
    got = clf.evaluate(encode_image, batches, image_key="pixels", label_key="target")
    keep = [i for i, name in enumerate(LABELS) if name != LABELS[1]]
    want = macro_auroc(y[:, keep], clf.predict_proba(2.0 * img).numpy(), clf.labels)
    assert got.macro == pytest.approx(want.macro, abs=1e-12)
    assert got.per_label == pytest.approx(want.per_label, abs=1e-12)
    assert list(got.per_label) == list(clf.labels)
    # labels given for the kept columns only are accepted too
    only_kept = [{"pixels": b["pixels"], "target": b["target"][:, keep]} for b in batches]
    same = clf.evaluate(encode_image, only_kept, image_key="pixels", label_key="target")
    assert same.macro == pytest.approx(got.macro, abs=1e-12)
    with pytest.raises(
        KeyError, match=r"batches\[0\] must have the key 'image', got keys \['pixels', 'target'\]"
    ):
        clf.evaluate(encode_image, batches)
    with pytest.raises(
        ValueError,
        match=r"batches\[0\]\['labels'\] must have shape \(B, 3\) or \(B, 2\), got \(4, 7\)",
    ):
        clf.evaluate(encode_image, [{"image": img[:4], "labels": torch.zeros(4, 7)}])
    with pytest.raises(ValueError, match="batches must hold at least one batch, got none"):
        clf.evaluate(encode_image, [])


def test_evaluate_accepts_bf16_labels_and_checks_rows() -> None:
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    y = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0]], dtype=torch.bfloat16)
    img = torch.randn(4, D)
    res = clf.evaluate(lambda x: x, [{"image": img, "labels": y}])
    assert set(res.per_label) == set(LABELS)
    with pytest.raises(
        ValueError,
        match=r"encode_image\(batches\[0\]\['image'\]\) must have one row per label row \(4\), got 3",
    ):
        clf.evaluate(lambda x: x[:3], [{"image": img, "labels": y}])


# ------------------------------------------------ constructor and encoder errors (issue 13)


def test_labels_none_is_a_clear_type_error() -> None:
    """Before: ``TypeError: 'NoneType' object is not iterable`` without the argument's name."""
    with pytest.raises(TypeError, match="labels must be a sequence of label names, got NoneType"):
        ZeroShotClassifier(FakeEncoder(), None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"labels\[1\] must be a str label name, got int 3"):
        ZeroShotClassifier(FakeEncoder(), ["Edema", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="labels must be a sequence .* got bytes b'Edema'"):
        ZeroShotClassifier(FakeEncoder(), b"Edema")  # type: ignore[arg-type]


def test_encoders_changing_d_between_batches_are_named() -> None:
    """Before: a bare ``torch.cat`` RuntimeError (text) and "image_features: dimension ..."
    (image), neither naming the encoder."""
    dims = iter([D, D - 2, D])
    clf = ZeroShotClassifier(lambda t: torch.randn(len(t), next(dims)), LABELS, batch_size=2)
    with pytest.raises(
        ValueError,
        match=r"encode_text must return one embedding size, got D=14 for strings 2\.\.3 but D=16",
    ):
        clf.text_embeddings()
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    y = torch.zeros(4, 3)
    batches = [{"image": torch.randn(4, D), "labels": y}, {"image": torch.randn(4, 8), "labels": y}]
    with pytest.raises(
        ValueError,
        match=rf"encode_image\(batches\[1\]\['image'\]\) must have D={D} columns .*\(4, 8\)",
    ):
        clf.evaluate(lambda x: x, batches)


def test_evaluate_reports_non_finite_image_features() -> None:
    """Before: ``y_score: scores must be finite`` from the metrics, naming neither the encoder
    nor the batch."""
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    img = torch.randn(4, D)
    img[1, 3] = float("nan")
    img[3, 0] = float("inf")
    y = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0]])
    ok = {"image": torch.randn(4, D), "labels": y}
    with pytest.raises(
        ValueError,
        match=r"encode_image\(batches\[1\]\['image'\]\) must be finite, got NaN or Inf in rows "
        r"\[1, 3\] \(2 of 4\)",
    ):
        clf.evaluate(lambda x: x, [ok, {"image": img, "labels": y}])


# ------------------------------------------------------ prompts from label names (issue 12)


def test_label_names_are_normalised_in_prompts() -> None:
    """Before: ``"Pleural_Thickening"`` / ``"no Pleural_Thickening"``."""
    enc = FakeEncoder()
    clf = ZeroShotClassifier(enc, ["Pleural_Thickening", "Pleural  Effusion "])
    assert clf.prompts("Pleural_Thickening") == (("pleural thickening", "no pleural thickening"),)
    assert clf.prompts("Pleural  Effusion ") == (("pleural effusion", "no pleural effusion"),)
    assert clf.labels == ("Pleural_Thickening", "Pleural  Effusion ")  # columns keep raw names
    clf.text_embeddings()
    assert not any("_" in t for b in enc.batches for t in b)
    custom = ZeroShotClassifier(enc, ["Mass", "Edema"], prompt_names={"Mass": "pulmonary mass"})
    assert custom.prompts("Mass") == (("pulmonary mass", "no pulmonary mass"),)
    assert custom.prompts("Edema") == (("edema", "no edema"),)
    with pytest.raises(
        ValueError, match=r"prompt_names must name labels of \['Mass'\], got \['Fibrosis'\]"
    ):
        ZeroShotClassifier(enc, ["Mass"], prompt_names={"Fibrosis": "fibrosis"})
    with pytest.raises(
        ValueError, match="prompt_names must be one of 'chestxray14', 'chexpert', .*, got str 'nih'"
    ):
        ZeroShotClassifier(enc, ["Mass"], prompt_names="nih")
    with pytest.raises(
        ValueError,
        match=r"labels \(for prompt_names='chexpert'\) must name labels of \[.*\], got \['Mass'\]; "
        r"pass a mapping",
    ):
        ZeroShotClassifier(enc, ["Mass"], prompt_names="chexpert")


def _dataset_labels() -> dict[str, tuple[str, ...]]:
    from relaxclip.data.labels import (
        CHESTXRAY14_LABELS,
        CHESTXRAY14_NO_FINDING,
        CHEXPERT_LABELS,
        OPENI_LABELS,
    )

    return {
        "chexpert": CHEXPERT_LABELS,
        "mimic-cxr": CHEXPERT_LABELS,
        "chestxray14": (*CHESTXRAY14_LABELS, CHESTXRAY14_NO_FINDING),
        "openi": OPENI_LABELS,
    }


@pytest.mark.parametrize("dataset", ["chexpert", "mimic-cxr", "chestxray14", "openi"])
def test_per_dataset_prompt_names_cover_the_readers_labels(dataset: str) -> None:
    labels = _dataset_labels()[dataset]
    assert set(PROMPT_NAMES[dataset]) == set(labels)  # every label the reader returns
    for name in PROMPT_NAMES[dataset].values():
        assert name == normalize_label_name(name) and "_" not in name
    with pytest.warns(NoFindingTemplateWarning):  # the dataset's non-findings warn
        clf = ZeroShotClassifier(FakeEncoder(), labels, prompt_names=dataset)
    assert clf.prompt_names == {label: PROMPT_NAMES[dataset][label] for label in labels}
    if dataset in ("chestxray14", "openi"):
        assert clf.prompts("Effusion") == (("pleural effusion", "no pleural effusion"),)


@needs_shared("negbio/openi_gld_std14.csv", "chexpert_labeler/labeled_reports.csv")
def test_prompt_names_match_the_real_label_files(shared_data: Path) -> None:
    import csv
    import gzip

    with open(shared_data / "negbio/openi_gld_std14.csv", newline="") as fh:
        openi = next(csv.reader(fh))[1:]
    with open(shared_data / "chexpert_labeler/labeled_reports.csv", newline="") as fh:
        chexpert = next(csv.reader(fh))[1:]
    assert set(openi) == set(PROMPT_NAMES["openi"])
    assert set(chexpert) == set(PROMPT_NAMES["chexpert"])
    nih = shared_data / "nih_cxr14/Data_Entry_2017_v2020.csv.gz"
    if nih.is_file():
        with gzip.open(nih, "rt", newline="") as fh:
            found = {f for row in csv.DictReader(fh) for f in row["Finding Labels"].split("|")}
        assert found == set(PROMPT_NAMES["chestxray14"])


def test_inversion_warning_covers_every_non_finding_label() -> None:
    """Before: only labels starting with "no" warned ("normal" → "no normal" did not)."""
    enc = FakeEncoder()
    for name in ["normal", "Normal", "Support Devices", "NO_FINDINGS", "without acute disease"]:
        with pytest.warns(NoFindingTemplateWarning, match="not a finding"):
            ZeroShotClassifier(enc, [name, "Edema"])
    warned = set()
    for dataset, labels in _dataset_labels().items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ZeroShotClassifier(enc, labels, prompt_names=dataset)
        warned |= {
            label
            for w in caught
            if issubclass(w.category, NoFindingTemplateWarning)
            for label in labels
            if f"label {label!r} " in str(w.message)
        }
    assert warned == {"No Finding", "Support Devices", "normal"}  # the documented list
    assert {n for n in NON_FINDING_NAMES if is_non_finding_label(n)} == set(NON_FINDING_NAMES)
    assert not is_non_finding_label("Nodule") and not is_non_finding_label("Pneumothorax")


def test_evaluate_returns_probabilities_and_bootstrap_in_one_pass() -> None:
    """Before: ``evaluate`` returned the AUROC only; a CI needed a second pass over the data."""
    enc = FakeEncoder()
    clf = ZeroShotClassifier(enc, LABELS)
    pos, neg = clf.text_embeddings()
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (70, 3)).astype(float)
    img = torch.tensor(y, dtype=torch.float32) @ (pos - neg) + torch.randn(70, D)
    study = np.repeat(np.arange(35), 2)
    calls: list[int] = []

    def encode_image(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return x

    batches = (  # a generator: it can be read only once
        {
            "image": img[i : i + 16],
            "labels": torch.tensor(y[i : i + 16]),
            "study": study[i : i + 16],
        }
        for i in range(0, 70, 16)
    )
    got = clf.evaluate(encode_image, batches, n_bootstrap=50, seed=4, group_key="study")
    assert calls == [16, 16, 16, 16, 6]
    np.testing.assert_array_equal(got.y_true, y)
    per_batch = [clf.predict_proba(img[i : i + 16]) for i in range(0, 70, 16)]
    np.testing.assert_array_equal(got.y_score, torch.cat(per_batch).double().numpy())
    want = macro_auroc(y, got.y_score, LABELS)
    assert (got.macro, got.per_label, got.skipped) == (want.macro, want.per_label, want.skipped)
    assert got.bootstrap is not None and got.groups is not None
    np.testing.assert_array_equal(got.groups, study)
    ref = bootstrap_auroc(y, got.y_score, LABELS, n_bootstrap=50, seed=4, groups=study)
    np.testing.assert_array_equal(got.bootstrap.samples, ref.samples)
    assert got.bootstrap.macro == ref.macro
    plain = clf.evaluate(lambda x: x, [{"image": img, "labels": torch.tensor(y)}])
    assert isinstance(plain, AUROCResult) and plain.bootstrap is None and plain.groups is None
    assert plain.per_label == got.per_label and plain.summary() == want.summary()


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("sklearn") is None,
    reason="scikit-learn not installed: comparison with scikit-learn skipped",
)
def test_evaluate_details_agree_with_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (60, 3)).astype(float)
    img = torch.randn(60, D) + torch.tensor(y[:, :1], dtype=torch.float32)
    got = clf.evaluate(lambda x: x, [{"image": img, "labels": torch.tensor(y)}])
    for k, name in enumerate(LABELS):
        assert abs(got.per_label[name] - roc_auc_score(y[:, k], got.y_score[:, k])) <= 1e-12


# ------------------------------------------------ silently wrong / unactionable errors


def test_identical_positive_and_negative_prompts_raise() -> None:
    """Before: accepted, and every probability was exactly 0.5."""
    with pytest.raises(ValueError, match=r"templates must give different positive and negative"):
        ZeroShotClassifier(FakeEncoder(), ["Edema"], templates=[("{}", "{}")])
    with pytest.raises(ValueError, match=r"label_prompts\['Edema'\] must give different"):
        ZeroShotClassifier(FakeEncoder(), ["Edema"], label_prompts={"Edema": [("x", "x")]})
    case_blind = ZeroShotClassifier(
        lambda t: torch.stack([vec(x.lower()) for x in t]),
        ["Edema", "Mass"],
        label_prompts={"Edema": [("edema", "EDEMA")]},
    )
    with pytest.raises(ValueError, match=r"must embed positive and negative .* labels \['Edema'\]"):
        case_blind.text_embeddings()


def test_text_features_without_columns_are_named() -> None:
    """Before: ``IndexError: amax(): Expected reduction dim -1 to have non-zero size``."""
    clf = ZeroShotClassifier(lambda t: torch.zeros(len(t), 0), LABELS)
    with pytest.raises(
        ValueError, match=r"encode_text output must have shape \(6, D\) with D >= 1"
    ):
        clf.text_embeddings()


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        ([[0, None, 1]] * 4, TypeError, r"batches\[0\]\['labels'\] must be numeric 0/1/NaN labels"),
        (np.array([["1", "0", "1"]] * 4), TypeError, r"batches\[0\]\['labels'\] must be numeric"),
        ([[0, 2, 1]] * 4, ValueError, r"batches\[0\]\['labels'\] must hold 0 or 1, got \[2\]"),
    ],
    ids=["none", "numpy-str", "two"],
)
def test_evaluate_names_bad_labels(labels: Any, error: type[Exception], match: str) -> None:
    """Before: ``Could not infer dtype of NoneType`` / ``can't convert np.ndarray of type
    numpy.str_``, naming neither the batch nor the key."""
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    with pytest.raises(error, match=match):
        clf.evaluate(lambda x: x, [{"image": torch.randn(4, D), "labels": labels}])


def test_evaluate_says_batches_must_be_an_iterable_of_batches() -> None:
    """Before: ``'NoneType' object is not iterable``, and for one dict batch
    ``KeyError: "batches[0]: missing key 'labels'"`` although the dict had ``labels``."""
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    batch = {"image": torch.randn(4, D), "labels": torch.zeros(4, 3)}
    for bad, given in ((None, "NoneType"), (batch, "dict")):
        with pytest.raises(
            TypeError, match=rf"batches must be an iterable of batches .*got {given}"
        ):
            clf.evaluate(lambda x: x, bad)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"batches\[0\] must be a mapping with keys \['image', 'labels'\]"
    ):
        clf.evaluate(lambda x: x, [(torch.randn(4, D), torch.zeros(4, 3))])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"confidence": "0.9"}, TypeError, "confidence must be a real number, got str '0.9'"),
        ({"confidence": 1.5}, ValueError, r"confidence must be a number in \(0.0, 1.0\)"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
        ({"n_bootstrap": "100"}, TypeError, "n_bootstrap must be an int, got str"),
    ],
)
@pytest.mark.parametrize("base", [{"n_bootstrap": 10}, {}], ids=["bootstrap", "no-bootstrap"])
def test_evaluate_checks_bootstrap_arguments_before_the_pass(
    kwargs: dict[str, Any], error: type[Exception], match: str, base: dict[str, Any]
) -> None:
    """Before: ``'<' not supported between 'float' and 'str'``, after the whole pass; and
    without ``n_bootstrap``, ``seed`` and ``confidence`` were not checked at all."""
    calls: list[int] = []

    def encode_image(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x

    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    batch = {"image": torch.randn(4, D), "labels": torch.tensor([[0, 1, 0], [1, 0, 1]] * 2)}
    with pytest.raises(error, match=match):
        clf.evaluate(encode_image, [batch], **{**base, **kwargs})
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": "4"}, "batch_size must be an int, got str '4'"),
        ({"batch_size": True}, "batch_size must be an int, got bool True"),
        ({"prompt_names": {"Edema": 3}}, r"prompt_names\['Edema'\] must be a str, got int 3"),
        ({"label_prompts": [("a", "b")]}, "label_prompts must be a mapping label -> pairs"),
    ],
    ids=["batch-size-str", "batch-size-bool", "prompt-name-int", "label-prompts-list"],
)
def test_wrong_types_raise_type_error(kwargs: dict[str, Any], match: str) -> None:
    """One rule: TypeError for a wrong type. Before: ValueError for ``batch_size="4"``, ``True``
    and a non-str prompt name; a list of ``label_prompts`` pairs was read as a mapping
    (``dict([("a", "b")])``) and refused as "['a'] not in labels"."""
    with pytest.raises(TypeError, match=match):
        ZeroShotClassifier(FakeEncoder(), ["Edema", "Mass"], **kwargs)


# --------------------------------------------------------------------------- reviewer fixes


@pytest.mark.parametrize("negative", ["no evidence of {}", "no signs of {}", "Without any {}"])
def test_negative_templates_starting_with_no_or_without_warn(negative: str) -> None:
    """Before: only "no {}" and "without {}" themselves warned, not "no evidence of {}"."""
    with pytest.warns(NoFindingTemplateWarning, match="not a finding"):
        ZeroShotClassifier(FakeEncoder(), ["No Finding", "Edema"], [("evidence of {}", negative)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whole words only: "none", "nothing" do not negate
        ZeroShotClassifier(FakeEncoder(), ["No Finding"], [("{}", "none of {}")])
        ZeroShotClassifier(FakeEncoder(), ["No Finding"], [("{}", "nothing but {}")])


def test_dataset_prompt_names_need_only_the_output_labels() -> None:
    """Before: an excluded label missing from the table raised "labels ... must name labels"."""
    clf = ZeroShotClassifier(
        FakeEncoder(), ["Edema", "Foo"], prompt_names="chexpert", exclude=["Foo"]
    )
    assert clf.labels == ("Edema",) and clf.prompts("Edema") == (("edema", "no edema"),)
    with pytest.raises(ValueError, match=r"labels \(for prompt_names='chexpert'\) must name"):
        ZeroShotClassifier(FakeEncoder(), ["Edema", "Foo"], prompt_names="chexpert")


def _batch_with_ids(ids: Any) -> dict[str, Any]:
    return {
        "image": torch.randn(4, D),
        "labels": torch.tensor([[0, 1, 0], [1, 0, 1]] * 2),
        "study": ids,
    }


def test_evaluate_refuses_study_ids_of_mixed_types() -> None:
    """Before: int ids in one batch and str ids in another became one str array, merging the
    studies 1 and '1'; so did ``[1, '1', 2, 3]`` within a batch."""
    clf = ZeroShotClassifier(FakeEncoder(), LABELS)
    batches = [_batch_with_ids([1, 2, 3, 4]), _batch_with_ids(["1", "2", "5", "6"])]
    with pytest.raises(
        TypeError,
        match=r"batches\[1\]\['study'\] must hold study ids of one type in every batch, got dtype <U1",
    ):
        clf.evaluate(lambda x: x, batches, group_key="study")
    with pytest.raises(
        TypeError, match=r"batches\[0\]\['study'\] must be study ids of one type, got str mixed"
    ):
        clf.evaluate(lambda x: x, [_batch_with_ids([1, "1", 2, 3])], group_key="study")
    text_then_bytes = [_batch_with_ids(["1", "2", "3", "4"]), _batch_with_ids([b"1"] * 4)]
    with pytest.raises(TypeError, match=r"batches\[1\]\['study'\] .* got dtype \|S1 after <U1"):
        clf.evaluate(lambda x: x, text_then_bytes, group_key="study")
    ok = [_batch_with_ids(["a", "b", "c", "d"]), _batch_with_ids(["e", "e", "f", "f"])]
    assert clf.evaluate(lambda x: x, ok, group_key="study").groups.tolist()[-1] == "f"  # type: ignore[union-attr]


def test_plot_roc_path_and_title(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a raw pathlib TypeError for ``path=5``, PNG bytes in ``r.pdf``, ``title=""``
    replaced by the default title."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    y, s = np.array([[0.0], [1.0]]), np.array([[0.2], [0.7]])
    with pytest.raises(TypeError, match="path must be a str or path-like .png file, got int 5"):
        plot_roc(y, s, ["a"], 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"path must end in .png \(plot_roc writes PNG\)"):
        plot_roc(y, s, ["a"], tmp_path / "r.pdf")
    assert not (tmp_path / "r.pdf").exists()
    assert plot_roc(y, s, ["a"], tmp_path / "roc").read_bytes()[:4] == b"\x89PNG"  # no suffix
    titles: list[str] = []
    monkeypatch.setattr(Axes, "set_title", lambda self, label, *a, **k: titles.append(label))
    plot_roc(y, s, ["a"], tmp_path / "r.PNG", title="")
    assert titles == [""]
