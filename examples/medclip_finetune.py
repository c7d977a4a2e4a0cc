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
# # Fine-tuning MedCLIP with the relaxed loss, inside MedCLIP's own training loop
#
# [MedCLIP](https://pypi.org/project/medclip/) 0.0.3 trains with `medclip.trainer.Trainer`, whose
# `train(model, train_objectives=[(dataloader, loss_model, weight)])` calls
# `loss_model(**batch)["loss_value"]`. relaxclip plugs in at exactly those two points:
#
# * `RelaxedMedCLIPLoss` (below) replaces `medclip.losses.ImageTextContrastiveLoss`: it encodes
#   with MedCLIP's `encode_image` / `encode_text` (both L2-normalise), clamps `logit_scale` as
#   `MedCLIPModel.compute_logits` does, and returns `{"loss_value": RelaxedContrastiveLoss(...)}`;
# * `SentenceSampler` replaces MedCLIP's collator: it samples report sentences and tokenizes them
#   (`input_ids`, `attention_mask`); the images come through as `batch["image"]`.
#
# **Environment.** MedCLIP 0.0.3 imports only with `transformers<=4.24`, so it has its own venv:
# `pip install -r examples/requirements-medclip.txt` (CI builds it separately).
#
# **CPU patches (visible, below).** MedCLIP 0.0.3 calls `.cuda()` unconditionally
# (`MedCLIPModel.encode_text`, `forward`, and `Trainer.train` calls `model.cuda()`).
# `CPUMedCLIPModel` overrides those to use the model's own device; on a GPU machine it behaves like
# `MedCLIPModel`.
#
# **Modes.** `--tiny` (CI, offline): MedCLIP downloads its towers in `__init__`
# (`AutoModel.from_pretrained("emilyalsentzer/Bio_ClinicalBERT")` and an ImageNet ResNet-50), so
# tiny mode saves a 2-layer BERT with MedCLIP's hidden size (768) and a WordPiece tokenizer trained
# on the synthetic reports to a local folder, and builds the model while `offline_towers()` points
# MedCLIP at that folder and at a randomly initialised ResNet-18. Real mode uses MedCLIP's own
# pretrained weights (`model.from_pretrained()`, downloaded on first use), MIMIC-CXR-JPG for
# training and the CheXpert test set for zero-shot through relaxclip's readers (`real_datasets`).
#
# Run (in the MedCLIP venv): `python examples/medclip_finetune.py --tiny` or
# `python examples/medclip_finetune.py --mimic-root M --mimic-reports R --chexpert-csv C --chexpert-root I`.

# %%
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import medclip.modeling_medclip as medclip_modeling
import torch
import torchvision
from medclip import MedCLIPModel, MedCLIPVisionModel
from medclip.trainer import Trainer as MedCLIPTrainer
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from relaxclip.demo.synthetic import SYNTHETIC_FINDINGS, SyntheticCXRDataset, make_synthetic_splits
from relaxclip.loss import RelaxedContrastiveLoss
from relaxclip.sampling import SentenceSampler
from relaxclip.zeroshot import ZeroShotClassifier

# %% [markdown]
# ## Options
# In a notebook the command line is replaced by `NOTEBOOK_ARGS` (tiny mode).

# %%
NOTEBOOK_ARGS = ["--tiny"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune MedCLIP with relaxclip.")
    p.add_argument("--tiny", action="store_true", help="offline: tiny random model, synthetic data")
    p.add_argument("--mimic-root", type=Path, help="real mode: MIMIC-CXR-JPG folder (training)")
    p.add_argument("--mimic-reports", type=Path, help="real mode: MIMIC-CXR report folder")
    p.add_argument("--chexpert-csv", type=Path, help="real mode: CheXpert test groundtruth.csv")
    p.add_argument("--chexpert-root", type=Path, help="real mode: CheXpert test image folder")
    p.add_argument("--threshold", type=float, default=0.8, help="relaxation threshold theta")
    p.add_argument("--num-sentences", type=int, default=1, help="sentences sampled per report")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (tiny: 150)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (tiny default: 1)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (tiny: 0)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "relaxclip-examples" / "medclip",
        help="where result.json (and the tiny text tower) are written",
    )
    args = p.parse_args(argv)
    real = (args.mimic_root, args.mimic_reports, args.chexpert_csv, args.chexpert_root)
    if not args.tiny and any(x is None for x in real):
        p.error("real mode needs --mimic-root --mimic-reports --chexpert-csv --chexpert-root")
    if args.workers is None:
        args.workers = 0 if args.tiny else min(8, os.cpu_count() or 1)
    args.batch_size = args.batch_size or 32
    args.lr = args.lr or (3e-4 if args.tiny else 2e-5)
    return args


