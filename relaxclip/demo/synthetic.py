"""Embedded synthetic benchmark: multi-label chest-X-ray-like image–report pairs.

Everything is generated in memory from a seed (no files, no downloads), as a fair test of the
ideas in Jang et al. (arXiv 2212.07050): a study usually has several findings and its report
describes all of them (with negations, normal and irrelevant sentences); the text matches the
measured statistics of real Open-I reports (``benchmarks/realism.py``) through label-faithful
phrasing, never noise words; zero-shot prompts are short single-finding phrases; every finding
has a severity-dependent visual signature on a shared anatomy-like background. Labels are
exactly consistent with the text; every sentence is generated with the findings it states
present and absent (:class:`TaggedSentence`). The findings table (:data:`FINDINGS`, one
:class:`FindingSpec` per finding) is data, read from ``relaxclip/demo/findings.json``.

Each record is a ``dict`` with

* ``"image"``: ``torch.float32`` ``(1, image_size, image_size)``, values roughly in
  ``[-1.5, 1.5]`` (zero-centred; no further normalisation needed);
* ``"report"``: ``"FINDINGS: <sentences> IMPRESSION: <sentences>"``, or
  ``"IMPRESSION: <sentences>"`` for the 13 % of studies without a FINDINGS section;
* ``"labels"``: ``torch.float32`` ``(K,)`` 0/1 ground truth in the order of ``findings``;
* ``"index"``: ``int``, the record's position in its split.

Determinism: record ``i`` of split ``s`` is a pure function of ``(seed, s, i, image_size,
findings)``; it does not depend on ``n`` (a longer split extends a shorter one), and the splits
(:data:`SPLIT_NAMES`) are disjoint draws. Labels and image come from one random stream, the text
from its own (``numpy.random.default_rng([seed, s, i, 1])``), so the text does not depend on
``image_size``. The whole-report normal templates depend on ``(seed, findings)`` only.

Example:
    >>> train, val, test = make_synthetic_splits(800, 200, 400, image_size=64, seed=0)
    >>> train[0]["report"][:10], train[0]["labels"].shape
    ('FINDINGS: ', torch.Size([7]))
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from relaxclip._checks import check_int
from relaxclip.demo import phrases as ph

Rng = np.random.Generator

__all__ = [
    "FINDINGS",
    "FINDING_TERMS",
    "NEGATION_CUES",
    "SPLIT_NAMES",
    "SYNTHETIC_FINDINGS",
    "FindingSpec",
    "mentions",
    "Prevalence",
    "SyntheticCXRDataset",
    "SyntheticReport",
    "SyntheticSplits",
    "TaggedSentence",
    "label_prevalence",
    "make_synthetic_records",
    "make_synthetic_reports",
    "make_synthetic_splits",
    "render_synthetic_image",
]

NEGATION_CUES: tuple[str, ...] = ("no", "not", "without", "negative for", "free of")
"""Lower-case negation words of the generator: in every sentence that denies a finding, one of
them occurs (as whole words) before the finding's first mention, and in no sentence that states
a finding present does one occur before that finding's first mention.  (Negations may sit in the
middle of a sentence: "The lungs are clear, with no pneumothorax or effusion.")"""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test", "pretrain")

_SEVERITY_WORDS = ("mild", "moderate", "severe")
_SIZE_WORDS = ("small", "moderate", "large")
_SEVERITY_GAIN = (0.6, 0.85, 1.1)
_NORMAL_SHARE = 0.3
_HEART_FAILURE_SHARE = 0.3


@dataclass(frozen=True)
class _Finding:
    """Internal: one positive finding of a study."""

    name: str
    severity: int  # 0 mild, 1 moderate, 2 severe
    side: str  # "left", "right" or "bilateral"
    lobe: str  # "upper" or "lower"
    x: float  # location in [-1, 1] image coordinates (for focal findings)
    y: float


# ----------------------------------------------------------------------------- images


@dataclass
class _Canvas:
    """Internal: one image being composed (float64 ``(S, S)``), with the study's geometry.

    Composition order (see :func:`_render`): anatomy and lung texture are prepared; findings of
    layer ``"lung field"`` draw into the lung field; the lungs are shaded and textured (not where
    ``no_texture`` is set); findings of layer ``"heart"`` set ``heart_scale``; mediastinum and
    heart are drawn; findings of layer ``"overlay"`` add their opacities; acquisition effects.
    """

    rng: np.random.Generator
    xx: np.ndarray
    yy: np.ndarray
    img: np.ndarray
    lungs: tuple[np.ndarray, np.ndarray]  # image-left (patient's right) and image-right lung
    lung_mask: np.ndarray
    texture: np.ndarray
    no_texture: np.ndarray
    heart_scale: float = 1.0

    @classmethod
    def start(cls, rng: np.random.Generator, size: int) -> _Canvas:
        dx, dy = rng.uniform(-0.06, 0.06, size=2)  # per-study pose jitter
        scale = rng.uniform(0.93, 1.07)
        lin = np.linspace(-1.0, 1.0, size)
        yy, xx = np.meshgrid(lin, lin, indexing="ij")
        xx = (xx - dx) / scale
        yy = (yy - dy) / scale
        img = 0.35 * _ellipse(xx, yy, 0.0, 0.05, 0.92, 1.05)  # body
        lungs = (
            _ellipse(xx, yy, -0.4, -0.05, 0.3, 0.62),
            _ellipse(xx, yy, 0.4, -0.05, 0.3, 0.62),
        )
        lung_mask = np.clip(lungs[0] + lungs[1], 0.0, 1.0)
        ribs = 0.05 * np.sin(yy * 22.0 + 3.0 * np.abs(xx))
        texture = ribs + 0.05 * _smooth_noise(rng, size, 12)  # ribs + vascular texture
        return cls(rng, xx, yy, img, lungs, lung_mask, texture, np.zeros_like(xx))

    def lung(self, sgn: float) -> np.ndarray:
        """The lung on image side ``sgn`` (-1 left, +1 right)."""
        return self.lungs[0] if sgn < 0 else self.lungs[1]

    def shade_lungs(self) -> None:
        self.img -= 0.3 * self.lung_mask
        self.img += self.texture * self.lung_mask * (1.0 - self.no_texture)

    def add_heart(self) -> None:
        xx, yy = self.xx, self.yy
        self.img += 0.25 * _ellipse(xx, yy, 0.0, -0.3, 0.1, 0.5)  # mediastinum and spine
        heart_rx = 0.25 * self.rng.uniform(0.93, 1.07)
        heart_rx *= self.heart_scale
        self.img += 0.4 * _ellipse(xx, yy, 0.08, 0.3, heart_rx, 0.22)

    def finish(self) -> np.ndarray:
        """Acquisition: contrast/brightness jitter, low-frequency shading, pixel noise."""
        rng, size = self.rng, self.xx.shape[0]
        img = self.img * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)
        img += 0.05 * _smooth_noise(rng, size, 3)
        img += 0.06 * rng.standard_normal((size, size))
        return (3.0 * (img - 0.15)).astype(np.float32)


def _draw_pneumothorax(c: _Canvas, f: _Finding) -> None:
    """A texture-free, darker rim at the lateral apex of one lung, with a visible pleural line."""
    sgn = _sides(f.side)[0]
    g = _SEVERITY_GAIN[f.severity]
    depth = 0.08 + 0.07 * f.severity
    inner = _ellipse(c.xx, c.yy, sgn * (0.4 - depth), -0.05 + depth, 0.3 - depth, 0.62 - depth)
    lung = c.lung(sgn)
    c.no_texture = np.clip(lung - inner, 0.0, 1.0) * (c.yy < 0.2)
    c.img -= 0.12 * g * c.no_texture
    edge = np.exp(-(((np.abs(inner - 0.5)) / 0.18) ** 2)) * (c.yy < 0.2) * lung
    c.img += 0.12 * g * edge


def _draw_cardiomegaly(c: _Canvas, f: _Finding) -> None:
    """A wider heart."""
    c.heart_scale = 1.28 + 0.12 * f.severity


def _draw_edema(c: _Canvas, f: _Finding) -> None:
    """Bilateral perihilar haze with fine interstitial lines."""
    g = _SEVERITY_GAIN[f.severity]
    haze = _gauss(c.xx, c.yy, -0.25, 0.05, 0.2, 0.3) + _gauss(c.xx, c.yy, 0.25, 0.05, 0.2, 0.3)
    lines = 0.5 + 0.5 * np.sin(c.yy * 45.0)
    c.img += 0.16 * g * haze * c.lung_mask * (0.7 + 0.3 * lines)


def _draw_effusion(c: _Canvas, f: _Finding) -> None:
    """Bright fluid at the base with a meniscus rising laterally."""
    g = _SEVERITY_GAIN[f.severity]
    level = 0.42 - 0.14 * f.severity
    for sgn in _sides(f.side):
        lateral = np.clip(sgn * c.xx - 0.15, 0.0, 1.0)
        meniscus = 1.0 / (1.0 + np.exp(-(c.yy - level + 0.35 * lateral) / 0.03))
        c.img += 0.32 * g * meniscus * c.lung(sgn)


def _draw_atelectasis(c: _Canvas, f: _Finding) -> None:
    """Plate-like oblique linear opacity in a lower zone."""
    g = _SEVERITY_GAIN[f.severity]
    for sgn in _sides(f.side):
        d = c.yy - (0.3 + 0.15 * sgn * (c.xx - sgn * 0.4))
        band = np.exp(-((d / (0.025 + 0.012 * f.severity)) ** 2))
        c.img += 0.3 * g * band * c.lung(sgn)


def _draw_consolidation(c: _Canvas, f: _Finding) -> None:
    """Textured focal opacity in one lobe."""
    g = _SEVERITY_GAIN[f.severity]
    sgn = _sides(f.side)[0]
    sx, sy = 0.1 + 0.03 * f.severity, 0.12 + 0.03 * f.severity
    blob = _gauss(c.xx, c.yy, sgn * f.x, f.y, sx, sy)
    patchy = 0.75 + 0.25 * _smooth_noise(c.rng, c.xx.shape[0], 16)
    c.img += 0.3 * g * blob * patchy * c.lung_mask


def _draw_nodule(c: _Canvas, f: _Finding) -> None:
    """Small round dense spot."""
    g = _SEVERITY_GAIN[f.severity]
    sgn = _sides(f.side)[0]
    r = 0.035 + 0.012 * f.severity
    c.img += 0.35 * g * _ellipse(c.xx, c.yy, sgn * f.x, f.y - 0.1, r, r)


# ----------------------------------------------------------------------------- the findings


@dataclass(frozen=True)
class Prevalence:
    """How often a finding is present in an abnormal study (about a third of studies are
    normal and have none).

    ``base``: probability of presence; ``heart_failure``: the probability instead when the
    study's latent heart-failure state is on (30 % of abnormal studies), ``None`` if unrelated;
    ``given``: ``(other finding, probability)`` -- the probability instead when that other
    finding is present (drawn after it).
    """

    base: float
    heart_failure: float | None = None
    given: tuple[str, float] | None = None

    @property
    def draw_group(self) -> int:
        """Draw order: heart-failure-linked findings, then independent ones, then conditioned ones."""
        return 0 if self.heart_failure is not None else 2 if self.given is not None else 1


Layer = Literal["lung field", "heart", "overlay"]
Graded = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
"""Words for the three severities (mild, moderate, severe), in that order."""


@dataclass(frozen=True)
class FindingSpec:
    """Everything about one synthetic finding: label, image signature and phrasing.

    A positive sentence is one of ``frames`` (``bilateral_frames`` for a bilateral finding when
    given) filled in with: ``{d}`` a descriptor from ``descriptors[severity]`` (``{m}`` in it
    becomes a size from ``measure[severity]``), ``{n}`` one of ``nouns``, ``{x}`` one of
    ``extras`` (often empty), ``{loc}`` a lung location on the finding's side and in its lobe,
    ``{side}`` the side, ``{q}`` a comparison qualifier (``"stable "``, ``"new "``, ...; often
    empty), ``{h}`` a hedge of the 'probably present' kind (``"likely "``, ...; often empty) and
    ``{adv}`` the adverb of the descriptor (``"mildly"``).  Every frame states the finding as
    present and contains one of its ``terms``.

    Attributes:
        name: the finding (lower case; also its zero-shot class name and label name).
        terms: lower-case phrases that mention it; every sentence that states it present or
            absent contains one, and no other sentence does (stock statements such as "heart
            size is normal", which deny cardiomegaly without naming it, are the exception).
        prevalence: how often it is present (:class:`Prevalence`).
        draw: its image signature, ``draw(canvas, finding)``; strength grows with severity.
        layer: when it is drawn (see ``_Canvas``): ``"lung field"`` (before lung texture),
            ``"heart"`` (heart size), ``"overlay"`` (opacities on top).
        descriptors, nouns, extras, frames, bilateral_frames: the positive phrasing (above).
        negated: short forms used in negation lists ("no pneumothorax or pleural effusion");
            the first is the most common.
        impression_nouns: nouns of its impression item ("small left pleural effusion").
        measure: size ranges (cm) of ``{m}`` per severity, or ``None``.
        unilateral: never bilateral (a focal finding on one side).
        size_words: the impression qualifies it by size (small/moderate/large) rather than
            severity (mild/moderate/severe).
        parenchymal: a lung-parenchyma finding.
    """

    name: str
    terms: tuple[str, ...]
    prevalence: Prevalence
    draw: Callable[[_Canvas, _Finding], None]
    layer: Layer
    descriptors: Graded
    nouns: tuple[str, ...]
    extras: tuple[str, ...]
    frames: tuple[str, ...]
    negated: tuple[str, ...]
    impression_nouns: tuple[str, ...]
    bilateral_frames: tuple[str, ...] = ()
    measure: tuple[tuple[float, float], ...] | None = None
    unilateral: bool = False
    size_words: bool = False
    parenchymal: bool = False


_DRAWERS: dict[str, Callable[[_Canvas, _Finding], None]] = {
    "atelectasis": _draw_atelectasis,
    "cardiomegaly": _draw_cardiomegaly,
    "consolidation": _draw_consolidation,
    "edema": _draw_edema,
    "effusion": _draw_effusion,
    "pneumothorax": _draw_pneumothorax,
    "nodule": _draw_nodule,
}
"""The image signatures a findings-table entry may name in its ``"draw"`` field."""

FINDINGS_FILE = "findings.json"
"""The findings table's file in the :mod:`relaxclip.demo` package (shipped as package data)."""

_STRING_LISTS = (
    "terms",
    "nouns",
    "extras",
    "frames",
    "negated",
    "impression_nouns",
    "bilateral_frames",
)
_FLAGS = ("unilateral", "size_words", "parenchymal")


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _per_severity(value: object, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(
            f"{where}: expected a list of 3 entries (mild, moderate, severe), got {value!r}"
        )
    return value


def _range(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{where}: expected a [low, high] pair, got {value!r}")
    return _number(value[0], where), _number(value[1], where)


def _prevalence(value: object, where: str) -> Prevalence:
    if (
        not isinstance(value, dict)
        or "base" not in value
        or value.keys() - {"base", "heart_failure", "given"}
    ):
        raise ValueError(
            f"{where}: expected an object with 'base' and optional 'heart_failure' and 'given', "
            f"got {value!r}"
        )
    hf, given = value.get("heart_failure"), value.get("given")
    if given is not None and not (
        isinstance(given, list) and len(given) == 2 and isinstance(given[0], str)
    ):
        raise ValueError(f"{where}.given: expected [other finding, probability], got {given!r}")
    return Prevalence(
        _number(value["base"], f"{where}.base"),
        heart_failure=None if hf is None else _number(hf, f"{where}.heart_failure"),
        given=None if given is None else (given[0], _number(given[1], f"{where}.given")),
    )


def _finding_spec(entry: object, index: int, source: str) -> FindingSpec:
    """One :class:`FindingSpec` from entry ``index`` of the parsed findings table ``source``.

    Every field of :class:`FindingSpec` is required (``measure`` may be ``null``); lists become
    tuples, ``"draw"`` names an image signature of ``_DRAWERS``.  Raises ``ValueError`` naming
    the file and the finding for a missing, unknown or mistyped field or an unknown drawer.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise ValueError(f"{source}: entry {index} must be an object with a non-empty 'name'")
    name = entry["name"]
    where = f"{source}: finding {name!r}"
    fields = [f.name for f in dataclasses.fields(FindingSpec)]
    missing, unknown = sorted(set(fields) - entry.keys()), sorted(entry.keys() - set(fields))
    if missing or unknown:
        raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    if entry["draw"] not in _DRAWERS:
        raise ValueError(
            f"{where}: unknown drawer {entry['draw']!r} in 'draw'; expected one of {sorted(_DRAWERS)}"
        )
    if entry["layer"] not in get_args(Layer):
        raise ValueError(
            f"{where}.layer: expected one of {get_args(Layer)}, got {entry['layer']!r}"
        )
    for key in _FLAGS:
        if not isinstance(entry[key], bool):
            raise ValueError(f"{where}.{key}: expected true or false, got {entry[key]!r}")
    descriptors = _per_severity(entry["descriptors"], f"{where}.descriptors")
    measure = entry["measure"]
    phrasing: dict[str, Any] = {k: _strings(entry[k], f"{where}.{k}") for k in _STRING_LISTS}
    phrasing.update({k: entry[k] for k in _FLAGS})
    return FindingSpec(
        name=name,
        prevalence=_prevalence(entry["prevalence"], f"{where}.prevalence"),
        draw=_DRAWERS[entry["draw"]],
        layer=entry["layer"],
        descriptors=(
            _strings(descriptors[0], f"{where}.descriptors"),
            _strings(descriptors[1], f"{where}.descriptors"),
            _strings(descriptors[2], f"{where}.descriptors"),
        ),
        measure=None
        if measure is None
        else tuple(
            _range(m, f"{where}.measure") for m in _per_severity(measure, f"{where}.measure")
        ),
        **phrasing,
    )


def _findings_table(text: str, source: str) -> tuple[FindingSpec, ...]:
    """The findings table from its JSON ``text`` (a list of objects, one per finding, in label
    order; see :func:`_finding_spec`).  ``source`` names the file in error messages."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: expected a non-empty list of findings")
    table = tuple(_finding_spec(e, i, source) for i, e in enumerate(entries))
    names = [s.name for s in table]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: finding names must be unique, got {names}")
    return table


FINDINGS: tuple[FindingSpec, ...] = _findings_table(
    importlib.resources.files("relaxclip.demo").joinpath(FINDINGS_FILE).read_text("utf-8"),
    f"relaxclip/demo/{FINDINGS_FILE}",
)
"""The findings table: one record per finding, in label order, read from the package data
file ``relaxclip/demo/findings.json`` (one object per finding).  Adding a finding is one entry
there (and, for a new image signature, one ``_draw_*`` function named in ``_DRAWERS``)."""

_SPEC: dict[str, FindingSpec] = {s.name: s for s in FINDINGS}

SYNTHETIC_FINDINGS: tuple[str, ...] = tuple(s.name for s in FINDINGS)
"""Default findings: the five CheXpert competition pathologies plus pneumothorax and nodule."""

FINDING_TERMS: dict[str, tuple[str, ...]] = {s.name: s.terms for s in FINDINGS}
"""Phrases (lower case) that mention each finding in generated reports."""


class SyntheticSplits(NamedTuple):
    """Train / validation / test record lists (see module docstring for the record format)."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    test: list[dict[str, Any]]


class SyntheticCXRDataset(Dataset[dict[str, Any]]):
    """``torch.utils.data.Dataset`` over a list of synthetic records (returned unchanged)."""

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        if not isinstance(records, Sequence):
            raise TypeError(f"records must be a sequence of dicts, got {type(records).__name__}")
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]


# ----------------------------------------------------------------------------- labels


def _check_findings(findings: Sequence[str] | None) -> tuple[str, ...]:
    if findings is None:
        return SYNTHETIC_FINDINGS
    if isinstance(findings, str) or not isinstance(findings, Sequence):
        raise TypeError("findings must be a sequence of finding names (e.g. a list of str)")
    out = tuple(findings)
    if not out:
        raise ValueError("findings must name at least one finding")
    unknown = [f for f in out if f not in FINDING_TERMS]
    if unknown:
        raise ValueError(
            f"findings: unknown name(s) {unknown}; expected a subset of {list(SYNTHETIC_FINDINGS)}"
        )
    if len(set(out)) != len(out):
        raise ValueError(f"findings must not contain duplicates, got {list(out)}")
    return out


def _draw_findings(rng: np.random.Generator, allowed: tuple[str, ...]) -> list[_Finding]:
    """Draw the positive findings of one study with realistic co-occurrences.

    About a third of studies are normal.  Otherwise a latent "heart failure" state raises the
    findings whose :class:`Prevalence` has a ``heart_failure`` probability, and a finding with a
    ``given`` condition uses its conditional probability when that finding is present.  Presence
    is drawn for every finding of :data:`FINDINGS` (in :attr:`Prevalence.draw_group` order), then
    the attributes of every finding in table order, whatever ``allowed`` is (so a subset of
    findings does not change the draws).
    """
    if rng.random() < _NORMAL_SHARE:
        return []
    hf = rng.random() < _HEART_FAILURE_SHARE
    present: dict[str, bool] = {}
    for spec in sorted(FINDINGS, key=lambda s: s.prevalence.draw_group):
        prev = spec.prevalence
        p = prev.base
        if hf and prev.heart_failure is not None:
            p = prev.heart_failure
        if prev.given is not None and present[prev.given[0]]:
            p = prev.given[1]
        present[spec.name] = bool(rng.random() < p)
    out: list[_Finding] = []
    for spec in FINDINGS:
        f = _attributes(rng, spec.name)
        if present[spec.name] and spec.name in allowed:
            out.append(f)
    return out


def _attributes(rng: np.random.Generator, name: str) -> _Finding:
    """Random severity, side, lobe and location of one finding."""
    severity = int(rng.integers(0, 3))
    side = ("left", "right", "bilateral")[int(rng.integers(0, 3))]
    if _SPEC[name].unilateral and side == "bilateral":
        side = ("left", "right")[int(rng.integers(0, 2))]
    lobe = ("upper", "lower")[int(rng.integers(0, 2))]
    x = float(rng.uniform(0.22, 0.55))
    y = float(rng.uniform(-0.45, -0.1) if lobe == "upper" else rng.uniform(0.05, 0.35))
    return _Finding(name, severity, side, lobe, x, y)


def _render(rng: np.random.Generator, findings: list[_Finding], size: int) -> np.ndarray:
    """Render one ``(size, size)`` float32 image of a study with the given findings (each drawn
    by its :attr:`FindingSpec.draw` in its layer, in table order)."""
    c = _Canvas.start(rng, size)
    ordered = sorted(findings, key=lambda f: SYNTHETIC_FINDINGS.index(f.name))

    def draw(layer: Layer) -> None:
        for f in ordered:
            if _SPEC[f.name].layer == layer:
                _SPEC[f.name].draw(c, f)

    draw("lung field")
    c.shade_lungs()
    draw("heart")
    c.add_heart()
    draw("overlay")
    return c.finish()


# ----------------------------------------------------------------------------- image helpers


def _ellipse(
    xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float
) -> np.ndarray:
    """Soft 0/1 mask of an ellipse (logistic edge of width ~0.03)."""
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp(np.minimum((r - 1.0) / 0.04, 50.0)))


def _gauss(
    xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, sx: float, sy: float
) -> np.ndarray:
    return np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise: a ``cells x cells`` Gaussian grid upsampled bilinearly to ``size``."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _sides(side: str) -> tuple[float, ...]:
    """Image x-direction(s) of a side.  Radiological convention: patient's right on image left."""
    return {"right": (-1.0,), "left": (1.0,), "bilateral": (-1.0, 1.0)}[side]


# ----------------------------------------------------------------------------- reports


class TaggedSentence(NamedTuple):
    """One generated sentence with the findings it states present and absent."""

    text: str
    present: frozenset[str] = frozenset()
    absent: frozenset[str] = frozenset()


class SyntheticReport(NamedTuple):
    """The text of one synthetic study.

    ``findings`` / ``impression``: the sentences of each section (``findings`` is empty for the
    studies written under IMPRESSION only); ``positive``: the finding names labelled 1;
    ``report``: the report string of the record (``"FINDINGS: ... IMPRESSION: ..."`` or
    ``"IMPRESSION: ..."``).  Label faithfulness: the union of ``present`` over all sentences is
    exactly ``positive``, and no ``absent`` finding is positive.
    """

    findings: tuple[TaggedSentence, ...]
    impression: tuple[TaggedSentence, ...]
    positive: tuple[str, ...]

    @property
    def sentences(self) -> tuple[TaggedSentence, ...]:
        return self.findings + self.impression

    @property
    def report(self) -> str:
        impression = "IMPRESSION: " + " ".join(s.text for s in self.impression)
        if not self.findings:
            return impression
        return "FINDINGS: " + " ".join(s.text for s in self.findings) + " " + impression


@dataclass(frozen=True)
class _Style:
    """The writer's design parameters, calibrated so that the generated reports match the text
    statistics of the Open-I archive (``benchmarks/realism.py``); frozen before any demo arm was
    run on them (docs/demo.md).  On the 3,000 training reports of data seed 0 they give: 5.83 sentences per
    report (real 5.82), words median / p90 36 / 57.1 (34 / 64), in-batch duplicate expectation of
    a sampled sentence 13.3 % (13.4 %) and of a whole report 5.2 % (4.7 %), distinct sentences
    33.0 % (38.1 %), most frequent sentence 2.1 % (1.9 %), whole reports truncated at
    ``TEXT_CONTEXT_LENGTH`` 23.4 % (CLIP's 77 BPE tokens on Open-I: 24.9 %).  Changing a value
    changes the benchmark (rerun ``tests/test_realism_stats.py``).  Probabilities are per report
    unless noted."""

    a_stock: float = 1.3  # Zipf exponent over the subjects and predicates of stock statements
    a_impression: float = 1.4  # Zipf exponent over normal impressions
    p_merge_heart: float = 0.6  # heart and mediastinum in one sentence
    p_cardiomediastinal: float = 0.3  # ... of which with a "cardiomediastinal" subject
    p_heart_only: float = 0.15  # a heart sentence and no mediastinum statement
    p_merge_lungs: float = 0.3  # lungs clause + " without <negation list>" in one sentence
    p_compound: float = 0.75  # lungs clause + joined negation list ("..., with no ...")
    p_compound_all: float = 0.4  # heart, mediastinum and lungs in one sentence
    p_pleura: float = 0.85  # a pleural negation (pneumothorax / effusion) when both negative
    p_parenchyma_negation: float = 0.2  # an explicit consolidation / edema negation
    p_extra_negation: float = 0.06  # per other negative finding: one more explicit negation
    p_bones: float = 0.25
    p_technique: float = 0.05
    p_comparison: float = 0.12  # stand-alone comparison sentence
    p_change: float = 0.35  # a finding or incidental sentence says stable / new / increased ...
    p_incidental_normal: float = 0.35  # a study without positives has incidental findings
    p_incidental_abnormal: float = 0.3
    p_device: float = 0.11
    p_template: float = 0.75  # a clean normal study is written from a whole-report template
    n_templates: int = 60
    a_template: float = 0.5
    p_impression_only: float = 0.13  # everything written under IMPRESSION (no FINDINGS)
    p_hedge: float = 0.35
    p_impression_extra: float = 0.25  # an abnormal impression adds "otherwise ..." / incidental


_STYLE = _Style()
_ADVERBS = {"mild": "mildly", "moderate": "moderately", "marked": "markedly",
            "severe": "severely", "slight": "slightly", "borderline to mild": "mildly",
            "mild to moderate": "moderately", "moderate to severe": "severely"}  # fmt: skip
_NEGATION_ORDER = ("pneumothorax", "pleural effusion", "consolidation", "edema", "atelectasis",
                   "nodule", "cardiomegaly")  # fmt: skip
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiou])")


