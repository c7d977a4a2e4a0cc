"""Command line: ``relaxclip demo`` (also ``python -m relaxclip demo``).

``main(argv)`` parses ``argv`` (default ``sys.argv[1:]``), runs the sub-command and returns the
process exit status (0 on success).  Invalid options exit with status 2 and a message naming the
option (argparse convention).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

_DEMO_HELP = """\
Offline end-to-end reproduction of Jang et al. (arXiv 2212.07050) on an embedded synthetic
chest-X-ray-like benchmark: pre-train a tiny CLIP with the plain CLIP loss, fine-tune five arms
with identical budgets -- (a) CLIP loss on whole reports, (b) + random sentence sampling,
(c) + positive-pair relaxation (theta 0.8), (d) both, (e) both + text groups (identical
sampled sentences in a batch are not negatives) -- and compare zero-shot multi-label AUROC
("{}" vs "no {}" prompts) on the test split, with bootstrap 95% CIs over several seeds.
The validation split is used for checkpoint (and threshold) selection only.
Writes results.json, roc.png, summary.png and curves.png to --out.
Defaults take a few minutes on 2 CPU cores; --quick (a smoke test that prints no
comparison) under a minute; --long (the long regime of docs/long-regime.md: 10 seeds,
425 steps, and arm (d) also with a calibrated theta) about 40 minutes."""


def _number(
    cast: Callable[[str], Any], accept: Callable[[Any], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse ``type``: parse with ``cast`` and check ``accept``; the error says ``expected``."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_threshold = _number(float, lambda v: -1.0 < v <= 1.0, "a number in (-1, 1]")
_quantile = _number(float, lambda v: 0.0 < v < 1.0, "a quantile in (0, 1)")
_learning_rate = _number(float, lambda v: 0 < v <= 1, "a learning rate in (0, 1]")


def _out_dir(text: str) -> str:
    """An argparse ``type`` for ``--out``: a non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a directory path, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``relaxclip`` argument parser (sub-command ``demo``)."""
    parser = argparse.ArgumentParser(
        prog="relaxclip",
        description="relaxclip: contrastive fine-tuning of image-text encoders with positive-pair "
        "relaxation and random sentence sampling (Jang et al., arXiv 2212.07050).",
    )
    from relaxclip import __version__

    parser.add_argument("--version", action="version", version=f"relaxclip {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="{demo}")
    sub.required = True
    demo = sub.add_parser(
        "demo",
        help="run the offline end-to-end experiment (synthetic benchmark)",
        description=_DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(demo)
    _add_method_options(demo)
    _add_budget_options(demo)
    _add_openi_options(demo)
    return parser


def _add_run_options(demo: argparse.ArgumentParser) -> None:
    """Options of the run (output, device, seeds, progress)."""
    g = demo.add_argument_group("run")
    preset = g.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: small preset (800/200/400 studies, 80 pre-training + 40 fine-tuning "
        "steps, one seed, 200 bootstrap replicates); every stage runs, it prints stage times and "
        "a pass line, not an arm comparison. Explicit options override the preset.",
    )
    preset.add_argument(
        "--long",
        action="store_true",
        help="the long fine-tuning regime (docs/long-regime.md): constant learning rate after "
        "warm-up for 425 steps (Open-I mode: 150), validation every 25 steps, seeds 0-9, and "
        "arm (d) also with theta calibrated at q=0.9. Explicit options override the preset.",
    )
    g.add_argument(
        "--out",
        type=_out_dir,
        default="relaxclip-demo",
        metavar="DIR",
        help="output directory for results.json, roc.png, summary.png, curves.png "
        "(default: ./relaxclip-demo)",
    )
    g.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (CUDA if available, else CPU), cpu, cuda, cuda:1 ... "
        "(default: auto)",
    )
    g.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: half the available CPU cores, 1 to 4)",
    )
    g.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="processes that run the seeds in parallel, at most one per seed; the numbers do "
        "not depend on it (default: on CPU as many as the cores allow at --threads each, "
        "else 1)",
    )
    g.add_argument(
        "--seeds",
        type=_nonneg_int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="training seeds; pre-training and every arm are repeated per seed "
        "(default: 0 1 2; --quick: 0; --long: 0-9)",
    )
    g.add_argument("--no-progress", action="store_true", help="disable the tqdm progress bars")
    g.add_argument(
        "--no-plots",
        action="store_true",
        help="do not write the plots (roc.png, summary.png, curves.png)",
    )


def _add_method_options(demo: argparse.ArgumentParser) -> None:
    """Options of the method (threshold, sweep)."""
    g = demo.add_argument_group("method")
    relax = g.add_mutually_exclusive_group()
    relax.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="relaxation threshold theta of arms (c), (d) and (e), a cosine similarity in (-1, 1] "
        "(default: the library default relaxclip.loss.DEFAULT_THRESHOLD)",
    )
    relax.add_argument(
        "--relax-quantile",
        type=_quantile,
        default=None,
        metavar="Q",
        help="instead of --threshold: calibrate theta of arms (c), (d) and (e) once per seed as "
        "the Q-quantile of the pre-trained model's positive-pair cosines on the first 10 "
        "fine-tuning batches (each arm's own text), then keep it fixed",
    )
    g.add_argument(
        "--sweep-threshold",
        action="store_true",
        help="also run arm (d) for every theta in --sweep-values and every quantile in "
        "--sweep-quantiles, choose the setting on the validation split and report the test "
        "numbers of all",
    )
    g.add_argument(
        "--sweep-values",
        type=_threshold,
        nargs="+",
        default=None,
        metavar="THETA",
        help="thresholds for --sweep-threshold (default: 0.5 0.6 0.7 0.8 0.9 1.0; --quick: 0.6 "
        "0.8 1.0; --long: none)",
    )
    g.add_argument(
        "--sweep-quantiles",
        type=_quantile,
        nargs="+",
        default=None,
        metavar="Q",
        help="calibration quantiles for --sweep-threshold (theta calibrated as for "
        "--relax-quantile; default: 0.5 0.7 0.9; --long: 0.9)",
    )


def _add_budget_options(demo: argparse.ArgumentParser) -> None:
    """Data sizes, steps, learning rates, bootstrap."""
    g = demo.add_argument_group("budget")
    budget: tuple[tuple[str, Callable[[str], Any], str], ...] = (
        ("--n-train", _positive_int, "training studies (default 3000)"),
        ("--n-val", _positive_int, "validation studies (default 500)"),
        ("--n-test", _positive_int, "test studies (default 1000)"),
        ("--image-size", _positive_int, "image side, multiple of 16 (default 64)"),
        ("--pretrain-steps", _positive_int, "pre-training steps (default 300)"),
        (
            "--finetune-steps",
            _positive_int,
            "fine-tuning steps per arm, identical for every arm (default 150; --long: 425, Open-I "
            "mode 150)",
        ),
        ("--batch-size", _positive_int, "pairs per step (default 64)"),
        ("--pretrain-lr", _learning_rate, "pre-training peak learning rate (default 2e-3)"),
        ("--finetune-lr", _learning_rate, "fine-tuning peak learning rate (default 5e-4)"),
        (
            "--eval-every",
            _positive_int,
            "validate every N fine-tuning steps; each arm keeps its best validation checkpoint "
            "(default 50; --long: 25)",
        ),
        ("--bootstrap", _positive_int, "bootstrap replicates (default 1000)"),
        ("--data-seed", _nonneg_int, "seed of the synthetic benchmark (default 0)"),
    )
    for flag, parse, help_text in budget:
        g.add_argument(flag, type=parse, default=None, help=help_text)


def _add_openi_options(demo: argparse.ArgumentParser) -> None:
    """Open-I mode."""
    g = demo.add_argument_group(
        "Open-I mode (optional; real report text, images rendered from labels)"
    )
    g.add_argument(
        "--reports",
        default=None,
        metavar="PATH",
        help="Open-I report archive NLMCXR_reports.tgz (or a directory of its XMLs); needs "
        "--labels. The text is read at run time and never written out.",
    )
    g.add_argument(
        "--labels",
        default=None,
        metavar="PATH",
        help="NegBio gold labels openi_gld_std14.csv matching --reports",
    )


_OVERRIDES = {
    "n_train": "n_train",
    "n_val": "n_val",
    "n_test": "n_test",
    "image_size": "image_size",
    "pretrain_steps": "pretrain_steps",
    "finetune_steps": "finetune_steps",
    "batch_size": "batch_size",
    "pretrain_lr": "pretrain_lr",
    "finetune_lr": "finetune_lr",
    "eval_every": "eval_every",
    "bootstrap": "n_bootstrap",
    "data_seed": "data_seed",
    "threshold": "threshold",
    "threads": "threads",
    "workers": "workers",
    "reports": "reports",
    "labels": "labels",
}


#: Every option behind a config field, to name the option in a config error.
_FLAGS = {
    **_OVERRIDES,
    "seeds": "seeds",
    "sweep_values": "sweep_thresholds",
    "sweep_quantiles": "sweep_quantiles",
    "relax_quantile": "threshold_quantile",
}


def _demo_config(args: argparse.Namespace) -> Any:
    from relaxclip.demo.config import DemoConfig, resolve_device

    overrides: dict[str, Any] = {
        field: getattr(args, opt)
        for opt, field in _OVERRIDES.items()
        if getattr(args, opt) is not None
    }
    if args.seeds is not None:
        overrides["seeds"] = tuple(args.seeds)
    for flag, value in (
        ("--sweep-values", args.sweep_values),
        ("--sweep-quantiles", args.sweep_quantiles),
    ):
        if value is not None and not (args.sweep_threshold or args.long):
            raise ValueError(f"{flag} needs --sweep-threshold (without it no sweep runs)")
    if args.sweep_values is not None:
        overrides["sweep_thresholds"] = tuple(args.sweep_values)
    if args.sweep_quantiles is not None:
        overrides["sweep_quantiles"] = tuple(args.sweep_quantiles)
    if args.relax_quantile is not None:
        overrides["threshold_quantile"] = args.relax_quantile
    elif args.threshold is not None:  # an explicit absolute theta for the configured arms
        overrides["threshold_quantile"] = None
    overrides["sweep_threshold"] = bool(args.sweep_threshold or args.long)
    overrides["device"] = args.device
    overrides["progress"] = not args.no_progress
    overrides["plots"] = not args.no_plots
    preset = DemoConfig.quick if args.quick else DemoConfig.long if args.long else DemoConfig
    cfg = preset(**overrides)
    if args.eval_every is None and cfg.eval_every > cfg.finetune_steps:
        cfg.eval_every = cfg.finetune_steps
    try:
        cfg.validate()
    except ValueError as exc:  # name the command-line options behind the config fields
        named = [o for o, f in _FLAGS.items() if re.search(rf"\b{f}\b", str(exc))]
        flags = ", ".join(f"--{o.replace('_', '-')}" for o in named)
        raise ValueError(f"{exc} ({flags})" if flags else str(exc)) from None
    for opt in ("reports", "labels"):  # read only after pre-training: checked here
        if getattr(args, opt) is not None and not Path(getattr(args, opt)).exists():
            raise ValueError(f"--{opt}: {getattr(args, opt)} does not exist")
    resolve_device(cfg.device)  # an unusable --device is an option error, before any work
    return cfg


def quick_note(cfg: Any) -> str:
    """What ``--quick`` runs and why its numbers are not a measurement (printed first)."""
    return (
        f"note: --quick is a smoke test of every stage ({len(cfg.seeds)} seed(s), "
        f"{cfg.pretrain_steps} pre-training and {cfg.finetune_steps} fine-tuning steps, "
        f"{cfg.n_train} training studies): the encoder is barely pre-trained, so its numbers "
        "are not a measurement of the method and no arm comparison is printed; "
        "`relaxclip demo` is the measurement (docs/demo.md)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaxclip`` console script; returns the exit status.

    0 on success; 2 for invalid options or an unusable ``--out`` (checked before any training);
    1 when the run fails with a clear error; 130 on Ctrl-C (one line, no traceback).
    """
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command != "demo":  # pragma: no cover - argparse rejects unknown commands
        parser.error(f"unknown command {args.command!r}")
    from relaxclip.demo.report import prepare_out_dir
    from relaxclip.demo.runner import run_demo

    try:
        cfg = _demo_config(args)
        prepare_out_dir(args.out)
    except ValueError as exc:
        parser.exit(2, f"relaxclip demo: error: {exc}\n")
    if args.quick:
        print(quick_note(cfg))
    try:
        run_demo(cfg, args.out)
    except KeyboardInterrupt:
        print(
            f"relaxclip demo: interrupted; earlier outputs in {args.out} (if any) are unchanged",
            file=sys.stderr,
        )
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"relaxclip demo: error: {exc}", file=sys.stderr)
        return 1
    return 0
