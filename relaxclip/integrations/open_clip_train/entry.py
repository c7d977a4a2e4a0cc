"""The entry point: checks, then open_clip's ``main`` with relaxclip's loss and data hooked in."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any
from unittest import mock

import torch

from relaxclip.integrations.open_clip_train.args import (
    NEEDS,
    PROG,
    OpenClipVersionError,
    OptionError,
    RelaxOptions,
    build_parser,
    parse_relax_args,
)
from relaxclip.integrations.open_clip_train.data import check_csv_data, make_csv_dataset_fn
from relaxclip.integrations.open_clip_train.loss import TextGroupFeed, calibrate, make_loss

_log = logging.getLogger("relaxclip.open_clip_train")


@dataclass(frozen=True)
class OpenClip:
    """The ``open_clip_train`` modules the entry point hooks into, and the installed version."""

    main: ModuleType
    data: ModuleType
    version: str


def _in_supported_range(ver: str) -> bool:
    try:
        parts = tuple(int(p) for p in ver.split("+")[0].split(".")[:3])
    except ValueError:
        return False
    return (3, 0, 0) <= parts < (3, 4)


def check_open_clip() -> OpenClip:
    """open_clip's trainer modules; :class:`OpenClipVersionError` with the install command when
    open_clip_torch is missing, outside :data:`SUPPORTED_OPEN_CLIP` or cannot be imported."""
    try:
        ver = metadata.version("open_clip_torch")
    except metadata.PackageNotFoundError:
        raise OpenClipVersionError(f"open_clip_torch is not installed; {NEEDS}") from None
    if not _in_supported_range(ver):
        raise OpenClipVersionError(
            f"open_clip_torch {ver} is not supported; {NEEDS}. For other versions replace the "
            "loss by hand as docs/integrations.md describes (fallback)"
        )
    try:
        main = importlib.import_module("open_clip_train.main")  # imports .data and .params
    except ImportError as exc:
        msg = f"open_clip_train could not be imported ({exc}); {NEEDS}"
        raise OpenClipVersionError(msg) from None
    return OpenClip(main, sys.modules["open_clip_train.data"], ver)


def _cpu_torchrun(args: argparse.Namespace) -> bool:
    """Several processes (torchrun, SLURM) that open_clip would run on the CPU."""
    from open_clip_train.distributed import is_using_distributed

    device = str(args.device).split(":")[0]
    on_cpu = device == "cpu" or (device == "cuda" and not torch.cuda.is_available())
    return is_using_distributed() and on_cpu


def check_supported(args: argparse.Namespace, options: RelaxOptions) -> None:
    """Reject open_clip options and option combinations relaxclip cannot run (``OptionError``)."""
    rejected = {
        "--siglip (open_clip's sigmoid loss; relaxclip's is the softmax loss)": args.siglip,
        f"--model {args.model} (CoCa adds a captioning loss)": "coca" in args.model.lower(),
        "--distill-model/--distill-pretrained (a distillation loss)": args.distill_model
        or args.distill_pretrained,
        "--horovod (relaxclip gathers with torch.distributed; use torchrun)": args.horovod,
        "--loss-dist-impl (a SigLIP option)": args.loss_dist_impl is not None,
    }
    unsupported = [text for text, given in rejected.items() if given]
    if unsupported:
        raise OptionError("not supported with relaxclip's loss: " + "; ".join(unsupported))
    if _cpu_torchrun(args):
        raise OptionError(
            "torchrun on CPU is not supported: open_clip's trainer wraps the model as "
            "DistributedDataParallel(model, device_ids=[device]), which needs GPUs; run one "
            "process on the CPU, or torchrun on GPUs"
        )
    if options.sentence_sampling and args.train_data is None and args.val_data is None:
        raise OptionError("--sentence-sampling needs --train-data or --val-data (a CSV file)")
    if options.text_groups and args.train_data is None:
        raise OptionError(
            "--text-groups needs --train-data (it changes the training loss; open_clip's "
            "evaluation does not call the loss)"
        )


def _quiet_torch(setup_logging: Callable[..., Any]) -> Callable[..., Any]:
    """open_clip's ``setup_logging`` (which sets every logger to ``--log-level``), then torch's
    loggers back at their levels: no torch internals (FakeTensor statistics) in the output."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] == "torch"]
        levels = {n: logging.getLogger(n).level for n in names}
        out = setup_logging(*args, **kwargs)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        return out

    return wrapped


