"""Zero-shot multi-label classification with positive/negative prompt pairs (CheXzero protocol).

For label ``c`` and template pairs ``(p_t, n_t)``, the positive text embedding is

    e⁺_c = normalize(mean_t normalize(encode_text(p_t.format(c))))

and likewise ``e⁻_c`` from the negative templates (CheXzero averages the normalised template
embeddings and re-normalises). For an image embedding ``x`` (normalised):

    P(c | x) = exp(x·e⁺_c) / (exp(x·e⁺_c) + exp(x·e⁻_c)) = sigmoid(x·e⁺_c − x·e⁻_c),

on *raw* cosine similarities — no logit scale, no temperature — exactly as CheXzero's
``run_softmax_eval``. The sigmoid form is the same number computed without overflow.

The "No Finding" trap
---------------------
With the default pair ``("{}", "no {}")`` the label ``"No Finding"`` produces the prompts
``"No Finding"`` and ``"no No Finding"``; text encoders read the negative as the *absence of
findings* too, so the score is close to inverted (CheXzero reports AUROC 0.07 for it on the
CheXpert test set). Either exclude such a label (``exclude=["No Finding"]``) or give it its
own prompts (``label_prompts={"No Finding": [("no acute cardiopulmonary process",
"acute cardiopulmonary process")]}``). The classifier warns with ``NoFindingTemplateWarning``
when a label that starts with "no" is combined with a negative template starting with "no".

Text encoders
-------------
``encode_text`` is any callable ``list[str] -> Tensor[n, D]``. ``open_clip_text_encoder`` and
``hf_text_encoder`` wrap open_clip and Hugging Face CLIP-style models; neither imports
open_clip or transformers.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from relaxclip.metrics import AUROCResult

TextEncoder = Callable[[list[str]], torch.Tensor]
TemplatePair = tuple[str, str]

DEFAULT_TEMPLATES: tuple[TemplatePair, ...] = (("{}", "no {}"),)

__all__ = [
    "DEFAULT_TEMPLATES",
    "NoFindingTemplateWarning",
    "ZeroShotClassifier",
    "hf_text_encoder",
    "open_clip_text_encoder",
    "plot_roc",
]


class NoFindingTemplateWarning(UserWarning):
    """A label named like "No Finding" is combined with a negative template "no {}"."""


_NEGATED_LABEL = re.compile(r"^\s*no[\s_-]", re.IGNORECASE)
_NEGATING_TEMPLATE = re.compile(r"^\s*no\s+\{\}", re.IGNORECASE)


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
                if tpl.count("{}") != 1 or re.search(r"\{[^}]", tpl):
                    raise ValueError(
                        f"{name}[{i}]: {side} template {tpl!r} must contain exactly one '{{}}' "
                        "placeholder for the label name"
                    )
        out.append((pos, neg))
    if not out:
        raise ValueError(f"{name}: expected at least one (positive, negative) pair")
    return tuple(out)


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

    Attributes:
        labels: the output column names (``labels`` minus ``exclude``, order kept).
        excluded: the excluded labels.
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
    ) -> None:
        if not callable(encode_text):
            raise TypeError("encode_text: expected a callable list[str] -> Tensor[n, D]")
        if isinstance(labels, str):
            raise TypeError("labels: expected a sequence of label names, not a single string")
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self._encode_text = encode_text
        self.templates = _check_pairs(templates, "templates", templates=True)
        self.normalize = bool(normalize)
        self.batch_size = batch_size
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
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        for label in self.labels:
            if label in self.label_prompts:
                continue
            if _NEGATED_LABEL.match(label) and any(
                _NEGATING_TEMPLATE.match(n) for _, n in self.templates
            ):
                warnings.warn(
                    f"label {label!r} with a negative template 'no {{}}' gives the prompt "
                    f"'no {label}', which text encoders read as the same absence: the score is "
                    "close to inverted (CheXzero: AUROC 0.07 for 'No Finding'). Pass "
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
        return tuple((p.format(label), n.format(label)) for p, n in self.templates)

    def _encode_batched(self, texts: list[str]) -> torch.Tensor:
        chunks: list[torch.Tensor] = []
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
        norm = x.norm(dim=-1, keepdim=True)
        if (norm == 0).any():
            raise ValueError(f"{what}: zero vector cannot be normalised")
        return x / norm

    # ------------------------------------------------------------------ prediction

    def similarities(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities ``(image·e⁺, image·e⁻)``, each ``Tensor[N, K]``.

        ``image_features``: ``Tensor[N, D]`` (any float dtype/device; computed in at least
        float32 on that device). Differentiable with respect to ``image_features``.
        """
        if not isinstance(image_features, torch.Tensor):
            raise TypeError(
                f"image_features: expected a torch.Tensor[N, D], got {type(image_features).__name__}"
            )
        if image_features.ndim != 2:
            raise ValueError(
                f"image_features: expected shape (N, D), got {tuple(image_features.shape)}"
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
    ) -> AUROCResult:
        """Zero-shot per-label and macro AUROC over a whole evaluation set.

        ``batches``: an iterable of dict batches (e.g. a ``DataLoader``), each with
        ``batch[image_key]`` (whatever ``encode_image`` takes) and ``batch[label_key]``, a
        ``(B, K)`` tensor or array with 0/1/NaN whose columns follow the constructor's ``labels``
        (all of them, excluded ones included, or only ``self.labels``). ``encode_image`` maps
        ``batch[image_key]`` to ``(B, D)`` image features. No gradients. Returns
        :func:`~relaxclip.metrics.macro_auroc`'s result over every row (NaN labels omitted per
        label, single-class labels reported as skipped).
        """
        from relaxclip.metrics import macro_auroc

        keep = [self.all_labels.index(name) for name in self.labels]
        probs: list[np.ndarray] = []
        truth: list[np.ndarray] = []
        for i, batch in enumerate(batches):
            for key in (image_key, label_key):
                if key not in batch:
                    raise KeyError(f"batches[{i}]: missing key {key!r}")
            y = torch.as_tensor(batch[label_key]).detach().double().cpu().numpy()
            if y.ndim != 2 or y.shape[1] not in (len(self.all_labels), len(self.labels)):
                raise ValueError(
                    f"batches[{i}][{label_key!r}]: expected shape (B, {len(self.all_labels)}) "
                    f"or (B, {len(self.labels)}), got {tuple(y.shape)}"
                )
            features = encode_image(batch[image_key])
            if not isinstance(features, torch.Tensor) or features.dim() != 2:
                raise ValueError(
                    f"encode_image(batches[{i}][{image_key!r}]): expected a (B, D) tensor, got "
                    f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}"
                )
            if features.shape[0] != y.shape[0]:
                raise ValueError(
                    f"encode_image(batches[{i}][{image_key!r}]) returned {features.shape[0]} rows "
                    f"for {y.shape[0]} label rows"
                )
            truth.append(y[:, keep] if y.shape[1] == len(self.all_labels) else y)
            probs.append(self.predict_proba(features).double().cpu().numpy())
        if not truth:
            raise ValueError("batches: expected at least one batch, got none")
        return macro_auroc(np.concatenate(truth), np.concatenate(probs), list(self.labels))


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
