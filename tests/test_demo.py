"""Tests of the demo model/tokenizer (relaxclip.demo.models) and a miniature end-to-end demo run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _demo_config import tiny_config
from _shared import needs_shared, shared_path

from relaxclip.demo.models import TEXT_CONTEXT_LENGTH, TinyCLIP, WordTokenizer
from relaxclip.demo.runner import ARMS, format_table, run_demo
from relaxclip.metrics import macro_auroc

# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_build_and_call() -> None:
    tok = WordTokenizer.build(["No pleural effusion.", "Mild cardiomegaly. No effusion."])
    assert tok.context_length == 6 + 2  # longest text: 6 words/marks + start/end
    ids = tok(["no effusion", "pneumothorax"])
    assert ids.dtype == torch.long and ids.shape == (2, tok.context_length)
    no, eff = tok.stoi["no"], tok.stoi["effusion"]
    assert ids[0].tolist() == [tok.START, no, eff, tok.END, 0, 0, 0, 0]
    assert ids[1].tolist()[:3] == [tok.START, tok.UNK, tok.END]
    # frequency order, ties alphabetical: "." (3), then "effusion"/"no" (2), then the rest
    assert tok.itos[4:7] == [".", "effusion", "no"]


def test_tokenizer_truncation_is_counted_and_keeps_end() -> None:
    tok = WordTokenizer(["a", "b"], context_length=4)
    assert tok.count_truncated(["a b a", "a b"]) == 1
    assert tok(["a b a"])[0].tolist() == [tok.START, tok.stoi["a"], tok.stoi["b"], tok.END]


def test_tokenizer_pickles() -> None:
    tok = WordTokenizer.build(["Small left pleural effusion."])
    again = pickle.loads(pickle.dumps(tok))
    assert torch.equal(again(["small effusion"]), tok(["small effusion"]))


def test_tokenizer_bad_input() -> None:
    with pytest.raises(ValueError, match="context_length"):
        WordTokenizer(["a"], context_length=2)
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="special"):
        WordTokenizer(["<pad>"])
    with pytest.raises(ValueError, match="at least one"):
        WordTokenizer.build([])
    with pytest.raises(TypeError, match="text"):
        WordTokenizer(["a"])([1])  # type: ignore[list-item]


# ----------------------------------------------------------------------------- model


def _model() -> tuple[TinyCLIP, WordTokenizer]:
    tok = WordTokenizer.build(["No pleural effusion.", "Moderate cardiomegaly with edema."])
    torch.manual_seed(0)
    return TinyCLIP(tok.vocab_size, tok.context_length, image_size=32, embed_dim=16), tok


def test_model_shapes_and_open_clip_conventions() -> None:
    model, tok = _model()
    model.eval()
    img = model.encode_image(torch.randn(3, 1, 32, 32))
    txt = model.encode_text(tok(["no effusion", "cardiomegaly", "edema ."]))
    assert img.shape == (3, 16) and txt.shape == (3, 16)
    assert torch.isclose(model.logit_scale.exp(), torch.tensor(1 / 0.07))
    fi, ft, scale = model(torch.randn(2, 1, 32, 32), tok(["a", "b"]))
    assert torch.allclose(fi.norm(dim=-1), torch.ones(2)) and torch.allclose(
        ft.norm(dim=-1), torch.ones(2)
    )
    assert scale.requires_grad


def test_padding_does_not_change_text_features() -> None:
    model, tok = _model()
    model.eval()
    tokens = tok(["no effusion", "moderate cardiomegaly with edema"])
    used = int((tokens != 0).any(0).nonzero().max()) + 1
    full = model.encode_text(tokens)
    trimmed = model.encode_text(tokens[:, :used])
    assert torch.allclose(full, trimmed, atol=1e-5)
    single = model.encode_text(tok(["no effusion"]))
    assert torch.allclose(single[0], full[0], atol=1e-5)  # batch neighbours do not leak


def test_text_feature_is_the_end_of_text_token_alone() -> None:
    """CLIP-style pooling: the feature is the projection of the final hidden state at the
    end-of-text token; every other position can be replaced without changing it (a mean over
    tokens would change)."""
    model, tok = _model()
    model.eval()
    tokens = tok(["no pleural effusion", "moderate cardiomegaly with edema ."])
    eot = (tokens != 0).sum(1) - 1
    assert (tokens[torch.arange(2), eot] == tok.END).all()
    reference = model.encode_text(tokens)

    def scramble(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(output) * 10
        keep = torch.zeros_like(output, dtype=torch.bool)
        keep[torch.arange(2), eot] = True
        return torch.where(keep, output, noise)

    handle = model.ln_final.register_forward_hook(scramble)
    try:
        assert torch.allclose(model.encode_text(tokens), reference, atol=1e-6)
    finally:
        handle.remove()
    hidden = {}
    handle = model.ln_final.register_forward_hook(lambda m, i, o: hidden.setdefault("x", o))
    try:
        model.encode_text(tokens)
    finally:
        handle.remove()
    expected = model.text_projection(hidden["x"][torch.arange(2), eot])
    assert torch.allclose(reference, expected, atol=1e-6)


def test_text_padding_must_be_trailing() -> None:
    model, tok = _model()
    tokens = tok(["no effusion", "edema"])
    tokens[0, 1] = 0  # padding inside the text: the end-of-text position is ambiguous
    with pytest.raises(
        ValueError, match=r"padding \(id 0\) must only follow the text.*row\(s\) \[0\]"
    ):
        model.encode_text(tokens)


def test_model_gradients_reach_both_towers() -> None:
    model, tok = _model()
    fi, ft, scale = model(torch.randn(4, 1, 32, 32), tok(["no effusion", "edema", "a", "b"]))
    (scale * fi @ ft.T).logsumexp(1).sum().backward()
    assert model.visual[0].weight.grad is not None and model.visual[0].weight.grad.abs().sum() > 0
    assert model.token_embedding.weight.grad is not None
    assert model.token_embedding.weight.grad.abs().sum() > 0


def test_model_bad_input() -> None:
    model, tok = _model()
    with pytest.raises(ValueError, match="images"):
        model.encode_image(torch.randn(1, 32, 32))
    with pytest.raises(ValueError, match="tokens"):
        model.encode_text(torch.zeros(2, tok.context_length + 1, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        model.encode_text(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="image_size"):
        TinyCLIP(10, 8, image_size=40)


# ----------------------------------------------------------------------------- end to end


_tiny = tiny_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, list[str]]:
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    # sweep_quantiles=(): the absolute-θ sweep only (quantile arms: tests/test_demo_arms.py)
    cfg = _tiny(
        sweep_threshold=True, sweep_thresholds=(0.5, 1.0), sweep_quantiles=(), threshold=1.0
    )
    return run_demo(cfg, out, log=lines.append), out, lines


def test_end_to_end_outputs(tiny_run: tuple[dict[str, Any], Path, list[str]]) -> None:
    results, out, lines = tiny_run
    assert {a.label for a in ARMS} | {"d@0.5", "d@1"} == set(results["arms"])
    for arm in results["arms"].values():
        m = arm["macro_auroc"]
        assert len(m["per_seed"]) == 2 and 0.0 <= m["mean"] <= 1.0
        assert m["ci95"][0] <= m["ci95"][1]
    saved = json.loads((out / "results.json").read_text())
    assert saved["arms"]["d"]["macro_auroc"]["mean"] == results["arms"]["d"]["macro_auroc"]["mean"]
    assert saved["seeds"] == [0, 1] and saved["config"]["finetune_steps"] == 4
    assert "torch" in saved["versions"]
    assert (out / "roc.png").stat().st_size > 0 and (out / "summary.png").stat().st_size > 0
    printed = "\n".join(lines)
    assert format_table(results) in printed and results["conclusion"] in printed
    for arm in results["arms"].values():
        assert arm["name"] in printed
    assert results["sweep"]["chosen_on_validation"] in (0.5, 1.0)


def test_identical_budgets_make_equivalent_arms_identical(
    tiny_run: tuple[dict[str, Any], Path, list[str]],
) -> None:
    """With threshold 1.0 relaxation is exactly the CLIP loss, so arm (c) must reproduce arm (a)
    and the sweep's d@1 must reproduce arm (b) bit for bit: same data, order, steps and seeds."""
    arms = tiny_run[0]["arms"]
    assert arms["c"]["macro_auroc"]["per_seed"] == arms["a"]["macro_auroc"]["per_seed"]
    assert arms["d@1"]["macro_auroc"]["per_seed"] == arms["b"]["macro_auroc"]["per_seed"]
    assert arms["d"]["macro_auroc"]["per_seed"] == arms["b"]["macro_auroc"]["per_seed"]
    # sentence sampling really changes the training text
    assert arms["b"]["macro_auroc"]["per_seed"] != arms["a"]["macro_auroc"]["per_seed"]