class _Run:
    """One run's replacements of open_clip's ``main`` globals and what they captured."""

    def __init__(self, options: RelaxOptions, feed: TextGroupFeed | None, oc: OpenClip) -> None:
        self.options, self.feed, self.oc = options, feed, oc
        self.created: list[torch.nn.Module] = []
        self.captured: dict[str, Any] = {}

    def _capture(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.captured[key] = out = fn(*args, **kwargs)
            return out

        return wrapped

    def create_loss(self, args: argparse.Namespace) -> torch.nn.Module:
        threshold, q = self.options.threshold, self.options.relax_quantile
        if q is not None:
            model, loader = self.captured["model"][0], self.captured["data"]["train"].dataloader
            loader = getattr(loader, "loader", loader)  # GroupedLoader: no ids to the feed
            batches = itertools.islice(loader, self.options.calibration_batches)
            threshold = calibrate(model, batches, args, q)
        loss = make_loss(args, threshold, self.feed)
        self.created.append(loss)
        return loss

    def patches(self) -> Iterator[tuple[ModuleType, str, Any]]:
        main, data = self.oc.main, self.oc.data
        yield main, "create_loss", self.create_loss
        yield main, "setup_logging", _quiet_torch(main.setup_logging)
        if self.options.relax_quantile is not None:
            model_fn = main.create_model_and_transforms
            yield main, "create_model_and_transforms", self._capture("model", model_fn)
            yield main, "get_data", self._capture("data", main.get_data)
        if self.options.sentence_sampling:
            yield data, "get_csv_dataset", make_csv_dataset_fn(data, self.options, self.feed)


def _print_help() -> None:
    build_parser().print_help()
    try:
        parse_args = check_open_clip().main.parse_args
    except OpenClipVersionError as exc:
        print(f"\nopen_clip_train.main options: unavailable: {exc}")
        return
    print("\nopen_clip_train.main options (unchanged):\n")
    with contextlib.suppress(SystemExit):
        parse_args(["--help"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run open_clip's trainer on ``argv`` (open_clip's and relaxclip's options) with relaxclip's
    loss: 0, or 1 when open_clip's ``main`` returns -1. Raises :class:`OpenClipVersionError` and
    :class:`OptionError` (options, CSV data) before any model is built."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _print_help()
        return 0
    options, rest = parse_relax_args(argv)
    oc = check_open_clip()
    parsed = oc.main.parse_args(list(rest))
    check_supported(parsed, options)
    check_csv_data(parsed, options)
    feed = TextGroupFeed(int(parsed.accum_freq)) if options.text_groups else None
    run = _Run(options, feed, oc)
    with contextlib.ExitStack() as stack:
        for module, name, value in run.patches():
            stack.enter_context(mock.patch.object(module, name, value))
        status = oc.main.main(list(rest))
    if feed is not None and feed.rows:
        share = f"{feed.shared_rows} of {feed.rows} training rows ({feed.windows} steps)"
        _log.info("relaxclip: --text-groups: %s shared a text group in their local batch", share)
    trains = parsed.train_data is not None or parsed.dataset_type == "synthetic"
    if status != -1 and trains and not run.created:
        raise OpenClipVersionError(
            f"open_clip_torch {oc.version}: open_clip_train.main trained without calling "
            f"create_loss, so relaxclip's loss was not used; {NEEDS}"
        )
    return 1 if status == -1 else 0


def cli(argv: Sequence[str] | None = None) -> int:
    """:func:`main` for the command line: a rejected option or version is one line on stderr
    (exit status 2 or 1), not a traceback."""
    try:
        return main(argv)
    except (OptionError, OpenClipVersionError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, OptionError) else 1
