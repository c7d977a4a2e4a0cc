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
# # Fine-tuning a Hugging Face `CLIPModel` with the `Trainer` and the relaxed loss
#
# Three pieces make the HF `Trainer` train with relaxclip:
#
# * `data_collator=SentenceSampler(tokenizer=hf_tokenizer)`: draws sentences from each report and
#   tokenizes them; HF tokenizers' `input_ids` / `attention_mask` are merged into the batch.
# * `TrainingArguments(remove_unused_columns=False)`: otherwise the Trainer drops the `report`
#   column (it is not an argument of `CLIPModel.forward`) before the collator sees it.
# * a `compute_loss` override calling `RelaxedContrastiveLoss` on the model's normalised
#   `image_embeds` / `text_embeds` and `logit_scale.exp()`. (`compute_loss_func` is not a good fit
#   here: it receives only the outputs and `labels` — no `logit_scale` — and the Trainer would
#   call `model(**batch)` with the collator's extra keys.)
#
# Note for transformers 5: `get_image_features` / `get_text_features` return a
# `BaseModelOutputWithPooling` whose `pooler_output` is the projected embedding (transformers 4
# returned the tensor). `image_embeddings` below and relaxclip's `hf_text_encoder` accept both.
#
# **Modes.** `--tiny` (CI, offline): `CLIPModel(CLIPConfig(...))` with 2-layer, 64-wide towers and a
# WordPiece tokenizer trained on the synthetic reports with the `tokenizers` library. Real mode:
# `openai/clip-vit-base-patch32` from the hub (downloaded on first use), MIMIC-CXR-JPG for training
# and the CheXpert test set for zero-shot through relaxclip's readers (see `real_datasets`).
#
# Run: `python examples/hf_transformers.py --tiny` or
# `python examples/hf_transformers.py --mimic-root M --mimic-reports R --chexpert-csv C --chexpert-root I`.

# %%
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

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
from transformers import (
    CLIPConfig,
    CLIPModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from relaxclip.demo.synthetic import SYNTHETIC_FINDINGS, SyntheticCXRDataset, make_synthetic_splits
from relaxclip.loss import RelaxedContrastiveLoss
from relaxclip.sampling import SentenceSampler
from relaxclip.zeroshot import ZeroShotClassifier, hf_text_encoder

# %% [markdown]
# ## Options
# In a notebook the command line is replaced by `NOTEBOOK_ARGS` (tiny mode).

# %%
NOTEBOOK_ARGS = ["--tiny"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune a HF CLIPModel with relaxclip + Trainer.")
    p.add_argument("--tiny", action="store_true", help="offline: tiny random model, synthetic data")
    p.add_argument("--model", default="openai/clip-vit-base-patch32", help="HF model (real mode)")
    p.add_argument("--mimic-root", type=Path, help="real mode: MIMIC-CXR-JPG folder (training)")
    p.add_argument("--mimic-reports", type=Path, help="real mode: MIMIC-CXR report folder")
    p.add_argument("--chexpert-csv", type=Path, help="real mode: CheXpert test groundtruth.csv")
    p.add_argument("--chexpert-root", type=Path, help="real mode: CheXpert test image folder")
    p.add_argument("--threshold", type=float, default=0.8, help="relaxation threshold theta")
    p.add_argument("--num-sentences", type=int, default=1, help="sentences sampled per report")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (tiny: 300)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (tiny default: 1)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (tiny: 0)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "relaxclip-examples" / "hf_transformers",
        help="Trainer output folder; result.json is written here",
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
# Datasets yield `{"image", "report", "labels"}` dicts: synthetic `(1, 64, 64)` images (tiny) or
# MIMIC-CXR-JPG pairs and the CheXpert test set through relaxclip's readers, images loaded lazily
# and passed through `CLIPImageProcessor` (real).


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
else:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(args.model)
    transform = lambda im: processor(images=im, return_tensors="pt")["pixel_values"][0]  # noqa: E731
    train_set, test_set, label_names = real_datasets(args, transform)
print(f"{len(train_set)} training pairs, {len(test_set)} test images, labels {label_names}")

# %% [markdown]
# ## Model and tokenizer
# The tiny tokenizer is a lower-casing WordPiece vocabulary with `[CLS] ... [SEP]` framing.
# `CLIPTextTransformer` pools the hidden state at the first `eos_token_id`, so the text config's
# `eos_token_id` is set to `[SEP]`'s id.


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
        model_max_length=64,
        model_input_names=["input_ids", "attention_mask"],
    )


if args.tiny:
    tokenizer = build_wordpiece_tokenizer([r["report"] for r in splits.train])
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,  # pooled position (must not be the legacy 2)
    }
    vision_config = {
        "image_size": 64,
        "patch_size": 16,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=64)
    model = CLIPModel(config)
