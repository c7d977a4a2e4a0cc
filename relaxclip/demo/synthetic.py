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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "FINDING_TERMS",
    "NEGATION_CUES",
    "SPLIT_NAMES",
    "SYNTHETIC_FINDINGS",
    "SyntheticCXRDataset",
    "SyntheticSplits",
    "label_prevalence",
    "make_synthetic_records",
    "make_synthetic_splits",
    "render_synthetic_image",
]

SYNTHETIC_FINDINGS: tuple[str, ...] = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "pleural effusion",
    "pneumothorax",
    "nodule",
)
"""Default findings: the five CheXpert competition pathologies plus pneumothorax and nodule."""

FINDING_TERMS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectasis", "atelectatic"),
    "cardiomegaly": (
        "cardiomegaly",
        "cardiac silhouette is enlarged",
        "enlarged cardiac silhouette",
    ),
    "consolidation": ("consolidation", "consolidative opacity"),
    "edema": ("edema",),
    "pleural effusion": ("pleural effusion", "effusion"),
    "pneumothorax": ("pneumothorax",),
    "nodule": ("nodule", "nodular opacity"),
}
"""Phrases (lower case) that mention each finding in generated reports."""

NEGATION_CUES: tuple[str, ...] = ("no ", "there is no ", "negative for ", "without ")
"""Lower-case openings of every negated sentence the generator writes."""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

_SEVERITY_WORDS = ("mild", "moderate", "severe")
_SIZE_WORDS = ("small", "moderate", "large")
_SEVERITY_GAIN = (0.6, 0.85, 1.1)
_NORMAL_SHARE = 0.3


