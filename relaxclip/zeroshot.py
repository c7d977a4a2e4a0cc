"""Zero-shot multi-label classification with positive/negative prompt pairs (CheXzero protocol).

For label ``c`` and template pairs ``(p_t, n_t)``, the positive text embedding is

    e⁺_c = normalize(mean_t normalize(encode_text(p_t.format(c))))

and likewise ``e⁻_c`` from the negative templates (CheXzero averages the normalised template
embeddings and re-normalises). For an image embedding ``x`` (normalised):

    P(c | x) = exp(x·e⁺_c) / (exp(x·e⁺_c) + exp(x·e⁻_c)) = sigmoid(x·e⁺_c − x·e⁻_c),

on *raw* cosine similarities — no logit scale, no temperature — exactly as CheXzero's
``run_softmax_eval``. The sigmoid form is the same number computed without overflow.

Prompt names
------------
Templates are filled with a *prompt name*, not the raw column name: by default
:func:`normalize_label_name` (``"Pleural_Thickening"`` → ``"pleural thickening"``: underscores
to spaces, whitespace collapsed, lower case; CLIP-style tokenizers lower-case anyway).
``prompt_names="chexpert"`` / ``"mimic-cxr"`` / ``"chestxray14"`` / ``"openi"`` picks the
radiology wording of :data:`PROMPT_NAMES` for that dataset's labels (``"Effusion"`` →
``"pleural effusion"``), and a mapping sets them per label. Output columns keep the raw names.

The "No Finding" trap
---------------------
With the default pair ``("{}", "no {}")`` the label ``"No Finding"`` produces the prompts
``"no finding"`` and ``"no no finding"``; text encoders read the negative as the *absence of
findings* too, so the score is close to inverted (CheXzero reports AUROC 0.07 for it on the
CheXpert test set). Either exclude such a label (``exclude=["No Finding"]``) or give it its
own prompts (``label_prompts={"No Finding": [("no acute cardiopulmonary process",
"acute cardiopulmonary process")]}``). The classifier warns with ``NoFindingTemplateWarning``
for every label that is not a finding (:func:`is_non_finding_label`: normality labels such as
"No Finding" and "normal", negated labels starting with "no"/"without", and device labels
such as "Support Devices") when a negative template starts with "no".

Text encoders
-------------
``encode_text`` is any callable ``list[str] -> Tensor[n, D]``. ``open_clip_text_encoder`` and
``hf_text_encoder`` wrap open_clip and Hugging Face CLIP-style models; neither imports
open_clip or transformers.
"""

from __future__ import annotations

import re
import string
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from relaxclip.metrics import AUROCResult

if TYPE_CHECKING:
    from relaxclip.metrics import BootstrapAUROCResult

TextEncoder = Callable[[list[str]], torch.Tensor]
TemplatePair = tuple[str, str]

DEFAULT_TEMPLATES: tuple[TemplatePair, ...] = (("{}", "no {}"),)

__all__ = [
    "DEFAULT_TEMPLATES",
    "NON_FINDING_NAMES",
    "NoFindingTemplateWarning",
    "PROMPT_NAMES",
    "ZeroShotClassifier",
    "ZeroShotEvaluation",
    "hf_text_encoder",
    "is_non_finding_label",
    "normalize_label_name",
    "open_clip_text_encoder",
    "plot_roc",
]


class NoFindingTemplateWarning(UserWarning):
    """A label that is not a finding ("No Finding", "normal", "Support Devices", ...) is
    combined with a negative template "no {}"."""


def normalize_label_name(name: str) -> str:
    """The prompt form of a label column name: ``"Pleural_Thickening"`` → ``"pleural thickening"``.

    Underscores become spaces, runs of whitespace one space, the ends are stripped and the
    result is lower-cased.
    """
    return " ".join(name.replace("_", " ").split()).lower()


def _names(pairs: dict[str, str]) -> dict[str, str]:
    return {label: pairs.get(label, normalize_label_name(label)) for label in pairs}


_CHEXPERT_NAMES = {
    "No Finding": "no finding",
    "Enlarged Cardiomediastinum": "enlarged cardiomediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "lung opacity",
    "Lung Lesion": "lung lesion",
    "Edema": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural effusion",
    # the CheXpert labeler's mention phrases for "Pleural Other": pleural thickening, scar, ...
    "Pleural Other": "pleural thickening or scar",
    "Fracture": "fracture",
    "Support Devices": "support devices",
}
_CHESTXRAY14_NAMES = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural effusion",
    "Infiltration": "infiltration",
    "Mass": "lung mass",
    "Nodule": "lung nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Pleural_Thickening": "pleural thickening",
    "Hernia": "hiatal hernia",
    "No Finding": "no finding",
}

