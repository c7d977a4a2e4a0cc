"""relaxclip's command-line options of the open_clip trainer entry point (open_clip's are left)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relaxclip.sampling import NumSentences, SentenceSampler
from relaxclip.sentences import HEADER_ALIASES, PREAMBLE_KEY

#: open_clip_torch versions supported (the ``openclip`` extra's pin).
SUPPORTED_OPEN_CLIP = ">=3.0,<3.4"
#: The version CI runs (``examples/requirements-integrations.txt``).
TESTED_OPEN_CLIP = "3.3.0"
INSTALL = 'pip install "relaxclip[openclip]"'
NEEDS = (
    f"relaxclip's open_clip trainer integration needs open_clip_torch{SUPPORTED_OPEN_CLIP} "
    f"(tested: {TESTED_OPEN_CLIP}) and its training dependencies: {INSTALL} (or pip install "
    f"'open_clip_torch=={TESTED_OPEN_CLIP}' webdataset pandas braceexpand)"
)
DEFAULT_SECTIONS: tuple[str, ...] = ("findings", "impression")
#: Section names ``--report-sections`` and ``--report-fallback`` accept.
KNOWN_SECTIONS: tuple[str, ...] = (*HEADER_ALIASES, PREAMBLE_KEY)
PROG = "python -m relaxclip.integrations.open_clip_train"
_SAMPLING_FLAGS = ("num_sentences", "report_sections", "report_fallback", "on_empty")
_COSINE = "a cosine similarity in (-1, 1] or 'none'"


class OpenClipVersionError(RuntimeError):
    """open_clip's trainer is missing, of an unsupported version, or no longer matches."""


class OptionError(ValueError):
    """An option or input that the entry point rejects before building anything."""


@dataclass(frozen=True)
class RelaxOptions:
    """relaxclip's own command-line options (see ``--help``; everything else is open_clip's)."""

    threshold: float | None = None
    sentence_sampling: bool = False
    num_sentences: NumSentences = 1
    sections: tuple[str, ...] | None = DEFAULT_SECTIONS
    text_groups: bool = False
    relax_quantile: float | None = None
    calibration_batches: int = 10
    fallback: tuple[str, ...] | None = None
    on_empty: str = "raise"


def _number(text: str, want: str, ok: Callable[[float], bool], cast: type = float) -> Any:
    """``cast(text)`` if ``ok`` accepts it, else ``ArgumentTypeError("must be <want>, got ...")``."""
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
    return value


def _num_sentences(text: str) -> NumSentences:
    lo, dash, hi = text.partition("-")
    try:
        is_float = any(c in text for c in ".eE")
        spec = (int(lo), int(hi)) if dash else float(text) if is_float else int(text)
        SentenceSampler(num_sentences=spec)  # the sampler's own validation
    except (TypeError, ValueError):
        want = "an int >= 1, a fraction in (0, 1] or a range lo-hi (lo <= hi)"
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
    return spec


def section_names(text: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``"findings,impression"`` -> ``("findings", "impression")``; an unknown name (not in
    :data:`KNOWN_SECTIONS` or ``extra``) is an ``argparse.ArgumentTypeError`` listing them."""
    names = tuple(s.strip().lower() for s in text.split(","))
    valid = (*KNOWN_SECTIONS, *extra)
    for name in names:
        if name not in valid:
            got = repr(name) if name else f"an empty name in {text!r}"
            raise argparse.ArgumentTypeError(
                f"must be comma-separated section names among {', '.join(valid)}, got {got}"
            )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The parser of relaxclip's own options (unknown options are left for open_clip)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="open_clip's trainer with relaxclip's loss and sentence sampling. Every "
        "open_clip_train.main option is accepted unchanged; relaxclip adds:",
        add_help=False,
        allow_abbrev=False,
    )
    theta = p.add_mutually_exclusive_group()
    theta.add_argument(
        "--relax-threshold",
        type=lambda t: (
            None if t.strip().lower() == "none" else _number(t, _COSINE, lambda v: -1 < v <= 1)
        ),
        metavar="THETA",
        help="relaxation threshold θ in (-1, 1]; 'none' (default) = plain CLIP loss",
    )
    theta.add_argument(
        "--relax-quantile",
        type=lambda t: _number(t, "a number in (0, 1)", lambda v: 0 < v < 1),
        metavar="Q",
        help="θ calibrated once before training: the Q-quantile of the model's positive cosines",
    )
    p.add_argument(
        "--relax-calibration-batches",
        type=lambda t: _number(t, "an int >= 1", lambda v: v >= 1, int),
        metavar="N",
        help="first training batches per rank --relax-quantile uses (default 10)",
    )
    p.add_argument(
        "--sentence-sampling",
        action="store_true",
        help="CSV captions are whole reports: sample sentences per step",
    )
    p.add_argument(
        "--num-sentences",
        type=_num_sentences,
        metavar="K",
        help="sentences per report and step: int, fraction in (0, 1] or lo-hi (default 1)",
    )
    p.add_argument(
        "--report-sections",
        type=lambda t: () if t.strip().lower() == "all" else section_names(t),
        metavar="NAMES",
        help=f"sections to sample from, or 'all' (default findings,impression); known: "
        f"{', '.join(KNOWN_SECTIONS)}",
    )
    p.add_argument(
        "--report-fallback",
        type=lambda t: section_names(t, extra=("report",)),
        metavar="NAMES",
        help="sections tried when a report has none of --report-sections, e.g. indication,report",
    )
    p.add_argument(
        "--on-empty",
        choices=("raise", "drop"),
        help="a report without a sentence: stop before training (default) or drop the sample",
    )
    p.add_argument(
        "--text-groups",
        action="store_true",
        help="rows whose sampled sentences are equal are not negatives of each other",
    )
    return p


def parse_relax_args(argv: Sequence[str]) -> tuple[RelaxOptions, list[str]]:
    """Split ``argv`` into relaxclip's options and the rest (open_clip's, order kept);
    ``SystemExit(2)`` for a bad value or an option without the one it needs."""
    parser = build_parser()
    ns, rest = parser.parse_known_args(list(argv))
    if ns.relax_calibration_batches is not None and ns.relax_quantile is None:
        parser.error("argument --relax-calibration-batches: needs --relax-quantile")
    if not ns.sentence_sampling:
        for key in (*_SAMPLING_FLAGS, "text_groups"):
            if getattr(ns, key) not in (None, False):
                flag = "--" + key.replace("_", "-")
                parser.error(f"{flag} needs --sentence-sampling (it would have no effect)")
    sections = DEFAULT_SECTIONS if ns.report_sections is None else ns.report_sections or None
    try:
        SentenceSampler(sections=sections, fallback=ns.report_fallback)
    except (TypeError, ValueError):
        parser.error(
            "argument --report-fallback: must be sections not in --report-sections (which must "
            f"not be 'all'), each once, 'report' only last, got {','.join(ns.report_fallback)}"
        )
    options = RelaxOptions(
        threshold=ns.relax_threshold,
        sentence_sampling=ns.sentence_sampling,
        num_sentences=1 if ns.num_sentences is None else ns.num_sentences,
        sections=sections,
        text_groups=ns.text_groups,
        relax_quantile=ns.relax_quantile,
        calibration_batches=ns.relax_calibration_batches or 10,
        fallback=ns.report_fallback,
        on_empty=ns.on_empty or "raise",
    )
    return options, rest
