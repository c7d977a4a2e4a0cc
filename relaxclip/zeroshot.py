"""Zero-shot multi-label classification with positive/negative prompt pairs (CheXzero protocol).

``P(c | x) = sigmoid(x·e⁺_c − x·e⁻_c)`` on raw cosine similarities (no logit scale), where
``e⁺_c`` is the re-normalised mean over the template pairs of the normalised embeddings of the
positive prompts ``p_t.format(name_c)``, and ``e⁻_c`` likewise of the negative ones. The
protocol, prompt names and the "No Finding" trap: docs/zeroshot.md.

Example:
    >>> clf = ZeroShotClassifier(encode_text, ["Edema", "Pleural Effusion"])
    >>> proba = clf.predict_proba(image_features)  # Tensor[N, 2], columns clf.labels
"""

from __future__ import annotations

import re
import string
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from relaxclip._checks import (
    check_bool,
    check_choice,
    check_finite_rows,
    check_int,
    check_tensor,
    check_type,
    describe,
    format_rows,
)
from relaxclip.data.labels import (
    CHESTXRAY14_LABELS,
    CHESTXRAY14_NO_FINDING,
    CHEXPERT_LABELS,
    OPENI_LABELS,
)
from relaxclip.metrics import (
    AUROCResult,
    _array,
    _bootstrap_args,
    _labels,
    _matrix,
    _study_ids,
    bootstrap_auroc,
    macro_auroc,
    roc_curve,
)

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
    """A label that is not a finding (:func:`is_non_finding_label`) meets a "no {}" template."""


def normalize_label_name(name: str) -> str:
    """The prompt name of a label column ``name``: ``_`` to space, whitespace collapsed, lower case.

    Raises ``TypeError`` when ``name`` is not a str.

    Example:
        >>> normalize_label_name("Pleural_Thickening")
        'pleural thickening'
    """
    check_type("name", name, str, "a str")
    return " ".join(name.replace("_", " ").split()).lower()


_CXR14_SPELT = {
    "Effusion": "pleural effusion",
    "Mass": "lung mass",
    "Nodule": "lung nodule",
    "Hernia": "hiatal hernia",
}


def _table(labels: Iterable[str], spelt: Mapping[str, str]) -> dict[str, str]:
    """``label -> prompt name``: ``spelt`` where given, else :func:`normalize_label_name`."""
    return {label: spelt.get(label, normalize_label_name(label)) for label in labels}


#: Prompt names per dataset, keyed by its reader's label names (table in docs/zeroshot.md).
PROMPT_NAMES: dict[str, dict[str, str]] = {
    "chexpert": _table(CHEXPERT_LABELS, {"Pleural Other": "pleural thickening or scar"}),
    "mimic-cxr": _table(CHEXPERT_LABELS, {"Pleural Other": "pleural thickening or scar"}),
    "chestxray14": _table((*CHESTXRAY14_LABELS, CHESTXRAY14_NO_FINDING), _CXR14_SPELT),
    "openi": _table(OPENI_LABELS, _CXR14_SPELT),
}

#: Prompt names (after :func:`normalize_label_name`) of labels that are not findings, besides
#: those starting with a negation ("no ...", "without ...", "absence of ...").
NON_FINDING_NAMES: frozenset[str] = frozenset(
    ("normal", "normal study", "unremarkable", "no finding", "no findings")  # normality
    + ("support devices", "support device", "devices", "lines and tubes", "tubes and lines")
)

_NEGATED_NAME = re.compile(r"^(no|not|without|absence of|negative for)\b")
_NEGATING_TEMPLATE = re.compile(r"^\s*(no|without)\b", re.IGNORECASE)


def is_non_finding_label(name: str) -> bool:
    """Whether "no " + ``name`` fails to describe a study with that finding absent.

    True, on :func:`normalize_label_name`, for :data:`NON_FINDING_NAMES` (normality and device
    labels) and for names already negated ("no ...", "without ...").

    Example:
        >>> is_non_finding_label("NO_FINDINGS"), is_non_finding_label("Nodule")
        (True, False)
    """
    norm = normalize_label_name(name)
    return norm in NON_FINDING_NAMES or bool(_NEGATED_NAME.match(norm))