#: Prompt names per dataset, keyed by the label names its reader returns
#: (``relaxclip.data.labels``): CheXpert and MIMIC-CXR share the 14 CheXpert observations,
#: ChestX-ray14 spells its 14 findings as in ``Data_Entry_2017.csv`` (plus "No Finding"),
#: Open-I (NegBio gold standard) uses the ChestX-ray14 names plus ``normal``. Beyond
#: :func:`normalize_label_name`, only terse names are spelt out (``Effusion`` → "pleural
#: effusion", ``Mass`` / ``Nodule`` → "lung mass" / "lung nodule", ``Hernia`` → "hiatal hernia",
#: ``Pleural Other`` → "pleural thickening or scar"). They are wording choices, not tuned on
#: any test set.
PROMPT_NAMES: dict[str, dict[str, str]] = {
    "chexpert": _names(_CHEXPERT_NAMES),
    "mimic-cxr": _names(_CHEXPERT_NAMES),
    "chestxray14": _names(_CHESTXRAY14_NAMES),
    "openi": _names(
        {**{k: v for k, v in _CHESTXRAY14_NAMES.items() if k != "No Finding"}, "normal": "normal"}
    ),
}

#: Prompt names (after :func:`normalize_label_name`) of labels that are not findings, besides
#: those starting with a negation ("no ...", "without ...", "absence of ...").
NON_FINDING_NAMES: frozenset[str] = frozenset(
    {
        "normal",
        "normal study",
        "unremarkable",
        "no finding",
        "no findings",
        "support devices",
        "support device",
        "devices",
        "lines and tubes",
        "tubes and lines",
    }
)

_NEGATED_NAME = re.compile(r"^(no|not|without|absence of|negative for)\b")
_NEGATING_TEMPLATE = re.compile(r"^\s*(no|without)\s+\{\}", re.IGNORECASE)


def is_non_finding_label(name: str) -> bool:
    """True for a label whose negated prompt ("no " + name) does not describe a healthy study
    with that finding absent: normality labels ("No Finding", "normal", "unremarkable"),
    labels that are already negated ("no ...", "without ...", "absence of ..."), and device
    labels ("Support Devices"). Compared on :func:`normalize_label_name` (so
    ``"NO_FINDINGS"`` counts); see :data:`NON_FINDING_NAMES`.
    """
    norm = normalize_label_name(name)
    return norm in NON_FINDING_NAMES or bool(_NEGATED_NAME.match(norm))


@dataclass(frozen=True, eq=False)
class ZeroShotEvaluation(AUROCResult):
    """What ``ZeroShotClassifier.evaluate`` computes in one pass over the data.

    An :class:`~relaxclip.metrics.AUROCResult` (``macro``, ``per_label``, ``skipped``, ...:
    ``macro_auroc(y_true, y_score, labels)``) with, in addition, ``y_true``: float64
    ``(N, K)`` labels (0/1/NaN) in the classifier's label order; ``y_score``: float64
    ``(N, K)`` probabilities ``P(c | x)``; ``groups``: the ``(N,)`` study ids read from
    ``group_key`` (None without); ``bootstrap``: :func:`~relaxclip.metrics.bootstrap_auroc`
    of the same arrays (None unless ``n_bootstrap`` was given).
    """

    y_true: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    y_score: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    groups: np.ndarray | None = None
    bootstrap: BootstrapAUROCResult | None = None


def _check_pairs(pairs: object, name: str, *, templates: bool) -> tuple[TemplatePair, ...]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise TypeError(f"{name}: expected a sequence of (positive, negative) string pairs")
    out: list[TemplatePair] = []
    for i, pair in enumerate(pairs):
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
        ):
            raise TypeError(
                f"{name}[{i}]: expected a (positive, negative) pair of str, got {pair!r}"
            )
        pos, neg = pair
        if templates:
            for side, tpl in (("positive", pos), ("negative", neg)):
                if not _one_placeholder(tpl):
                    raise ValueError(
                        f"{name}[{i}]: {side} template {tpl!r} must contain exactly one '{{}}' "
                        "placeholder for the label name"
                    )
        out.append((pos, neg))
    if not out:
        raise ValueError(f"{name}: expected at least one (positive, negative) pair")
    return tuple(out)