@dataclass(frozen=True)
class _Finding:
    """Internal: one positive finding of a study."""

    name: str
    severity: int  # 0 mild, 1 moderate, 2 severe
    side: str  # "left", "right" or "bilateral"
    lobe: str  # "upper" or "lower"
    x: float  # location in [-1, 1] image coordinates (for focal findings)
    y: float


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

    A latent "heart failure" state raises cardiomegaly, edema and effusion; an effusion raises
    atelectasis (compressive).  Marginal prevalences are roughly 10-30 % per finding and about a
    third of studies are normal.
    """
    if rng.random() < _NORMAL_SHARE:
        return []
    hf = rng.random() < 0.3
    p = {
        "cardiomegaly": 0.6 if hf else 0.15,
        "edema": 0.55 if hf else 0.08,
        "pleural effusion": 0.5 if hf else 0.18,
        "consolidation": 0.22,
        "pneumothorax": 0.1,
        "nodule": 0.12,
    }
    present = {name: bool(rng.random() < prob) for name, prob in p.items()}
    present["atelectasis"] = bool(rng.random() < (0.5 if present["pleural effusion"] else 0.22))
    out: list[_Finding] = []
    for name in SYNTHETIC_FINDINGS:  # fixed order: the draw does not depend on `allowed`
        f = _attributes(rng, name)
        if present[name] and name in allowed:
            out.append(f)
    return out


def _attributes(rng: np.random.Generator, name: str) -> _Finding:
    """Random severity, side, lobe and location of one finding."""
    severity = int(rng.integers(0, 3))
    side = ("left", "right", "bilateral")[int(rng.integers(0, 3))]
    if name in ("consolidation", "nodule", "pneumothorax") and side == "bilateral":
        side = ("left", "right")[int(rng.integers(0, 2))]
    lobe = ("upper", "lower")[int(rng.integers(0, 2))]
    x = float(rng.uniform(0.22, 0.55))
    y = float(rng.uniform(-0.45, -0.1) if lobe == "upper" else rng.uniform(0.05, 0.35))
    return _Finding(name, severity, side, lobe, x, y)


# ----------------------------------------------------------------------------- images


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


def _render(rng: np.random.Generator, findings: list[_Finding], size: int) -> np.ndarray:
    """Render one ``(size, size)`` float32 image of a study with the given findings."""
    # per-study pose jitter
    dx, dy = rng.uniform(-0.06, 0.06, size=2)
    scale = rng.uniform(0.93, 1.07)
    lin = np.linspace(-1.0, 1.0, size)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    xx = (xx - dx) / scale
    yy = (yy - dy) / scale

    body = _ellipse(xx, yy, 0.0, 0.05, 0.92, 1.05)
    img = 0.35 * body
    lungs = []
    for sgn in (-1.0, 1.0):
        lung = _ellipse(xx, yy, sgn * 0.4, -0.05, 0.3, 0.62)
        lungs.append(lung)
    lung_mask = np.clip(lungs[0] + lungs[1], 0.0, 1.0)
    # dark lungs with ribs and vascular texture
    ribs = 0.05 * np.sin(yy * 22.0 + 3.0 * np.abs(xx))
    vessels = 0.05 * _smooth_noise(rng, size, 12)
    texture = ribs + vessels
    find = {f.name: f for f in findings}

    # pneumothorax: a texture-free, darker rim at the lateral apex of one lung
    ptx_mask = np.zeros_like(xx)
    if "pneumothorax" in find:
        f = find["pneumothorax"]
        sgn = _sides(f.side)[0]
        g = _SEVERITY_GAIN[f.severity]
        depth = 0.08 + 0.07 * f.severity
        inner = _ellipse(xx, yy, sgn * (0.4 - depth), -0.05 + depth, 0.3 - depth, 0.62 - depth)
        lung = lungs[0] if sgn < 0 else lungs[1]
        ptx_mask = np.clip(lung - inner, 0.0, 1.0) * (yy < 0.2)
        img -= 0.12 * g * ptx_mask
        # visible visceral pleural line
        edge = np.exp(-(((np.abs(inner - 0.5)) / 0.18) ** 2)) * (yy < 0.2) * lung
        img += 0.12 * g * edge
    img -= 0.3 * lung_mask
    img += texture * lung_mask * (1.0 - ptx_mask)

    # mediastinum, spine and heart
    img += 0.25 * _ellipse(xx, yy, 0.0, -0.3, 0.1, 0.5)
    heart_rx = 0.25 * rng.uniform(0.93, 1.07)
    if "cardiomegaly" in find:
        heart_rx *= 1.28 + 0.12 * find["cardiomegaly"].severity
    img += 0.4 * _ellipse(xx, yy, 0.08, 0.3, heart_rx, 0.22)

    # edema: bilateral perihilar haze with fine interstitial lines
    if "edema" in find:
        g = _SEVERITY_GAIN[find["edema"].severity]
        haze = _gauss(xx, yy, -0.25, 0.05, 0.2, 0.3) + _gauss(xx, yy, 0.25, 0.05, 0.2, 0.3)
        lines = 0.5 + 0.5 * np.sin(yy * 45.0)
        img += 0.16 * g * haze * lung_mask * (0.7 + 0.3 * lines)

    # pleural effusion: bright fluid at the base with a meniscus rising laterally
    if "pleural effusion" in find:
        f = find["pleural effusion"]
        g = _SEVERITY_GAIN[f.severity]
        level = 0.42 - 0.14 * f.severity
        for sgn in _sides(f.side):
            lung = lungs[0] if sgn < 0 else lungs[1]
            lateral = np.clip(sgn * xx - 0.15, 0.0, 1.0)
            meniscus = 1.0 / (1.0 + np.exp(-(yy - level + 0.35 * lateral) / 0.03))
            img += 0.32 * g * meniscus * lung

    # atelectasis: plate-like oblique linear opacity in a lower zone
    if "atelectasis" in find:
        f = find["atelectasis"]
        g = _SEVERITY_GAIN[f.severity]
        for sgn in _sides(f.side):
            lung = lungs[0] if sgn < 0 else lungs[1]
            d = yy - (0.3 + 0.15 * sgn * (xx - sgn * 0.4))
            band = np.exp(-((d / (0.025 + 0.012 * f.severity)) ** 2))
            img += 0.3 * g * band * lung

    # consolidation: textured focal opacity in one lobe
    if "consolidation" in find:
        f = find["consolidation"]
        g = _SEVERITY_GAIN[f.severity]
        sgn = _sides(f.side)[0]
        blob = _gauss(xx, yy, sgn * f.x, f.y, 0.1 + 0.03 * f.severity, 0.12 + 0.03 * f.severity)
        patchy = 0.75 + 0.25 * _smooth_noise(rng, size, 16)
        img += 0.3 * g * blob * patchy * lung_mask

    # nodule: small round dense spot
    if "nodule" in find:
        f = find["nodule"]
        g = _SEVERITY_GAIN[f.severity]
        sgn = _sides(f.side)[0]
        r = 0.035 + 0.012 * f.severity
        img += 0.35 * g * _ellipse(xx, yy, sgn * f.x, f.y - 0.1, r, r)

    # acquisition: contrast/brightness jitter, low-frequency shading, pixel noise
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)
    img += 0.05 * _smooth_noise(rng, size, 3)
    img += 0.06 * rng.standard_normal((size, size))
    return (3.0 * (img - 0.15)).astype(np.float32)


# ----------------------------------------------------------------------------- reports


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(0, len(options)))]


def _side_word(side: str) -> str:
    return side


def _positive_sentence(rng: np.random.Generator, f: _Finding) -> str:
    sev = _SEVERITY_WORDS[f.severity]
    size = _SIZE_WORDS[f.severity]
    side = _side_word(f.side)
    sides = "bilateral" if f.side == "bilateral" else side
    if f.name == "atelectasis":
        opts = [
            f"{sev.capitalize()} {sides} basilar atelectasis.",
            f"Plate-like atelectasis at the {side} base{'s' if f.side == 'bilateral' else ''}.",
            f"There is {sev} atelectasis in the {sides} lower lobe{'s' if f.side == 'bilateral' else ''}.",
            f"Streaky {sides} basilar opacities likely reflect atelectasis.",
            f"The {sides} lung base{'s are' if f.side == 'bilateral' else ' is'} {sev}ly atelectatic.",
        ]
    elif f.name == "cardiomegaly":
        opts = [
            f"{sev.capitalize()} cardiomegaly.",
            f"The cardiac silhouette is enlarged{'' if f.severity < 2 else ', markedly so'}.",
            f"There is {sev} cardiomegaly.",
            f"{sev.capitalize()} enlarged cardiac silhouette.",
            "Heart size is enlarged, consistent with cardiomegaly.",
        ]
    elif f.name == "consolidation":
        opts = [
            f"Focal consolidation in the {side} {f.lobe} lobe.",
            f"There is a {size} area of consolidation in the {side} {f.lobe} lobe.",
            f"Patchy consolidative opacity in the {side} {f.lobe} lung zone.",
            f"{sev.capitalize()} {side} {f.lobe} lobe consolidation, concerning for pneumonia.",
        ]
    elif f.name == "edema":
        opts = [
            f"{sev.capitalize()} pulmonary edema.",
            f"Findings are consistent with {sev} interstitial edema.",
            f"There is {sev} pulmonary edema with perihilar haziness.",
            f"Diffuse {sev} edema in both lungs.",
        ]
    elif f.name == "pleural effusion":
        eff = "effusions" if f.side == "bilateral" else "effusion"
        art = "" if f.side == "bilateral" else "a "
        opts = [
            f"{size.capitalize()} {sides} pleural {eff}.",
            f"There is {art}{size} {sides} pleural {eff}.",
            f"Blunting of the {side} costophrenic angle{'s' if f.side == 'bilateral' else ''} due to {art}{size} {eff}.",
            f"{sides.capitalize()} pleural {eff}, {size} in size.",
        ]
    elif f.name == "pneumothorax":
        opts = [
            f"{size.capitalize()} {side} apical pneumothorax.",
            f"There is a {size} {side} pneumothorax.",
            f"A {size} {side}-sided pneumothorax is present.",
        ]
    elif f.name == "nodule":
        opts = [
            f"A {size} nodule is seen in the {side} {f.lobe} lobe.",
            f"{size.capitalize()} {side} {f.lobe} lobe nodule.",
            f"There is a {size} nodular opacity in the {side} lung.",
        ]
    else:  # pragma: no cover - guarded by _check_findings
        raise ValueError(f"unknown finding {f.name!r}")
    return _choice(rng, opts)


def _negated_sentence(rng: np.random.Generator, name: str) -> str:
    opts = {
        "atelectasis": ("No atelectasis.", "There is no atelectasis."),
        "cardiomegaly": ("No cardiomegaly.", "There is no cardiomegaly."),
        "consolidation": (
            "No focal consolidation.",
            "There is no consolidation.",
            "Negative for consolidation.",
        ),
        "edema": (
            "No pulmonary edema.",
            "There is no edema.",
            "Without evidence of pulmonary edema.",
        ),
        "pleural effusion": (
            "No pleural effusion.",
            "There is no pleural effusion.",
            "No pleural effusions.",
        ),
        "pneumothorax": (
            "No pneumothorax.",
            "There is no pneumothorax.",
            "Negative for pneumothorax.",
        ),
        "nodule": ("No pulmonary nodule.", "There is no nodule.", "No suspicious nodule."),
    }[name]
    return _choice(rng, opts)


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
_PARENCHYMAL = {"atelectasis", "consolidation", "edema", "nodule"}


def _write_report(
    rng: np.random.Generator, findings: list[_Finding], allowed: tuple[str, ...]
) -> str:
    """FINDINGS/IMPRESSION report mentioning every positive finding (and only negating negatives)."""
    positive = {f.name for f in findings}
    sentences: list[str] = [_positive_sentence(rng, f) for f in findings]
    for name in allowed:
        if name not in positive and rng.random() < 0.35:
            sentences.append(_negated_sentence(rng, name))
    if not positive & _PARENCHYMAL and rng.random() < 0.6:
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
            qual = (
                _SIZE_WORDS[f.severity]
                if f.name in ("pleural effusion", "pneumothorax", "nodule")
                else _SEVERITY_WORDS[f.severity]
            )
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
    image_size = _check_int("image_size", image_size, 16)
    rng = np.random.default_rng(seed)
    drawn = [_attributes(rng, name) for name in allowed]
    return torch.from_numpy(_render(rng, drawn, image_size)).unsqueeze(0)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


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
    n = _check_int("n", n, 0)
    image_size = _check_int("image_size", image_size, 16)
    seed = _check_int("seed", seed, 0)
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
