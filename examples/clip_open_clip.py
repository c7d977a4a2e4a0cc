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
# # Fine-tuning CLIP (open_clip) with the relaxed contrastive loss
#
# This is open_clip's training step with two changes from Jang et al. (arXiv 2212.07050):
#
# 1. **the loss**: `relaxclip.loss.RelaxedContrastiveLoss` replaces `open_clip.loss.ClipLoss`
#    (same call: normalised features and the *exponentiated* `logit_scale`);
# 2. **the text**: `relaxclip.sampling.SentenceSampler` is the DataLoader's `collate_fn`; it draws
#    random sentences from each report and tokenizes them with open_clip's tokenizer, so the
#    dataset returns raw `{"image", "report"}` records instead of pre-tokenised text.
#
# Then it evaluates zero-shot with `relaxclip.zeroshot.ZeroShotClassifier`
# (prompts `"{label}"` vs `"no {label}"`, CheXzero's protocol) and reports the macro AUROC.
#
# **Modes.** `--tiny` (what CI runs, offline, under a minute on 2 CPU cores): a randomly initialised
# ViT of the same family as ViT-B/32 (2 layers, width 64) built from a config dict, open_clip's own
# BPE tokenizer (its vocabulary ships inside the package) and the synthetic image–report pairs of
# `relaxclip.demo.synthetic`. The AUROC it prints only shows that the loop learns something; it
# says nothing about real radiographs. Real mode (needs a network the first time, for the weights):
# OpenAI's CLIP ViT-B/32 weights through open_clip (`ViT-B-32-quickgelu`, `pretrained="openai"`),
# MIMIC-CXR-JPG for training and the CheXpert test set for zero-shot (see `real_datasets`).
#
# Run: `python examples/clip_open_clip.py --tiny` (CI) or, with the data (credentialed access):
# `python examples/clip_open_clip.py --mimic-root M --mimic-reports R --chexpert-csv C --chexpert-root I`
#
# **Multi-GPU**: `torchrun --nproc_per_node=N examples/clip_open_clip.py ...` runs it data-parallel
# (one process per GPU with NCCL, or CPU processes with gloo): each rank trains on its own shard of
# the data (`DistributedSampler`) inside `DistributedDataParallel`, and the loss is computed over
# the global batch (`distributed=True`, see docs/distributed.md); `--batch-size` is per rank.

# %%
from __future__ import annotations

import argparse
import gc
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
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from relaxclip.demo.synthetic import SYNTHETIC_FINDINGS, SyntheticCXRDataset, make_synthetic_splits
from relaxclip.loss import RelaxedContrastiveLoss
from relaxclip.sampling import SentenceSampler
from relaxclip.zeroshot import ZeroShotClassifier, open_clip_text_encoder

# %% [markdown]
# ## Options
# In a notebook the script's command line is replaced by `NOTEBOOK_ARGS` (tiny mode).

# %%
NOTEBOOK_ARGS = ["--tiny"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune open_clip CLIP with relaxclip.")
    p.add_argument("--tiny", action="store_true", help="offline: tiny random model, synthetic data")
    p.add_argument("--model", default="ViT-B-32-quickgelu", help="open_clip model name (real mode)")
    p.add_argument("--pretrained", default="openai", help="open_clip pretrained tag (real mode)")
    p.add_argument("--mimic-root", type=Path, help="real mode: MIMIC-CXR-JPG folder (training)")
    p.add_argument("--mimic-reports", type=Path, help="real mode: MIMIC-CXR report folder")
    p.add_argument("--chexpert-csv", type=Path, help="real mode: CheXpert test groundtruth.csv")
    p.add_argument("--chexpert-root", type=Path, help="real mode: CheXpert test image folder")
    p.add_argument("--threshold", type=float, default=0.8, help="relaxation threshold theta")
    p.add_argument("--num-sentences", type=int, default=1, help="sentences sampled per report")
    p.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (tiny: 300, real: 1 epoch)"
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (tiny default: 1)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (tiny: 0)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "relaxclip-examples" / "clip_open_clip",
        help="where result.json is written",
    )
    args = p.parse_args(argv)
    real = (args.mimic_root, args.mimic_reports, args.chexpert_csv, args.chexpert_root)
    if not args.tiny and any(x is None for x in real):
        p.error("real mode needs --mimic-root --mimic-reports --chexpert-csv --chexpert-root")
    # Defaults that differ between the modes (tiny: small random model, larger learning rate).
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


# %% [markdown]
# ## Device and processes
# Under `torchrun` (`WORLD_SIZE` > 1 in the environment) every process joins the default process
# group: NCCL with one GPU per process (`LOCAL_RANK`), gloo on CPU. A plain `python` run (or the
# notebook) is a single process on the first GPU, or the CPU.


# %%
def setup_distributed() -> tuple[torch.device, int, int]:
    """``(device, rank, world_size)``; initialises the process group when run by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if cuda else "gloo")  # rank/world size from torchrun's env
        return device, dist.get_rank(), world_size
    return device, 0, 1


device, rank, world_size = setup_distributed()
is_main = rank == 0
if is_main:
    print(vars(args), f"device {device}, {world_size} process(es)")


# %% [markdown]
# ## Model and tokenizer
# Tiny mode registers a model config of the same family as `ViT-B-32-quickgelu` (a ViT image
# tower and a causal text transformer with open_clip's BPE vocabulary) under the name
# `ViT-Tiny-quickgelu`, then builds it exactly like a real model with `pretrained=None`.

# %%
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Return ``(model, preprocess, tokenizer)``; tiny mode never touches the network."""
    if args.tiny:
        cfg_dir = Path(tempfile.mkdtemp())
        (cfg_dir / "ViT-Tiny-quickgelu.json").write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(cfg_dir)
        name, pretrained = "ViT-Tiny-quickgelu", None
    else:
        name, pretrained = args.model, args.pretrained  # downloads the weights once (cached)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    tokenizer = open_clip.get_tokenizer(name)  # SimpleTokenizer: BPE vocabulary in the package
    return model, preprocess, tokenizer


