# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fine-tuning BiomedCLIP (open_clip, timm ViT + PubMedBERT) with the relaxed loss
#
# BiomedCLIP (`hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`) is an open_clip
# `CustomTextCLIP`: a timm ViT-B/16 image tower and a Hugging Face BERT text tower, with a
# Hugging Face WordPiece tokenizer and a context length of 256. Fine-tuning it with relaxclip is
# the same three lines as for any open_clip model:
#
# * `SentenceSampler(tokenizer=open_clip.get_tokenizer(name))` as the `collate_fn` (open_clip's
#   `HFTokenizer` returns a `LongTensor (B, 256)`, stored under `batch["tokens"]`);
# * `RelaxedContrastiveLoss(threshold)` instead of `ClipLoss`;
# * `ZeroShotClassifier(open_clip_text_encoder(model, tokenizer), labels)` for evaluation.
#
# **Modes.** `--tiny` (CI, offline): a local open_clip config *of the same structure* — timm's
# `test_vit` (a 64-wide ViT with 16-pixel patches) and a 2-layer BERT built from a `BertConfig` —
# plus a WordPiece vocabulary trained on the synthetic reports with the `tokenizers` library, all
# written to a temporary folder and loaded with open_clip's `local-dir:` schema. Real mode loads
# BiomedCLIP from the Hugging Face hub (downloaded on first use), MIMIC-CXR-JPG for training and the
# CheXpert test set for zero-shot through relaxclip's readers (see `real_datasets`).
#
# Run: `python examples/biomedclip.py --tiny` or
# `python examples/biomedclip.py --mimic-root M --mimic-reports R --chexpert-csv C --chexpert-root I`.

# %%
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import open_clip
import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, PreTrainedTokenizerFast

from relaxclip.demo.synthetic import SYNTHETIC_FINDINGS, SyntheticCXRDataset, make_synthetic_splits
from relaxclip.loss import RelaxedContrastiveLoss
from relaxclip.sampling import SentenceSampler
from relaxclip.zeroshot import ZeroShotClassifier, open_clip_text_encoder

BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"

# %% [markdown]
# ## Options
# In a notebook the command line is replaced by `NOTEBOOK_ARGS` (tiny mode).

# %%
NOTEBOOK_ARGS = ["--tiny"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune BiomedCLIP with relaxclip.")
    p.add_argument("--tiny", action="store_true", help="offline: tiny random model, synthetic data")
    p.add_argument("--model", default=BIOMEDCLIP, help="open_clip model name (real mode)")
    p.add_argument("--mimic-root", type=Path, help="real mode: MIMIC-CXR-JPG folder (training)")
    p.add_argument("--mimic-reports", type=Path, help="real mode: MIMIC-CXR report folder")
    p.add_argument("--chexpert-csv", type=Path, help="real mode: CheXpert test groundtruth.csv")
    p.add_argument("--chexpert-root", type=Path, help="real mode: CheXpert test image folder")
    p.add_argument("--threshold", type=float, default=0.8, help="relaxation threshold theta")
    p.add_argument("--num-sentences", type=int, default=1, help="sentences sampled per report")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (tiny: 600)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (tiny default: 1)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (tiny: 0)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "relaxclip-examples" / "biomedclip",
        help="where result.json (and the tiny model folder) are written",
    )
    args = p.parse_args(argv)
    real = (args.mimic_root, args.mimic_reports, args.chexpert_csv, args.chexpert_root)
    if not args.tiny and any(x is None for x in real):
        p.error("real mode needs --mimic-root --mimic-reports --chexpert-csv --chexpert-root")
    if args.workers is None:
        args.workers = 0 if args.tiny else min(8, os.cpu_count() or 1)
    args.batch_size = args.batch_size or (32 if args.tiny else 64)
    args.lr = args.lr or (3e-4 if args.tiny else 1e-5)
    return args


IN_NOTEBOOK = "ipykernel" in sys.modules
args = parse_args(NOTEBOOK_ARGS if IN_NOTEBOOK else None)
torch.manual_seed(args.seed)
if args.threads or args.tiny:  # a tiny model gains nothing from intra-op threads
    torch.set_num_threads(args.threads or 1)
print(vars(args))

# %% [markdown]
# ## Data
# Datasets yield `{"image", "report", "labels"}` dicts: synthetic `(1, 64, 64)` images in tiny mode;
# in real mode MIMIC-CXR-JPG pairs and the CheXpert test set through relaxclip's readers, images
# loaded lazily and passed through the model's `preprocess` (built in the next cell).