@dataclass(frozen=True, eq=False)
class ZeroShotEvaluation(AUROCResult):
    """:meth:`ZeroShotClassifier.evaluate`'s ``macro_auroc(y_true, y_score, labels)``, and:

    Attributes:
        y_true: float64 ``(N, K)`` labels (0/1/NaN) in the classifier's label order.
        y_score: float64 ``(N, K)`` probabilities ``P(c | x)``.
        groups: the ``(N,)`` study ids read from ``group_key`` (None without).
        bootstrap: :func:`~relaxclip.metrics.bootstrap_auroc` of the same arrays (None unless
            ``n_bootstrap`` was given).
    """

    y_true: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    y_score: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    groups: np.ndarray | None = None
    bootstrap: BootstrapAUROCResult | None = None


def _items(value: object, name: str, what: str) -> tuple[Any, ...]:
    """``tuple(value)`` of an iterable that is not a string, else ``TypeError``."""
    return tuple(check_type(name, value, Iterable, what, exclude=(str, bytes)))


def _check_pairs(pairs: object, name: str, *, templates: bool) -> tuple[TemplatePair, ...]:
    """``(positive, negative)`` str pairs; ``templates`` also requires one ``{}`` in each."""
    out = _items(pairs, name, "a sequence of (positive, negative) str pairs")
    for i, pair in enumerate(out):
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
        ):
            raise TypeError(
                f"{name}[{i}] must be a (positive, negative) pair of str, got {describe(pair)}"
            )
        for side, tpl in zip(("positive", "negative"), pair, strict=True):
            if templates and not _one_placeholder(tpl):
                raise ValueError(
                    f"{name}[{i}] must contain exactly one '{{}}' placeholder for the label name "
                    f"in its {side} template, got {tpl!r}"
                )
    if not out:
        raise ValueError(f"{name} must hold at least one (positive, negative) pair, got none")
    return tuple((pos, neg) for pos, neg in out)


