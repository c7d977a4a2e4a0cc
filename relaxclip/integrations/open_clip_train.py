"""open_clip's own trainer with the relaxed loss and random sentence sampling.

Usage (every ``open_clip_train.main`` argument is accepted unchanged; seven are added)::

    python -m relaxclip.integrations.open_clip_train \\
        --relax-threshold 0.8 --sentence-sampling --num-sentences 1 \\
        --report-sections findings,impression --text-groups \\
        --dataset-type csv --train-data train.csv --csv-img-key filepath --csv-caption-key report \\
        --model ViT-B-32-quickgelu --pretrained openai --batch-size 64 --epochs 10 ...

    torchrun --nproc_per_node=8 -m -- relaxclip.integrations.open_clip_train ...   # DDP

(the ``--`` keeps torchrun from reading open_clip's ``--logs`` as its own ``--logs-specs``).

relaxclip's options:

* ``--relax-threshold θ``: the relaxation threshold of :class:`~relaxclip.loss.RelaxedContrastiveLoss`
  (a cosine similarity in (-1, 1]); ``none`` (the default) or ``1`` is the plain CLIP loss, equal to
  open_clip's ``ClipLoss``. The loss always replaces the one ``open_clip.create_loss(args)`` would
  build (``ClipLoss``); ``--siglip``, CoCa models, ``--distill-*`` and ``--horovod`` select losses or
  a communication layer relaxclip does not implement and are rejected with an error.
* ``--relax-quantile Q`` (excludes ``--relax-threshold``): a quantile threshold,
  ``RelaxedContrastiveLoss(relax_quantile=Q)``: θ of every step is the Q-quantile, Q in (0, 1),
  of the positive cosines of the batch the loss sees (the global batch under DDP).
* ``--relax-momentum M`` (needs ``--relax-quantile``): θ_t = M θ_{t-1} + (1 - M) θ_step, M in
  [0, 1) (default 0). The average is the loss module's buffer state, which open_clip's
  checkpoints do not hold: :class:`LossStateKeeper` saves it after every epoch to
  ``<logs>/<name>/relaxclip_loss_state/epoch_<e>.pth`` and restores it on ``--resume`` (a
  missing file with M > 0 is an error). Only training calls update it (open_clip's
  ``evaluate`` does not call the loss); with ``--accum-freq A`` it is updated A times per
  optimizer step.
* ``--sentence-sampling``: for ``--dataset-type csv`` (or ``auto`` with a ``.csv``/``.tsv`` file)
  the caption column holds whole reports; each training step draws sentences from every report
  with :class:`~relaxclip.sampling.SentenceSampler` and tokenises them afterwards with the model's
  open_clip tokenizer. Validation data (``--val-data``) gets every sentence of the chosen sections,
  deterministically. Without this flag the CSV is open_clip's own ``CsvDataset`` (whole caption).
* ``--num-sentences``: sentences per report and step: ``k`` (int >= 1), a fraction ``f`` in (0, 1]
  (``ceil(f * n)``), or a range ``lo-hi`` (uniform, inclusive); default 1, the paper's setting.
* ``--report-sections``: comma-separated section names used for sampling (default
  ``findings,impression``), or ``all``. A report with no recognised header is used whole.
* ``--text-groups`` (needs ``--sentence-sampling`` and ``--train-data``): training rows whose
  sampled texts are equal after :func:`~relaxclip.sampling.group_text` normalisation (the ids of
  :func:`~relaxclip.sampling.text_group_ids`, as ``SentenceSampler(group_key=...)`` gives them)
  are not negatives of each other: the loss gets them as ``groups=`` (see
  :class:`~relaxclip.loss.RelaxedContrastiveLoss`). Under DDP the ids are gathered with the
  features (two ranks that drew the same sentence are one group); with ``--accum-freq A`` the
  loss of every micro-step sees the A micro-batches' features concatenated in order, and gets
  the A batches' ids concatenated in the same order.

Distributed training: open_clip's ``--local-loss`` / ``--gather-with-grad`` choose how ``ClipLoss``
gathers features. relaxclip always gathers with gradient (its gradients are exact, see
``docs/distributed.md``); ``--local-loss`` selects ``distributed_mode="local"`` (each rank computes
the loss rows of its own samples against the global batch; equal to open_clip's
``--local-loss --gather-with-grad``), otherwise ``"global"`` (every rank computes the full global
loss; equal to open_clip's ``--gather-with-grad``). Without ``--gather-with-grad`` open_clip would
drop the other ranks' gradient contributions; relaxclip does not, and logs a warning saying so.

Per-epoch randomness: the collate reads the epoch from open_clip's ``SharedEpoch`` (shared memory,
set by ``DataInfo.set_epoch`` at the start of every epoch, so DataLoader workers see it too) and
calls ``SentenceSampler.set_epoch``; the sampler's seed is ``--seed * 100003 + rank``. The
sentences of a batch therefore depend on (``--seed``, rank, epoch, worker, batch index within the
worker) and the batch's reports, not on how many epochs this process has run, so ``--resume``
continues with the resumed epoch's stream.

How it hooks in. While open_clip's ``main`` runs, up to three module attributes are replaced
(and restored afterwards): ``open_clip_train.main.create_loss`` (builds the relaxed loss), with
``--sentence-sampling`` ``open_clip_train.data.get_csv_dataset`` (builds the report dataset) and
with ``--relax-quantile`` ``open_clip_train.main.train_one_epoch`` (:class:`LossStateKeeper`).
:func:`check_hook_points` verifies, before anything runs, that these names exist with the expected
signatures and are used the way this module relies on; otherwise :class:`OpenClipVersionError`
names the supported versions (:data:`SUPPORTED_OPEN_CLIP`). The fallback for other versions is the
manual replacement described in ``docs/integrations.md``.

How the group ids reach the loss (``--text-groups``). open_clip's loop unpacks
``images, texts = batch`` and calls ``loss(**model_out, output_dict=True)``, so nothing per batch
can ride along through the loop. The train collate returns ``(images, tokens, ids)``, computed in
the DataLoader worker from the sampled strings; the train ``DataInfo.dataloader`` is a thin
wrapper (:class:`_GroupedLoader`) that hands ``(images, tokens)`` to the loop and puts ``ids`` into
a :class:`TextGroupFeed`; the loss (:class:`TextGroupLoss`) takes the ids of the current window
of ``accum_freq`` batches from the feed. The feed checks the pairing at run time: the loss must
be called exactly ``accum_freq`` times per window with as many rows as the window holds, else a
``RuntimeError`` says that open_clip's loop no longer matches. The model and its inputs are not
touched, so ``--torchcompile`` and AMP are unaffected (the ids are integers: autocast and
precision do not apply).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from relaxclip.distributed import DistributedMode
from relaxclip.loss import RelaxedContrastiveLoss
from relaxclip.sampling import NumSentences, SentenceSampler

__all__ = [
    "SUPPORTED_OPEN_CLIP",
    "TESTED_OPEN_CLIP",
    "LOSS_STATE_DIR",
    "HookPoints",
    "LossStateKeeper",
    "OpenClipReportCollate",
    "OpenClipVersionError",
    "RelaxOptions",
    "ReportCsvDataset",
    "TextGroupFeed",
    "TextGroupLoss",
    "build_parser",
    "check_hook_points",
    "main",
    "loss_state_path",
    "make_loss",
    "parse_relax_args",
    "sampler_seed",
]

#: open_clip_torch versions this module supports: the tiny training tests passed with 3.0.0,
#: 3.2.0 and 3.3.0. (``open_clip_train`` ships inside the ``open_clip_torch`` wheel from 2.26.1
#: on; 2.26.1 and 2.32.0 have the same hook points but were not tested: they run with a warning.)
SUPPORTED_OPEN_CLIP = ">=3.0,<3.4"
#: The version CI runs (``examples/requirements-integrations.txt``).
TESTED_OPEN_CLIP = "3.3.0"

DEFAULT_SECTIONS: tuple[str, ...] = ("findings", "impression")
_SEED_STRIDE = 100_003
_log = logging.getLogger("relaxclip.open_clip_train")


class OpenClipVersionError(RuntimeError):
    """open_clip's trainer is missing, or its internals that this module hooks into have moved."""