def test_selection_uses_validation_only(tiny_run: tuple[dict[str, Any], Path, list[str]]) -> None:
    for key in ("a", "b", "c", "d"):
        arm = tiny_run[0]["arms"][key]
        for curve, step, best in zip(
            arm["val_curve"], arm["best_step"], arm["val_macro_auroc_best"], strict=True
        ):
            assert set(curve) == {"2", "4"}
            assert best == max(curve.values()) and curve[str(step)] == best


def test_curves_record_every_validation(tiny_run: tuple[dict[str, Any], Path, list[str]]) -> None:
    """results.json's curve: every validation with the diagnostics of the steps before it."""
    results, out, _ = tiny_run
    for key in ("a", "b", "c", "d", "e", "d@0.5"):
        arm = results["arms"][key]
        for curve, val, stats in zip(
            arm["curve"], arm["val_curve"], arm["train_stats"], strict=True
        ):
            assert [p["step"] for p in curve] == [2, 4]
            assert [p["val_macro_auroc"] for p in curve] == [val["2"], val["4"]]
            assert all(-1.0 <= p["positive_cosine"] <= 1.0 for p in curve)
            assert all(0.0 <= p["relaxed_fraction"] <= 1.0 for p in curve)
            # two windows of two steps each: their mean is the mean over all steps
            for name in ("positive_cosine", "relaxed_fraction"):
                assert np.isclose(np.mean([p[name] for p in curve]), stats[name])
            assert {p["threshold"] for p in curve} == {arm["threshold"]}
    assert results["arms"]["pretrained"]["curve"] == [[], []]
    assert (out / "curves.png").stat().st_size > 0