def _one_placeholder(template: str) -> bool:
    """Whether ``template.format(name)`` has exactly one field, a bare ``{}`` (escaped braces
    ``{{`` / ``}}`` are text, as in ``str.format``)."""
    try:
        fields = [f for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError:  # a lone "{" or "}"
        return False
    return len(fields) == 1 and fields[0][1:] == ("", "", None)


def _prompt_names(
    prompt_names: str | Mapping[str, str] | None, labels: tuple[str, ...]
) -> dict[str, str]:
    """``label -> prompt name`` for every label (see ``ZeroShotClassifier``'s ``prompt_names``)."""
    if prompt_names is None:
        return {label: normalize_label_name(label) for label in labels}
    if isinstance(prompt_names, str):
        if prompt_names not in PROMPT_NAMES:
            raise ValueError(
                f"prompt_names: unknown dataset {prompt_names!r}; expected one of "
                f"{sorted(PROMPT_NAMES)} or a mapping label -> prompt name"
            )
        table = PROMPT_NAMES[prompt_names]
        unknown = [label for label in labels if label not in table]
        if unknown:
            raise ValueError(
                f"prompt_names={prompt_names!r}: labels {unknown} are not labels of that "
                f"dataset (its labels: {list(table)}); pass a mapping for them"
            )
        return {label: table[label] for label in labels}
    if not isinstance(prompt_names, Mapping):
        raise TypeError(
            f"prompt_names: expected None, a dataset name or a mapping, got "
            f"{type(prompt_names).__name__}"
        )
    extra = [k for k in prompt_names if k not in labels]
    if extra:
        raise ValueError(f"prompt_names: {extra} not in labels {list(labels)}")
    bad = {k: v for k, v in prompt_names.items() if not isinstance(v, str) or not v.strip()}
    if bad:
        raise ValueError(f"prompt_names: expected non-empty strings, got {bad}")
    return {label: prompt_names.get(label, normalize_label_name(label)) for label in labels}


class ZeroShotClassifier:
    """Zero-shot multi-label classifier from positive/negative prompt pairs.

    Args:
        encode_text: callable ``list[str] -> Tensor[n, D]`` (one row per string, in order).
            Called under ``torch.no_grad()`` in batches of ``batch_size``; its output is
            detached and cached, so text embeddings carry no gradient.
        labels: class names, one output column each (after ``exclude``), in this order.
        templates: ``(positive, negative)`` pairs with one ``{}`` for the label name;
            embeddings of several pairs are averaged per side and re-normalised.
        normalize: L2-normalise each prompt embedding, each template average and the image
            features (cosine similarity, CheXzero). With ``False`` raw dot products of the
            averaged (unnormalised) embeddings are used.
        label_prompts: per-label override, ``label -> [(positive_text, negative_text), ...]``
            of literal prompts (no placeholder) replacing ``templates`` for that label.
        exclude: labels to drop from the output (e.g. ``["No Finding"]``); each must be in
            ``labels``.
        batch_size: strings per ``encode_text`` call.
        prompt_names: the text put into the templates for each label. ``None`` (default):
            :func:`normalize_label_name` of the label (``"Pleural_Thickening"`` →
            ``"pleural thickening"``); a dataset name (``"chexpert"``, ``"mimic-cxr"``,
            ``"chestxray14"``, ``"openi"``): :data:`PROMPT_NAMES` for that dataset (every
            label must be one of its labels); a mapping ``label -> prompt name`` (labels it
            does not list are normalised).

    Attributes:
        labels: the output column names (``labels`` minus ``exclude``, order kept).
        excluded: the excluded labels.
        prompt_names: ``label -> prompt name`` for every label.
    """

    def __init__(
        self,
        encode_text: TextEncoder,
        labels: Sequence[str],
        templates: Sequence[TemplatePair] = DEFAULT_TEMPLATES,
        normalize: bool = True,
        *,
        label_prompts: Mapping[str, Sequence[TemplatePair]] | None = None,
        exclude: Iterable[str] = (),
        batch_size: int = 256,
        prompt_names: str | Mapping[str, str] | None = None,
    ) -> None:
        if not callable(encode_text):
            raise TypeError("encode_text: expected a callable list[str] -> Tensor[n, D]")
        if isinstance(labels, str):
            raise TypeError("labels: expected a sequence of label names, not a single string")
        if labels is None or not isinstance(labels, Iterable):
            raise TypeError(
                f"labels: expected a sequence of label names, got {type(labels).__name__}"
            )
        all_labels = tuple(labels)
        if not all_labels or not all(isinstance(x, str) and x.strip() for x in all_labels):
            raise ValueError(f"labels: expected non-empty label names, got {list(all_labels)}")
        dup = sorted({x for x in all_labels if all_labels.count(x) > 1})
        if dup:
            raise ValueError(f"labels: duplicated names {dup}")
        excluded = tuple(exclude) if not isinstance(exclude, str) else (exclude,)
        unknown = [x for x in excluded if x not in all_labels]
        if unknown:
            raise ValueError(f"exclude: {unknown} not in labels {list(all_labels)}")
        kept = tuple(x for x in all_labels if x not in excluded)
        if not kept:
            raise ValueError("exclude: every label was excluded")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if not isinstance(normalize, bool):  # "no" would otherwise read as True
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        self._encode_text = encode_text
        self.templates = _check_pairs(templates, "templates", templates=True)
        self.normalize = normalize
        self.batch_size = int(batch_size)
        self.labels: tuple[str, ...] = kept
        self.excluded: tuple[str, ...] = excluded
        self.all_labels: tuple[str, ...] = all_labels
        overrides = dict(label_prompts or {})
        bad = [x for x in overrides if x not in all_labels]
        if bad:
            raise ValueError(f"label_prompts: {bad} not in labels {list(all_labels)}")
        self.label_prompts: dict[str, tuple[TemplatePair, ...]] = {
            k: _check_pairs(v, f"label_prompts[{k!r}]", templates=False)
            for k, v in overrides.items()
        }
        self.prompt_names: dict[str, str] = _prompt_names(prompt_names, all_labels)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        negating = [n for _, n in self.templates if _NEGATING_TEMPLATE.match(n)]
        for label in self.labels:
            if label in self.label_prompts or not negating:
                continue
            name = self.prompt_names[label]
            if is_non_finding_label(label) or is_non_finding_label(name):
                warnings.warn(
                    f"label {label!r} is not a finding; with the negative template "
                    f"{negating[0]!r} its prompts are {name!r} / {negating[0].format(name)!r}. "
                    "For a normality or negated label the negative reads as the same absence "
                    "and the score is close to inverted (CheXzero: AUROC 0.07 for 'No "
                    "Finding'); for a device label it describes no disease. Pass "
                    f"exclude=[{label!r}] or label_prompts={{{label!r}: [(pos, neg)]}}.",
                    NoFindingTemplateWarning,
                    stacklevel=2,
                )

    # ------------------------------------------------------------------ prompts and text

    def prompts(self, label: str) -> tuple[TemplatePair, ...]:
        """The literal ``(positive, negative)`` prompts used for ``label``."""
        if label not in self.labels:
            raise ValueError(f"label: {label!r} is not an output label {list(self.labels)}")
        if label in self.label_prompts:
            return self.label_prompts[label]
        name = self.prompt_names[label]
        return tuple((p.format(name), n.format(name)) for p, n in self.templates)

    def _encode_batched(self, texts: list[str]) -> torch.Tensor:
        chunks: list[torch.Tensor] = []
        first_dim: int | None = None
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = texts[i : i + self.batch_size]
                out = self._encode_text(batch)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"encode_text: expected a torch.Tensor, got {type(out).__name__} "
                        "(wrap HF models with hf_text_encoder)"
                    )
                if out.ndim != 2 or out.shape[0] != len(batch):
                    raise ValueError(
                        f"encode_text: expected shape ({len(batch)}, D) for {len(batch)} strings, "
                        f"got {tuple(out.shape)}"
                    )
                if not out.is_floating_point():
                    raise TypeError(f"encode_text: expected a floating tensor, got {out.dtype}")
                if first_dim is None:
                    first_dim = int(out.shape[1])
                elif out.shape[1] != first_dim:
                    raise ValueError(
                        f"encode_text: returned D={out.shape[1]} for strings {i}..{i + len(batch) - 1}"
                        f" but D={first_dim} for the first batch; expected one embedding size"
                    )
                chunks.append(out.detach())
        emb = torch.cat(chunks, dim=0)
        if not torch.isfinite(emb).all():
            raise ValueError("encode_text: returned non-finite values")
        return emb

    def text_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached class embeddings ``(positive, negative)``, each ``Tensor[K, D]`` (no grad).

        Every distinct prompt string is encoded once (batched); the float32 (or wider)
        embeddings are averaged over each label's pairs, normalised as described above.
        """
        if self._cache is not None:
            return self._cache
        per_label = [self.prompts(label) for label in self.labels]
        unique: dict[str, int] = {}
        for pairs in per_label:
            for pos, neg in pairs:
                unique.setdefault(pos, len(unique))
                unique.setdefault(neg, len(unique))
        emb = self._encode_batched(list(unique))
        emb = emb.to(torch.promote_types(emb.dtype, torch.float32))
        if self.normalize:
            emb = self._l2(emb, "text embedding")
        pos_rows, neg_rows = [], []
        for pairs in per_label:
            p = emb[[unique[x] for x, _ in pairs]].mean(dim=0)
            n = emb[[unique[y] for _, y in pairs]].mean(dim=0)
            pos_rows.append(p)
            neg_rows.append(n)
        pos_t, neg_t = torch.stack(pos_rows), torch.stack(neg_rows)
        if self.normalize:
            pos_t, neg_t = (
                self._l2(pos_t, "averaged text embedding"),
                self._l2(neg_t, "averaged text embedding"),
            )
        self._cache = (pos_t, neg_t)
        return self._cache

    def clear_cache(self) -> None:
        """Forget the cached text embeddings (e.g. after fine-tuning the text encoder)."""
        self._cache = None

    @staticmethod
    def _l2(x: torch.Tensor, what: str) -> torch.Tensor:
        """Row-wise L2 normalisation that cannot overflow: each row is first divided by its largest
        absolute entry (cosine similarity is scale-invariant), so features of any finite size keep
        their direction instead of becoming zero rows. Zero rows raise, naming them."""
        scale = x.abs().amax(dim=-1, keepdim=True)
        zero = (scale == 0).squeeze(-1)
        if bool(zero.any()):
            rows = zero.nonzero().flatten().tolist()
            raise ValueError(
                f"{what}: zero vector cannot be normalised (row(s) {rows[:10]}"
                f"{', ...' if len(rows) > 10 else ''})"
            )
        x = x / scale
        return x / x.norm(dim=-1, keepdim=True)

    # ------------------------------------------------------------------ prediction

    def similarities(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities ``(image·e⁺, image·e⁻)``, each ``Tensor[N, K]``.

        ``image_features``: ``Tensor[N, D]`` (any float dtype/device; computed in at least
        float32 on that device). Differentiable with respect to ``image_features``. Raises
        TypeError for a non-floating tensor and ValueError naming the rows that hold NaN or inf
        (or, with ``normalize=True``, are all zero).
        """
        if not isinstance(image_features, torch.Tensor):
            raise TypeError(
                f"image_features: expected a torch.Tensor[N, D], got {type(image_features).__name__}"
            )
        if image_features.ndim != 2:
            raise ValueError(
                f"image_features: expected shape (N, D), got {tuple(image_features.shape)}"
            )
        if not image_features.is_floating_point():
            raise TypeError(
                f"image_features: expected a floating-point tensor, got {image_features.dtype}"
            )
        bad = ~torch.isfinite(image_features).all(dim=1)
        if bool(bad.any()):  # NaN/inf rows would come back as NaN scores
            rows = torch.nonzero(bad).flatten().tolist()
            raise ValueError(
                f"image_features: {len(rows)} row(s) with NaN or inf (row(s) {rows[:10]}"
                f"{', ...' if len(rows) > 10 else ''}); expected finite features"
            )
        pos, neg = self.text_embeddings()
        if image_features.shape[1] != pos.shape[1]:
            raise ValueError(
                f"image_features: dimension {image_features.shape[1]} does not match the text "
                f"embedding dimension {pos.shape[1]}"
            )
        dtype = torch.promote_types(image_features.dtype, pos.dtype)
        x = image_features.to(dtype)
        if self.normalize:
            x = self._l2(x, "image_features row")
        pos = pos.to(device=x.device, dtype=dtype)
        neg = neg.to(device=x.device, dtype=dtype)
        return x @ pos.T, x @ neg.T

    def predict_proba(self, image_features: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, K]`` of ``exp(s⁺) / (exp(s⁺) + exp(s⁻))`` on raw cosine similarities.

        Columns follow ``self.labels``. Computed as ``sigmoid(s⁺ − s⁻)`` (identical value,
        no overflow). Differentiable with respect to ``image_features``.
        """
        s_pos, s_neg = self.similarities(image_features)
        return torch.sigmoid(s_pos - s_neg)

    __call__ = predict_proba

    @torch.no_grad()
    def evaluate(
        self,
        encode_image: Callable[[Any], torch.Tensor],
        batches: Iterable[Mapping[str, Any]],
        *,
        image_key: str = "image",
        label_key: str = "labels",
        n_bootstrap: int | None = None,
        seed: int = 0,
        confidence: float = 0.95,
        group_key: str | None = None,
    ) -> ZeroShotEvaluation:
        """Zero-shot per-label and macro AUROC over a whole evaluation set, in one pass.

        ``batches``: an iterable of dict batches (e.g. a ``DataLoader``), each with
        ``batch[image_key]`` (whatever ``encode_image`` takes) and ``batch[label_key]``, a
        ``(B, K)`` tensor or array with 0/1/NaN whose columns follow the constructor's ``labels``
        (all of them, excluded ones included, or only ``self.labels``). ``encode_image`` maps
        ``batch[image_key]`` to finite ``(B, D)`` image features (non-finite rows raise, naming
        the batch and rows). No gradients.

        Returns a :class:`ZeroShotEvaluation`: an :class:`~relaxclip.metrics.AUROCResult`
        (``macro_auroc`` over every row: NaN labels omitted per label, single-class labels
        reported as skipped) that also holds the ``(N, K)`` labels and probabilities, the study
        ids read from ``batch[group_key]`` when ``group_key`` is given, and, with
        ``n_bootstrap``, :func:`~relaxclip.metrics.bootstrap_auroc` of the same arrays
        (``seed``, ``confidence``; whole studies resampled when ``group_key`` is given) — all
        from one pass over ``batches``.
        """
        from relaxclip.metrics import bootstrap_auroc, macro_auroc

        keep = [self.all_labels.index(name) for name in self.labels]
        probs: list[np.ndarray] = []
        truth: list[np.ndarray] = []
        groups: list[np.ndarray] = []
        for i, batch in enumerate(batches):
            for key in (image_key, label_key) + ((group_key,) if group_key else ()):
                if key not in batch:
                    raise KeyError(f"batches[{i}]: missing key {key!r}")
            y = torch.as_tensor(batch[label_key]).detach().double().cpu().numpy()
            if y.ndim != 2 or y.shape[1] not in (len(self.all_labels), len(self.labels)):
                raise ValueError(
                    f"batches[{i}][{label_key!r}]: expected shape (B, {len(self.all_labels)}) "
                    f"or (B, {len(self.labels)}), got {tuple(y.shape)}"
                )
            features = self._check_image_features(encode_image(batch[image_key]), i, image_key, y)
            truth.append(y[:, keep] if y.shape[1] == len(self.all_labels) else y)
            probs.append(self.predict_proba(features).double().cpu().numpy())
            if group_key is not None:
                g = np.asarray(batch[group_key])
                if g.shape != (y.shape[0],):
                    raise ValueError(
                        f"batches[{i}][{group_key!r}]: expected {y.shape[0]} study ids, got "
                        f"shape {g.shape}"
                    )
                groups.append(g)
        if not truth:
            raise ValueError("batches: expected at least one batch, got none")
        y_true, y_score = np.concatenate(truth), np.concatenate(probs)
        result = macro_auroc(y_true, y_score, list(self.labels))
        ids = np.concatenate(groups) if group_key is not None else None
        boot = None
        if n_bootstrap is not None:
            boot = bootstrap_auroc(
                y_true,
                y_score,
                list(self.labels),
                n_bootstrap=n_bootstrap,
                seed=seed,
                confidence=confidence,
                groups=ids,
            )
        return ZeroShotEvaluation(
            **{f.name: getattr(result, f.name) for f in fields(result)},
            y_true=y_true,
            y_score=y_score,
            groups=ids,
            bootstrap=boot,
        )

    def _check_image_features(
        self, features: Any, i: int, image_key: str, y: np.ndarray
    ) -> torch.Tensor:
        where = f"encode_image(batches[{i}][{image_key!r}])"
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise ValueError(
                f"{where}: expected a (B, D) tensor, got "
                f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}"
            )
        if features.shape[0] != y.shape[0]:
            raise ValueError(
                f"{where} returned {features.shape[0]} rows for {y.shape[0]} label rows"
            )
        dim = self.text_embeddings()[0].shape[1]
        if features.shape[1] != dim:
            raise ValueError(
                f"{where} returned D={features.shape[1]}, but encode_text gives D={dim}; "
                "expected image and text features of one size"
            )
        bad = ~torch.isfinite(features).all(dim=1)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten()[:5].tolist()
            raise ValueError(
                f"{where} returned {int(bad.sum())} row(s) with NaN or inf image features "
                f"(rows {rows}); expected finite features"
            )
        return features


# ---------------------------------------------------------------------- encoder wrappers


def open_clip_text_encoder(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    device: str | torch.device | None = None,
) -> TextEncoder:
    """Wrap an open_clip model: ``texts -> model.encode_text(tokenizer(texts).to(device))``.

    ``tokenizer`` is ``open_clip.get_tokenizer(name)``. ``device`` defaults to the device of
    the model's first parameter. The model is not put in eval mode for you.
    """
    if not hasattr(model, "encode_text"):
        raise TypeError("model: expected an open_clip model with an encode_text method")

    def encode(texts: list[str]) -> torch.Tensor:
        dev = device if device is not None else _model_device(model)
        tokens = tokenizer(texts)
        out = model.encode_text(tokens.to(dev))
        return _as_feature_tensor(out, "model.encode_text")

    return encode


def hf_text_encoder(
    model: Any,
    tokenizer: Callable[..., Any],
    device: str | torch.device | None = None,
    *,
    max_length: int | None = None,
) -> TextEncoder:
    """Wrap a Hugging Face CLIP-style model exposing ``get_text_features``.

    ``tokenizer(texts, padding=True, truncation=True, return_tensors="pt")`` is moved to
    ``device`` (default: the model's device) and passed to ``model.get_text_features``.
    transformers < 5 returns a tensor; transformers 5 returns a ``BaseModelOutputWithPooling``
    whose ``pooler_output`` holds the projected features — both are accepted (as is an
    output with ``text_embeds``).
    """
    if not hasattr(model, "get_text_features"):
        raise TypeError("model: expected a Hugging Face model with a get_text_features method")

    def encode(texts: list[str]) -> torch.Tensor:
        dev = device if device is not None else _model_device(model)
        kwargs: dict[str, Any] = {"padding": True, "truncation": True, "return_tensors": "pt"}
        if max_length is not None:
            kwargs["max_length"] = max_length
        batch = tokenizer(texts, **kwargs)
        inputs = {
            k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in dict(batch).items()
        }
        out = model.get_text_features(**inputs)
        return _as_feature_tensor(out, "model.get_text_features")

    return encode


def _model_device(model: Any) -> torch.device:
    try:
        return next(iter(model.parameters())).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _as_feature_tensor(out: Any, where: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("text_embeds", "pooler_output"):
        value = getattr(out, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(
        f"{where}: expected a Tensor or an output with text_embeds/pooler_output, "
        f"got {type(out).__name__}"
    )


# ---------------------------------------------------------------------- ROC plot


def plot_roc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save a figure with one ROC curve per label (legend shows its AUROC) to ``path`` (PNG).

    ``y_true``/``y_score``: ``(N, K)`` as in ``relaxclip.metrics.macro_auroc`` (NaN labels
    omitted per label); labels with a single class are listed in the legend as skipped.
    Needs matplotlib (``pip install 'relaxclip[plot]'``). Returns the written path.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_roc needs matplotlib: pip install 'relaxclip[plot]'") from exc
    from relaxclip.metrics import macro_auroc, roc_curve

    result = macro_auroc(y_true, y_score, labels)
    t = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    out = Path(path)
    if not out.parent.exists():
        raise FileNotFoundError(f"path: directory {out.parent} does not exist")
    fig = Figure(figsize=(6, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    for k, name in enumerate(result.per_label):
        if name in result.skipped:
            ax.plot([], [], label=f"{name}: skipped (single class)")
            continue
        keep = ~np.isnan(t[:, k])
        fpr, tpr = roc_curve(t[keep, k], s[keep, k])
        ax.plot(fpr, tpr, label=f"{name}: {result.per_label[name]:.3f}")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title or f"ROC (macro AUROC {result.macro:.3f})")
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(out, dpi=dpi, format="png")
    return out