@dataclass(frozen=True)
class RelaxOptions:
    """relaxclip's own command-line options (everything else is open_clip's).

    ``threshold``: θ or ``None`` (plain CLIP); ``sentence_sampling``: use the report dataset and
    :class:`SentenceSampler` for CSV data; ``num_sentences`` and ``sections``: passed to the
    sampler (``sections=None``: every section); ``text_groups``: pass the text-group ids of the
    sampled sentences to the loss (needs ``sentence_sampling``); ``relax_quantile`` (q in (0, 1)
    or ``None``) and ``relax_momentum`` (m in [0, 1)): the loss's quantile threshold (then
    ``threshold`` is ``None`` and unused) and its moving-average momentum.
    """

    threshold: float | None = None
    sentence_sampling: bool = False
    num_sentences: NumSentences = 1
    sections: tuple[str, ...] | None = DEFAULT_SECTIONS
    text_groups: bool = False
    relax_quantile: float | None = None
    relax_momentum: float = 0.0


# ---------------------------------------------------------------------------------- arguments
def _threshold(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a cosine similarity in (-1, 1] or 'none', got {text!r}"
        ) from None
    if not -1.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a cosine similarity in (-1, 1], got {value}")
    return value


def _unit_interval(text: str, flag: str, lo_closed: bool) -> float:
    """A float in (0, 1) (``lo_closed=False``) or [0, 1) (``lo_closed=True``) for ``flag``."""
    want = f"a number in {'[' if lo_closed else '('}0, 1)"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
    if not ((0.0 <= value if lo_closed else 0.0 < value) and value < 1.0):
        raise argparse.ArgumentTypeError(f"expected {want} ({flag}), got {value}")
    return value


def _quantile(text: str) -> float:
    return _unit_interval(text, "the quantile q of the positive cosines", lo_closed=False)


def _momentum(text: str) -> float:
    return _unit_interval(text, "0 = no smoothing", lo_closed=True)


