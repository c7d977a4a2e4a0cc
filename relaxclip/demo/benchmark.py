"""The demo's data: the embedded synthetic benchmark or Open-I mode (real report text, gold
labels, images rendered from the labels), as train / validation / test record lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from relaxclip.demo.config import DemoConfig
from relaxclip.demo.synthetic import make_synthetic_records, make_synthetic_splits
from relaxclip.sampling import SentenceSampler

__all__ = [
    "OPENI_TO_SYNTHETIC",
    "Benchmark",
    "check_evaluation_splits",
    "load_benchmark",
    "load_openi",
    "report_texts",
]


@dataclass
class Benchmark:
    """Train (fine-tuning) / validation / test records (``image``, ``report``, ``labels``,
    ``index``), the finding names (label order), the source (``"synthetic"`` or ``"open-i"``),
    notes to print, and the pre-training records: studies disjoint from the other three splits
    (a pre-trained encoder has not seen the fine-tuning, validation or test studies)."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    test: list[dict[str, Any]]
    findings: tuple[str, ...]
    source: str
    notes: list[str]
    pretrain: list[dict[str, Any]]


def check_evaluation_splits(bench: Benchmark) -> None:
    """Raise ``ValueError`` unless the validation and the test split each have at least one
    finding with both positive and negative studies (otherwise the macro AUROC used to select
    checkpoints, or the reported one, is undefined)."""
    for split, records, option in (
        ("validation", bench.val, "--n-val"),
        ("test", bench.test, "--n-test"),
    ):
        if records:
            y = torch.stack([r["labels"] for r in records])
            n_pos = y.sum(0)
            if bool(((n_pos > 0) & (n_pos < len(records))).any()):
                continue
        where = f" ({option})" if bench.source == "synthetic" else ""
        raise ValueError(
            f"{split} split: no finding has both positive and negative studies among its "
            f"{len(records)} studies, so the zero-shot AUROC is undefined; use a larger "
            f"{split} split{where}"
        )


def load_benchmark(cfg: DemoConfig) -> Benchmark:
    """Open-I mode when ``cfg.reports`` and ``cfg.labels`` are set, else the synthetic benchmark
    (whose pre-training split has ``cfg.n_train`` studies of the generator's ``"pretrain"`` split:
    the same distribution, other studies)."""
    if cfg.reports is not None and cfg.labels is not None:
        return load_openi(cfg.reports, cfg.labels, image_size=cfg.image_size, seed=cfg.data_seed)
    splits = make_synthetic_splits(
        cfg.n_train,
        cfg.n_val,
        cfg.n_test,
        image_size=cfg.image_size,
        seed=cfg.data_seed,
        findings=cfg.findings,
    )
    pretrain = make_synthetic_records(
        cfg.n_train,
        "pretrain",
        image_size=cfg.image_size,
        seed=cfg.data_seed,
        findings=cfg.findings,
    )
    findings = tuple(cfg.findings)
    return Benchmark(*splits, findings, "synthetic", [], pretrain)


#: Open-I gold label (NegBio, ChestX-ray14 names) -> synthetic finding name.
OPENI_TO_SYNTHETIC: dict[str, str] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Effusion": "pleural effusion",
    "Pneumothorax": "pneumothorax",
    "Nodule": "nodule",
}


def load_openi(reports: str, labels: str, *, image_size: int, seed: int) -> Benchmark:
    """Open-I mode: real report text (read in place, never written), gold labels, and images
    rendered by :func:`~relaxclip.demo.synthetic.render_synthetic_image` from those labels.

    Reports whose FINDINGS and IMPRESSION are both empty cannot be paired with text and are
    excluded (their number is reported in the notes).  The remaining studies are split
    35/35/10/20 into pre-train/train (fine-tuning)/val/test by a permutation seeded with ``seed``
    (so the pre-trained encoder has not seen the fine-tuning, validation or test studies).
    """
    from relaxclip.data.openi import read_openi_reports
    from relaxclip.data.openi_labels import join_openi, read_openi_labels
    from relaxclip.demo.synthetic import render_synthetic_image

    names = tuple(OPENI_TO_SYNTHETIC)
    joined = join_openi(read_openi_labels(labels, labels=names), read_openi_reports(reports))
    kept: list[dict[str, Any]] = []
    empty = 0
    for i, rec in enumerate(joined.records):
        sections = {
            "findings": (rec.get("findings") or "").strip(),
            "impression": (rec.get("impression") or "").strip(),
        }
        if not any(sections.values()):
            empty += 1
            continue
        y = np.asarray(rec["labels"], dtype=np.float64)
        positive = [OPENI_TO_SYNTHETIC[n] for n, v in zip(names, y, strict=True) if v == 1.0]
        kept.append(
            {
                "image": render_synthetic_image(positive, image_size=image_size, seed=[seed, i]),
                "report": sections,
                "labels": torch.tensor(y, dtype=torch.float32),
                "index": i,
            }
        )
    order = np.random.default_rng(seed).permutation(len(kept))
    n_pre, n_tr, n_va = (int(share * len(kept)) for share in (0.35, 0.35, 0.1))
    ends = np.cumsum([n_pre, n_tr, n_va])
    pre, train, val, test = ([kept[int(j)] for j in part] for part in np.split(order, ends))
    notes = [
        f"Open-I mode: {len(joined.records)} labelled reports joined, {empty} excluded (empty "
        f"FINDINGS and IMPRESSION), {len(joined.reports_without_labels)} reports without gold "
        "labels not used; images are rendered from the gold labels (synthetic), text is real."
    ]
    findings = tuple(OPENI_TO_SYNTHETIC[n] for n in names)
    return Benchmark(train, val, test, findings, "open-i", notes, pre)


def report_texts(records: Sequence[dict[str, Any]]) -> list[str]:
    """Whole-report training text (findings + impression, no headers), as the eval sampler gives."""
    sampler = SentenceSampler(image_key=None, train=False)
    out: list[str] = []
    for i in range(0, len(records), 512):
        chunk = [{"report": r["report"]} for r in records[i : i + 512]]
        out.extend(sampler(chunk)["text"])
    return out


# ----------------------------------------------------------------------------- experiment
