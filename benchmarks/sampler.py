"""Throughput of ``SentenceSampler`` on the real Open-I reports, one core, warm cache.

Usage::

    python benchmarks/sampler.py [--archive ../shared/data/iu_xray/NLMCXR_reports.tgz]

Measured in this process, best of ``--repeats`` passes over all 3,955 reports in batches of
``--batch-size``, after one warm-up pass that fills the split cache:

1. ``no tokenizer``: reports/s of the collate on ``{"report": {"findings", "impression"}}``
   samples (text only, ``image_key=None``), and on ``{"report": "FINDINGS: ...\\nIMPRESSION: ..."}``
   strings; also with a small image tensor per sample (stacking included), with
   ``group_key="text_group"`` (stable text-group ids), and the ``SentencePool`` lookup alone (the
   cached candidates, no sampling or collating), for information.
2. ``fast HF tokenizer`` (needs ``transformers`` + ``tokenizers``): a WordPiece tokenizer trained
   in-process on the report text, wrapped in ``transformers.PreTrainedTokenizerFast``. Compares the
   collate with the tokenizer to calling the tokenizer alone on the very same sampled texts
   (``padding=True, truncation=True, return_tensors="pt"``). Prints the sampling overhead two ways:
   direct, ``t_collate_without_tokenizer / t_tokenizer`` (the work sampling adds), and end to end,
   ``(t_collate - t_tokenizer) / t_tokenizer`` (best of passes, and the median of interleaved
   paired passes; noisy on a loaded machine). Target: <= 10 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from relaxclip.data.openi import read_openi_reports
from relaxclip.sampling import SentenceSampler
from relaxclip.sentence_pool import SentencePool

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _batches(samples: list[Any], size: int) -> list[list[Any]]:
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def _hf_tokenizer(corpus: list[str]) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=4000,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", model_max_length=77
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=DEFAULT)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--num-sentences", type=int, default=1)
    args = ap.parse_args()
    if not args.archive.exists():
        sys.exit(f"archive not found: {args.archive} (needs ../shared/data)")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(1)

    records = [
        r
        for r in read_openi_reports(args.archive)
        if r["findings"].strip() or r["impression"].strip()
    ]
    n = len(records)
    dict_samples = [
        {"report": {"findings": r["findings"], "impression": r["impression"]}} for r in records
    ]
    str_samples = [
        {"report": f"FINDINGS: {r['findings']}\nIMPRESSION: {r['impression']}"} for r in records
    ]
    img_samples = [{**s, "image": torch.zeros(3, 16, 16)} for s in dict_samples]
    print(
        f"{n} Open-I reports with findings or impression; batch {args.batch_size}; "
        f"num_sentences={args.num_sentences}; one core; warm cache"
    )

    def rate(sampler: SentenceSampler, samples: list[Any]) -> float:
        batches = _batches(samples, args.batch_size)
        for b in batches:  # warm-up: fills the split cache
            sampler(b)

        def run() -> None:
            for b in batches:
                sampler(b)

        return n / _best(run, args.repeats)

    kw: dict[str, Any] = {"num_sentences": args.num_sentences, "seed": 0}
    print(
        f"no tokenizer, dict reports   : {rate(SentenceSampler(image_key=None, **kw), dict_samples):12,.0f} reports/s"
    )
    print(
        f"no tokenizer, str reports    : {rate(SentenceSampler(image_key=None, **kw), str_samples):12,.0f} reports/s"
    )
    print(
        f"no tokenizer, + 3x16x16 image: {rate(SentenceSampler(**kw), img_samples):12,.0f} reports/s"
    )
    grouped = SentenceSampler(image_key=None, group_key="text_group", **kw)
    print(f"no tokenizer, + group_key    : {rate(grouped, dict_samples):12,.0f} reports/s")
    pool = SentencePool()
    reports = [s["report"] for s in dict_samples]
    for r in reports:  # warm-up
        pool.candidates(r)
    t_pool = _best(lambda: [pool.candidates(r) for r in reports], args.repeats)
    print(f"SentencePool lookup alone    : {n / t_pool:12,.0f} reports/s (warm cache)")

    try:
        tok = _hf_tokenizer([f"{r['findings']} {r['impression']}" for r in records])
    except ImportError as exc:
        print(f"fast HF tokenizer: skipped ({exc}); pip install transformers tokenizers")
        return
    batches = _batches(dict_samples, args.batch_size)
    with_tok = SentenceSampler(tok, image_key=None, **kw)
    no_tok = SentenceSampler(image_key=None, **kw)
    texts = []
    for b in batches:  # warm-up, and the texts the tokenizer alone will see
        texts.append(with_tok(b)["text"])
        no_tok(b)

    def tok_alone() -> None:
        for t in texts:
            tok(t, padding=True, truncation=True, return_tensors="pt")

    def collate() -> None:
        with_tok.set_epoch(0)  # same draws as the texts above
        for b in batches:
            with_tok(b)

    def sample_only() -> None:
        no_tok.set_epoch(0)
        for b in batches:
            no_tok(b)

    t_tok, t_col, t_smp = [], [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit all alike
        t_tok.append(_best(tok_alone, 1))
        t_col.append(_best(collate, 1))
        t_smp.append(_best(sample_only, 1))
    with_tok.set_epoch(0)
    assert [with_tok(b)["text"] for b in batches] == texts
    tt, tc, ts = min(t_tok), min(t_col), min(t_smp)
    paired = [(c - t) / t for c, t in zip(t_col, t_tok, strict=True)]
    print(
        f"fast HF tokenizer alone      : {n / tt:12,.0f} reports/s (WordPiece, vocab {tok.vocab_size})"
    )
    print(f"collate with the tokenizer   : {n / tc:12,.0f} reports/s")
    print(f"collate without tokenizer    : {n / ts:12,.0f} reports/s (same batches)")
    print(
        f"sampling overhead over tokenizing alone: direct {100 * ts / tt:.1f} % "
        f"(sampling time / tokenizing time); end to end {100 * (tc - tt) / tt:.1f} % "
        f"(best vs best), median of paired passes {100 * statistics.median(paired):.1f} %; "
        "target <= 10 %"
    )


if __name__ == "__main__":
    main()