def mentions(text: str) -> set[str]:
    """The findings whose :data:`FINDING_TERMS` occur in ``text`` (case-insensitive)."""
    low = text.lower()
    return {name for name, terms in FINDING_TERMS.items() if any(t in low for t in terms)}


def _sentence(
    clause: str, present: Iterable[str] = (), absent: Iterable[str] = ()
) -> TaggedSentence:
    """Capitalise, fix ``a``/``an``, collapse spaces and end with a period."""
    text = _ARTICLE.sub(lambda m: m.group(1) + "n ", " ".join(clause.split()))
    return TaggedSentence(text[:1].upper() + text[1:] + ".", frozenset(present), frozenset(absent))


class _Writer:
    """Writes the reports of one benchmark (``seed``, ``allowed`` findings).  Findings outside
    ``allowed`` never occur and are never mentioned: stock clauses that name one are redrawn."""

    def __init__(self, allowed: tuple[str, ...], style: _Style = _STYLE) -> None:
        self.allowed = allowed
        self.style = style

    # ---- stock statements
    def _clause(self, rng: Rng, make: Callable[[Rng], str]) -> str:
        for _ in range(100):
            clause = make(rng)
            if mentions(clause) <= set(self.allowed):
                return clause
        raise RuntimeError("no stock clause avoids the excluded findings")  # pragma: no cover

    def _heart(self, rng: Rng) -> str:
        a = self.style.a_stock
        return self._clause(rng, lambda r: ph.compose(r, ph.HEART_SUBJECTS, ph.HEART_PREDICATES, a))

    def _mediastinum(self, rng: Rng, cardio: bool = False) -> str:
        a = self.style.a_stock
        subjects = ph.CARDIOMEDIASTINAL_SUBJECTS if cardio else ph.MEDIASTINUM_SUBJECTS
        return self._clause(rng, lambda r: ph.compose(r, subjects, ph.MEDIASTINUM_PREDICATES, a))

    def _lungs(self, rng: Rng) -> str:
        a = self.style.a_stock
        return self._clause(rng, lambda r: ph.compose(r, ph.LUNG_SUBJECTS, ph.LUNG_PREDICATES, a))

    def _bones(self, rng: Rng) -> str:
        a = self.style.a_stock
        if rng.random() < 0.35:
            return ph.BONE_SINGLE[ph.zipf(rng, len(ph.BONE_SINGLE), a)]
        return ph.compose(rng, ph.BONE_SUBJECTS, ph.BONE_PREDICATES, a)

    def _normal_impression(self, rng: Rng) -> str:
        a = self.style.a_impression
        if rng.random() < 0.3:
            return ph.IMPRESSION_SINGLE[ph.zipf(rng, len(ph.IMPRESSION_SINGLE), a)]
        lead = ph.IMPRESSION_LEADS[ph.zipf(rng, len(ph.IMPRESSION_LEADS), a + 0.5)]
        organ = ph.IMPRESSION_ORGANS[ph.zipf(rng, len(ph.IMPRESSION_ORGANS), a)]
        noun = ph.IMPRESSION_NOUNS[ph.zipf(rng, len(ph.IMPRESSION_NOUNS), a)]
        return f"{lead} {organ} {noun}"

    def _heart_tags(self) -> set[str]:
        return {"cardiomegaly"} & set(self.allowed)

    @staticmethod
    def _lung_tags(clause: str) -> set[str]:
        return mentions(clause)  # "free of focal airspace disease" denies consolidation

    # ---- negations
    @staticmethod
    def _negation_list(rng: Rng, names: Sequence[str], shuffle_words: bool) -> str:
        forms = [
            ph.pick(rng, _SPEC[n].negated)
            if shuffle_words or rng.random() < 0.5
            else _SPEC[n].negated[0]
            for n in names
        ]
        if len(forms) == 1:
            return forms[0]
        if len(forms) == 2:  # "X or Y", never "X, or Y"
            return forms[0] + (" or " if rng.random() < 0.8 else " and ") + forms[1]
        conj = (
            ph.pick(rng, (" or ", ", or ", " and "))
            if shuffle_words
            else (" or " if rng.random() < 0.8 else " and ")
        )
        return ", ".join(forms[:-1]) + conj + forms[-1]

    def _negation(self, rng: Rng, names: Sequence[str]) -> TaggedSentence:
        """One sentence denying ``names``: "No pneumothorax, effusion or edema."."""
        body = self._negation_list(rng, names, shuffle_words=False)
        lead = ph.NEGATION_LEADS[ph.zipf(rng, len(ph.NEGATION_LEADS), 1.5)]
        return _sentence(f"{lead} {body}", absent=names)

    def _compound(self, rng: Rng, names: Sequence[str]) -> list[TaggedSentence]:
        """ "The lungs are clear, with no X, Y or Z" (one sentence; names in random order)."""
        order = [names[int(i)] for i in rng.permutation(len(names))]
        body = self._negation_list(rng, order, shuffle_words=True)
        lead = f"{ph.pick(rng, ph.LUNGS_WORDS)} {ph.pick(rng, ph.CLEAR_WORDS)}"
        if rng.random() < 1 / (len(ph.LUNGS_NEGATION_JOINS) + 1):
            return [_sentence(lead), _sentence(f"there is no {body}", absent=order)]
        join = ph.pick(rng, ph.LUNGS_NEGATION_JOINS)
        if "without" in lead and "without" in join:  # not "without opacity without effusion"
            join = ", with no "
        return [_sentence(lead + join + body, absent=order)]

    # ---- organs without a positive finding
    def _normal_findings(
        self, rng: Rng, negatives: Sequence[str], lungs_ok: bool, heart_ok: bool, p_bones: float
    ) -> list[TaggedSentence]:
        st = self.style
        out, lungs_done = self._heart_and_mediastinum(rng, lungs_ok, heart_ok)
        chosen, paren = self._pleura_negatives(rng, negatives)
        if lungs_done:
            pass
        elif lungs_ok and chosen and rng.random() < st.p_compound:
            more = [x for x in paren if rng.random() < 0.5]
            out += self._compound(rng, chosen + more)
            chosen, paren = [], [x for x in paren if x not in more]
            paren = []
        elif lungs_ok:
            clause = self._lungs(rng)
            if chosen and rng.random() < st.p_merge_lungs:
                negation = self._negation(rng, chosen)
                if negation.text.startswith("No "):
                    join = " with no " if "without" in clause else " without "
                    text = f"{clause}{join}{negation.text[3:-1]}"
                    out.append(_sentence(text, absent=set(chosen) | self._lung_tags(clause)))
                else:
                    out += [_sentence(clause, absent=self._lung_tags(clause)), negation]
                chosen = []
            else:
                out.append(_sentence(clause, absent=self._lung_tags(clause)))
        if chosen:
            out.append(self._negation(rng, chosen))
        if rng.random() < st.p_parenchyma_negation and paren:
            out.append(self._negation(rng, [ph.pick(rng, paren)] if rng.random() < 0.6 else paren))
        if rng.random() < p_bones:
            out.append(_sentence(self._bones(rng)))
        return out

    def _heart_and_mediastinum(
        self, rng: Rng, lungs_ok: bool, heart_ok: bool
    ) -> tuple[list[TaggedSentence], bool]:
        """The heart and mediastinum sentences of a report, and whether one compound sentence
        already stated the lungs normal too."""
        st = self.style
        heart_tags = self._heart_tags()
        if heart_ok and lungs_ok and rng.random() < st.p_compound_all:
            heart, med, lungs = self._heart(rng), self._mediastinum(rng), self._lungs(rng)
            join = ph.pick(rng, (", and ", " and ", ", "))
            tags = heart_tags | self._lung_tags(lungs)
            return [_sentence(f"{heart}, {med}{join}{lungs}", absent=tags)], True
        if not heart_ok:
            return [_sentence(self._mediastinum(rng))], False
        r = rng.random()
        if r < st.p_merge_heart:
            if rng.random() < st.p_cardiomediastinal:
                return [_sentence(self._mediastinum(rng, cardio=True), absent=heart_tags)], False
            clause = f"{self._heart(rng)} and {self._mediastinum(rng)}"
            return [_sentence(clause, absent=heart_tags)], False
        if r < st.p_merge_heart + st.p_heart_only:
            return [_sentence(self._heart(rng), absent=heart_tags)], False
        heart_sentence = _sentence(self._heart(rng), absent=heart_tags)
        return [heart_sentence, _sentence(self._mediastinum(rng))], False

    def _pleura_negatives(self, rng: Rng, negatives: Sequence[str]) -> tuple[list[str], list[str]]:
        """The pleural findings a normal report denies (``chosen``) and the parenchymal ones
        left to deny (``paren``)."""
        st = self.style
        pleura = [n for n in ("pneumothorax", "pleural effusion") if n in negatives]
        paren = [n for n in ("consolidation", "edema") if n in negatives]
        chosen: list[str] = []
        if rng.random() < st.p_pleura and pleura:
            chosen = pleura if rng.random() < 0.7 else [ph.pick(rng, pleura)]
            if rng.random() < st.p_parenchyma_negation * 0.5 and paren:
                extra = ph.pick(rng, paren)
                chosen = [*chosen, extra]
                paren = [x for x in paren if x != extra]
            if rng.random() < 0.3:
                chosen = [chosen[int(i)] for i in rng.permutation(len(chosen))]
        return chosen, paren

    # ---- positive findings
    def _change(self, rng: Rng) -> str:
        return ph.pick(rng, ph.CHANGE_WORDS) if rng.random() < self.style.p_change else ""

    def _positive(self, rng: Rng, f: _Finding) -> TaggedSentence:
        spec = _SPEC[f.name]
        hedge = ph.pick(rng, ph.HEDGES) if rng.random() < self.style.p_hedge else ""
        change = self._change(rng)
        size = spec.measure[f.severity] if spec.measure is not None else (0.5, 4.0)
        descriptor = ph.pick(rng, spec.descriptors[f.severity])
        descriptor = descriptor.replace("{m}", ph.measurement(rng, *size))
        last = descriptor.split()[-1]  # no "discoid discoid atelectasis"
        nouns = [n for n in spec.nouns if n.split()[0] != last] or spec.nouns
        both = f.side == "bilateral"
        frames = spec.bilateral_frames if both and spec.bilateral_frames else spec.frames
        one_side = ph.pick(rng, ph.SIDES) if both else f.side
        extra = ph.pick(rng, spec.extras).replace("{m}", ph.measurement(rng, *size))
        frame = ph.pick(rng, frames)
        if frame.endswith("{h}infection") and not hedge:  # not ", infection"
            hedge = "likely "
        text = frame.format(
            q=change,
            d=descriptor,
            adv=_ADVERBS.get(descriptor, "mildly"),
            n=ph.pick(rng, nouns),
            loc=_location(rng, one_side, f.lobe),
            x=extra,
            h=hedge,
            side="bilateral" if both else f.side,
        )
        return _sentence(text, present={f.name})

    def _impression_item(self, rng: Rng, f: _Finding) -> str:
        spec = _SPEC[f.name]
        grade = (ph.SIZE if spec.size_words else ph.SEVERITY)[f.severity]
        both = f.side == "bilateral"
        where = (
            "" if f.name in ("cardiomegaly", "edema") else ("bilateral " if both else f"{f.side} ")
        )
        noun = ph.pick(rng, spec.impression_nouns)
        if both and f.name == "pleural effusion":
            noun += "s"
        item = ph.pick(rng, (f"{grade} {where}{noun}", f"{where}{noun}", f"{grade} {noun}"))
        r = rng.random()
        if r < 0.25:
            item = ph.pick(rng, ph.IMPRESSION_CHANGE_LEADS) + item
        elif r < 0.4:
            item += ph.pick(rng, ph.IMPRESSION_CHANGE_TAILS)
        return item

    # ---- whole reports
    def templates(self, seed: int) -> list[list[TaggedSentence]]:
        """The pool of whole-report normal templates of benchmark ``seed`` (findings sentences
        plus one normal impression; all distinct), shared by every split."""
        rng = np.random.default_rng([seed, _TEMPLATE_STREAM])
        seen: set[tuple[str, ...]] = set()
        out: list[list[TaggedSentence]] = []
        for _ in range(100 * self.style.n_templates):
            t = self._normal_findings(rng, self.allowed, True, True, p_bones=0.4)
            t.append(_sentence(self._normal_impression(rng)))
            key = tuple(s.text for s in t)
            if key not in seen:
                seen.add(key)
                out.append(t)
            if len(out) == self.style.n_templates:
                break
        return out

    def write(
        self, rng: Rng, findings: list[_Finding], templates: list[list[TaggedSentence]]
    ) -> SyntheticReport:
        """The report of one study with positive ``findings`` (text drawn from ``rng``)."""
        st = self.style
        names = {f.name for f in findings}
        positive = tuple(n for n in self.allowed if n in names)
        negatives = [n for n in _NEGATION_ORDER if n in self.allowed and n not in names]
        n_incidental = 0
        if rng.random() < (st.p_incidental_abnormal if names else st.p_incidental_normal):
            n_incidental = 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)
        has_device = rng.random() < st.p_device
        if not names and n_incidental == 0 and not has_device and rng.random() < st.p_template:
            t = templates[ph.zipf(rng, len(templates), st.a_template)]
            return SyntheticReport(tuple(t[:-1]), tuple(t[-1:]), positive)
        body: list[TaggedSentence] = []
        impression_only = rng.random() < st.p_impression_only
        if rng.random() < st.p_technique:
            body.append(_sentence(ph.TECHNIQUE[ph.zipf(rng, len(ph.TECHNIQUE), 1.0)]))
        if rng.random() < st.p_comparison:
            if rng.random() < 0.6:
                body.append(_sentence(ph.STABLE[ph.zipf(rng, len(ph.STABLE), 1.0)]))
            else:
                prior = ph.pick(rng, ph.PRIOR)
                body.append(_sentence(f"compared with {prior}, there is no significant change"))
        lungs_ok = not (names - {"cardiomegaly"})
        stated = [self._positive(rng, f) for f in findings]
        normal = self._normal_findings(
            rng, negatives, lungs_ok, "cardiomegaly" not in names, st.p_bones
        )
        denied = set().union(*(s.absent for s in normal))
        extra_negations = [
            n for n in negatives if n not in denied and rng.random() < st.p_extra_negation
        ]
        extra = [_sentence(ph.incidental(rng, self._change(rng))) for _ in range(n_incidental)]
        if has_device:
            extra.append(_sentence(ph.device(rng)))
        if stated and rng.random() < 0.5:
            body += stated + normal
        else:
            body += normal[:1] + stated + normal[1:]
        if extra_negations:
            body.append(self._negation(rng, extra_negations))
        body += extra
        impression = self._impression(rng, findings, impression_only, extra, lungs_ok)
        if impression_only:
            return SyntheticReport((), tuple(body + impression), positive)
        return SyntheticReport(tuple(body), tuple(impression), positive)

    def _impression(
        self,
        rng: Rng,
        findings: list[_Finding],
        impression_only: bool,
        extra: list[TaggedSentence],
        lungs_ok: bool,
    ) -> list[TaggedSentence]:
        """The IMPRESSION sentences of a study with positive ``findings``."""
        st = self.style
        impression: list[TaggedSentence]
        if not findings:
            impression = [_sentence(self._normal_impression(rng))]
            if extra and rng.random() < 0.3:
                impression.insert(0, extra[0])
        else:
            keep = [f for f in findings if impression_only or rng.random() < 0.75] or findings[:1]
            items = [self._impression_item(rng, f) for f in keep]
            r = rng.random()
            if len(items) > 1 and r < 0.3:
                impression = [
                    _sentence(f"{i + 1}. {item[:1].upper()}{item[1:]}", present={f.name})
                    for i, (item, f) in enumerate(zip(items, keep, strict=True))
                ]
            elif len(items) > 1 and r < 0.6:
                joined = ", ".join(items[:-1]) + f" and {items[-1]}"
                impression = [_sentence(joined, present={f.name for f in keep})]
            else:
                impression = [
                    _sentence(item, present={f.name}) for item, f in zip(items, keep, strict=True)
                ]
            if rng.random() < st.p_impression_extra:
                if extra and rng.random() < 0.5:
                    impression.append(extra[0])
                else:
                    others = (*ph.IMPRESSION_OTHERWISE,
                              "otherwise clear lungs" if lungs_ok else "no other acute process")  # fmt: skip
                    impression.append(_sentence(ph.pick(rng, others)))
        return impression


