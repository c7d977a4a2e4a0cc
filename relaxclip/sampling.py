"""Random sentence sampling from radiology reports, as a DataLoader ``collate_fn``.

At every training step each report is represented by a few of its sentences drawn at random
(Jang et al., arXiv 2212.07050) instead of the whole report. :class:`SentenceSampler` does this in
the collate function so that the dataset stays a plain list of ``{"image", "report"}`` records.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import default_collate

from relaxclip.sentences import PREAMBLE_KEY, parse_report_sections, split_sentences

__all__ = ["SentenceSampler"]

NumSentences = int | float | tuple[int, int]
Fallback = Literal["report"] | None


class SentenceSampler:
    """Collate function that samples sentences from each report and tokenizes them.

    Usage::

        collate = SentenceSampler(tokenizer=open_clip.get_tokenizer("ViT-B-32"), seed=0)
        loader = DataLoader(dataset, batch_size=64, num_workers=4, collate_fn=collate)
        for epoch in range(n_epochs):
            collate.set_epoch(epoch)
            for batch in loader:  # batch["image"], batch["text"], batch["tokens"]
                ...

    Input: a list of samples, each either a mapping (``sample[image_key]``, ``sample[text_key]``,
    other keys) or an ``(image, report)`` pair (tuple/list of length 2).

    The report (``sample[text_key]``) is either

    * a ``str``: parsed with :func:`~relaxclip.sentences.parse_report_sections`; the chosen
      ``sections`` are used. A string with no recognised header at all (only
      :data:`~relaxclip.sentences.PREAMBLE_KEY` text, e.g. a bare impression) is used whole, since
      it has no sections to choose from;
    * a mapping of section name to text (e.g. ``{"findings": ..., "impression": ...}``, as in a
      record of :func:`~relaxclip.data.openi.read_openi_reports`): the chosen ``sections`` are used
      directly (missing keys, ``None`` and blank values count as absent).

    With ``text_key=None`` the sample mapping itself is the mapping of sections (pass Open-I
    records, with an ``image`` added, as they are).

    The candidate sentences are those of the chosen sections, in report order (for a string, the
    order in which the sections appear; for a mapping, the order of ``sections``, or the mapping's
    order when ``sections=None``), each split with
    :func:`~relaxclip.sentences.split_sentences`. Training mode draws ``k`` of the ``n`` candidate
    sentences uniformly without replacement and joins them with ``separator`` in report order
    (or in drawn order with ``keep_order=False``):

    * ``num_sentences=int``: ``k = min(num_sentences, n)``;
    * ``num_sentences=(lo, hi)``: ``k`` uniform on the integers ``lo..hi`` (inclusive), then
      ``min(k, n)``;
    * ``num_sentences=float f`` in ``(0, 1]``: ``k = max(1, ceil(f * n))``.

    Evaluation mode (``train=False`` or :meth:`eval`) returns every candidate sentence joined by
    ``separator``, deterministically (no randomness consumed).

    Output: a dict with ``image_key`` (``default_collate`` of the images: a stacked ``(B, ...)``
    tensor for tensors, batch order kept; absent when ``image_key=None``), ``text`` (``list[str]``
    of length ``B``, the sampled text of sample ``i`` at position ``i``), the tokenizer's outputs
    when a tokenizer is given, and every other key of the samples collated with
    ``default_collate`` (the report itself, ``sample[text_key]``, is not copied), except the keys
    in ``list_keys``, returned as plain lists of the per-sample values (use it for ragged metadata
    such as Open-I ``mesh``/``images`` lists, which ``default_collate`` cannot batch). Tokenizer
    outputs: a tensor (open_clip tokenizers: ``LongTensor (B, context_length)``) is stored under
    ``token_key`` (``"tokens"``); a mapping (HF tokenizers: ``input_ids``, ``attention_mask``...) is
    merged key by key. Tokenizers that look like HF ones (they have ``model_input_names``) are
    called as ``tokenizer(texts, padding=True, truncation=True, return_tensors="pt")`` unless
    ``tokenizer_kwargs`` is given; others are called as ``tokenizer(texts, **tokenizer_kwargs)``.

    Randomness: each call draws from a :class:`random.Random` seeded with
    ``(seed, epoch, worker id, call index)`` (the call index counts calls since construction or
    the last :meth:`set_epoch`, per process). Same seed, epoch and inputs in the same order give the
    same output; DataLoader workers (each holding its own copy) draw different samples; epochs
    differ after :meth:`set_epoch`. With ``seed=None`` the base seed is the worker's seed
    (``get_worker_info().seed``) inside a worker, and one value drawn from torch's default generator
    in the main process, so ``torch.manual_seed`` makes runs reproducible. With
    ``persistent_workers=True`` the worker copies do not see later :meth:`set_epoch` calls; their
    call index keeps growing, so epochs still differ but are not addressable by epoch.

    Cache: the sentence split of each distinct report is cached (up to ``cache_size`` reports per
    process, oldest evicted first; ``0`` disables it), so later epochs pay only the sampling. The
    cache is not pickled (workers start empty).

    Bad input raises, naming the batch position and the key: a sample that is not a mapping or a
    pair (``TypeError``), a missing key (``KeyError``), a report that is not ``str``/mapping or a
    section that is not ``str`` (``TypeError``), no usable sentence in the chosen sections
    (``ValueError``). With ``fallback="report"`` (opt-in) a report whose chosen sections have no
    sentence uses every sentence of the whole report instead (all sections, in report order, for a
    string report also the text before the first header); ``ValueError`` if that is empty too.
    Nothing is ever replaced by an empty string or dropped.
    """

    def __init__(
        self,
        tokenizer: Callable[..., Any] | None = None,
        *,
        num_sentences: NumSentences = 1,
        sections: Sequence[str] | None = ("findings", "impression"),
        text_key: str | None = "report",
        image_key: str | None = "image",
        seed: int | None = None,
        train: bool = True,
        keep_order: bool = True,
        separator: str = " ",
        fallback: Fallback = None,
        cache_size: int = 50_000,
        token_key: str = "tokens",
        tokenizer_kwargs: Mapping[str, Any] | None = None,
        list_keys: Sequence[str] = (),
    ) -> None:
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(
                f"SentenceSampler: tokenizer must be callable or None, got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer
        self.num_sentences = _check_num_sentences(num_sentences)
        if sections is not None:
            if isinstance(sections, str) or not all(isinstance(s, str) for s in sections):
                raise TypeError(
                    "SentenceSampler: sections must be a sequence of str section names "
                    f"(e.g. ('findings', 'impression')) or None, got {sections!r}"
                )
            if len(sections) == 0:
                raise ValueError("SentenceSampler: sections must not be empty (use None for all)")
            sections = tuple(sections)
        if text_key is None and (sections is None or fallback is not None):
            raise ValueError(
                "SentenceSampler: text_key=None (sections are keys of the sample) needs explicit "
                "sections and no fallback"
            )
        self.sections: tuple[str, ...] | None = sections
        for name, key in (("text_key", text_key), ("image_key", image_key)):
            if key is not None and not isinstance(key, str):
                raise TypeError(f"SentenceSampler: {name} must be str or None, got {key!r}")
        self.text_key = text_key
        self.image_key = image_key
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"SentenceSampler: seed must be an int or None, got {seed!r}")
        self.seed = seed
        self.training = bool(train)
        self.keep_order = bool(keep_order)
        if not isinstance(separator, str):
            raise TypeError(f"SentenceSampler: separator must be str, got {separator!r}")
        self.separator = separator
        if fallback not in (None, "report"):
            raise ValueError(
                f"SentenceSampler: fallback must be None or 'report', got {fallback!r}"
            )
        self.fallback: Fallback = fallback
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"SentenceSampler: cache_size must be an int >= 0, got {cache_size!r}")
        self.cache_size = cache_size
        if not isinstance(token_key, str):
            raise TypeError(f"SentenceSampler: token_key must be str, got {token_key!r}")
        self.token_key = token_key
        if tokenizer_kwargs is None:
            is_hf = tokenizer is not None and hasattr(tokenizer, "model_input_names")
            tokenizer_kwargs = (
                {"padding": True, "truncation": True, "return_tensors": "pt"} if is_hf else {}
            )
        self.tokenizer_kwargs = dict(tokenizer_kwargs)
        if isinstance(list_keys, str) or not all(isinstance(k, str) for k in list_keys):
            raise TypeError(
                f"SentenceSampler: list_keys must be a sequence of str, got {list_keys!r}"
            )
        self.list_keys = frozenset(list_keys)
        self.epoch = 0
        self._calls = 0
        self._main_base_seed: int | None = None
        self._cache: dict[Any, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    # ------------------------------------------------------------------ mode and epoch
    def train(self, mode: bool = True) -> SentenceSampler:
        """Set training (random sampling) or evaluation (full text) mode; returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> SentenceSampler:
        """Evaluation mode: every candidate sentence, deterministically; returns ``self``."""
        return self.train(False)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch mixed into the seed and restart the call index (call before each epoch)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"SentenceSampler.set_epoch: epoch must be an int, got {epoch!r}")
        self.epoch = epoch
        self._calls = 0

    def clear_cache(self) -> None:
        """Empty the split cache."""
        self._cache.clear()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __repr__(self) -> str:
        return (
            f"SentenceSampler(tokenizer={self.tokenizer!r}, num_sentences={self.num_sentences!r}, "
            f"sections={self.sections!r}, text_key={self.text_key!r}, "
            f"image_key={self.image_key!r}, seed={self.seed!r}, train={self.training}, "
            f"fallback={self.fallback!r})"
        )

    # ------------------------------------------------------------------ sentences
    def candidates(self, report: Any, *, position: int = 0) -> tuple[str, ...]:
        """Candidate sentences of one report (chosen sections, report order), cached.

        Raises as described in the class docstring; ``position`` is used in messages.
        """
        chosen, whole = self._split(report, position)
        if chosen:
            return chosen
        if self.fallback == "report" and whole:
            return whole
        where = self._where(position)
        what = "the whole report" if self.fallback == "report" else f"sections {self.sections!r}"
        hint = "" if self.fallback == "report" else " (or pass fallback='report')"
        raise ValueError(
            f"SentenceSampler: {where} has no sentence in {what}; "
            f"fix the data or choose other sections{hint}"
        )

    def _where(self, position: int) -> str:
        if self.text_key is None:
            return f"batch position {position}, keys {self.sections!r}"
        return f"batch position {position}, key {self.text_key!r}"

    def _split(self, report: Any, position: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if isinstance(report, str):
            key: Any = report
        elif isinstance(report, Mapping):
            if self.sections is not None and self.fallback is None:
                key = tuple(map(report.get, self.sections))  # validated below on a miss
            else:
                key = self._mapping_items(report, position)
        else:
            raise TypeError(
                f"SentenceSampler: {self._where(position)}: the report must be a str or a "
                f"mapping of section name to str, got {type(report).__name__}"
            )
        try:
            hit = self._cache.get(key)
        except TypeError:  # unhashable section value: _mapping_items raises a clear error
            hit = None
        if hit is not None:
            return hit
        if isinstance(report, str):
            sections = parse_report_sections(report)
            if set(sections) <= {PREAMBLE_KEY}:  # no header: the whole text
                chosen = _sentences(sections.values())
                value = (chosen, chosen)
            else:
                names = sections if self.sections is None else self.sections
                chosen = _sentences(v for k, v in sections.items() if k in names)  # report order
                whole = _sentences(sections.values()) if self.fallback == "report" else ()
                value = (chosen, whole)
        else:
            items = dict(self._mapping_items(report, position))
            if self.sections is None:
                chosen = _sentences(items.values())
            else:
                chosen = _sentences(items[n] for n in self.sections if n in items)
            whole = _sentences(items.values()) if self.fallback == "report" else ()
            value = (chosen, whole)
        if self.cache_size:
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = value
        return value

    def _mapping_items(
        self, report: Mapping[Any, Any], position: int
    ) -> tuple[tuple[str, str], ...]:
        """The text sections of a mapping report, in mapping order, validated."""
        items = []
        for name, text in report.items():
            chosen = self.sections is None or name in self.sections
            if text is None or not (chosen or self.fallback == "report"):
                continue
            if not isinstance(text, str):
                if chosen:
                    raise TypeError(
                        f"SentenceSampler: {self._where(position)}: section {name!r} must be str "
                        f"or None, got {type(text).__name__}"
                    )
                continue  # non-text fields of a record (mesh, images) are not sections
            items.append((str(name), text))
        return tuple(items)

    # ------------------------------------------------------------------ sampling
    def _rng(self) -> random.Random:
        info = get_worker_info()
        worker = info.id if info is not None else -1
        if self.seed is not None:
            base = self.seed
        elif info is not None:
            base = info.seed
        else:
            if self._main_base_seed is None:
                self._main_base_seed = int(torch.randint(0, 2**62, (1,)).item())
            base = self._main_base_seed
        rng = random.Random(f"relaxclip.SentenceSampler/{base}/{self.epoch}/{worker}/{self._calls}")
        self._calls += 1
        return rng

    def _count(self, n: int, rng: random.Random) -> int:
        spec = self.num_sentences
        if isinstance(spec, tuple):
            k = rng.randint(spec[0], spec[1])
        elif isinstance(spec, float):
            k = max(1, math.ceil(spec * n))
        else:
            k = spec
        return min(k, n)

    def sample_text(self, sentences: Sequence[str], rng: random.Random) -> str:
        """Join ``k`` sentences drawn uniformly without replacement (see the class docstring)."""
        n = len(sentences)
        k = self._count(n, rng)
        if k == 1:
            return sentences[rng.randrange(n)]
        if k == n and self.keep_order:
            return self.separator.join(sentences)
        idx = rng.sample(range(n), k)
        if self.keep_order:
            idx.sort()
        return self.separator.join([sentences[i] for i in idx])

    # ------------------------------------------------------------------ collate
    def _pools(self, reports: list[Any]) -> list[tuple[str, ...]]:
        """Candidate sentences per report; cache hits are served inline (the warm path)."""
        cache = self._cache
        fast_mapping = self.sections is not None and self.fallback is None
        sections = self.sections or ()
        pools: list[tuple[str, ...]] = []
        for i, report in enumerate(reports):
            hit = None
            if isinstance(report, str):
                hit = cache.get(report)
            elif fast_mapping and isinstance(report, Mapping):
                try:
                    hit = cache.get(tuple(map(report.get, sections)))
                except TypeError:  # unhashable value: candidates() raises a clear error
                    hit = None
            if hit is not None and hit[0]:
                pools.append(hit[0])
            else:
                pools.append(self.candidates(report, position=i))
        return pools

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
            raise TypeError(
                f"SentenceSampler: batch must be a list of samples, got {type(batch).__name__}"
            )
        if len(batch) == 0:
            raise ValueError("SentenceSampler: empty batch")
        reports: list[Any] = []
        images: list[Any] = []
        rest: list[Mapping[str, Any]] = []
        text_key, image_key = self.text_key, self.image_key
        n_fixed = (text_key is not None) + (image_key is not None)
        for i, sample in enumerate(batch):
            if (
                type(sample) is dict
                and len(sample) == n_fixed
                and text_key in sample
                and (image_key is None or image_key in sample)
            ):  # fast path: exactly {image, report}
                reports.append(sample[text_key])
                images.append(sample[image_key] if image_key is not None else None)
                rest.append({})
                continue
            report, image, other = self._unpack(sample, i)
            reports.append(report)
            images.append(image)
            rest.append(other)
        for i, other in enumerate(rest):
            if other.keys() != rest[0].keys():
                diff = sorted(map(str, set(other) ^ set(rest[0])))
                raise KeyError(
                    f"SentenceSampler: batch position {i} and batch position 0 differ in keys "
                    f"{diff!r}"
                )
        pools = self._pools(reports)
        if self.training:
            rng = self._rng()
            if type(self.num_sentences) is int and self.num_sentences == 1:  # the paper's setting
                randrange = rng.randrange
                texts = [p[randrange(len(p))] for p in pools]
            else:
                texts = [self.sample_text(p, rng) for p in pools]
        else:
            texts = [self.separator.join(p) for p in pools]
        out: dict[str, Any] = {}
        if self.image_key is not None:
            out[self.image_key] = _collate_key(images, self.image_key)
        out["text"] = texts
        if self.tokenizer is not None:
            self._tokenize(texts, out)
        for key in rest[0]:
            if key in out:
                raise ValueError(
                    f"SentenceSampler: sample key {key!r} collides with an output key; rename it"
                )
            values = [other[key] for other in rest]
            out[key] = values if key in self.list_keys else _collate_key(values, key)
        return out

    def _unpack(self, sample: Any, i: int) -> tuple[Any, Any, Mapping[str, Any]]:
        if isinstance(sample, Mapping):
            if self.image_key is not None and self.image_key not in sample:
                raise KeyError(
                    f"SentenceSampler: batch position {i} lacks key {self.image_key!r} "
                    f"(image_key); keys: {sorted(map(str, sample))!r}"
                )
            image = sample[self.image_key] if self.image_key is not None else None
            if self.text_key is None:
                assert self.sections is not None
                report: Any = sample
                skip = {self.image_key, *self.sections}
            else:
                if self.text_key not in sample:
                    raise KeyError(
                        f"SentenceSampler: batch position {i} lacks key {self.text_key!r} "
                        f"(text_key); keys: {sorted(map(str, sample))!r}"
                    )
                report = sample[self.text_key]
                skip = {self.image_key, self.text_key}
            other = {k: v for k, v in sample.items() if k not in skip}
            return report, image, other
        if isinstance(sample, (tuple, list)) and len(sample) == 2:
            if self.image_key is None:
                raise TypeError(
                    f"SentenceSampler: batch position {i} is an (image, report) pair but "
                    "image_key=None"
                )
            return sample[1], sample[0], {}
        raise TypeError(
            f"SentenceSampler: batch position {i} must be a mapping or an (image, report) pair, "
            f"got {type(sample).__name__}"
            + (f" of length {len(sample)}" if isinstance(sample, (tuple, list)) else "")
        )

    def _tokenize(self, texts: list[str], out: dict[str, Any]) -> None:
        assert self.tokenizer is not None
        result = self.tokenizer(texts, **self.tokenizer_kwargs)
        if isinstance(result, torch.Tensor):
            items: Iterable[tuple[str, Any]] = [(self.token_key, result)]
        elif isinstance(result, Mapping):
            items = result.items()
        elif hasattr(result, "keys") and hasattr(result, "__getitem__"):
            items = [(k, result[k]) for k in result.keys()]
        else:
            raise TypeError(
                "SentenceSampler: the tokenizer must return a tensor or a mapping of tensors, "
                f"got {type(result).__name__}"
            )
        for key, value in items:
            if key in out:
                raise ValueError(
                    f"SentenceSampler: tokenizer output {key!r} collides with an output key"
                )
            if isinstance(value, torch.Tensor) and (
                value.dim() == 0 or value.shape[0] != len(texts)
            ):
                raise ValueError(
                    f"SentenceSampler: tokenizer output {key!r} has shape {tuple(value.shape)}, "
                    f"expected a first dimension of {len(texts)} (the batch size)"
                )
            out[key] = value


def _check_num_sentences(spec: Any) -> NumSentences:
    if isinstance(spec, bool):
        raise TypeError(
            "SentenceSampler: num_sentences must be an int, float or (lo, hi), not bool"
        )
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"SentenceSampler: num_sentences must be >= 1, got {spec}")
        return spec
    if isinstance(spec, float):
        if not (0.0 < spec <= 1.0):
            raise ValueError(
                f"SentenceSampler: a fractional num_sentences must be in (0, 1], got {spec}"
            )
        return spec
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        lo, hi = spec
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
            raise TypeError(f"SentenceSampler: num_sentences range must hold ints, got {spec!r}")
        if not 1 <= lo <= hi:
            raise ValueError(
                f"SentenceSampler: num_sentences range (lo, hi) needs 1 <= lo <= hi, got {spec!r}"
            )
        return (lo, hi)
    raise TypeError(
        "SentenceSampler: num_sentences must be an int >= 1, a float in (0, 1] or an inclusive "
        f"(lo, hi) pair of ints, got {spec!r}"
    )


def _sentences(texts: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for text in texts:
        out.extend(split_sentences(text))
    return tuple(out)


def _collate_key(values: list[Any], key: str) -> Any:
    try:
        return default_collate(values)
    except (TypeError, RuntimeError) as exc:
        raise TypeError(
            f"SentenceSampler: cannot collate key {key!r} with default_collate ({exc}); drop it "
            "from the samples or pass it in list_keys to get a plain list"
        ) from exc