else:
    from transformers import CLIPTokenizerFast

    tokenizer = CLIPTokenizerFast.from_pretrained(args.model)
    model = CLIPModel.from_pretrained(args.model)
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

# %% [markdown]
# ## Zero-shot evaluation


# %%
@torch.no_grad()
def image_embeddings(model: CLIPModel, images: torch.Tensor) -> torch.Tensor:
    """Projected image features; transformers 5 wraps them in ``BaseModelOutputWithPooling``."""
    out = model.get_image_features(pixel_values=to_rgb(images))
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def zero_shot_auroc(
    model: CLIPModel, tokenizer: Any, test_set: Dataset, labels: list[str]
) -> float:
    model.eval()
    classifier = ZeroShotClassifier(hf_text_encoder(model, tokenizer), labels)
    loader = DataLoader(test_set, batch_size=128)
    return classifier.evaluate(lambda images: image_embeddings(model, images), loader).macro


auroc_before = zero_shot_auroc(model, tokenizer, test_set, label_names)
print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")


# %% [markdown]
# ## The Trainer
# `RelaxedCLIPTrainer.compute_loss` is the only change to the HF training loop. A callback clamps
# `logit_scale` to `[0, ln 100]` after each step, as CLIP's and open_clip's training do.


# %%
class RelaxedCLIPTrainer(Trainer):
    """``Trainer`` whose loss is relaxclip's relaxed contrastive loss."""

    def __init__(self, *a: Any, loss_fn: RelaxedContrastiveLoss, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.loss_fn = loss_fn
        self.model_accepts_loss_kwargs = False  # the loss is a batch mean; no token counting

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kw: Any
    ) -> Any:
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=to_rgb(inputs["image"]),
        )
        # out.image_embeds / out.text_embeds are L2-normalised; logit_scale is a log.
        # groups: two studies that drew the same sentence are not each other's negatives
        loss = self.loss_fn(
            out.image_embeds,
            out.text_embeds,
            self.model.logit_scale.exp(),
            groups=inputs["text_group"],
        )
        return (loss, out) if return_outputs else loss


class ClampLogitScale(TrainerCallback):
    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
    ) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))


training_args = TrainingArguments(
    output_dir=str(args.output_dir / "trainer"),
    per_device_train_batch_size=args.batch_size,
    max_steps=args.steps or (300 if args.tiny else -1),
    num_train_epochs=1,
    learning_rate=args.lr,
    weight_decay=0.1,
    lr_scheduler_type="constant",
    remove_unused_columns=False,  # keep "report" for the SentenceSampler
    dataloader_drop_last=True,  # contrastive batches of equal size
    dataloader_num_workers=args.workers,
    logging_steps=50,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    use_cpu=args.tiny,
    seed=args.seed,
)
trainer = RelaxedCLIPTrainer(
    model=model,
    args=training_args,
    train_dataset=train_set,
    data_collator=SentenceSampler(
        tokenizer=tokenizer,
        num_sentences=args.num_sentences,
        seed=args.seed,
        group_key="text_group",  # int64 (B,) ids of the sampled texts
    ),
    loss_fn=RelaxedContrastiveLoss(threshold=args.threshold),
    callbacks=[ClampLogitScale()],
)
train_result = trainer.train()
print(train_result)

# %% [markdown]
# ## Result

# %%
auroc_after = zero_shot_auroc(model, tokenizer, test_set, label_names)
print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")
print(f"zero-shot macro AUROC after fine-tuning:  {auroc_after:.3f}")
args.output_dir.mkdir(parents=True, exist_ok=True)
result = {
    "example": "hf_transformers",
    "tiny": args.tiny,
    "steps": train_result.global_step,
    "auroc_before": auroc_before,
    "auroc_after": auroc_after,
}
(args.output_dir / "result.json").write_text(json.dumps(result, indent=2))