_TEMPLATE_STREAM = 1_000_003  # stream id of the template pool (not a split index)
_TEXT_STREAM = 1  # the text of record i: default_rng([seed, split, i, _TEXT_STREAM])


def _location(rng: Rng, side: str, lobe: str) -> str:
    """A lung location on ``side`` in the upper or lower zone ``lobe`` (the image draws the
    finding there); a right lower finding is sometimes placed in the middle lobe."""
    upper = lobe == "upper"
    if side == "right" and not upper and rng.random() < 0.25:
        return ph.pick(rng, ("right middle lobe", "right middle lobe", "right midlung zone"))
    return ph.pick(rng, (
        f"{side} {lobe} lobe",
        f"{side} {lobe} lung zone",
        f"{lobe} {side} lung",
        f"{side} lung {'apex' if upper else 'base'}",
        f"{side} {'suprahilar' if upper else 'infrahilar'} region",
    ))  # fmt: skip


@functools.lru_cache(maxsize=16)
def _writer_and_templates(
    seed: int, allowed: tuple[str, ...]
) -> tuple[_Writer, list[list[TaggedSentence]]]:
    writer = _Writer(allowed)
    return writer, writer.templates(seed)


def _report(
    seed: int, split: int, index: int, findings: list[_Finding], allowed: tuple[str, ...]
) -> SyntheticReport:
    writer, templates = _writer_and_templates(seed, allowed)
    rng = np.random.default_rng([seed, split, index, _TEXT_STREAM])
    return writer.write(rng, findings, templates)