def _one_placeholder(template: str) -> bool:
    """Whether ``template`` has exactly one field, a bare ``{}`` (``{{``/``}}`` are text)."""
    try:
        found = [f for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError:  # a lone "{" or "}"
        return False
    return len(found) == 1 and found[0][1:] == ("", "", None)


def _known(keys: Iterable[Any], labels: Iterable[str], name: str, hint: str = "") -> None:
    """``ValueError`` naming the ``keys`` that are not among ``labels``."""
    unknown = [k for k in keys if k not in labels]
    if unknown:
        raise ValueError(f"{name} must name labels of {list(labels)}, got {unknown}{hint}")


def _check_labels(labels: object, exclude: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(all labels, excluded labels)``: unique non-blank str names, ``exclude`` among them."""
    single = ", not a single string" if isinstance(labels, (str, bytes)) else ""
    all_labels = _items(labels, "labels", f"a sequence of label names{single}")
    for i, x in enumerate(all_labels):
        check_type(f"labels[{i}]", x, str, "a str label name")
    if not all_labels or not all(x.strip() for x in all_labels):
        raise ValueError(f"labels must be non-empty label names, got {list(all_labels)}")
    dup = sorted({x for x in all_labels if all_labels.count(x) > 1})
    if dup:
        raise ValueError(f"labels must be unique, got duplicated names {dup}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    excluded = _items(exclude, "exclude", "an iterable of labels")
    _known(excluded, all_labels, "exclude")
    if set(excluded) >= set(all_labels):
        raise ValueError(f"exclude must leave at least one label, got every label {list(excluded)}")
    return all_labels, excluded


def _prompt_names(
    prompt_names: str | Mapping[str, str] | None, labels: tuple[str, ...], used: tuple[str, ...]
) -> dict[str, str]:
    """``label -> prompt name`` for every label (see ``ZeroShotClassifier``'s ``prompt_names``);
    a dataset's table must name the ``used`` (output) labels."""
    if isinstance(prompt_names, str):
        table = PROMPT_NAMES[check_choice("prompt_names", prompt_names, sorted(PROMPT_NAMES))]
        name = f"labels (for prompt_names={prompt_names!r})"
        _known(used, table, name, "; pass a mapping label -> prompt name for them")
        return {label: table.get(label, normalize_label_name(label)) for label in labels}
    check_type(
        "prompt_names", prompt_names, (Mapping, type(None)), "None, a dataset name or a mapping"
    )
    given = dict(prompt_names or {})
    _known(given, labels, "prompt_names")
    for key, value in given.items():
        check_type(f"prompt_names[{key!r}]", value, str, "a str")
        if not value.strip():
            raise ValueError(
                f"prompt_names[{key!r}] must be a non-blank prompt name, got {value!r}"
            )
    return {label: given.get(label, normalize_label_name(label)) for label in labels}


def _l2(x: torch.Tensor, name: str) -> torch.Tensor:
    """Row-wise L2 normalisation, overflow-safe (rows pre-divided by their max); zero rows raise."""
    scale = x.abs().amax(dim=-1, keepdim=True)
    zero = (scale == 0).squeeze(-1)
    if bool(zero.any()):
        raise ValueError(
            f"{name} must not hold a zero vector (it cannot be normalised), got zero rows "
            f"{format_rows(zero.nonzero().flatten().tolist(), x.shape[0])}"
        )
    x = x / scale
    return x / x.norm(dim=-1, keepdim=True)


class ZeroShotClassifier:
    """Zero-shot multi-label classifier from positive/negative prompt pairs.

    ``P(c | x) = sigmoid(x·e⁺_c − x·e⁻_c)`` on raw cosine similarities (module docstring).

    Args:
        encode_text: callable ``list[str] -> Tensor[n, D]``, D >= 1, one row per string.
        labels: class names, one output column each (after ``exclude``), in this order.
        templates: ``(positive, negative)`` pairs, each with one ``{}`` for the prompt name.
        normalize: L2-normalise prompt embeddings, template averages and image features
            (cosine similarity, CheXzero); ``False`` uses raw dot products.
        label_prompts: ``label -> [(positive_text, negative_text), ...]`` literal prompts
            replacing ``templates`` for that label.
        exclude: labels dropped from the output (e.g. ``["No Finding"]``).
        batch_size: strings per ``encode_text`` call, >= 1.
        prompt_names: text put into the templates: ``None`` for :func:`normalize_label_name`,
            a dataset name of :data:`PROMPT_NAMES`, or a mapping ``label -> prompt name``.

    Attributes:
        labels: the output column names (``labels`` minus ``exclude``, order kept).
        all_labels, excluded: every label given, and the excluded ones.
        prompt_names: ``label -> prompt name`` for every label.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad value, e.g. a template without one ``{}`` or a pair whose positive
            and negative prompts are the same text.

    Warns:
        NoFindingTemplateWarning: a label that is not a finding with a "no {}" template.

    Example:
        >>> clf = ZeroShotClassifier(encode_text, LABELS, exclude=["No Finding"])
        >>> clf.prompts("Edema")
        (('edema', 'no edema'),)
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
            raise TypeError(
                "encode_text must be a callable list[str] -> Tensor[n, D], "
                f"got {describe(encode_text)}"
            )
        self.all_labels, self.excluded = _check_labels(labels, exclude)
        self.labels = tuple(x for x in self.all_labels if x not in self.excluded)
        self._encode_text = encode_text
        self.templates = _check_pairs(templates, "templates", templates=True)
        self.normalize = check_bool("normalize", normalize)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        check_type(
            "label_prompts", label_prompts, (Mapping, type(None)), "a mapping label -> pairs"
        )
        _known(label_prompts or {}, self.all_labels, "label_prompts")
        self.label_prompts: dict[str, tuple[TemplatePair, ...]] = {
            k: _check_pairs(v, f"label_prompts[{k!r}]", templates=False)
            for k, v in (label_prompts or {}).items()
        }
        self.prompt_names = _prompt_names(prompt_names, self.all_labels, self.labels)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._check_prompts()

    def _check_prompts(self) -> None:
        """Refuse identical positive/negative prompts; warn for non-findings with "no {}"."""
        negating = [n for _, n in self.templates if _NEGATING_TEMPLATE.match(n)]
        for label in self.labels:
            same = [p for p, n in self.prompts(label) if p == n]
            if same:
                source = f"label_prompts[{label!r}]" if label in self.label_prompts else "templates"
                raise ValueError(
                    f"{source} must give different positive and negative prompts, got {same[0]!r} "
                    f"for both (label {label!r}); every probability would be 0.5"
                )
            name = self.prompt_names[label]
            if label in self.label_prompts or not negating:
                continue
            if is_non_finding_label(label) or is_non_finding_label(name):
                warnings.warn(
                    f"label {label!r} is not a finding: with {negating[0]!r} its negative prompt "
                    f"{negating[0].format(name)!r} reads as an absence too and its score is close "
                    f"to inverted (see docs/zeroshot.md); pass exclude=[{label!r}] or "
                    f"label_prompts={{{label!r}: [(pos, neg)]}}",
                    NoFindingTemplateWarning,
                    stacklevel=3,
                )

    def prompts(self, label: str) -> tuple[TemplatePair, ...]:
        """The literal ``(positive, negative)`` prompts used for ``label`` (an output label)."""
        if label not in self.labels:
            raise ValueError(f"label must be an output label {list(self.labels)}, got {label!r}")
        if label in self.label_prompts:
            return self.label_prompts[label]
        name = self.prompt_names[label]
        return tuple((p.format(name), n.format(name)) for p, n in self.templates)

    def _encode_batched(self, texts: list[str]) -> torch.Tensor:
        """``encode_text`` of ``texts`` in batches, checked: ``(len(texts), D)``, finite, detached."""
        chunks: list[torch.Tensor] = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = texts[i : i + self.batch_size]
                out = self._encode_text(batch)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"encode_text must return a torch.Tensor, got {describe(out)} "
                        "(wrap Hugging Face models with hf_text_encoder)"
                    )
                check_tensor("encode_text output", out, floating=True)
                if out.ndim != 2 or out.shape[0] != len(batch) or out.shape[1] == 0:
                    raise ValueError(
                        f"encode_text output must have shape ({len(batch)}, D) with D >= 1 for "
                        f"{len(batch)} strings, got {tuple(out.shape)}"
                    )
                if chunks and out.shape[1] != chunks[0].shape[1]:
                    raise ValueError(
                        f"encode_text must return one embedding size, got D={out.shape[1]} for "
                        f"strings {i}..{i + len(batch) - 1} but D={chunks[0].shape[1]} before"
                    )
                chunks.append(out.detach())
        emb = torch.cat(chunks, dim=0)
        check_finite_rows("encode_text output (one row per distinct prompt)", emb)
        return emb

    def text_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached class embeddings ``(e⁺, e⁻)``, each float32 (or wider) ``Tensor[K, D]``, no grad.

        Raises:
            TypeError: ``encode_text`` returns a non-tensor.
            ValueError: ``encode_text`` returns a wrong shape, non-finite or zero rows, or the
                same embedding for a label's two sides.
        """
        if self._cache is not None:
            return self._cache
        per_label = [self.prompts(label) for label in self.labels]
        unique = {text: None for pairs in per_label for pair in pairs for text in pair}
        row = {text: i for i, text in enumerate(unique)}
        emb = self._encode_batched(list(unique))
        emb = emb.to(torch.promote_types(emb.dtype, torch.float32))
        emb = _l2(emb, "text embedding") if self.normalize else emb
        sides = [
            torch.stack(
                [emb[[row[pair[side]] for pair in pairs]].mean(dim=0) for pairs in per_label]
            )
            for side in (0, 1)
        ]
        if self.normalize:
            sides = [_l2(x, "averaged text embedding") for x in sides]
        same = [k for k, p, n in zip(self.labels, *sides, strict=True) if torch.equal(p, n)]
        if same:
            raise ValueError(
                f"encode_text must embed positive and negative prompts differently, got the same "
                f"embedding for labels {same}; every probability would be 0.5"
            )
        self._cache = (sides[0], sides[1])
        return self._cache

    def clear_cache(self) -> None:
        """Forget the cached text embeddings (e.g. after fine-tuning the text encoder)."""
        self._cache = None

    def _similarities(
        self, x: object, name: str, rows: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x·e⁺, x·e⁻)`` of ``x`` checked as finite floating ``(rows, D)`` features."""
        x = check_tensor(name, x, ndim=2, floating=True)
        check_finite_rows(name, x)
        pos, neg = self.text_embeddings()
        if x.shape[1] != pos.shape[1]:
            raise ValueError(
                f"{name} must have D={pos.shape[1]} columns (the text embeddings' size), got "
                f"shape {tuple(x.shape)}"
            )
        if rows is not None and x.shape[0] != rows:
            raise ValueError(f"{name} must have one row per label row ({rows}), got {x.shape[0]}")
        dtype = torch.promote_types(x.dtype, pos.dtype)
        x = _l2(x.to(dtype), name) if self.normalize else x.to(dtype)
        return x @ pos.to(x.device, dtype).T, x @ neg.to(x.device, dtype).T

    def similarities(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities ``(x·e⁺, x·e⁻)``, each ``Tensor[N, K]`` (columns ``self.labels``).

        Args:
            image_features: ``Tensor[N, D]``, any float dtype and device (computed in at least
                float32 there); the result is differentiable with respect to it.

        Raises:
            TypeError: not a floating tensor.
            ValueError: not 2-D, another D, NaN/Inf rows (or, with ``normalize=True``, zero
                rows), naming the rows.

        Example:
            >>> s_pos, s_neg = clf.similarities(torch.randn(4, D))
        """
        return self._similarities(image_features, "image_features")

    def predict_proba(self, image_features: torch.Tensor) -> torch.Tensor:
        """``P(c | x) = exp(s⁺) / (exp(s⁺) + exp(s⁻)) = sigmoid(s⁺ − s⁻)``, ``Tensor[N, K]``.

        ``image_features`` and the errors are as in :meth:`similarities` (differentiable too);
        the columns follow ``self.labels``.

        Example:
            >>> clf.predict_proba(torch.randn(4, D)).shape
            torch.Size([4, 3])
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
        """Zero-shot per-label and macro AUROC over a whole evaluation set, in one pass, no grad.

        Args:
            encode_image: maps ``batch[image_key]`` to finite ``(B, D)`` image features.
            batches: an iterable of dict batches (e.g. a ``DataLoader``), ``batch[label_key]``
                holding ``(B, K)`` 0/1/NaN labels for all the constructor's labels or only
                ``self.labels``; ``batch[group_key]`` (if given) ``(B,)`` study ids.
            n_bootstrap, seed, confidence: with ``n_bootstrap``, also ``bootstrap_auroc``
                (resampling whole studies with ``group_key``); all checked, with or without it.

        Returns:
            A :class:`ZeroShotEvaluation` of every row (NaN labels omitted per label).

        Raises:
            TypeError: ``batches`` not an iterable of mappings (one dict included), non-numeric
                labels, a wrong argument type (``confidence="0.9"``), checked before the pass;
                study ids mixing str with other types (within or across batches).
            KeyError: a batch without a key. ValueError: bad shapes or values, naming the batch.

        Example:
            >>> ev = clf.evaluate(model.encode_image, loader, n_bootstrap=1000)
            >>> ev.macro, ev.bootstrap.macro
        """
        # checked before the pass over the data, with or without n_bootstrap
        n, seed, confidence = _bootstrap_args(
            1 if n_bootstrap is None else n_bootstrap, seed, confidence
        )
        expected = "an iterable of batches (e.g. a DataLoader or a list of dicts)"
        hint = "; wrap a single batch in a list"
        check_type("batches", batches, Iterable, expected, hint, exclude=Mapping)
        keys = (image_key, label_key) + ((group_key,) if group_key is not None else ())
        rows = [self._batch(encode_image, b, i, keys) for i, b in enumerate(batches)]
        if not rows:
            raise ValueError("batches must hold at least one batch, got none")
        y_true, y_score = (np.concatenate([r[j] for r in rows]) for j in (0, 1))
        result = macro_auroc(y_true, y_score, self.labels)
        ids = None
        if group_key is not None:
            groups = [r[2] for r in rows if r[2] is not None]
            kinds = [g.dtype.kind if g.dtype.kind in "US" else "n" for g in groups]
            if len(set(kinds)) > 1:  # numpy would turn 1 (or b"1") into '1'
                i = next(j for j, k in enumerate(kinds) if k != kinds[0])
                raise TypeError(
                    f"batches[{i}][{group_key!r}] must hold study ids of one type in every batch, "
                    f"got dtype {groups[i].dtype} after {groups[0].dtype} in batches[0]"
                )
            ids = np.concatenate(groups)
        boot = None
        if n_bootstrap is not None:
            options: dict[str, Any] = dict(n_bootstrap=n, seed=seed, confidence=confidence)
            boot = bootstrap_auroc(y_true, y_score, self.labels, groups=ids, **options)
        return ZeroShotEvaluation(
            **vars(result), y_true=y_true, y_score=y_score, groups=ids, bootstrap=boot
        )

    def _batch(
        self, encode_image: Callable[[Any], torch.Tensor], batch: Any, i: int, keys: tuple[str, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One batch's ``(labels (B, K), probabilities (B, K), study ids (B,) or None)``."""
        check_type(f"batches[{i}]", batch, Mapping, f"a mapping with keys {list(keys)}")
        for key in keys:
            if key not in batch:
                raise KeyError(f"batches[{i}] must have the key {key!r}, got keys {list(batch)}")
        where = f"batches[{i}][{keys[1]!r}]"
        y = _labels(_array(batch[keys[1]], where, scalar=True), where, allow_nan=True)
        n_all, n_kept = len(self.all_labels), len(self.labels)
        if y.ndim != 2 or y.shape[1] not in (n_all, n_kept):
            want = f"(B, {n_all})" + (f" or (B, {n_kept})" if n_kept != n_all else "")
            raise ValueError(f"{where} must have shape {want}, got {y.shape}")
        if y.shape[1] != n_kept:
            y = y[:, [self.all_labels.index(name) for name in self.labels]]
        name = f"encode_image(batches[{i}][{keys[0]!r}])"
        s_pos, s_neg = self._similarities(encode_image(batch[keys[0]]), name, rows=y.shape[0])
        proba = torch.sigmoid(s_pos - s_neg).double().cpu().numpy()
        if len(keys) < 3:
            return y, proba, None
        where = f"batches[{i}][{keys[2]!r}]"
        g = _study_ids(batch[keys[2]], where, scalar=True)
        if g.shape != (y.shape[0],):
            raise ValueError(f"{where} must hold {y.shape[0]} study ids, got shape {g.shape}")
        return y, proba, g


def open_clip_text_encoder(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    device: str | torch.device | None = None,
) -> TextEncoder:
    """An ``encode_text`` for :class:`ZeroShotClassifier` from an open_clip model.

    ``texts -> model.encode_text(tokenizer(texts).to(device))``, a ``Tensor[n, D]``.

    Args:
        model: an open_clip model (not put in eval mode for you).
        tokenizer: ``open_clip.get_tokenizer(name)``.
        device: where the tokens go (default: the device of the model's first parameter).

    Raises:
        TypeError: ``model`` has no ``encode_text``.

    Example:
        >>> enc = open_clip_text_encoder(model, open_clip.get_tokenizer("ViT-B-32"))
    """
    if not hasattr(model, "encode_text"):
        raise TypeError(f"model must be an open_clip model with encode_text, got {describe(model)}")

    def encode(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts).to(device if device is not None else _model_device(model))
        return _as_feature_tensor(model.encode_text(tokens), "model.encode_text")

    return encode


def hf_text_encoder(
    model: Any,
    tokenizer: Callable[..., Any],
    device: str | torch.device | None = None,
    *,
    max_length: int | None = None,
) -> TextEncoder:
    """An ``encode_text`` for :class:`ZeroShotClassifier` from a Hugging Face CLIP-style model.

    Tokens: ``tokenizer(texts, padding=True, truncation=True, return_tensors="pt")``; features:
    the tensor returned, or its ``text_embeds`` / ``pooler_output`` (transformers 5).

    Args:
        model, tokenizer: the model and its tokenizer.
        device: where the inputs go (default: the model's device).
        max_length: passed to the tokenizer when given, >= 1.

    Raises:
        TypeError: ``model`` has no ``get_text_features``; ``max_length`` not an int.

    Example:
        >>> enc = hf_text_encoder(CLIPModel.from_pretrained(n), CLIPTokenizer.from_pretrained(n))
    """
    if not hasattr(model, "get_text_features"):
        raise TypeError(
            f"model must be a Hugging Face model with get_text_features, got {describe(model)}"
        )
    kwargs: dict[str, Any] = {"padding": True, "truncation": True, "return_tensors": "pt"}
    if max_length is not None:
        kwargs["max_length"] = check_int("max_length", max_length, minimum=1)

    def encode(texts: list[str]) -> torch.Tensor:
        dev = device if device is not None else _model_device(model)
        inputs = dict(tokenizer(texts, **kwargs))
        inputs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        return _as_feature_tensor(model.get_text_features(**inputs), "model.get_text_features")

    return encode


def _model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU without parameters)."""
    try:
        return next(iter(model.parameters())).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _as_feature_tensor(out: Any, where: str) -> torch.Tensor:
    """``out`` if a tensor, else its ``text_embeds`` or ``pooler_output`` (transformers 5)."""
    for value in (out, getattr(out, "text_embeds", None), getattr(out, "pooler_output", None)):
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(
        f"{where} must return a Tensor or an output with text_embeds/pooler_output, "
        f"got {type(out).__name__}"
    )


def plot_roc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save a PNG with one ROC curve per label, its AUROC in the legend (needs matplotlib).

    Args:
        y_true, y_score, labels: as :func:`~relaxclip.metrics.macro_auroc` (single-class labels
            are listed in the legend as skipped).
        path: the PNG file to write (and return), in an existing directory; its suffix, if
            any, must be ``.png``.
        title: the figure title (default: the macro AUROC); dpi: resolution, >= 1.

    Raises:
        FileNotFoundError: no such directory.
        TypeError: as ``macro_auroc``, a ``path`` not a str or path, a ``dpi`` not an int.
        ValueError: as ``macro_auroc``, a ``path`` with another suffix, a ``dpi`` < 1.

    Example:
        >>> plot_roc(ev.y_true, ev.y_score, clf.labels, "roc.png")
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_roc needs matplotlib: pip install 'relaxclip[plot]'") from exc
    t, s, names = _matrix(y_true, y_score, labels, "omit")
    result = macro_auroc(t, s, names)
    dpi = check_int("dpi", dpi, minimum=1)
    out = Path(check_type("path", path, (str, PathLike), "a str or path-like .png file"))
    if out.suffix.lower() not in ("", ".png"):
        raise ValueError(
            f"path must end in .png (plot_roc writes PNG) or have no suffix, got {str(out)!r}"
        )
    if not out.parent.exists():
        raise FileNotFoundError(
            f"path must be in an existing directory, got {out.parent} (missing)"
        )
    fig = Figure(figsize=(6, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    for k, name in enumerate(names):
        if name in result.skipped:
            ax.plot([], [], label=f"{name}: skipped (single class)")
            continue
        keep = ~np.isnan(t[:, k])
        ax.plot(*roc_curve(t[keep, k], s[keep, k]), label=f"{name}: {result.per_label[name]:.3f}")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title if title is not None else f"ROC (macro AUROC {result.macro:.3f})")
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(out, dpi=dpi, format="png")
    return out
