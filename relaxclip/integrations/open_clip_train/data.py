"""CSV checks, the report dataset and collate that feed open_clip's train loop sampled sentences."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from relaxclip.integrations.open_clip_train.args import OptionError, RelaxOptions
from relaxclip.integrations.open_clip_train.loss import TextGroupFeed
from relaxclip.sampling import SentenceSampler

_SEED_STRIDE = 100_003  # the sampler's seed on a rank: --seed * 100003 + rank
_log = logging.getLogger("relaxclip.open_clip_train")


def read_csv(
    path: str | Path, img_key: str, caption_key: str, sep: str, *, check_images: bool = True
) -> tuple[list[str], list[str]]:
    """The image paths and captions of an open_clip CSV, every cell as text; ``OptionError``
    for a missing column, no data row or (``check_images``) an image that is not a file."""
    import pandas as pd

    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    for flag, key in (("--csv-img-key", img_key), ("--csv-caption-key", caption_key)):
        if key not in df.columns:
            raise OptionError(
                f"{path}: no column {key!r} ({flag}); columns: {list(df.columns)} "
                f"(separator {sep!r}, --csv-separator)"
            )
    if len(df) == 0:
        raise OptionError(f"{path}: no data rows")
    images: list[str] = df[img_key].tolist()
    if check_images:
        missing = [i for i, p in enumerate(images) if not os.path.isfile(p)]
        if missing:
            raise OptionError(
                f"{path}: data row {missing[0]}: image {images[missing[0]]!r} (column "
                f"{img_key!r}) is not a file ({len(missing)} of {len(images)} rows' images are "
                f"missing; relative paths are read from {os.getcwd()})"
            )
    return images, df[caption_key].tolist()


def check_reports(path: str, images: list[str], reports: list[str], sampler: Any) -> int:
    """The number of reports without a sentence; ``OptionError`` naming the first one's row
    unless the sampler drops them (``--on-empty drop``)."""
    empty = 0
    for i, report in enumerate(reports):
        try:
            sampler.candidates(report, position=i)
        except (TypeError, ValueError):
            if sampler.on_empty == "raise":
                raise OptionError(
                    f"{path}: data row {i} (image {images[i]!r}): no sentence in "
                    f"{sampler.pool.describe()}; fix the data, choose other --report-sections, "
                    "add --report-fallback (e.g. report) or pass --on-empty drop"
                ) from None
            empty += 1
    return empty


def _make_sampler(options: RelaxOptions, **kwargs: Any) -> SentenceSampler:
    return SentenceSampler(
        num_sentences=options.num_sentences,
        sections=options.sections,
        fallback=options.fallback,
        on_empty=options.on_empty,  # type: ignore[arg-type]
        **kwargs,
    )


def check_csv_data(args: argparse.Namespace, options: RelaxOptions) -> None:
    """Check ``--train-data``/``--val-data`` before any model is built (``OptionError``): CSV
    files (``--dataset-type csv``, or ``auto`` and .csv/.tsv) with their columns and images, and
    with ``--sentence-sampling`` CSV data only, with a sentence in every report."""
    for flag, path in (("--train-data", args.train_data), ("--val-data", args.val_data)):
        kind = args.dataset_type
        is_csv = kind == "csv" or (
            kind == "auto" and str(path).rsplit(".", 1)[-1] in ("csv", "tsv")
        )
        if path is not None and options.sentence_sampling and not is_csv:
            raise OptionError(
                f"--sentence-sampling works on CSV data (--dataset-type csv, or auto with a "
                f".csv/.tsv file); {flag} {path} is read as --dataset-type {args.dataset_type}"
            )
        if path is None or not is_csv:
            continue
        if not os.path.isfile(path):
            raise OptionError(f"{path}: no such CSV file ({flag})")
        columns = (args.csv_img_key, args.csv_caption_key, args.csv_separator)
        images, captions = read_csv(path, *columns)
        if options.sentence_sampling:
            empty = check_reports(path, images, captions, _make_sampler(options))
            if empty:
                _log.warning("relaxclip: %s: %d reports have no sentence (dropped)", path, empty)


class ReportCsvDataset(Dataset[dict[str, Any]]):
    """open_clip's CSV dataset with whole reports: ``{"image": transforms(PIL image),
    "report": str}`` per row (``transforms``: open_clip's ``preprocess``)."""

    def __init__(self, images: list[str], reports: list[str], transforms: Callable[..., Any]):
        self.images, self.reports, self.transforms = images, reports, transforms

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        from PIL import Image

        return {"image": self.transforms(Image.open(self.images[idx])), "report": self.reports[idx]}


class OpenClipReportCollate:
    """``collate_fn`` giving open_clip's ``(images, tokens)`` batches of sampled sentences.

    Adds the text-group ids ``LongTensor (B,)`` when ``sampler`` has a ``group_key``. Follows
    the epoch of ``shared_epoch`` (open_clip's ``SharedEpoch``, which DataLoader workers see)
    with ``sampler.set_epoch``. ``last_texts``: the latest call's sampled strings.
    """

    def __init__(self, sampler: SentenceSampler, shared_epoch: Any) -> None:
        self.sampler = sampler
        self.shared_epoch = shared_epoch
        self.last_texts: list[str] = []
        self._epoch: int | None = None  # the epoch this copy last passed to set_epoch

    def __call__(self, batch: Sequence[Any]) -> tuple[torch.Tensor, ...]:
        epoch = int(self.shared_epoch.get_value())
        if epoch != self._epoch:  # also on the first call of every fresh worker copy
            self.sampler.set_epoch(epoch)
            self._epoch = epoch
        out = self.sampler(batch)
        self.last_texts = out["text"]
        if self.sampler.group_key is not None:
            return out["image"], out[self.sampler.token_key], out[self.sampler.group_key]
        return out["image"], out[self.sampler.token_key]


class GroupedLoader:
    """The train loader with ``--text-groups``: yields open_clip's ``(images, texts)`` from the
    collate's ``(images, texts, ids)`` batches and pushes ``ids`` to ``feed`` as it hands each
    batch over (every other attribute is the wrapped ``DataLoader``'s)."""

    def __init__(self, loader: DataLoader[Any], feed: TextGroupFeed) -> None:
        self.loader = loader
        self.feed = feed
        self.num_samples = len(loader.dataset)  # type: ignore[arg-type]
        self.num_batches = len(loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.feed.start_epoch()
        for images, texts, groups in self.loader:
            self.feed.push(groups)
            yield images, texts

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


def make_csv_dataset_fn(
    data_mod: Any, options: RelaxOptions, feed: TextGroupFeed | None = None
) -> Callable[..., Any]:
    """The replacement of ``open_clip_train.data.get_csv_dataset`` (same loader settings)."""

    def get_report_csv_dataset(
        args: argparse.Namespace,
        preprocess_fn: Callable[[Any], Any],
        is_train: bool,
        epoch: int = 0,
        tokenizer: Any = None,
    ) -> Any:
        path = args.train_data if is_train else args.val_data
        grouped = is_train and feed is not None
        sampler = _make_sampler(
            options,
            tokenizer=tokenizer,
            seed=int(args.seed) * _SEED_STRIDE + int(args.rank),
            train=bool(is_train),
            group_key="text_group" if grouped else None,
        )
        columns = (args.csv_img_key, args.csv_caption_key, args.csv_separator)
        dataset = ReportCsvDataset(*read_csv(path, *columns, check_images=False), preprocess_fn)
        shared_epoch = data_mod.SharedEpoch(epoch=epoch)
        dist_sampler: Any = DistributedSampler(dataset) if args.distributed and is_train else None
        dataloader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=is_train and dist_sampler is None,
            num_workers=args.workers,
            pin_memory=True,
            sampler=dist_sampler,
            drop_last=is_train,
            collate_fn=OpenClipReportCollate(sampler, shared_epoch),
        )
        # open_clip's loop reads these two attributes of the loader
        setattr(dataloader, "num_samples", len(dataset))  # noqa: B010
        setattr(dataloader, "num_batches", len(dataloader))  # noqa: B010
        _log.info("relaxclip: %s, %d reports: %r", path, len(dataset), sampler)
        loader = GroupedLoader(dataloader, feed) if grouped and feed else dataloader
        return data_mod.DataInfo(loader, dist_sampler, shared_epoch)

    return get_report_csv_dataset
