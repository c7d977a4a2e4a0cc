"""Embedded synthetic benchmark: multi-label chest-X-ray-like image–report pairs.

Everything is generated in memory from a seed; no files or downloads are needed.  The benchmark
is built to be a *fair* test of the ideas in Jang et al. (arXiv 2212.07050):

* a study usually has several findings at once, and its report describes all of them (plus
  explicit negations, normal statements and findings-irrelevant sentences), so a whole-report
  embedding mixes several findings;
* zero-shot prompts are short single-finding phrases (``"pleural effusion"`` vs
  ``"no pleural effusion"``), which look like single report sentences, not like whole reports;
* every finding has a visual signature in the image whose strength depends on its severity, on
  top of a shared anatomy-like background, per-study jitter and noise, so a finding is learnable
  but not trivial.

Public API
----------
``FINDINGS``
    The findings table: one :class:`FindingSpec` record per finding holds everything about it
    (name, mention terms, prevalence, image signature, positive phrasings, negations).  Adding a
    finding is one entry; the names below are derived from it.
``SYNTHETIC_FINDINGS``
    The default finding names (lower case; they are also the zero-shot class names).
``FINDING_TERMS``
    For each finding, the phrases the generator uses to mention it (every positive or negated
    mention contains one of them).  ``NEGATION_CUES`` lists the sentence openings of negations.
``make_synthetic_records(n, split="train", *, image_size=64, seed=0, findings=None)``
    ``n`` records of one split.
``make_synthetic_splits(n_train, n_val, n_test, *, image_size=64, seed=0, findings=None)``
    A :class:`SyntheticSplits` named tuple ``(train, val, test)`` of record lists.
``SyntheticCXRDataset(records)``
    A ``torch.utils.data.Dataset`` over a record list.
``render_synthetic_image(findings, *, image_size=64, seed=0)``
    One image showing exactly the given findings (e.g. from real gold labels).
``label_prevalence(records)``
    Fraction of positives per finding.

Each record is a ``dict`` with

* ``"image"``: ``torch.float32`` tensor of shape ``(1, image_size, image_size)``, values roughly
  in ``[-1.5, 1.5]`` (zero-centred intensities; no further normalisation is needed);
* ``"report"``: ``str`` of the form ``"FINDINGS: <sentences> IMPRESSION: <sentences>"``;
* ``"labels"``: ``torch.float32`` tensor of shape ``(K,)`` with 0/1 ground truth, in the order of
  ``findings``;
* ``"index"``: ``int``, the record's position in its split.

Determinism: record ``i`` of split ``s`` is a pure function of ``(seed, s, i, image_size,
findings)``; in particular it does not depend on ``n`` (a longer split extends a shorter one),
and the three splits are disjoint draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from relaxclip.demo._checks import check_int

__all__ = [
    "FINDINGS",
    "FINDING_TERMS",
    "NEGATION_CUES",
    "SPLIT_NAMES",
    "SYNTHETIC_FINDINGS",
    "FindingSpec",
    "Prevalence",
    "SyntheticCXRDataset",
    "SyntheticSplits",
    "label_prevalence",
    "make_synthetic_records",
    "make_synthetic_splits",
    "render_synthetic_image",
]

NEGATION_CUES: tuple[str, ...] = ("no ", "there is no ", "negative for ", "without ")
"""Lower-case openings of every negated sentence the generator writes."""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

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


# ----------------------------------------------------------------------------- phrasing


def _words(f: _Finding) -> dict[str, str]:
    """The words a phrasing template of :attr:`FindingSpec.say` may use, for finding ``f``."""
    sev, size = _SEVERITY_WORDS[f.severity], _SIZE_WORDS[f.severity]
    both = f.side == "bilateral"
    sides = "bilateral" if both else f.side
    return {
        "sev": sev,
        "Sev": sev.capitalize(),
        "size": size,
        "Size": size.capitalize(),
        "side": f.side,
        "sides": sides,
        "Sides": sides.capitalize(),
        "lobe": f.lobe,
        "s": "s" if both else "",
        "s_are": "s are" if both else " is",
        "effusion": "effusions" if both else "effusion",
        "a": "" if both else "a ",
        "markedly": ", markedly so" if f.severity == 2 else "",
    }


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


@dataclass(frozen=True)
class FindingSpec:
    """Everything about one synthetic finding.

    Attributes:
        name: the finding (lower case; also its zero-shot class name and label name).
        terms: phrases that mention it; every positive or negated sentence about it contains one.
        prevalence: how often it is present (:class:`Prevalence`).
        draw: its image signature, ``draw(canvas, finding)``; strength grows with severity.
        layer: when it is drawn (see ``_Canvas``): ``"lung field"`` (before lung texture),
            ``"heart"`` (heart size), ``"overlay"`` (opacities on top).
        say: templates of the positive sentences that may describe it (one is drawn at random
            and filled in with the finding's words: ``{sev}``/``{Sev}`` severity, ``{size}``/
            ``{Size}`` size, ``{side}``, ``{sides}``/``{Sides}`` (``bilateral`` for both sides),
            ``{lobe}``, and the number-agreement words ``{s}``, ``{s_are}``, ``{effusion}``,
            ``{a}``, ``{markedly}``; see ``_words``).
        negations: the sentences that may deny it (each starts with a :data:`NEGATION_CUES` cue).
        unilateral: never bilateral (a focal finding on one side).
        size_words: the impression qualifies it by size (small/moderate/large) rather than
            severity (mild/moderate/severe).
        parenchymal: a lung-parenchyma finding ("The lungs are clear" is then never written).
    """

    name: str
    terms: tuple[str, ...]
    prevalence: Prevalence
    draw: Callable[[_Canvas, _Finding], None]
    layer: Layer
    say: tuple[str, ...]
    negations: tuple[str, ...]
    unilateral: bool = False
    size_words: bool = False
    parenchymal: bool = False


FINDINGS: tuple[FindingSpec, ...] = (
    FindingSpec(
        "atelectasis",
        ("atelectasis", "atelectatic"),
        Prevalence(0.22, given=("pleural effusion", 0.5)),
        _draw_atelectasis,
        "overlay",
        (
            "{Sev} {sides} basilar atelectasis.",
            "Plate-like atelectasis at the {side} base{s}.",
            "There is {sev} atelectasis in the {sides} lower lobe{s}.",
            "Streaky {sides} basilar opacities likely reflect atelectasis.",
            "The {sides} lung base{s_are} {sev}ly atelectatic.",
        ),
        ("No atelectasis.", "There is no atelectasis."),
        parenchymal=True,
    ),
    FindingSpec(
        "cardiomegaly",
        ("cardiomegaly", "cardiac silhouette is enlarged", "enlarged cardiac silhouette"),
        Prevalence(0.15, heart_failure=0.6),
        _draw_cardiomegaly,
        "heart",
        (
            "{Sev} cardiomegaly.",
            "The cardiac silhouette is enlarged{markedly}.",
            "There is {sev} cardiomegaly.",
            "{Sev} enlarged cardiac silhouette.",
            "Heart size is enlarged, consistent with cardiomegaly.",
        ),
        ("No cardiomegaly.", "There is no cardiomegaly."),
    ),
    FindingSpec(
        "consolidation",
        ("consolidation", "consolidative opacity"),
        Prevalence(0.22),
        _draw_consolidation,
        "overlay",
        (
            "Focal consolidation in the {side} {lobe} lobe.",
            "There is a {size} area of consolidation in the {side} {lobe} lobe.",
            "Patchy consolidative opacity in the {side} {lobe} lung zone.",
            "{Sev} {side} {lobe} lobe consolidation, concerning for pneumonia.",
        ),
        ("No focal consolidation.", "There is no consolidation.", "Negative for consolidation."),
        unilateral=True,
        parenchymal=True,
    ),
    FindingSpec(
        "edema",
        ("edema",),
        Prevalence(0.08, heart_failure=0.55),
        _draw_edema,
        "overlay",
        (
            "{Sev} pulmonary edema.",
            "Findings are consistent with {sev} interstitial edema.",
            "There is {sev} pulmonary edema with perihilar haziness.",
            "Diffuse {sev} edema in both lungs.",
        ),
        ("No pulmonary edema.", "There is no edema.", "Without evidence of pulmonary edema."),
        parenchymal=True,
    ),
    FindingSpec(
        "pleural effusion",
        ("pleural effusion", "effusion"),
        Prevalence(0.18, heart_failure=0.5),
        _draw_effusion,
        "overlay",
        (
            "{Size} {sides} pleural {effusion}.",
            "There is {a}{size} {sides} pleural {effusion}.",
            "Blunting of the {side} costophrenic angle{s} due to {a}{size} {effusion}.",
            "{Sides} pleural {effusion}, {size} in size.",
        ),
        ("No pleural effusion.", "There is no pleural effusion.", "No pleural effusions."),
        size_words=True,
    ),
    FindingSpec(
        "pneumothorax",
        ("pneumothorax",),
        Prevalence(0.1),
        _draw_pneumothorax,
        "lung field",
        (
            "{Size} {side} apical pneumothorax.",
            "There is a {size} {side} pneumothorax.",
            "A {size} {side}-sided pneumothorax is present.",
        ),
        ("No pneumothorax.", "There is no pneumothorax.", "Negative for pneumothorax."),
        unilateral=True,
        size_words=True,
    ),
    FindingSpec(
        "nodule",
        ("nodule", "nodular opacity"),
        Prevalence(0.12),
        _draw_nodule,
        "overlay",
        (
            "A {size} nodule is seen in the {side} {lobe} lobe.",
            "{Size} {side} {lobe} lobe nodule.",
            "There is a {size} nodular opacity in the {side} lung.",
        ),
        ("No pulmonary nodule.", "There is no nodule.", "No suspicious nodule."),
        unilateral=True,
        size_words=True,
        parenchymal=True,
    ),
)
"""The findings table: one record per finding, in label order.  Adding a finding is one entry."""

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


def _positive_sentence(rng: np.random.Generator, f: _Finding) -> str:
    words = _words(f)
    return _choice(rng, [template.format(**words) for template in _SPEC[f.name].say])


def _negated_sentence(rng: np.random.Generator, name: str) -> str:
    return _choice(rng, _SPEC[name].negations)


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


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(0, len(options)))]


_IRRELEVANT = (
    "PA and lateral views of the chest were obtained.",
    "Comparison is made to the prior study.",
    "Degenerative changes of the thoracic spine.",
    "The osseous structures are intact.",
    "Surgical clips in the upper abdomen.",
    "The patient is slightly rotated.",
    "Single portable view of the chest.",
    "Mild tortuosity of the thoracic aorta.",
)


def _write_report(
    rng: np.random.Generator, findings: list[_Finding], allowed: tuple[str, ...]
) -> str:
    """FINDINGS/IMPRESSION report mentioning every positive finding (and only negating negatives)."""
    positive = {f.name for f in findings}
    sentences: list[str] = [_positive_sentence(rng, f) for f in findings]
    for name in allowed:
        if name not in positive and rng.random() < 0.35:
            sentences.append(_negated_sentence(rng, name))
    if not any(_SPEC[n].parenchymal for n in positive) and rng.random() < 0.6:
        sentences.append(_choice(rng, ("The lungs are clear.", "Lungs are clear bilaterally.")))
    if "cardiomegaly" not in positive and rng.random() < 0.5:
        sentences.append(
            _choice(rng, ("Heart size is normal.", "The cardiomediastinal silhouette is normal."))
        )
    n_irr = int(rng.integers(0, 3))
    for k in rng.permutation(len(_IRRELEVANT))[:n_irr]:
        sentences.append(_IRRELEVANT[int(k)])
    if not sentences:  # the FINDINGS section is never empty
        sentences.append(_choice(rng, _IRRELEVANT))
    order = rng.permutation(len(sentences))
    body = " ".join(sentences[int(k)] for k in order)

    if not findings:
        impression = _choice(
            rng,
            (
                "No acute cardiopulmonary process.",
                "No acute cardiopulmonary abnormality.",
                "Normal chest radiograph.",
            ),
        )
    else:
        # the impression repeats a subset of the positives (at least one), in canonical words
        keep = [f for f in findings if rng.random() < 0.6] or [findings[0]]
        words = []
        for f in keep:
            qual = (_SIZE_WORDS if _SPEC[f.name].size_words else _SEVERITY_WORDS)[f.severity]
            words.append(f"{qual} {f.name}")
        if len(words) == 1:
            impression = f"{words[0].capitalize()}."
        else:
            impression = (", ".join(words[:-1]) + f" and {words[-1]}.").capitalize()
        if rng.random() < 0.3:
            impression += " Otherwise no acute process."
    return f"FINDINGS: {body} IMPRESSION: {impression}"


# ----------------------------------------------------------------------------- public API


def _record(
    seed: int, split: int, index: int, size: int, allowed: tuple[str, ...]
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, split, index])
    findings = _draw_findings(rng, allowed)
    image = _render(rng, findings, size)
    report = _write_report(rng, findings, allowed)
    positive = {f.name for f in findings}
    labels = torch.tensor(
        [1.0 if name in positive else 0.0 for name in allowed], dtype=torch.float32
    )
    return {
        "image": torch.from_numpy(image).unsqueeze(0),
        "report": report,
        "labels": labels,
        "index": index,
    }


def render_synthetic_image(
    findings: Sequence[str], *, image_size: int = 64, seed: int | Sequence[int] = 0
) -> torch.Tensor:
    """Render one ``(1, image_size, image_size)`` float32 image showing exactly ``findings``.

    Severity, side and location of each finding are drawn from ``numpy.random.default_rng(seed)``
    (so the same ``seed`` gives the same image).  Used by the demo's Open-I mode, where the
    findings come from gold labels and the text from real reports.
    """
    allowed = _check_findings(list(findings)) if len(findings) else ()
    image_size = check_int("image_size", image_size, 16)
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
        split: which split; different splits are independent draws.
        image_size: side length ``S`` of the square images (>= 16); images are ``(1, S, S)``.
        seed: benchmark seed (any non-negative int).
        findings: subset/order of :data:`SYNTHETIC_FINDINGS` to generate and label (default all).
            Findings not listed never occur and are never mentioned.

    Returns:
        A list of ``n`` record dicts (see the module docstring).
    """
    n = check_int("n", n, 0)
    image_size = check_int("image_size", image_size, 16)
    seed = check_int("seed", seed, 0)
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    allowed = _check_findings(findings)
    s = SPLIT_NAMES.index(split)
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
            for n, split in zip((n_train, n_val, n_test), SPLIT_NAMES, strict=True)
        )
    )


def label_prevalence(records: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Fraction of positive records per finding, ``(K,)`` float32 (raises on an empty list)."""
    if len(records) == 0:
        raise ValueError("records must not be empty")
    return torch.stack([r["labels"] for r in records]).mean(0)