IN_NOTEBOOK = "ipykernel" in sys.modules
args = parse_args(NOTEBOOK_ARGS if IN_NOTEBOOK else None)
torch.manual_seed(args.seed)
if args.threads or args.tiny:  # a tiny model gains nothing from intra-op threads
    torch.set_num_threads(args.threads or 1)
print(vars(args))

# %% [markdown]
# ## Data
# MedCLIP's image tower takes `(B, 1, H, W)` grayscale and repeats the channel itself, so the
# synthetic `(1, 64, 64)` images are used as they are.


# %%
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
        ImageLabelDataset(train, transform, mode="L", as_dict=True),
        # a CheXpert test record is a study: zero-shot on its first image
        ImageLabelDataset(
            test, transform, mode="L", image_key="image_paths", first_image=True, as_dict=True
        ),
        list(CHEXPERT_COMPETITION_LABELS),
    )


if args.tiny:
    splits = make_synthetic_splits(1024, 0, 400, image_size=64, seed=args.seed)
    train_set, test_set = SyntheticCXRDataset(splits.train), SyntheticCXRDataset(splits.test)
    label_names = list(SYNTHETIC_FINDINGS)
else:
    from medclip import MedCLIPProcessor

    processor = MedCLIPProcessor()  # MedCLIP's 224 px grayscale preprocessing
    transform = lambda im: processor(images=im, return_tensors="pt")["pixel_values"][0]  # noqa: E731
    train_set, test_set, label_names = real_datasets(args, transform)
print(f"{len(train_set)} training pairs, {len(test_set)} test images, labels {label_names}")

# %% [markdown]
# ## Patch 1 — CPU: MedCLIP 0.0.3 hard-codes `.cuda()`
# Only the methods that call `.cuda()` and are used here are overridden; each moves tensors to the
# device of the model's parameters instead.


# %%
class CPUMedCLIPModel(MedCLIPModel):
    """``MedCLIPModel`` without its unconditional ``.cuda()`` calls (same weights and outputs)."""

    def cuda(self, device: Any = None) -> CPUMedCLIPModel:
        # medclip.trainer.Trainer.train does `model = model.cuda()`.
        return super().cuda(device) if torch.cuda.is_available() else self

    def encode_text(self, input_ids: torch.Tensor = None, attention_mask: torch.Tensor = None):
        device = self.logit_scale.device  # was: input_ids.cuda(), attention_mask.cuda()
        input_ids = input_ids.to(device)
        attention_mask = attention_mask.to(device) if attention_mask is not None else None
        text_embeds = self.text_model(input_ids, attention_mask)
        return text_embeds / text_embeds.norm(dim=-1, keepdim=True)


# %% [markdown]
# ## Patch 2 — offline towers (tiny mode only)
# `offline_towers(folder)` is a context manager active only while the model is built: MedCLIP's
# `AutoModel.from_pretrained` / `AutoTokenizer.from_pretrained` then read the tiny BERT saved in
# `folder`, and its `torchvision.models.resnet50(pretrained=True)` returns a random ResNet-18
# (its `fc` is replaced by MedCLIP's 512-d projection either way).