def _num_sentences(text: str) -> NumSentences:
    spec: NumSentences
    try:
        if "-" in text.strip("-"):
            lo, hi = text.split("-", 1)
            spec = (int(lo), int(hi))
        elif any(c in text for c in ".eE"):
            spec = float(text)
        else:
            spec = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int >= 1, a fraction in (0, 1] or a range lo-hi, got {text!r}"
        ) from None
    try:
        SentenceSampler(num_sentences=spec)  # the sampler's own validation
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _sections(text: str) -> tuple[str, ...] | None:
    """``"findings,impression"`` -> ``("findings", "impression")``; ``"all"`` -> ``None``."""
    if text.strip().lower() == "all":
        return None
    names = tuple(s.strip().lower() for s in text.split(","))
    if any(not s for s in names):
        raise ValueError(
            f"expected comma-separated section names (e.g. findings,impression) or 'all', "
            f"got {text!r}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The parser of relaxclip's own options (unknown options are left for open_clip)."""
    p = argparse.ArgumentParser(
        prog="python -m relaxclip.integrations.open_clip_train",
        description="open_clip's trainer (open_clip_train.main) with relaxclip's relaxed "
        "contrastive loss and random sentence sampling. Every open_clip_train.main option is "
        "accepted unchanged; relaxclip adds:",
        add_help=False,
        allow_abbrev=False,
    )
    theta = p.add_mutually_exclusive_group()
    theta.add_argument(
        "--relax-threshold",
        type=_threshold,
        default=None,
        metavar="THETA",
        help="relaxation threshold θ in (-1, 1]; 'none' (default) = plain CLIP loss",
    )
    theta.add_argument(
        "--relax-quantile",
        type=_quantile,
        default=None,
        metavar="Q",
        help="quantile threshold: θ of each step is the Q-quantile, Q in (0, 1), of the "
        "(global) batch's positive cosines, so the top 1-Q share is relaxed (excludes "
        "--relax-threshold)",
    )
    p.add_argument(
        "--relax-momentum",
        type=_momentum,
        default=None,
        metavar="M",
        help="smooth the quantile threshold across steps: θ_t = M θ_{t-1} + (1-M) θ_step, M in "
        "[0, 1) (default 0: no smoothing; needs --relax-quantile; its state is saved next to "
        "open_clip's checkpoints and restored on --resume)",
    )
    p.add_argument(
        "--sentence-sampling",
        action="store_true",
        help="CSV captions are whole reports; sample sentences per step (SentenceSampler)",
    )
    p.add_argument(
        "--num-sentences",
        type=_num_sentences,
        default=None,
        metavar="K",
        help="sentences per report and step: int k, fraction f in (0, 1], or range lo-hi "
        "(default 1; needs --sentence-sampling)",
    )
    p.add_argument(
        "--report-sections",
        default=None,
        metavar="NAMES",
        help="comma-separated report sections to sample from, or 'all' "
        "(default findings,impression; needs --sentence-sampling)",
    )
    p.add_argument(
        "--text-groups",
        action="store_true",
        help="training rows whose sampled sentences are equal (relaxclip.sampling.group_text) are "
        "not negatives of each other (the loss's groups=; needs --sentence-sampling)",
    )
    return p


def parse_relax_args(argv: Sequence[str]) -> tuple[RelaxOptions, list[str]]:
    """Split ``argv`` into relaxclip's options and the rest (open_clip's, order kept).

    Raises ``SystemExit(2)`` (argparse) for a bad value, for ``--num-sentences`` /
    ``--report-sections`` / ``--text-groups`` without ``--sentence-sampling`` (they would have no
    effect; the text groups are computed from the sampled sentences), for ``--relax-threshold``
    together with ``--relax-quantile``, and for ``--relax-momentum`` without ``--relax-quantile``.
    """
    parser = build_parser()
    ns, rest = parser.parse_known_args(list(argv))
    if ns.relax_momentum is not None and ns.relax_quantile is None:
        parser.error(
            "argument --relax-momentum: needs --relax-quantile (it smooths the quantile "
            "threshold across steps; an absolute --relax-threshold has nothing to smooth)"
        )
    if not ns.sentence_sampling:
        for flag, value in (
            ("--num-sentences", ns.num_sentences),
            ("--report-sections", ns.report_sections),
            ("--text-groups", ns.text_groups or None),
        ):
            if value is not None:
                parser.error(f"{flag} needs --sentence-sampling (it would have no effect)")
    sections: tuple[str, ...] | None = DEFAULT_SECTIONS
    if ns.report_sections is not None:
        try:
            sections = _sections(ns.report_sections)
        except ValueError as exc:
            parser.error(f"argument --report-sections: {exc}")
    options = RelaxOptions(
        threshold=ns.relax_threshold,
        sentence_sampling=ns.sentence_sampling,
        num_sentences=1 if ns.num_sentences is None else ns.num_sentences,
        sections=sections,
        text_groups=ns.text_groups,
        relax_quantile=ns.relax_quantile,
        relax_momentum=0.0 if ns.relax_momentum is None else ns.relax_momentum,
    )
    return options, rest


# ---------------------------------------------------------------------------------- hook points
def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise OpenClipVersionError(
            f"open_clip's trainer could not be imported ({name}: {exc}). relaxclip's open_clip "
            f"trainer integration needs open_clip_torch{SUPPORTED_OPEN_CLIP} (tested: "
            f"{TESTED_OPEN_CLIP}) and its training dependencies: pip install "
            f"'open_clip_torch=={TESTED_OPEN_CLIP}' webdataset pandas braceexpand "
            "(or pip install 'relaxclip[openclip]')"
        ) from exc


def _open_clip_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return "unknown"


def _in_supported_range(ver: str) -> bool:
    try:
        parts = tuple(int(p) for p in ver.split("+")[0].split(".")[:3])
    except ValueError:
        return False
    return (3, 0, 0) <= parts < (3, 4)


@dataclass(frozen=True)
class HookPoints:
    """The open_clip_train modules this integration patches (see :func:`check_hook_points`)."""

    main: ModuleType
    data: ModuleType
    train: ModuleType
    version: str


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def check_hook_points(text_groups: bool = False, loss_state: bool = False) -> HookPoints:
    """Verify that open_clip's trainer has every internal this module hooks into.

    Checks: ``open_clip_train.main.main`` calls ``create_loss(args)`` (a module global there, which
    is replaced) and ``get_data``; ``open_clip_train.data.get_csv_dataset(args, preprocess_fn,
    is_train, epoch, tokenizer)`` exists and ``get_dataset_fn`` returns it by global name (so
    replacing it takes effect); ``DataInfo`` has the fields ``dataloader``, ``sampler``,
    ``shared_epoch`` and ``SharedEpoch`` has ``get_value``; ``train_one_epoch`` unpacks
    ``images, texts = batch``, calls ``data['train'].set_epoch(epoch)`` and the loss as
    ``loss(**model_out, output_dict=True)``. With ``text_groups`` also: the loop calls the loss on
    the micro-batches' features concatenated in order,
    ``torch.cat(accumulated[:j] + [model_out[key]] + accumulated[j + 1:])`` (``--accum-freq``),
    which :class:`TextGroupFeed` matches. With ``loss_state`` (``--relax-quantile``, whose loss
    state :class:`LossStateKeeper` saves and restores) also: ``open_clip_train.main`` has the
    globals ``train_one_epoch`` (replaced), ``pt_load`` and ``check_exists``, and ``main`` calls
    ``train_one_epoch(model, data, loss, epoch, ...)`` for ``epoch in range(start_epoch,
    args.epochs)`` with ``start_epoch = checkpoint["epoch"]`` of a resumed checkpoint.

    Returns the modules; raises :class:`OpenClipVersionError` listing every failed check and
    naming :data:`SUPPORTED_OPEN_CLIP` otherwise.
    """
    main_mod = _import("open_clip_train.main")
    data_mod = _import("open_clip_train.data")
    train_mod = _import("open_clip_train.train")
    problems: list[str] = []

    main_fn = getattr(main_mod, "main", None)
    main_src = _source(main_fn)
    if not callable(main_fn):
        problems.append("open_clip_train.main.main is missing")
    for name in ("create_loss", "get_data"):
        if not callable(getattr(main_mod, name, None)):
            problems.append(f"open_clip_train.main.{name} is missing")
        elif f"{name}(" not in main_src:
            problems.append(f"open_clip_train.main.main no longer calls {name}(...)")

    csv_fn = getattr(data_mod, "get_csv_dataset", None)
    want = ["args", "preprocess_fn", "is_train", "epoch", "tokenizer"]
    if not callable(csv_fn):
        problems.append("open_clip_train.data.get_csv_dataset is missing")
    elif list(inspect.signature(csv_fn).parameters) != want:
        problems.append(
            f"open_clip_train.data.get_csv_dataset has parameters "
            f"{list(inspect.signature(csv_fn).parameters)}, expected {want}"
        )
    if "get_csv_dataset" not in _source(getattr(data_mod, "get_dataset_fn", None)):
        problems.append("open_clip_train.data.get_dataset_fn no longer returns get_csv_dataset")
    info = getattr(data_mod, "DataInfo", None)
    fields = set(getattr(info, "__dataclass_fields__", {}))
    if not {"dataloader", "sampler", "shared_epoch"} <= fields:
        problems.append(
            f"open_clip_train.data.DataInfo fields are {sorted(fields)}, expected dataloader, "
            "sampler, shared_epoch"
        )
    if not callable(getattr(getattr(data_mod, "SharedEpoch", None), "get_value", None)):
        problems.append("open_clip_train.data.SharedEpoch.get_value is missing")

    if loss_state:
        for name in ("train_one_epoch", "pt_load", "check_exists"):
            if not callable(getattr(main_mod, name, None)):
                problems.append(f"open_clip_train.main.{name} is missing")
        for snippet in (
            "train_one_epoch(model, data, loss, epoch,",
            "for epoch in range(start_epoch, args.epochs)",
            'start_epoch = checkpoint["epoch"]',
        ):
            if snippet not in main_src:
                problems.append(f"open_clip_train.main.main no longer has `{snippet}`")

    train_src = _source(getattr(train_mod, "train_one_epoch", None))
    snippets = [
        "images, texts = batch",
        "data['train'].set_epoch(epoch)",
        "loss(**model_out, output_dict=True)",
    ]
    if text_groups:
        snippets.append("torch.cat(accumulated[:j] + [model_out[key]] + accumulated[j + 1:])")
    for snippet in snippets:
        if snippet not in train_src:
            problems.append(f"open_clip_train.train.train_one_epoch no longer has `{snippet}`")

    ver = _open_clip_version()
    if problems:
        raise OpenClipVersionError(
            f"open_clip_torch {ver}: its trainer's internals moved, relaxclip cannot hook into "
            f"them: {'; '.join(problems)}. relaxclip's open_clip trainer integration needs "
            f"open_clip_torch{SUPPORTED_OPEN_CLIP} (tested: {TESTED_OPEN_CLIP}); install "
            f"'open_clip_torch=={TESTED_OPEN_CLIP}', or replace the loss by hand as "
            "docs/integrations.md describes (fallback)."
        )
    if not _in_supported_range(ver):
        _log.warning(
            "relaxclip: open_clip_torch %s is outside the supported range %s (tested: %s); its "
            "hook points look unchanged, continuing",
            ver,
            SUPPORTED_OPEN_CLIP,
            TESTED_OPEN_CLIP,
        )
    return HookPoints(main=main_mod, data=data_mod, train=train_mod, version=ver)


# ---------------------------------------------------------------------------------- loss
def _check_supported(args: argparse.Namespace, options: RelaxOptions) -> None:
    """Reject open_clip options that select a loss or layer relaxclip does not implement."""
    unsupported = []
    if getattr(args, "siglip", False):
        unsupported.append("--siglip (open_clip's sigmoid loss; relaxclip's is the softmax loss)")
    if "coca" in str(getattr(args, "model", "")).lower():
        unsupported.append(f"--model {args.model} (CoCa adds a captioning loss)")
    if getattr(args, "distill_model", None) is not None or (
        getattr(args, "distill_pretrained", None) is not None
    ):
        unsupported.append("--distill-model/--distill-pretrained (distillation loss)")
    if getattr(args, "horovod", False):
        unsupported.append("--horovod (relaxclip gathers with torch.distributed; use torchrun)")
    if getattr(args, "loss_dist_impl", None) is not None:
        unsupported.append("--loss-dist-impl (a SigLIP option)")
    if unsupported:
        raise ValueError(
            "relaxclip.integrations.open_clip_train: not supported with relaxclip's loss: "
            + "; ".join(unsupported)
        )
    if options.sentence_sampling:
        for flag, path in (("--train-data", args.train_data), ("--val-data", args.val_data)):
            if path is None:
                continue
            kind = args.dataset_type
            if kind == "auto":
                kind = "csv" if str(path).rsplit(".", 1)[-1] in ("csv", "tsv") else "other"
            if kind != "csv":
                raise ValueError(
                    f"--sentence-sampling works on CSV data (--dataset-type csv, or auto with a "
                    f".csv/.tsv file); {flag} {path} is read as --dataset-type "
                    f"{args.dataset_type}"
                )
        if args.train_data is None and args.val_data is None:
            raise ValueError("--sentence-sampling needs --train-data or --val-data (a CSV file)")
    if options.text_groups and args.train_data is None:
        raise ValueError(
            "--text-groups needs --train-data (it changes the training loss; open_clip's "
            "evaluation does not call the loss)"
        )


def make_loss(
    args: argparse.Namespace,
    threshold: float | None,
    feed: TextGroupFeed | None = None,
    *,
    relax_quantile: float | None = None,
    relax_momentum: float = 0.0,
) -> RelaxedContrastiveLoss:
    """The loss open_clip's trainer uses in place of ``create_loss(args)``.

    ``args`` is open_clip's parsed namespace after ``init_distributed_device`` (``distributed``,
    ``world_size``, ``local_loss``, ``gather_with_grad``). Single process: ``distributed=False``.
    Several ranks: ``distributed=True`` and ``distributed_mode`` ``"local"`` with ``--local-loss``,
    else ``"global"``; relaxclip always gathers with gradient. With ``feed`` (``--text-groups``)
    the loss is a :class:`TextGroupLoss` that takes each call's group ids from it. With
    ``relax_quantile`` (``--relax-quantile``) the loss has a quantile threshold with
    ``relax_momentum`` (``--relax-momentum``) and ``threshold`` must be ``None`` (ValueError
    otherwise, as :class:`~relaxclip.loss.RelaxedContrastiveLoss` raises for both).
    """
    world = int(getattr(args, "world_size", 1))
    distributed = bool(getattr(args, "distributed", False)) and world > 1
    mode: DistributedMode = "local" if getattr(args, "local_loss", False) else "global"
    relax: dict[str, Any]
    if relax_quantile is None:
        relax = {"threshold": threshold, "relax_momentum": relax_momentum}
    elif threshold is not None:
        raise ValueError(
            f"--relax-threshold {threshold} and --relax-quantile {relax_quantile} are mutually "
            "exclusive"
        )
    else:  # threshold omitted: an explicit one (even None) excludes the quantile
        relax = {"relax_quantile": relax_quantile, "relax_momentum": relax_momentum}
    common = {"distributed": distributed, "distributed_mode": mode, **relax}
    loss = RelaxedContrastiveLoss(**common) if feed is None else TextGroupLoss(feed, **common)
    if distributed and not getattr(args, "gather_with_grad", False):
        _log.warning(
            "relaxclip: --gather-with-grad is off, but relaxclip always gathers features with "
            "gradient (exact global-batch gradients); open_clip's ClipLoss would drop the other "
            "ranks' gradient contributions here. Pass --gather-with-grad to make this explicit."
        )
    _log.info(
        "relaxclip: loss %s, distributed=%s%s (world size %d)",
        loss,
        distributed,
        f", distributed_mode={mode!r}" if distributed else "",
        world,
    )
    return loss


class TextGroupFeed:
    """Carries the text-group ids of open_clip's training batches from the DataLoader to the loss.

    open_clip's loop cannot pass per-batch data to the loss, so the train loader
    (:class:`_GroupedLoader`) calls :meth:`push` with every batch's ids, ``LongTensor (b,)``, as
    it hands the batch to the loop, and :class:`TextGroupLoss` calls :meth:`take` with the number
    of feature rows it got. The loop (``open_clip_train.train.train_one_epoch``) runs in windows
    of ``accum_freq`` batches: it fetches the window's batches, then calls the loss ``accum_freq``
    times, each on the window's features concatenated in batch order (``accum_freq == 1``: one
    batch, one call). :meth:`take` therefore returns the window's ids concatenated in batch order,
    ``(sum of b,)``, for each of the window's ``accum_freq`` calls.

    Checked at run time, each a ``RuntimeError`` naming the mismatch: :meth:`take` without a
    complete window or more than ``accum_freq`` times per window; a row count different from the
    window's; :meth:`push` of a new batch before the previous window's ``accum_freq`` calls. A
    window left incomplete at the end of an epoch (batches not divisible by ``accum_freq``, which
    open_clip drops without a loss call) is discarded by :meth:`start_epoch`.

    Counters (for logging and tests): ``windows``, ``rows`` (rows of all completed windows) and
    ``shared_rows`` (those whose id occurs more than once in their window: rows of this process
    that have another row of the same local window as a non-negative).
    """

    def __init__(self, accum_freq: int = 1) -> None:
        if isinstance(accum_freq, bool) or not isinstance(accum_freq, int) or accum_freq < 1:
            raise ValueError(f"accum_freq must be an int >= 1 (--accum-freq), got {accum_freq!r}")
        self.accum_freq = accum_freq
        self._pending: list[torch.Tensor] = []
        self._ready: torch.Tensor | None = None
        self._uses_left = 0
        self.windows = 0
        self.rows = 0
        self.shared_rows = 0

    def start_epoch(self) -> None:
        """Forget any window (a new pass over the train loader begins)."""
        self._pending = []
        self._ready = None
        self._uses_left = 0

    def push(self, groups: torch.Tensor) -> None:
        """Add the ids ``(b,)`` int64 of the batch the loop is about to process."""
        if self._uses_left:
            raise RuntimeError(
                f"--text-groups: open_clip's train loop fetched a new batch after calling the loss "
                f"{self.accum_freq - self._uses_left} of {self.accum_freq} times for the previous "
                f"{self.accum_freq} batch(es) (--accum-freq {self.accum_freq}); its loop no longer "
                f"matches this integration (supported: open_clip_torch{SUPPORTED_OPEN_CLIP})"
            )
        if not isinstance(groups, torch.Tensor) or groups.dim() != 1:
            raise TypeError(
                "--text-groups: the train batch's group ids must be a 1-D LongTensor, got "
                f"{type(groups).__name__}{tuple(getattr(groups, 'shape', ()))}"
            )
        self._pending.append(groups)
        if len(self._pending) == self.accum_freq:
            ready = torch.cat(self._pending)
            self._pending = []
            self._ready, self._uses_left = ready, self.accum_freq
            _, inverse, counts = torch.unique(ready, return_inverse=True, return_counts=True)
            self.windows += 1
            self.rows += int(ready.numel())
            self.shared_rows += int((counts[inverse] > 1).sum())

    def take(self, rows: int) -> torch.Tensor:
        """The current window's ids, ``LongTensor (rows,)``, for one loss call on ``rows`` rows."""
        if self._ready is None or self._uses_left == 0:
            raise RuntimeError(
                "--text-groups: the loss was called without group ids for its batch: "
                + (
                    f"already called {self.accum_freq} times for the current window"
                    if self._ready is not None
                    else "no complete window of train batches was fetched through relaxclip's "
                    "train loader"
                )
                + f" (--accum-freq {self.accum_freq}); open_clip's train loop no longer matches "
                f"this integration (supported: open_clip_torch{SUPPORTED_OPEN_CLIP})"
            )
        if self._ready.shape[0] != rows:
            raise RuntimeError(
                f"--text-groups: the loss got {rows} feature rows, but the last "
                f"{self.accum_freq} train batch(es) hold {self._ready.shape[0]} rows; open_clip's "
                f"train loop no longer matches this integration (supported: "
                f"open_clip_torch{SUPPORTED_OPEN_CLIP})"
            )
        self._uses_left -= 1
        return self._ready


class TextGroupLoss(RelaxedContrastiveLoss):
    """:class:`RelaxedContrastiveLoss` whose ``groups`` come from a :class:`TextGroupFeed`.

    ``forward`` has open_clip's ``ClipLoss.forward`` signature (no ``groups``: open_clip's loop
    cannot pass them); it calls :meth:`RelaxedContrastiveLoss.forward` with
    ``groups=feed.take(image_features.shape[0])``, this process's (local) ids, which the loss
    gathers with the features under ``torch.distributed``. Other arguments: those of
    :class:`RelaxedContrastiveLoss`.
    """

    def __init__(self, feed: TextGroupFeed, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feed = feed

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float | None = None,
        output_dict: bool = False,
        *,
        groups: torch.Tensor | None = None,
    ) -> Any:
        if groups is not None:
            raise TypeError(
                "TextGroupLoss takes its groups from its TextGroupFeed; do not pass groups="
            )
        kwargs: dict[str, Any] = {
            "image_features": image_features,
            "text_features": text_features,
            "logit_scale": logit_scale,
        }
        if logit_bias is not None:
            kwargs["logit_bias"] = logit_bias
        rows = image_features.shape[0] if isinstance(image_features, torch.Tensor) else -1
        return super().forward(**kwargs, output_dict=output_dict, groups=self.feed.take(rows))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", text_groups=True (accum_freq={self.feed.accum_freq})"


# ---------------------------------------------------------------------------------- data
class ReportCsvDataset(Dataset[dict[str, Any]]):
    """open_clip's CSV dataset with the caption column read as a whole report (not tokenised).

    Reads ``path`` with pandas (``sep``, every column as ``str``, empty cells kept as ``""``), and
    returns ``{"image": transforms(PIL image), "report": str}`` per row (the transform is open_clip's
    ``preprocess``, whose first step converts to RGB). With ``validator`` (a
    :class:`SentenceSampler`), every report is checked at construction to have at least one
    sentence in the sampler's sections, so a bad row fails before training with its row number
    (0-based, header excluded) and image path.

    Raises: ``KeyError`` for a missing column (naming the file and the columns it has),
    ``ValueError`` for an empty file or a report without a usable sentence.
    """

    def __init__(
        self,
        path: str | Path,
        transforms: Callable[[Any], Any],
        img_key: str,
        caption_key: str,
        sep: str = "\t",
        validator: SentenceSampler | None = None,
    ) -> None:
        import pandas as pd

        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        for flag, key in (("--csv-img-key", img_key), ("--csv-caption-key", caption_key)):
            if key not in df.columns:
                raise KeyError(
                    f"{path}: no column {key!r} ({flag}); columns: {list(df.columns)} "
                    f"(separator {sep!r}, --csv-separator)"
                )
        if len(df) == 0:
            raise ValueError(f"{path}: no data rows")
        self.path = str(path)
        self.images: list[str] = df[img_key].tolist()
        self.reports: list[str] = df[caption_key].tolist()
        self.transforms = transforms
        if validator is not None:
            for i, report in enumerate(self.reports):
                try:
                    validator.candidates(report, position=i)
                except (TypeError, ValueError) as exc:
                    raise ValueError(
                        f"{self.path}: data row {i} (image {self.images[i]!r}), column "
                        f"{caption_key!r}: {exc}"
                    ) from exc

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        from PIL import Image

        return {"image": self.transforms(Image.open(self.images[idx])), "report": self.reports[idx]}


class OpenClipReportCollate:
    """``collate_fn`` giving open_clip's ``(images, texts)`` batches from sampled report sentences.

    Calls ``sampler`` (a :class:`SentenceSampler` with an open_clip tokenizer) and returns
    ``(batch["image"], batch["tokens"])``: images ``(B, 3, H, W)`` float, tokens
    ``LongTensor (B, context_length)``; when the sampler has a ``group_key``, also its text-group
    ids ``LongTensor (B,)`` as a third element (which :class:`_GroupedLoader` strips off before
    open_clip's loop sees the batch). Before each call it reads the epoch from ``shared_epoch``
    (open_clip's ``SharedEpoch``, shared memory that DataLoader workers see) and, on the first
    call of this copy and whenever it changed, calls ``sampler.set_epoch(epoch)`` (the sampler's
    explicit per-epoch seeding, independent of torch's generator). ``last_texts`` holds the sampled strings of the latest
    call in this process (for logging and tests).
    """

    def __init__(self, sampler: SentenceSampler, shared_epoch: Any) -> None:
        if sampler.tokenizer is None:
            raise ValueError("OpenClipReportCollate: sampler needs a tokenizer")
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


class _GroupedLoader:
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
        for batch in self.loader:
            if len(batch) != 3:  # a tuple, or a list after pin_memory
                raise RuntimeError(
                    f"--text-groups: the train collate returned {len(batch)} items, expected "
                    "(images, texts, group ids)"
                )
            images, texts, groups = batch
            self.feed.push(groups)
            yield images, texts

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


def sampler_seed(seed: int, rank: int) -> int:
    """Seed of the sampler on ``rank``: ``seed * 100003 + rank`` (distinct per rank)."""
    return seed * _SEED_STRIDE + rank


def _make_csv_dataset_fn(
    hooks: HookPoints, options: RelaxOptions, feed: TextGroupFeed | None = None
) -> Callable[..., Any]:
    data_mod = hooks.data

    def get_report_csv_dataset(
        args: argparse.Namespace,
        preprocess_fn: Callable[[Any], Any],
        is_train: bool,
        epoch: int = 0,
        tokenizer: Any = None,
    ) -> Any:
        """Replacement of ``open_clip_train.data.get_csv_dataset`` (same loader settings)."""
        path = args.train_data if is_train else args.val_data
        if not path:
            raise ValueError(f"--{'train' if is_train else 'val'}-data is required here")
        sampler = SentenceSampler(
            tokenizer=tokenizer,
            num_sentences=options.num_sentences,
            sections=options.sections,
            text_key="report",
            image_key="image",
            seed=sampler_seed(int(args.seed), int(args.rank)),
            train=bool(is_train),
            group_key="text_group" if is_train and feed is not None else None,
        )
        dataset = ReportCsvDataset(
            path,
            preprocess_fn,
            img_key=args.csv_img_key,
            caption_key=args.csv_caption_key,
            sep=args.csv_separator,
            validator=sampler,
        )
        sampler.clear_cache()  # workers start with an empty cache anyway
        shared_epoch = data_mod.SharedEpoch(epoch=epoch)
        dist_sampler: DistributedSampler[Any] | None = (
            DistributedSampler(dataset) if args.distributed and is_train else None
        )
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
        _log.info(
            "relaxclip: %s data %s: %d reports, sentence sampling %s (num_sentences=%r, "
            "sections=%r)%s",
            "train" if is_train else "val",
            path,
            len(dataset),
            "on" if is_train else "off (every sentence)",
            options.num_sentences,
            options.sections,
            ", text groups to the loss" if is_train and feed is not None else "",
        )
        if is_train and feed is not None:
            return data_mod.DataInfo(_GroupedLoader(dataloader, feed), dist_sampler, shared_epoch)
        return data_mod.DataInfo(dataloader, dist_sampler, shared_epoch)

    return get_report_csv_dataset


# ---------------------------------------------------------------------------------- loss state
#: Folder, beside open_clip's ``checkpoints`` folder, holding the quantile threshold's state.
LOSS_STATE_DIR = "relaxclip_loss_state"


def loss_state_path(checkpoint_dir: str, epoch: int) -> str:
    """Where the loss state for open_clip's checkpoint ``<checkpoint_dir>/epoch_<epoch>.pt`` lives:
    ``<checkpoint_dir>/../relaxclip_loss_state/epoch_<epoch>.pth``.

    Not inside ``checkpoints/``: open_clip's ``--resume latest`` takes the last entry of that
    folder by name (with ``--remote-sync`` every file and subfolder, not only ``*.pt``)."""
    parent = os.path.dirname(checkpoint_dir.rstrip("/"))
    return os.path.join(parent, LOSS_STATE_DIR, f"epoch_{epoch}.pth")


class LossStateKeeper:
    """Saves and restores the quantile threshold's state around open_clip's ``train_one_epoch``.

    open_clip's checkpoints hold the model, optimizer and scaler, not the loss, so the buffers of
    a quantile-threshold loss (``running_threshold``, ``num_threshold_updates``: the moving
    average of ``--relax-momentum``) would restart on ``--resume``. This wrapper of
    ``open_clip_train.main.train_one_epoch`` (called as ``train_one_epoch(model, data, loss,
    epoch, ..., args, ...)``) therefore

    * after every epoch, on the process that writes open_clip's checkpoints (``args.save_logs``,
      rank 0), writes ``{"epoch": e + 1, "relax_quantile": q, "relax_momentum": m, "state_dict":
      loss.state_dict()}`` (tensors on the CPU) to :func:`loss_state_path` of
      ``args.checkpoint_path`` (every epoch: ``--save-most-recent`` writes ``epoch_latest.pt``
      every epoch), via a temporary file and ``os.replace``;
    * before the first epoch of a resumed run (``args.resume`` set and the first ``epoch`` > 0,
      i.e. open_clip loaded a training checkpoint whose ``"epoch"`` is that epoch), loads the
      state written for that epoch from :func:`loss_state_path` of the checkpoint's folder
      (read with open_clip's ``pt_load``, so remote paths work as for the checkpoint) on every
      rank. A missing file is a ``ValueError`` when ``relax_momentum > 0`` (the moving average
      would silently restart); with ``relax_momentum == 0`` theta is each batch's quantile and
      does not depend on the state, so it is logged and the counter restarts. A state written
      with another q or m is loaded and the difference logged as a warning.

    A bare model checkpoint (no ``"epoch"``: fine-tuning from weights, first epoch 0) starts the
    state afresh. open_clip's ``evaluate`` does not call the loss, so the state saved after an
    epoch is the one the checkpoint of that epoch goes with.
    """

    def __init__(self, train_one_epoch: Callable[..., Any], hooks: HookPoints) -> None:
        self.inner = train_one_epoch
        self.hooks = hooks
        self._signature = inspect.signature(train_one_epoch)
        self._first = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound = self._signature.bind(*args, **kwargs).arguments
        loss, epoch, run_args = bound["loss"], int(bound["epoch"]), bound["args"]
        if not isinstance(loss, RelaxedContrastiveLoss) or loss.relax_quantile is None:
            raise RuntimeError(
                f"--relax-quantile: open_clip's train_one_epoch got the loss {loss!r}, not "
                "relaxclip's quantile-threshold loss; its main no longer matches this "
                f"integration (supported: open_clip_torch{SUPPORTED_OPEN_CLIP})"
            )
        if self._first:
            self._first = False
            self.restore(loss, epoch, run_args)
        out = self.inner(*args, **kwargs)
        if getattr(run_args, "save_logs", False):
            self.save(loss, epoch + 1, str(run_args.checkpoint_path))
        return out

    def save(self, loss: RelaxedContrastiveLoss, epoch: int, checkpoint_dir: str) -> str:
        """Write the loss state after ``epoch`` completed epochs; returns the path."""
        path = loss_state_path(checkpoint_dir, epoch)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        state = {
            "epoch": epoch,
            "relax_quantile": loss.relax_quantile,
            "relax_momentum": loss.relax_momentum,
            "state_dict": {k: v.detach().cpu() for k, v in loss.state_dict().items()},
        }
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def restore(self, loss: RelaxedContrastiveLoss, epoch: int, run_args: Any) -> None:
        """Load the state of a resumed run's checkpoint (see the class docstring)."""
        resume = getattr(run_args, "resume", None)
        if resume is None or epoch == 0:
            if resume is not None:
                _log.info(
                    "relaxclip: --resume %s is a model-only checkpoint (no epoch): the "
                    "quantile threshold's state starts afresh",
                    resume,
                )
            return
        path = loss_state_path(os.path.dirname(str(resume)), epoch)
        if not self.hooks.main.check_exists(path):
            if loss.relax_momentum > 0:
                raise ValueError(
                    f"--resume {resume} (epoch {epoch}) with --relax-momentum "
                    f"{loss.relax_momentum}: the quantile threshold's moving-average state of "
                    f"that epoch is missing ({path}); relaxclip writes it beside open_clip's "
                    "checkpoints folder after every epoch. Without it the moving average would "
                    "restart; copy that file there, or resume with --relax-momentum 0"
                )
            _log.info(
                "relaxclip: no quantile-threshold state at %s; --relax-momentum 0 does not use "
                "it (num_threshold_updates restarts at 0)",
                path,
            )
            return
        state = self.hooks.main.pt_load(path, map_location="cpu")
        if int(state.get("epoch", -1)) != epoch:
            raise ValueError(f"{path}: holds the loss state of epoch {state.get('epoch')!r}, "
                             f"expected {epoch}")  # fmt: skip
        saved = (state.get("relax_quantile"), state.get("relax_momentum"))
        if saved != (loss.relax_quantile, loss.relax_momentum):
            _log.warning(
                "relaxclip: %s was written with relax_quantile=%s, relax_momentum=%s; this run "
                "uses %s, %s (the state is loaded anyway)",
                path,
                *saved,
                loss.relax_quantile,
                loss.relax_momentum,
            )
        loss.load_state_dict(state["state_dict"])
        _log.info(
            "relaxclip: restored the quantile threshold's state from %s (running_threshold "
            "%.6g after %d updates)",
            path,
            float(loss.running_threshold),
            int(loss.num_threshold_updates),
        )


# ---------------------------------------------------------------------------------- main
@contextlib.contextmanager
def _patched(module: ModuleType, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _print_help(hooks_ok: bool) -> None:
    build_parser().print_help()
    print("\nopen_clip_train.main options (unchanged):\n")
    if hooks_ok:
        from open_clip_train.params import parse_args

        with contextlib.suppress(SystemExit):
            parse_args(["--help"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run open_clip's trainer with relaxclip's loss (and sampling); returns the exit status.

    ``argv``: open_clip_train.main arguments plus relaxclip's (default ``sys.argv[1:]``).
    Returns 0 on success and 1 when open_clip's ``main`` reports an error (it returns -1, e.g.
    for an existing experiment name). Raises :class:`OpenClipVersionError` (hook points moved)
    and ``ValueError`` for unsupported option combinations, before anything is built.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        try:
            check_hook_points()
            ok = True
        except OpenClipVersionError:
            ok = False
        _print_help(ok)
        return 0
    options, rest = parse_relax_args(argv)
    quantile = options.relax_quantile is not None
    hooks = check_hook_points(text_groups=options.text_groups, loss_state=quantile)
    from open_clip_train.params import parse_args

    parsed = parse_args(list(rest))
    _check_supported(parsed, options)  # early: before any model is built
    feed = TextGroupFeed(int(parsed.accum_freq)) if options.text_groups else None

    created: list[RelaxedContrastiveLoss] = []

    def create_loss(args: argparse.Namespace) -> RelaxedContrastiveLoss:
        loss = make_loss(
            args,
            options.threshold,
            feed,
            relax_quantile=options.relax_quantile,
            relax_momentum=options.relax_momentum,
        )
        created.append(loss)
        return loss

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(hooks.main, "create_loss", create_loss))
        if quantile:
            keeper = LossStateKeeper(hooks.main.train_one_epoch, hooks)
            stack.enter_context(_patched(hooks.main, "train_one_epoch", keeper))
        if options.sentence_sampling:
            stack.enter_context(
                _patched(hooks.data, "get_csv_dataset", _make_csv_dataset_fn(hooks, options, feed))
            )
        status = hooks.main.main(list(rest))
    if feed is not None and feed.rows:
        _log.info(
            "relaxclip: --text-groups: %d of %d training rows (%.1f%%) shared a text group with "
            "another row of their step's local batch (%d steps)",
            feed.shared_rows,
            feed.rows,
            100.0 * feed.shared_rows / feed.rows,
            feed.windows,
        )
    if status == -1:
        return 1
    trains = parsed.train_data is not None or parsed.dataset_type == "synthetic"
    if trains and not created:
        raise OpenClipVersionError(
            f"open_clip_torch {hooks.version}: open_clip_train.main trained without calling "
            f"create_loss, so relaxclip's loss was not used; supported: "
            f"open_clip_torch{SUPPORTED_OPEN_CLIP} (tested: {TESTED_OPEN_CLIP})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
