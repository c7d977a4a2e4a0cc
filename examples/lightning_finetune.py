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
# # Fine-tuning CLIP with PyTorch Lightning and the relaxed contrastive loss
#
# The open_clip recipe of `clip_open_clip.py`, written as Lightning code:
#
# 1. a `LightningModule` whose `training_step` uses `relaxclip.loss.RelaxedContrastiveLoss`
#    (the global batch under Lightning's DDP strategy: `distributed=True` when the trainer has more
#    than one process) and whose validation is zero-shot: `validation_step` embeds the images,
#    `on_validation_epoch_end` gathers them from every process and scores them with
#    `ZeroShotClassifier.evaluate` (macro AUROC, logged as `val/zeroshot_auroc`);
# 2. a `LightningDataModule` whose train loader draws random report sentences with
#    `relaxclip.sampling.SentenceSampler` as its `collate_fn` (re-seeded every epoch).
#
# **Modes.** `--tiny` (what CI runs, offline, about a minute on 2 CPU cores): a randomly initialised
# ViT of the same family as ViT-B/32 (2 layers, width 64) built from a config, open_clip's BPE
# tokenizer (its vocabulary ships inside the package) and the synthetic image–report pairs of
# `relaxclip.demo.synthetic`. The AUROC it prints only shows that the loop learns something.
# Real mode (needs a network the first time, for the weights): OpenAI's CLIP ViT-B/32 through
# open_clip, MIMIC-CXR-JPG for training and the CheXpert test set for zero-shot.
#
# **Several processes.** `--devices N --strategy ddp` runs Lightning's DDP strategy (one process
# per device; `--accelerator cpu` uses gloo, GPUs NCCL). Lightning initialises `torch.distributed`
# and shards both loaders with a `DistributedSampler`; the loss gathers the features of every
# process and returns this process's share of the global-batch loss (exact gradients after DDP's
# averaging, see docs/distributed.md), and validation gathers the image embeddings of all
# processes before computing one AUROC. In a notebook use `--strategy ddp_notebook`.
#
# Run: `python examples/lightning_finetune.py --tiny` (CI, also with `--devices 2`) or, with the
# data: `python examples/lightning_finetune.py --mimic-root M --mimic-reports R --chexpert-csv C
# --chexpert-root I --devices 8 --accelerator gpu --strategy ddp --precision bf16-mixed`

# %%
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import open_clip
import torch
from torch.utils.data import DataLoader, Dataset

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
    p = argparse.ArgumentParser(description="Fine-tune open_clip CLIP with Lightning + relaxclip.")
    p.add_argument("--tiny", action="store_true", help="offline: tiny random model, synthetic data")
    p.add_argument("--model", default="ViT-B-32-quickgelu", help="open_clip model name (real mode)")
    p.add_argument("--pretrained", default="openai", help="open_clip pretrained tag (real mode)")
    p.add_argument("--mimic-root", type=Path, help="real mode: MIMIC-CXR-JPG folder (training)")
    p.add_argument("--mimic-reports", type=Path, help="real mode: MIMIC-CXR report folder")
    p.add_argument("--chexpert-csv", type=Path, help="real mode: CheXpert test groundtruth.csv")
    p.add_argument("--chexpert-root", type=Path, help="real mode: CheXpert test image folder")
    p.add_argument("--threshold", type=float, default=0.8, help="relaxation threshold theta")
    p.add_argument("--num-sentences", type=int, default=1, help="sentences sampled per report")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (tiny: 8, real: 1)")
    p.add_argument("--batch-size", type=int, default=None, help="per process (tiny: 32, real: 64)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator (cpu, gpu, auto)")
    p.add_argument("--devices", type=int, default=1, help="processes (DDP when > 1)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy (auto, ddp, ...)")
    p.add_argument("--precision", default="32-true", help="Lightning precision (32-true, ...)")
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "relaxclip-examples" / "lightning_finetune",
        help="where result.json and Lightning's logs are written",
    )
    args = p.parse_args(argv)
    real = (args.mimic_root, args.mimic_reports, args.chexpert_csv, args.chexpert_root)
    if not args.tiny and any(x is None for x in real):
        p.error("real mode needs --mimic-root --mimic-reports --chexpert-csv --chexpert-root")
    if args.devices > 1 and args.strategy == "auto":
        args.strategy = "ddp_notebook" if "ipykernel" in sys.modules else "ddp"
    args.epochs = args.epochs or (8 if args.tiny else 1)
    args.batch_size = args.batch_size or (32 if args.tiny else 64)
    args.lr = args.lr or (3e-4 if args.tiny else 1e-5)
    return args