# %%
def build_wordpiece_tokenizer(texts: list[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A lower-casing BERT-style WordPiece tokenizer trained on ``texts`` (no download)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    tok.train_from_iterator(texts, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=77,
        model_input_names=["input_ids", "attention_mask"],
    )


def save_tiny_text_tower(texts: list[str], folder: Path) -> PreTrainedTokenizerFast:
    """Save a tiny random BERT (hidden size 768, as MedCLIP's projection expects) + tokenizer."""
    tokenizer = build_wordpiece_tokenizer(texts)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=768,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=256,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return tokenizer


@contextlib.contextmanager
def offline_towers(folder: Path) -> Iterator[None]:
    """While active, MedCLIP's tower constructors read ``folder`` / build a random ResNet-18."""
    real_from_pretrained = medclip_modeling.AutoModel.from_pretrained

    def local_model(name: str, **kwargs: Any) -> nn.Module:
        return real_from_pretrained(str(folder), **kwargs)  # ignores the hub name

    def local_tokenizer(name: str, **kwargs: Any) -> PreTrainedTokenizerFast:
        return PreTrainedTokenizerFast.from_pretrained(str(folder))

    def random_resnet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return torchvision.models.resnet18(weights=None)

    with (
        mock.patch.object(medclip_modeling.AutoModel, "from_pretrained", local_model),
        mock.patch.object(medclip_modeling.AutoTokenizer, "from_pretrained", local_tokenizer),
        mock.patch.object(medclip_modeling.torchvision.models, "resnet50", random_resnet),
    ):
        yield


if args.tiny:
    tower_dir = args.output_dir / "tiny-text-tower"
    tokenizer = save_tiny_text_tower([r["report"] for r in splits.train], tower_dir)
    with offline_towers(tower_dir):
        model = CPUMedCLIPModel(vision_cls=MedCLIPVisionModel)
else:
    from transformers import AutoTokenizer

    model = CPUMedCLIPModel(vision_cls=MedCLIPVisionModel)  # downloads BERT and ResNet-50
    model.from_pretrained()  # MedCLIP's own weights (downloaded on first use)
    tokenizer = AutoTokenizer.from_pretrained(medclip_modeling.constants.BERT_TYPE)
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

# %% [markdown]
# ## The loss module MedCLIP's trainer calls
# `loss_model(**batch)` receives the `SentenceSampler` batch (`image`, `input_ids`,
# `attention_mask`, `text`, `labels`, ...) and must return `{"loss_value": loss}`.


# %%
class RelaxedMedCLIPLoss(nn.Module):
    """Drop-in for ``medclip.losses.ImageTextContrastiveLoss`` using relaxclip's loss."""

    def __init__(self, model: MedCLIPModel, threshold: float | None) -> None:
        super().__init__()
        self.model = model
        self.loss = RelaxedContrastiveLoss(threshold=threshold)

    def forward(
        self,
        image: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        text_group: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        device = self.model.logit_scale.device
        image_embeds = self.model.encode_image(image.to(device))  # L2-normalised
        text_embeds = self.model.encode_text(input_ids, attention_mask)  # L2-normalised
        self.model.logit_scale.data.clamp_(0, math.log(100))  # as MedCLIPModel.compute_logits
        # groups: two studies that drew the same sentence are not each other's negatives
        loss = self.loss(image_embeds, text_embeds, self.model.logit_scale.exp(), groups=text_group)
        return {"loss_value": loss}


# %% [markdown]
# ## Zero-shot evaluation
# MedCLIP's `encode_text(input_ids, attention_mask)` wrapped as `list[str] -> Tensor`.


# %%
@torch.no_grad()
def zero_shot_auroc(
    model: MedCLIPModel, tokenizer: Any, test_set: Dataset, labels: list[str]
) -> float:
    model.eval()

    def encode_text(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return model.encode_text(batch["input_ids"], batch["attention_mask"])

    classifier = ZeroShotClassifier(encode_text, labels)
    loader = DataLoader(test_set, batch_size=128)
    return classifier.evaluate(model.encode_image, loader).macro


auroc_before = zero_shot_auroc(model, tokenizer, test_set, label_names)
print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")

# %% [markdown]
# ## Training with MedCLIP's `Trainer`
# Only the dataloader's `collate_fn` and the loss model are ours.

# %%
collate = SentenceSampler(
    tokenizer=tokenizer,
    num_sentences=args.num_sentences,
    seed=args.seed,
    group_key="text_group",  # int64 (B,) ids of the sampled texts, passed to the loss model
)
loader = DataLoader(
    train_set,
    batch_size=args.batch_size,
    shuffle=True,
    drop_last=True,
    collate_fn=collate,
    num_workers=args.workers,
)
loss_model = RelaxedMedCLIPLoss(model, threshold=args.threshold)  # was: ImageTextContrastiveLoss
steps = args.steps or (150 if args.tiny else len(loader))
t0 = time.perf_counter()
MedCLIPTrainer().train(
    model,
    train_objectives=[(loader, loss_model, 1)],
    epochs=1,
    steps_per_epoch=steps,  # MedCLIP's trainer restarts the loader when it runs out
    scheduler="constantlr",
    optimizer_params={"lr": args.lr},
    weight_decay=0.1,
    evaluation_steps=0,  # no MedCLIP evaluator: we evaluate zero-shot below
    save_steps=steps + 1,  # no intermediate checkpoints
    save_best_model=False,
    show_progress_bar=False,
)
print(f"{steps} steps in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Result

# %%
auroc_after = zero_shot_auroc(model, tokenizer, test_set, label_names)
print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")
print(f"zero-shot macro AUROC after fine-tuning:  {auroc_after:.3f}")
args.output_dir.mkdir(parents=True, exist_ok=True)
result = {
    "example": "medclip",
    "tiny": args.tiny,
    "steps": steps,
    "auroc_before": auroc_before,
    "auroc_after": auroc_after,
}
(args.output_dir / "result.json").write_text(json.dumps(result, indent=2))