model, preprocess, tokenizer = build_model(args)
model = model.to(device)
if is_main:
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")


# %% [markdown]
# ## Data
# Datasets yield dicts `{"image": Tensor, "report": str, "labels": Tensor}`. Tiny mode: synthetic
# `(1, 64, 64)` zero-centred grayscale images (`to_rgb` repeats the channel for the RGB towers).
# Real mode: MIMIC-CXR-JPG training pairs (frontal views, full reports) and the CheXpert test set
# (5 competition labels, first image of each study) through relaxclip's readers, images loaded
# lazily and passed through open_clip's `preprocess`.


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
    train_set, test_set, label_names = real_datasets(args, preprocess)
if is_main:
    print(f"{len(train_set)} training pairs, {len(test_set)} test images, labels {label_names}")
    print("example report:", train_set[0]["report"])


# %% [markdown]
# ## Zero-shot evaluation
# `ZeroShotClassifier` embeds `"{label}"` and `"no {label}"` with the model's own text tower and
# scores each image by `softmax` over the two cosine similarities; `macro_auroc` averages the
# per-label AUROC. Under torchrun every rank evaluates the whole test set (no collective is
# needed); rank 0 prints and writes the result.


# %%
@torch.no_grad()
def zero_shot_auroc(model: Any, tokenizer: Any, test_set: Dataset, labels: list[str]) -> float:
    model.eval()
    device = model.logit_scale.device
    encode_text = open_clip_text_encoder(model, tokenizer)
    classifier = ZeroShotClassifier(lambda prompts: encode_text(prompts).cpu(), labels)
    loader = DataLoader(test_set, batch_size=128)
    result = classifier.evaluate(
        lambda images: model.encode_image(to_rgb(images.to(device))).cpu(), loader
    )
    return result.macro


auroc_before = zero_shot_auroc(model, tokenizer, test_set, label_names)
if is_main:
    print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")


# %% [markdown]
# ## Fine-tuning
# The only relaxclip-specific lines are the `collate_fn` and the loss (with `groups=`: pairs whose
# sampled sentences are identical are not treated as negatives, see the loss's docstring). Everything else is
# open_clip's own step: `model(images, tokens)` returns normalised features and
# `logit_scale.exp()`; after the optimizer step `logit_scale` is clamped to `[0, ln 100]`.
# Under torchrun the model is wrapped in `DistributedDataParallel`, each rank reads its own shard
# (`DistributedSampler`, reshuffled every epoch by `set_epoch`) and the loss gathers the features
# of all ranks (`distributed=True`): its gradients are those of the global batch.

# %%
distributed = world_size > 1
collate = SentenceSampler(
    tokenizer=tokenizer,
    num_sentences=args.num_sentences,
    seed=args.seed + rank,
    group_key="text_group",  # int64 (B,) ids: equal iff the sampled texts are equal (normalised)
)
sampler = DistributedSampler(train_set, seed=args.seed, drop_last=True) if distributed else None
loader = DataLoader(
    train_set,
    batch_size=args.batch_size,
    shuffle=sampler is None,
    sampler=sampler,
    drop_last=True,
    collate_fn=collate,
    num_workers=args.workers,
)
# was: open_clip.loss.ClipLoss(); distributed=True: the loss of the global batch under torchrun
loss_fn = RelaxedContrastiveLoss(threshold=args.threshold, distributed=distributed)
train_model: Any = DistributedDataParallel(model) if distributed else model
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
steps = args.steps or (300 if args.tiny else len(loader))

model.train()
step, epoch, t0 = 0, 0, time.perf_counter()
while step < steps:
    collate.set_epoch(epoch)
    if sampler is not None:
        sampler.set_epoch(epoch)
    for batch in loader:
        images, tokens = to_rgb(batch["image"]).to(device), batch["tokens"].to(device)
        image_features, text_features, logit_scale = train_model(images, tokens)
        # groups: two studies that drew the same sentence are not each other's negatives
        loss = loss_fn(image_features, text_features, logit_scale, groups=batch["text_group"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # as open_clip's train loop does
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        if is_main and (step % 20 == 0 or step == 1):
            print(
                f"step {step:4d}  loss {loss.item():.4f}  scale {logit_scale.item():.2f}  "
                f"text[0] {batch['text'][0]!r}"
            )
        if step == steps:
            break
    epoch += 1
if is_main:
    print(f"{steps} steps in {time.perf_counter() - t0:.1f} s")
# Drop the last step's autograd graph (it went through the all-gather) before the process group
# is destroyed: with gloo a graph still referenced at shutdown can abort the process at exit.
del loss, image_features, text_features, logit_scale, train_model
gc.collect()


# %% [markdown]
# ## Result

# %%
auroc_after = zero_shot_auroc(model, tokenizer, test_set, label_names)
if is_main:
    print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")
    print(f"zero-shot macro AUROC after fine-tuning:  {auroc_after:.3f}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "example": "clip_open_clip",
        "tiny": args.tiny,
        "steps": steps,
        "world_size": world_size,
        "auroc_before": auroc_before,
        "auroc_after": auroc_after,
    }
    (args.output_dir / "result.json").write_text(json.dumps(result, indent=2))
if dist.is_initialized():
    dist.destroy_process_group()