# ----------------------------------------------------------------------------- public API


def _record(
    seed: int, split: int, index: int, size: int, allowed: tuple[str, ...]
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, split, index])
    findings = _draw_findings(rng, allowed)
    image = _render(rng, findings, size)
    text = _report(seed, split, index, findings, allowed)
    labels = torch.tensor(
        [1.0 if name in text.positive else 0.0 for name in allowed], dtype=torch.float32
    )
    return {
        "image": torch.from_numpy(image).unsqueeze(0),
        "report": text.report,
        "labels": labels,
        "index": index,
    }


def _check_split_args(
    n: int, split: str, seed: int, findings: Sequence[str] | None
) -> tuple[int, int, int, tuple[str, ...]]:
    n = check_int("n", n, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    return n, SPLIT_NAMES.index(split), seed, _check_findings(findings)


def make_synthetic_reports(
    n: int, split: str = "train", *, seed: int = 0, findings: Sequence[str] | None = None
) -> list[SyntheticReport]:
    """The report text of the first ``n`` records of one split, without rendering images.

    ``make_synthetic_reports(n, split, seed=s, findings=f)[i].report`` equals
    ``make_synthetic_records(n, split, seed=s, findings=f, image_size=S)[i]["report"]`` for every
    ``S`` (the text has its own random stream), and each :class:`SyntheticReport` also gives the
    sentences with the findings they state present or absent (for label-faithfulness checks).
    Arguments as :func:`make_synthetic_records`.
    """
    n, s, seed, allowed = _check_split_args(n, split, seed, findings)
    out = []
    for i in range(n):
        found = _draw_findings(np.random.default_rng([seed, s, i]), allowed)
        out.append(_report(seed, s, i, found, allowed))
    return out


def render_synthetic_image(
    findings: Sequence[str], *, image_size: int = 64, seed: int | Sequence[int] = 0
) -> torch.Tensor:
    """Render one ``(1, image_size, image_size)`` float32 image showing exactly ``findings``.

    Severity, side and location of each finding are drawn from ``numpy.random.default_rng(seed)``
    (so the same ``seed`` gives the same image).  Used by the demo's Open-I mode, where the
    findings come from gold labels and the text from real reports.
    """
    allowed = _check_findings(list(findings)) if len(findings) else ()
    image_size = check_int("image_size", image_size, minimum=16)
    rng = np.random.default_rng(seed)
    drawn = [_attributes(rng, name) for name in allowed]
    return torch.from_numpy(_render(rng, drawn, image_size)).unsqueeze(0)


def make_synthetic_records(
    n: int,
    split: str = "train",
    *,
    image_size: int = 64,
    seed: int = 0,
    findings: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Generate ``n`` records of one split (``"train"``, ``"val"`` or ``"test"``).

    Args:
        n: number of records (>= 0).
        split: which split (:data:`SPLIT_NAMES`); different splits are independent draws of
            different studies (``"pretrain"`` is the demo's pre-training corpus).
        image_size: side length ``S`` of the square images (>= 16); images are ``(1, S, S)``.
        seed: benchmark seed (any non-negative int).
        findings: subset/order of :data:`SYNTHETIC_FINDINGS` to generate and label (default all).
            Findings not listed never occur and are never mentioned.

    Returns:
        A list of ``n`` record dicts (see the module docstring).
    """
    n, s, seed, allowed = _check_split_args(n, split, seed, findings)
    image_size = check_int("image_size", image_size, minimum=16)
    return [_record(seed, s, i, image_size, allowed) for i in range(n)]


def make_synthetic_splits(
    n_train: int = 2000,
    n_val: int = 500,
    n_test: int = 1000,
    *,
    image_size: int = 64,
    seed: int = 0,
    findings: Sequence[str] | None = None,
) -> SyntheticSplits:
    """Generate the train / validation / test splits of the synthetic benchmark.

    See :func:`make_synthetic_records` for the arguments; returns ``SyntheticSplits(train, val,
    test)``.  Generating the default sizes takes a few seconds on one CPU core.
    """
    return SyntheticSplits(
        *(
            make_synthetic_records(n, split, image_size=image_size, seed=seed, findings=findings)
            for n, split in zip((n_train, n_val, n_test), SPLIT_NAMES[:3], strict=True)
        )
    )


def label_prevalence(records: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Fraction of positive records per finding, ``(K,)`` float32 (raises on an empty list)."""
    if len(records) == 0:
        raise ValueError("records must not be empty")
    return torch.stack([r["labels"] for r in records]).mean(0)
