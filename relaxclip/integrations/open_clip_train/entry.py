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
from types import ModuleType
from typing import Any

import torch

from relaxclip.integrations.open_clip_train.args import (
    INSTALL,
    PROG,
    SUPPORTED_OPEN_CLIP,
    TESTED_OPEN_CLIP,
    OpenClipVersionError,
    OptionError,
    RelaxOptions,
    build_parser,
    parse_relax_args,
)
from relaxclip.integrations.open_clip_train.data import check_csv_data, make_csv_dataset_fn
from relaxclip.integrations.open_clip_train.loss import TextGroupFeed, calibrate, make_loss

_log = logging.getLogger("relaxclip.open_clip_train")
_NEEDS = (
    f"relaxclip's open_clip trainer integration needs open_clip_torch{SUPPORTED_OPEN_CLIP} "
    f"(tested: {TESTED_OPEN_CLIP}) and its training dependencies: {INSTALL} (or pip install "
    f"'open_clip_torch=={TESTED_OPEN_CLIP}' webdataset pandas braceexpand)"
)


@dataclass(frozen=True)
class OpenClip:
    """The ``open_clip_train`` modules the entry point hooks into, and the installed version."""

    main: ModuleType
    data: ModuleType
    params: ModuleType
    version: str


def _open_clip_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return None


def _in_supported_range(ver: str) -> bool:
    try:
        parts = tuple(int(p) for p in ver.split("+")[0].split(".")[:3])
    except ValueError:
        return False
    return (3, 0, 0) <= parts < (3, 4)


def check_open_clip() -> OpenClip:
    """Import open_clip's trainer after checking that its version is supported.

    Raises :class:`OpenClipVersionError` when open_clip_torch is missing, outside
    :data:`SUPPORTED_OPEN_CLIP`, or its trainer cannot be imported (training dependencies), with
    the install command. Whether the supported versions still match the hooks is what the tiny
    training tests check.
    """
    ver = _open_clip_version()
    if ver is None:
        raise OpenClipVersionError(f"open_clip_torch is not installed; {_NEEDS}")
    if not _in_supported_range(ver):
        raise OpenClipVersionError(
            f"open_clip_torch {ver} is not supported; {_NEEDS}. For other versions replace the "
            "loss by hand as docs/integrations.md describes (fallback)"
        )
    modules = {}
    for name in ("main", "data", "params"):
        try:
            modules[name] = importlib.import_module(f"open_clip_train.{name}")
        except ImportError as exc:
            raise OpenClipVersionError(
                f"open_clip_train.{name} could not be imported ({exc}); {_NEEDS}"
            ) from None
    return OpenClip(version=ver, **modules)


def _cpu_torchrun(args: argparse.Namespace) -> bool:
    """Several processes (torchrun, SLURM) that open_clip would run on the CPU."""
    from open_clip_train.distributed import is_using_distributed

    device = str(getattr(args, "device", "cuda")).split(":")[0]
    on_cpu = device == "cpu" or (device == "cuda" and not torch.cuda.is_available())
    return is_using_distributed() and on_cpu


def check_supported(args: argparse.Namespace, options: RelaxOptions) -> None:
    """Reject open_clip options and option combinations relaxclip cannot run (``OptionError``)."""
    unsupported = []
    if getattr(args, "siglip", False):
        unsupported.append("--siglip (open_clip's sigmoid loss; relaxclip's is the softmax loss)")
    if "coca" in str(getattr(args, "model", "")).lower():
        unsupported.append(f"--model {args.model} (CoCa adds a captioning loss)")
    if getattr(args, "distill_model", None) or getattr(args, "distill_pretrained", None):
        unsupported.append("--distill-model/--distill-pretrained (distillation loss)")
    if getattr(args, "horovod", False):
        unsupported.append("--horovod (relaxclip gathers with torch.distributed; use torchrun)")
    if getattr(args, "loss_dist_impl", None) is not None:
        unsupported.append("--loss-dist-impl (a SigLIP option)")
    if unsupported:
        raise OptionError("not supported with relaxclip's loss: " + "; ".join(unsupported))
    if _cpu_torchrun(args):
        raise OptionError(
            "torchrun on CPU is not supported: open_clip's trainer wraps the model as "
            "DistributedDataParallel(model, device_ids=[device]), which needs GPUs; run one "
            "process on the CPU, or torchrun on GPUs"
        )
    if options.sentence_sampling:
        for flag, path in (("--train-data", args.train_data), ("--val-data", args.val_data)):
            kind = args.dataset_type
            if kind == "auto" and path is not None:
                kind = "csv" if str(path).rsplit(".", 1)[-1] in ("csv", "tsv") else "other"
            if path is not None and kind != "csv":
                raise OptionError(
                    f"--sentence-sampling works on CSV data (--dataset-type csv, or auto with a "
                    f".csv/.tsv file); {flag} {path} is read as --dataset-type {args.dataset_type}"
                )
        if args.train_data is None and args.val_data is None:
            raise OptionError("--sentence-sampling needs --train-data or --val-data (a CSV file)")
    if options.text_groups and args.train_data is None:
        raise OptionError(
            "--text-groups needs --train-data (it changes the training loss; open_clip's "
            "evaluation does not call the loss)"
        )