IN_NOTEBOOK = "ipykernel" in sys.modules
args = parse_args(NOTEBOOK_ARGS if IN_NOTEBOOK else None)
L.seed_everything(args.seed, workers=True, verbose=False)
if args.tiny:  # a tiny model gains nothing from intra-op threads
    torch.set_num_threads(1)


# %% [markdown]
# ## Model, tokenizer and data
# As in `clip_open_clip.py`: tiny mode registers a 2-layer, 64-wide config of the
# `ViT-B-32-quickgelu` family and builds it with `pretrained=None`; datasets yield
# `{"image", "report", "labels"}` dicts (tiny: synthetic `(1, 64, 64)` grayscale images).

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
    return model, preprocess, open_clip.get_tokenizer(name)


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
        ImageLabelDataset(
            test, transform, mode="RGB", image_key="image_paths", first_image=True, as_dict=True
        ),
        list(CHEXPERT_COMPETITION_LABELS),
    )


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` grayscale -> ``(B, 3, H, W)``; RGB batches are returned unchanged."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class Indexed(Dataset):
    """Adds ``"index"`` (the dataset position) to each dict sample, so that validation can drop
    the duplicates a ``DistributedSampler`` pads the last shard with."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], "index": i}


model, preprocess, tokenizer = build_model(args)
if args.tiny:
    splits = make_synthetic_splits(1024, 0, 400, image_size=64, seed=args.seed)
    train_set, test_set = SyntheticCXRDataset(splits.train), SyntheticCXRDataset(splits.test)
    label_names = list(SYNTHETIC_FINDINGS)
else:
    train_set, test_set, label_names = real_datasets(args, preprocess)
print(f"{len(train_set)} training pairs, {len(test_set)} test images, labels {label_names}")


# %% [markdown]
# ## The `LightningDataModule`
# The train loader's `collate_fn` is a `SentenceSampler`: one random sentence (`--num-sentences`)
# of each report per step, tokenised after sampling. Its seed is `seed * 100003 + global_rank`, so
# every process draws its own sentences, and `set_epoch` (called by the module at the start of
# every epoch) gives every epoch new ones, in DataLoader workers too (they are re-created each
# epoch unless `persistent_workers=True`). The validation loader returns images and labels only.


# %%
class ReportDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_set: Dataset,
        val_set: Dataset,
        tokenizer: Any,
        *,
        batch_size: int,
        num_sentences: int,
        seed: int,
        workers: int,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train_set, Indexed(val_set)
        self.tokenizer, self.batch_size, self.workers = tokenizer, batch_size, workers
        self.num_sentences, self.seed = num_sentences, seed
        self.collate: SentenceSampler | None = None

    def setup(self, stage: str) -> None:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self.collate = SentenceSampler(
            tokenizer=self.tokenizer,
            num_sentences=self.num_sentences,
            seed=self.seed * 100_003 + rank,
        )

    def set_epoch(self, epoch: int) -> None:
        if self.collate is not None:
            self.collate.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,  # Lightning swaps in a DistributedSampler under DDP
            drop_last=True,
            num_workers=self.workers,
            collate_fn=self.collate,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=128,
            num_workers=self.workers,
            collate_fn=lambda batch: {
                "image": torch.stack([b["image"] for b in batch]),
                "labels": torch.stack([torch.as_tensor(b["labels"]) for b in batch]),
                "index": torch.tensor([b["index"] for b in batch]),
            },
        )


# %% [markdown]
# ## The `LightningModule`
# `training_step` is open_clip's step with the relaxed loss; `on_train_batch_end` clamps
# `logit_scale` to `[0, ln 100]` as open_clip does. The loss is built in `setup`, where the
# number of processes is known: `distributed=True` (gather over all processes, each returning
# its share of the global loss, `distributed_mode="local"`) when there is more than one.
# Validation: `validation_step` keeps the image embeddings, `on_validation_epoch_end` gathers
# them (`self.all_gather`), drops the padding duplicates by dataset index and calls
# `ZeroShotClassifier.evaluate` with fresh text embeddings of the current model.


# %%
class RelaxedCLIPModule(L.LightningModule):
    def __init__(self, model: Any, tokenizer: Any, labels: list[str], threshold: float, lr: float):
        super().__init__()
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.threshold, self.lr = threshold, lr
        self.loss_fn: RelaxedContrastiveLoss | None = None
        self._val: list[dict[str, torch.Tensor]] = []
        self.last_auroc = float("nan")

    def setup(self, stage: str) -> None:
        self.loss_fn = RelaxedContrastiveLoss(
            self.threshold, distributed=self.trainer.world_size > 1, distributed_mode="local"
        )

    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        assert self.loss_fn is not None
        image_features, text_features, logit_scale = self.model(
            to_rgb(batch["image"]), batch["tokens"]
        )
        loss = self.loss_fn(image_features, text_features, logit_scale)
        # the mean over processes of the returned losses is the global-batch loss
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/logit_scale", logit_scale.detach())
        if batch_idx == 0 and self.trainer.is_global_zero:
            print(f"epoch {self.current_epoch}: sampled text[0] {batch['text'][0]!r}")
        return loss

    def on_train_batch_end(self, *args: Any) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        features = self.model.encode_image(to_rgb(batch["image"]), normalize=True)
        self._val.append(
            {"features": features, "labels": batch["labels"].float(), "index": batch["index"]}
        )

    def on_validation_epoch_end(self) -> None:
        local = {k: torch.cat([v[k] for v in self._val]) for k in ("features", "labels", "index")}
        self._val.clear()
        gathered = self.all_gather(local)  # (W, n, ...) with several processes, else (n, ...)
        if self.trainer.world_size > 1:
            gathered = {k: v.flatten(0, 1) for k, v in gathered.items()}
        order = torch.argsort(gathered["index"])
        index = gathered["index"][order]
        keep = order[torch.cat([index.new_ones(1, dtype=torch.bool), index[1:] != index[:-1]])]
        expected = len(self.trainer.datamodule.val_set)
        if keep.numel() != expected:  # every validation sample exactly once, on every process
            raise RuntimeError(f"zero-shot set has {keep.numel()} samples, expected {expected}")
        classifier = ZeroShotClassifier(
            open_clip_text_encoder(self.model, self.tokenizer), self.labels
        )
        result = classifier.evaluate(
            lambda features: features,  # already embedded in validation_step
            [{"image": gathered["features"][keep], "labels": gathered["labels"][keep]}],
        )
        self.last_auroc = float(result.macro)
        # every process computed the same value from the gathered embeddings
        self.log("val/zeroshot_auroc", self.last_auroc, sync_dist=True)


# %% [markdown]
# ## Zero-shot AUROC before, fine-tuning, and after

# %%
datamodule = ReportDataModule(
    train_set,
    test_set,
    tokenizer,
    batch_size=args.batch_size,
    num_sentences=args.num_sentences,
    seed=args.seed,
    workers=args.workers,
)
module = RelaxedCLIPModule(model, tokenizer, label_names, args.threshold, args.lr)
trainer = L.Trainer(
    accelerator=args.accelerator,
    devices=args.devices,
    strategy=args.strategy,
    precision=args.precision,
    max_epochs=args.epochs,
    default_root_dir=args.output_dir,
    logger=L.pytorch.loggers.CSVLogger(args.output_dir),
    enable_progress_bar=False,
    enable_model_summary=False,
    log_every_n_steps=8,
    num_sanity_val_steps=0,
    check_val_every_n_epoch=max(1, args.epochs // 2),
)
auroc_before = trainer.validate(module, datamodule=datamodule, verbose=False)[0][
    "val/zeroshot_auroc"
]
trainer.fit(module, datamodule=datamodule)
auroc_after = trainer.validate(module, datamodule=datamodule, verbose=False)[0][
    "val/zeroshot_auroc"
]

# %% [markdown]
# ## Result

# %%
if trainer.is_global_zero:
    steps = trainer.global_step
    print(f"{steps} steps on {trainer.world_size} process(es)")
    print(f"zero-shot macro AUROC before fine-tuning: {auroc_before:.3f}")
    print(f"zero-shot macro AUROC after fine-tuning:  {auroc_after:.3f}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "example": "lightning_finetune",
        "tiny": args.tiny,
        "processes": trainer.world_size,
        "steps": steps,
        "auroc_before": auroc_before,
        "auroc_after": auroc_after,
    }
    (args.output_dir / "result.json").write_text(json.dumps(result, indent=2))