# %%
def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` grayscale -> ``(B, 3, H, W)``; RGB batches are returned unchanged."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def real_datasets(args: argparse.Namespace, transform: Any) -> tuple[Dataset, Dataset, list[str]]:
    """MIMIC-CXR-JPG (train split, PA/AP) for training, CheXpert test for zero-shot."""
    from relaxclip.data import (
        CHEXPERT_COMPETITION_LABELS,
        ImageLabelDataset,
        read_chexpert_test,
        read_mimic_cxr,
    )

    train = read_mimic_cxr(
        args.mimic_root, split="train", views={"PA", "AP"}, reports_root=args.mimic_reports
    )
    test = read_chexpert_test(
        args.chexpert_csv, args.chexpert_root, labels=CHEXPERT_COMPETITION_LABELS
    )
    return (
        ImageLabelDataset(train, transform, mode="RGB", as_dict=True),
        # a CheXpert test record is a study: zero-shot on its first image
        ImageLabelDataset(
            test, transform, mode="RGB", image_key="image_paths", first_image=True, as_dict=True
        ),
        list(CHEXPERT_COMPETITION_LABELS),
    )


if args.tiny:
    splits = make_synthetic_splits(1024, 0, 400, image_size=64, seed=args.seed)
    train_set, test_set = SyntheticCXRDataset(splits.train), SyntheticCXRDataset(splits.test)
    label_names = list(SYNTHETIC_FINDINGS)

# %% [markdown]
# ## Model and tokenizer
# `build_tiny_biomedclip` writes what BiomedCLIP's hub repository holds — an
# `open_clip_config.json` (timm vision tower, HF text tower, `context_length` 256 there, 64 here), a BERT
# `config.json` and the tokenizer files — at toy size, then loads the folder with
# `local-dir:`. `pretrained_text=False` stops open_clip from loading BERT weights that do not exist.


# %%
TINY_CONTEXT = 64  # BiomedCLIP uses 256; the synthetic sentences are short


def build_wordpiece_tokenizer(texts: list[str], folder: Path, vocab_size: int = 2000) -> None:
    """Train a lower-casing BERT WordPiece vocabulary on ``texts`` and save it to ``folder``."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=TINY_CONTEXT,
        model_input_names=["input_ids", "attention_mask"],
    )
    hf_tok.save_pretrained(folder)


def build_tiny_biomedclip(texts: list[str], folder: Path) -> str:
    """Write a toy BiomedCLIP-structured model folder; return its open_clip name."""
    folder.mkdir(parents=True, exist_ok=True)
    build_wordpiece_tokenizer(texts, folder)
    vocab_size = len(PreTrainedTokenizerFast.from_pretrained(folder))
    BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=TINY_CONTEXT,
    ).save_pretrained(folder)
    config = {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {
                "timm_model_name": "test_vit",
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": 64,
            },
            "text_cfg": {
                "hf_model_name": str(folder),
                "hf_tokenizer_name": str(folder),
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": TINY_CONTEXT,
            },
        },
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return f"local-dir:{folder}"


if args.tiny:
    name = build_tiny_biomedclip([r["report"] for r in splits.train], args.output_dir / "tiny")
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained_text=False)
else:
    name = args.model  # downloads BiomedCLIP's config, weights and tokenizer once (cached)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    train_set, test_set, label_names = real_datasets(args, preprocess)
tokenizer = open_clip.get_tokenizer(name)  # HFTokenizer (BiomedCLIP: context length 256)
print(f"{len(train_set)} training pairs, {len(test_set)} test images, labels {label_names}")
print(type(model).__name__, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
print("tokens of 'No pleural effusion.':", tokenizer(["No pleural effusion."])[0, :8].tolist())

# %% [markdown]
# ## Zero-shot evaluation


# %%
@torch.no_grad()
def zero_shot_auroc(model: Any, tokenizer: Any, test_set: Dataset, labels: list[str]) -> float:
    model.eval()
    classifier = ZeroShotClassifier(open_clip_text_encoder(model, tokenizer), labels)
    loader = DataLoader(test_set, batch_size=128)
    return classifier.evaluate(lambda images: model.encode_image(to_rgb(images)), loader).macro


auroc_before = zero_shot_auroc(model, tokenizer, test_set, label_names)
print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")

# %% [markdown]
# ## Fine-tuning
# open_clip's step with relaxclip's collate and loss; `logit_scale` clamped as open_clip does.

# %%
collate = SentenceSampler(
    tokenizer=tokenizer,
    num_sentences=args.num_sentences,
    seed=args.seed,
    group_key="text_group",  # int64 (B,) ids: equal iff the sampled texts are equal (normalised)
)
loader = DataLoader(
    train_set,
    batch_size=args.batch_size,
    shuffle=True,
    drop_last=True,
    collate_fn=collate,
    num_workers=args.workers,
)
loss_fn = RelaxedContrastiveLoss(threshold=args.threshold)  # was: open_clip.loss.ClipLoss()
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
steps = args.steps or (600 if args.tiny else len(loader))

model.train()
step, epoch, t0 = 0, 0, time.perf_counter()
while step < steps:
    collate.set_epoch(epoch)
    for batch in loader:
        image_features, text_features, logit_scale = model(to_rgb(batch["image"]), batch["tokens"])
        # groups: two studies that drew the same sentence are not each other's negatives
        loss = loss_fn(image_features, text_features, logit_scale, groups=batch["text_group"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        if step % 50 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  text[0] {batch['text'][0]!r}")
        if step == steps:
            break
    epoch += 1
print(f"{steps} steps in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Result

# %%
auroc_after = zero_shot_auroc(model, tokenizer, test_set, label_names)
print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")
print(f"zero-shot macro AUROC after fine-tuning:  {auroc_after:.3f}")
args.output_dir.mkdir(parents=True, exist_ok=True)
result = {
    "example": "biomedclip",
    "tiny": args.tiny,
    "steps": steps,
    "auroc_before": auroc_before,
    "auroc_after": auroc_after,
}
(args.output_dir / "result.json").write_text(json.dumps(result, indent=2))