def test_last_step_scores(tiny_run: tuple[dict[str, Any], Path, list[str]]) -> None:
    """The last step's test AUROC equals the kept checkpoint's where the last step was kept."""
    arms = tiny_run[0]["arms"]
    assert arms["a"]["last_step"]["delta_vs_a"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    kept_last = 0
    for arm in arms.values():
        last = arm["last_step"]["macro_auroc"]["per_seed"]
        for i, step in enumerate(arm["best_step"]):
            if step in (0, 4):  # no fine-tuning, or the last step kept
                assert last[i] == arm["macro_auroc"]["per_seed"][i]
                kept_last += step == 4
    assert kept_last > 0
    a_last = arms["a"]["last_step"]["macro_auroc"]["mean"]
    d = arms["d"]["last_step"]
    assert np.isclose(d["delta_vs_a"]["mean"], d["macro_auroc"]["mean"] - a_last)
    assert d["delta_vs_a"]["ci95"][0] <= d["delta_vs_a"]["ci95"][1]


def test_reported_auroc_matches_metrics(tiny_run: tuple[dict[str, Any], Path, list[str]]) -> None:
    results = tiny_run[0]
    arm = results["arms"]["a"]
    macro_from_labels = [
        float(
            np.mean(
                [arm["per_label_auroc"][f]["per_seed"][i] for f in results["benchmark"]["findings"]]
            )
        )
        for i in range(2)
    ]
    assert np.allclose(macro_from_labels, arm["macro_auroc"]["per_seed"])
    assert macro_auroc is not None


def test_relaxation_is_active_below_one() -> None:
    results = run_demo(_tiny(seeds=(0,), threshold=-0.99), None, log=lambda s: None)
    stats = results["arms"]["c"]["train_stats"][0]
    assert stats["relaxed_fraction"] > 0.5  # almost every positive pair is above -0.99
    assert all(p["relaxed_fraction"] > 0.5 for p in results["arms"]["c"]["curve"][0])
    assert results["arms"]["a"]["train_stats"][0]["relaxed_fraction"] == 0.0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        _tiny(batch_size=1).validate()
    with pytest.raises(ValueError, match="seeds"):
        _tiny(seeds=()).validate()
    with pytest.raises(ValueError, match="eval_every"):
        _tiny(eval_every=10).validate()
    with pytest.raises(ValueError, match="threshold"):
        _tiny(threshold=1.5).validate()
    with pytest.raises(ValueError, match="reports and labels"):
        _tiny(reports="x").validate()
    with pytest.raises(ValueError, match="sweep_thresholds and sweep_quantiles"):
        _tiny(sweep_threshold=True, sweep_thresholds=(), sweep_quantiles=()).validate()
    with pytest.raises(ValueError, match="finetune_schedule"):
        _tiny(finetune_schedule="linear").validate()
    with pytest.raises(ValueError, match="device"):
        run_demo(_tiny(device="cuda:99" if not torch.cuda.is_available() else "nonsense"), None)


@needs_shared("iu_xray/NLMCXR_reports.tgz", "negbio/openi_gld_std14.csv")
def test_openi_mode_loader() -> None:
    reports = shared_path("iu_xray/NLMCXR_reports.tgz")
    labels = shared_path("negbio/openi_gld_std14.csv")
    from relaxclip.demo.benchmark import OPENI_TO_SYNTHETIC, load_openi

    bench = load_openi(str(reports), str(labels), image_size=16, seed=0)
    every = bench.pretrain + bench.train + bench.val + bench.test
    n = len(every)
    assert bench.findings == tuple(OPENI_TO_SYNTHETIC.values())
    assert any("excluded" in note for note in bench.notes)
    assert 3700 < n <= 3851  # 3,851 labelled reports, a few without text
    assert len({r["index"] for r in every}) == n  # disjoint, pre-training split included
    assert abs(len(bench.pretrain) - 0.35 * n) < 2 and abs(len(bench.train) - 0.35 * n) < 2
    for r in bench.test[:50]:
        assert r["image"].shape == (1, 16, 16)
        assert any(v.strip() for v in r["report"].values())
        assert r["labels"].shape == (len(OPENI_TO_SYNTHETIC),)
    assert torch.stack([r["labels"] for r in bench.train]).sum(0).min() > 0


def test_pretraining_studies_are_disjoint_from_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-training split shares no study (image) with fine-tuning, validation or test, and
    no report either except the stock whole-report normal templates (shared by every split, as
    stock reports are in real archives); the runner pre-trains on it and fine-tunes on train."""
    from relaxclip.demo import runner
    from relaxclip.demo.benchmark import load_benchmark, report_texts
    from relaxclip.demo.synthetic import _writer_and_templates

    cfg = _tiny(seeds=(0,), pretrain_steps=2, finetune_steps=2, eval_every=2, n_train=300)
    bench = load_benchmark(cfg)
    assert len(bench.pretrain) == cfg.n_train
    others = bench.train + bench.val + bench.test
    images = {r["image"].numpy().tobytes() for r in others}
    assert not any(r["image"].numpy().tobytes() in images for r in bench.pretrain)
    templates = {
        "FINDINGS: " + " ".join(s.text for s in t[:-1]) + " IMPRESSION: " + t[-1].text
        for t in _writer_and_templates(cfg.data_seed, tuple(cfg.findings))[1]
    }
    shared = {r["report"] for r in bench.pretrain} & {r["report"] for r in others}
    assert shared <= templates, shared - templates
    used: list[list[dict[str, Any]]] = []
    original = runner.batches

    def spy(records: Any, *args: Any, **kwargs: Any) -> Any:
        used.append(list(records))
        return original(records, *args, **kwargs)

    monkeypatch.setattr(runner, "batches", spy)
    lines: list[str] = []
    results = run_demo(cfg, None, log=lines.append, arms=[a for a in runner.ARMS if a.label == "a"])
    pre_ids = {id(r) for r in used[0]}
    assert len(used) == 2 and len(used[0]) == len(used[1]) == cfg.n_train
    assert not pre_ids & {id(r) for r in used[1]}  # fine-tuning records are other studies
    assert results["benchmark"]["n"]["pretrain"] == cfg.n_train
    assert results["benchmark"]["context_length"] == TEXT_CONTEXT_LENGTH
    # truncation by the fixed context is counted, printed and recorded, never silent
    bench_json = results["benchmark"]
    texts = report_texts(bench.pretrain)
    tok = WordTokenizer.build(texts, context_length=TEXT_CONTEXT_LENGTH)
    assert bench_json["pretrain_reports_truncated"] == tok.count_truncated(texts) > 0
    assert bench_json["longest_sentence_tokens"] <= TEXT_CONTEXT_LENGTH
    context_line = next(line for line in lines if line.startswith("text context:"))
    assert f"{bench_json['pretrain_reports_truncated']}/{cfg.n_train}" in context_line


def test_without_matplotlib_and_tqdm_prints_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    lines: list[str] = []
    cfg = _tiny(seeds=(0,), pretrain_steps=2, finetune_steps=2, progress=True)
    run_demo(cfg, tmp_path, log=lines.append)
    assert (tmp_path / "results.json").exists()
    assert not (tmp_path / "roc.png").exists() and not (tmp_path / "summary.png").exists()
    assert any("matplotlib is not installed" in line for line in lines)


def test_single_class_validation_split_is_a_clear_error() -> None:
    cfg = _tiny(seeds=(0,), n_val=1, pretrain_steps=1, finetune_steps=2, findings=("nodule",))
    with pytest.raises(ValueError, match="validation"):
        run_demo(cfg, None, log=lambda s: None)