def _quiet_torch(setup_logging: Callable[..., Any]) -> Callable[..., Any]:
    """open_clip's ``setup_logging``, then torch's loggers back at their levels.

    open_clip sets every existing logger to ``--log-level`` (INFO), which makes torch's internal
    loggers print (e.g. FakeTensor cache statistics at exit); its own lines go to the root logger.
    """

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] == "torch"]
        levels = {n: logging.getLogger(n).level for n in names}
        out = setup_logging(*args, **kwargs)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if logging.getLogger("torch").level == logging.NOTSET:
            logging.getLogger("torch").setLevel(logging.WARNING)
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
            out = fn(*args, **kwargs)
            self.captured.setdefault(key, out[0] if key == "model" else out)
            return out

        return wrapped

    def create_loss(self, args: argparse.Namespace) -> torch.nn.Module:
        threshold, q = self.options.threshold, self.options.relax_quantile
        if q is not None:
            model, data = self.captured.get("model"), self.captured.get("data")
            if model is None or data is None or "train" not in data:
                raise OpenClipVersionError(f"--relax-quantile: open_clip's main no longer "
                                           f"builds model and data before the loss; {_NEEDS}")  # fmt: skip
            loader = data["train"].dataloader
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


@contextlib.contextmanager
def _patched(module: ModuleType, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _print_help() -> None:
    build_parser().print_help()
    try:
        params = check_open_clip().params
    except OpenClipVersionError as exc:
        print(f"\nopen_clip_train.main options: unavailable: {exc}")
        return
    print("\nopen_clip_train.main options (unchanged):\n")
    with contextlib.suppress(SystemExit):
        params.parse_args(["--help"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run open_clip's trainer with relaxclip's loss (and sampling); returns the exit status.

    ``argv``: open_clip_train.main arguments plus relaxclip's (default ``sys.argv[1:]``).
    Returns 0 on success and 1 when open_clip's ``main`` reports an error (it returns -1).
    Raises :class:`OpenClipVersionError` (open_clip missing or unsupported) and
    :class:`OptionError` (unsupported options, bad CSV data) before any model is built.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _print_help()
        return 0
    options, rest = parse_relax_args(argv)
    oc = check_open_clip()
    parsed = oc.params.parse_args(list(rest))
    check_supported(parsed, options)
    check_csv_data(parsed, options)
    feed = TextGroupFeed(int(parsed.accum_freq)) if options.text_groups else None
    run = _Run(options, feed, oc)
    with contextlib.ExitStack() as stack:
        for module, name, value in run.patches():
            stack.enter_context(_patched(module, name, value))
        status = oc.main.main(list(rest))
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
    if trains and not run.created:
        raise OpenClipVersionError(
            f"open_clip_torch {oc.version}: open_clip_train.main trained without calling "
            f"create_loss, so relaxclip's loss was not used; {_NEEDS}"
        )
    return 0


def cli(argv: Sequence[str] | None = None) -> int:
    """:func:`main` for the command line: a rejected option or version is one line on stderr
    (exit status 2 or 1), not a traceback."""
    try:
        return main(argv)
    except OptionError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OpenClipVersionError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
