"""Random sentence sampling from radiology reports, as a DataLoader ``collate_fn``.

Design, random streams and measurements: ``docs/sentences.md``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import numbers
import random
import re
from collections.abc import Callable, Mapping, Sequence
from types import NoneType
from typing import Any, Literal

import torch
from torch.utils.data import default_collate, get_worker_info

from relaxclip._checks import check_bool, check_choice, check_int, check_real, check_type, describe
from relaxclip.sentence_pool import REPORT, ReportTypeError, SentencePool
from relaxclip.sentences import INVISIBLE_MARKS, check_names

__all__ = ["SentenceSampler", "group_text", "sample_sentences", "text_group_ids"]

logger = logging.getLogger(__name__)

NumSentences = int | float | tuple[int, int]
OnEmpty = Literal["raise", "drop"]
#: Sample (or report mapping) fields that name a sample in error messages and drop logs.
DEFAULT_ID_KEYS = ("uid", "id", "study_id", "dicom_id", "idx", "index")
_TEXT = "text"
_DROPPED = "num_dropped"
_NAME = "SentenceSampler"
_STR_OR_NONE = (str, NoneType)


def sample_sentences(
    candidates: Sequence[Sequence[str]],
    rng: random.Random,
    *,
    num_sentences: NumSentences = 1,
    keep_order: bool = True,
    separator: str = " ",
) -> list[str]:
    """Draw the text of each sample: ``k`` of its ``n`` candidates, uniformly without replacement.

    ``k = min(num_sentences, n)`` for an int; ``min(randint(lo, hi), n)`` for ``(lo, hi)``;
    ``max(1, ceil(f * n))`` for a float ``f`` in ``(0, 1]``.

    Args:
        candidates: per sample, its non-empty sequence of candidate sentences.
        rng: the ``random.Random`` all draws come from, in sample order.
        num_sentences: an int >= 1, an inclusive ``(lo, hi)`` pair of ints or a float in (0, 1].
        keep_order: join in candidate (report) order rather than drawn order.
        separator: string placed between joined sentences.

    Returns:
        ``list[str]``: text ``i`` drawn from ``candidates[i]``.

    Raises:
        TypeError, ValueError: a bad argument or an empty sample.

    Example:
        >>> sample_sentences([["A.", "B."]], random.Random(0), num_sentences=2)
        ['A. B.']
    """
    spec = _check_num_sentences(num_sentences, "sample_sentences")
    check_bool("sample_sentences: keep_order", keep_order)
    expected = "a sequence of sequences of sentences"
    check_type("sample_sentences: candidates", candidates, Sequence, expected, exclude=str)
    for i, c in enumerate(candidates):  # each a non-empty sequence of sentences, not one str
        if type(c) is not tuple:
            name = f"sample_sentences: candidates[{i}]"
            check_type(name, c, Sequence, "a sequence of sentences", exclude=str)
        if not c:
            raise ValueError(
                f"sample_sentences: candidates[{i}] must hold at least one sentence, got an empty "
                "sequence"
            )
        try:
            "".join(c)  # C speed: a TypeError iff a sentence is not a str
        except TypeError:
            bad = next(x for x in c if not isinstance(x, str))
            raise TypeError(
                f"sample_sentences: candidates[{i}] must hold str sentences, got {describe(bad)}"
            ) from None
    check_type("sample_sentences: separator", separator, str, "a str")
    if not hasattr(rng, "randrange"):
        raise TypeError(f"sample_sentences: rng must be a random.Random, got {describe(rng)}")
    if spec == 1 and type(spec) is int:  # the paper's setting: one sentence
        randrange = rng.randrange
        return [p[randrange(len(p))] for p in candidates]
    return [_draw(p, spec, rng, keep_order, separator) for p in candidates]


def _draw(
    sentences: Sequence[str], spec: NumSentences, rng: random.Random, keep_order: bool, sep: str
) -> str:
    n = len(sentences)
    if isinstance(spec, tuple):
        k = rng.randint(spec[0], spec[1])
    elif isinstance(spec, float):
        k = max(1, math.ceil(spec * n))
    else:
        k = spec
    k = min(k, n)
    if k == 1:
        return sentences[rng.randrange(n)]
    if k == n and keep_order:
        return sep.join(sentences)
    idx = rng.sample(range(n), k)
    if keep_order:
        idx.sort()
    return sep.join([sentences[i] for i in idx])


def _check_num_sentences(spec: Any, owner: str) -> NumSentences:
    """``num_sentences`` checked: an int >= 1, a float in (0, 1] or an inclusive (lo, hi) pair."""
    name = f"{owner}: num_sentences"
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        return check_int(name, spec, minimum=1)
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return check_real(name, spec, low=0.0, high=1.0, low_open=True)
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        lo = check_int(f"{name}[0]", spec[0], minimum=1)
        hi = check_int(f"{name}[1]", spec[1], minimum=lo)
        return (lo, hi)
    raise TypeError(
        f"{name} must be an int >= 1, a float in (0, 1] or an inclusive (lo, hi) pair of ints, "
        f"got {describe(spec)}"
    )


_INVISIBLE_RE = re.compile(f"[{INVISIBLE_MARKS}]")


def group_text(text: str) -> str:
    """The normal form under which :func:`text_group_ids` compares texts.

    Invisible marks removed, case folded, whitespace collapsed and stripped, trailing ``.,;:!?``
    removed.

    Raises:
        TypeError: ``text`` is not a ``str``.

    Example:
        >>> group_text(" No  PNEUMOTHORAX !")
        'no pneumothorax'
    """
    check_type("group_text: text", text, str, "str")
    if not text.isascii():
        text = _INVISIBLE_RE.sub("", text)
    # after the join the only whitespace left is " ", so rstrip removes the trailing run
    return " ".join(text.casefold().split()).rstrip(" .,;:!?")


def text_group_ids(texts: Sequence[str]) -> torch.Tensor:
    """Stable 63-bit ids of texts: equal ids exactly for texts equal after :func:`group_text`.

    ``id = int.from_bytes(blake2b(group_text(t).encode("utf-8", "surrogatepass"), digest_size=8),
    "big") >> 1``: the same in every process, worker, rank and run.

    Args:
        texts: the texts, e.g. a batch's sampled ``"text"`` list.

    Returns:
        ``LongTensor (len(texts),)`` on the CPU.

    Raises:
        TypeError: ``texts`` is a ``str`` or holds a non-``str``.
    """
    check_type("text_group_ids: texts", texts, Sequence, "a sequence of str", exclude=str)
    for i, text in enumerate(texts):
        if not isinstance(text, str):  # not check_type: per text, on the batch path
            raise TypeError(f"text_group_ids: texts[{i}] must be str, got {describe(text)}")
    return torch.tensor([_text_id(t) for t in texts], dtype=torch.int64)


@functools.lru_cache(maxsize=1 << 16)
def _text_id(text: str) -> int:
    """The 63-bit id of one text (pure, so cached per process: sampled sentences repeat)."""
    data = group_text(text).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def _process_rank() -> int | None:
    """This process's rank in the default ``torch.distributed`` group (``None``: not initialised)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return None


class SentenceSampler:
    """Collate function that samples sentences from each report and tokenizes them.

    Samples (mappings or ``(image, report)`` pairs) in; ``{image_key: images, "text": [B texts],
    <tokenizer outputs>, <group_key>, <"num_dropped">, <other sample keys>}`` out. Training mode
    draws with :func:`sample_sentences` from :class:`~relaxclip.sentence_pool.SentencePool`
    candidates, evaluation mode joins them all. Random streams: ``docs/sentences.md``.

    Args:
        tokenizer: ``list[str] -> tensor or mapping of tensors`` callable, or ``None``.
        num_sentences, keep_order, separator: as :func:`sample_sentences`.
        sections, fallback, cache_size, custom_sections: passed to ``SentencePool``.
        text_key: sample key of the report; ``None``: the sample is the section mapping.
        image_key: sample key of the image, also its output key; ``None`` for text only.
        seed: base seed (int) or ``None`` (derived from torch's default generator).
        train: start in training (random draws) or evaluation (every sentence) mode.
        on_empty: a sample with no sentence: ``"raise"`` or ``"drop"`` it (logged, counted).
        token_key: output key of a tensor returned by the tokenizer.
        tokenizer_kwargs: keyword arguments of every tokenizer call (HF default: padding).
        list_keys: sample keys returned as plain lists instead of ``default_collate``.
        group_key: output key of :func:`text_group_ids` of the texts (``None``: off).
        id_keys: fields that name a sample in errors and drop logs.

    Raises:
        TypeError, ValueError, KeyError: a bad argument, or a bad sample (naming it and its key).

    Example:
        >>> collate = SentenceSampler(image_key=None, seed=0).eval()
        >>> texts = collate([{"report": "FINDINGS: Heart normal. IMPRESSION: No disease."}])["text"]
        >>> texts
        ['Heart normal. No disease.']
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
        fallback: str | Sequence[str] | None = None,
        on_empty: OnEmpty = "raise",
        cache_size: int = 50_000,
        token_key: str = "tokens",
        tokenizer_kwargs: Mapping[str, Any] | None = None,
        list_keys: Sequence[str] = (),
        group_key: str | None = None,
        id_keys: Sequence[str] = DEFAULT_ID_KEYS,
        custom_sections: bool = False,
    ) -> None:
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(
                f"{_NAME}: tokenizer must be callable or None, got {describe(tokenizer)}"
            )
        self.tokenizer = tokenizer
        self.num_sentences = _check_num_sentences(num_sentences, _NAME)
        self.pool = SentencePool(
            sections,
            fallback=fallback,
            cache_size=cache_size,
            name=_NAME,
            custom_sections=custom_sections,
        )
        if text_key is None and (sections is None or fallback is not None):
            raise ValueError(
                f"{_NAME}: text_key=None (sections are keys of the sample) needs explicit "
                "sections and no fallback"
            )
        self.text_key = check_type(f"{_NAME}: text_key", text_key, _STR_OR_NONE, "a str or None")
        self.image_key = check_type(f"{_NAME}: image_key", image_key, _STR_OR_NONE, "a str or None")
        self.group_key = check_type(f"{_NAME}: group_key", group_key, _STR_OR_NONE, "a str or None")
        self.token_key = check_type(f"{_NAME}: token_key", token_key, str, "a str")
        self.separator = check_type(f"{_NAME}: separator", separator, str, "a str")
        self.seed = None if seed is None else check_int(f"{_NAME}: seed", seed)
        self.training = check_bool(f"{_NAME}: train", train)
        self.keep_order = check_bool(f"{_NAME}: keep_order", keep_order)
        self.on_empty: OnEmpty = check_choice(f"{_NAME}: on_empty", on_empty, ("raise", "drop"))
        self.tokenizer_kwargs = _tokenizer_kwargs(tokenizer, tokenizer_kwargs)
        self.list_keys = frozenset(check_names(f"{_NAME}: list_keys", list_keys))
        self.id_keys = check_names(f"{_NAME}: id_keys", id_keys)
        self._check_key_collisions()
        self.epoch = 0
        self._epoch_set = False
        self._calls = 0
        self._main_base_seed: int | None = None
        self._rank: int | None = None  # the rank seen when pickled (see __getstate__)
        self.num_dropped = 0  # samples dropped in this process (workers count their own)

    def _check_key_collisions(self) -> None:
        """Fixed output and input keys must all differ (nothing may be overwritten)."""
        keys = [
            ("the text output", _TEXT),
            ("image_key", self.image_key),
            ("token_key", self.token_key if self.tokenizer is not None else None),
            ("group_key", self.group_key),
            ("the drop count output", _DROPPED if self.on_empty == "drop" else None),
            ("text_key", self.text_key),
            *[("a section key (text_key=None)", s) for s in self._section_keys()],
        ]
        seen: dict[str, str] = {}
        for what, key in keys:
            if key is None:
                continue
            if key in seen:
                raise ValueError(
                    f"{_NAME}: {what} {key!r} collides with {seen[key]} {key!r}; "
                    "choose distinct keys (one would overwrite the other in the batch)"
                )
            seen[key] = what

    def _section_keys(self) -> tuple[str, ...]:
        """The sample keys read as sections (``text_key=None``), else none."""
        return (self.sections or ()) if self.text_key is None else ()

    @property
    def sections(self) -> tuple[str, ...] | None:
        """The chosen sections (see :class:`~relaxclip.sentence_pool.SentencePool`)."""
        return self.pool.sections

    @property
    def fallback(self) -> str | tuple[str, ...] | None:
        """The fallback as given: ``None``, ``"report"`` or the chain (a tuple)."""
        chain = self.pool.fallback
        if not chain:
            return None
        return REPORT if chain == (REPORT,) else chain

    @property
    def cache_size(self) -> int:
        """Capacity of the candidate cache."""
        return self.pool.cache_size

    def train(self, mode: bool = True) -> SentenceSampler:
        """Set training (random sampling) or evaluation (full text) mode; returns ``self``."""
        self.training = check_bool(f"{_NAME}.train: mode", mode)
        return self

    def eval(self) -> SentenceSampler:
        """Evaluation mode: every candidate sentence, deterministically; returns ``self``."""
        return self.train(False)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into the seed (overrides the worker seed); restart the calls.

        Persistent DataLoader workers (``persistent_workers=True``) keep their own copy of the
        sampler and do not see a later call (docs/sentences.md).
        """
        self.epoch = check_int(f"{_NAME}.set_epoch: epoch", epoch)
        self._epoch_set = True
        self._calls = 0

    def clear_cache(self) -> None:
        """Empty the candidate cache."""
        self.pool.clear_cache()

    def __repr__(self) -> str:
        return (
            f"SentenceSampler(tokenizer={self.tokenizer!r}, num_sentences={self.num_sentences!r}, "
            f"sections={self.sections!r}, text_key={self.text_key!r}, "
            f"image_key={self.image_key!r}, seed={self.seed!r}, train={self.training}, "
            f"fallback={self.fallback!r}, on_empty={self.on_empty!r}, "
            f"group_key={self.group_key!r})"
        )

    def candidates(self, report: Any, *, position: int = 0) -> tuple[str, ...]:
        """Candidate sentences of one report; ``TypeError``/``ValueError`` when bad or empty."""
        found = self._lookup(report, position, None)
        if not found:
            raise self._empty_error(self._where(position))
        return found

    def _lookup(self, report: Any, position: int, sample: Any) -> tuple[str, ...]:
        """The pool's candidates of ``report``; a bad report raises naming the sample."""
        try:
            return self.pool.candidates(report)
        except ReportTypeError as exc:
            raise TypeError(f"{_NAME}: {self._where(position, sample)}: {exc.detail}") from None

    def _where(self, position: int, sample: Any = None) -> str:
        keys = f"keys {self.sections!r}" if self.text_key is None else f"key {self.text_key!r}"
        return f"{self._at(position, sample)}, {keys}"

    def _collate(self, values: list[Any], key: str, kept: list[tuple[int, Any]]) -> Any:
        """``default_collate(values)``; a failure names the first sample differing in layout."""
        try:
            return default_collate(values)
        except (TypeError, RuntimeError) as exc:
            first = _layout(values[0])
            odd = next((j for j, v in enumerate(values) if _layout(v) != first), None)
            where = (
                f": {self._at(*kept[0])} has {first[0]} {first[1]}, "
                f"{self._at(*kept[odd])} has {' '.join(map(str, _layout(values[odd])))}"
                if odd is not None
                else ""
            )
            raise TypeError(
                f"{_NAME}: cannot collate key {key!r} with default_collate{where} ({exc}); "
                "drop it from the samples or pass it in list_keys to get a plain list"
            ) from exc

    def _at(self, position: int, sample: Any) -> str:
        """``"sample uid='CXR1' at batch position 3"``, by the first id field found in the sample or
        its report mapping (``"batch position 3"`` when none is)."""
        places = [sample] if isinstance(sample, Mapping) else []
        if places and self.text_key is not None and isinstance(sample.get(self.text_key), Mapping):
            places.append(sample[self.text_key])
        for key in self.id_keys:  # the first key of id_keys found, in the sample or its report
            for place in places:
                value = place.get(key)
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    value = value.item()
                if isinstance(value, (str, numbers.Number)) and not isinstance(value, bool):
                    return f"sample {key}={value!r} at batch position {position}"
        return f"batch position {position}"

    def _empty_error(self, where: str) -> ValueError:
        hint = (
            ", pass fallback='report' or a fallback chain"
            if REPORT not in self.pool.fallback
            else ""
        )
        return ValueError(
            f"{_NAME}: {where} has no sentence in {self.pool.describe()}; fix or filter "
            f"the data, choose other sections{hint}, or pass on_empty='drop'"
        )

    def __getstate__(self) -> dict[str, Any]:
        """The state, with the rank of the pickling process (for spawned DataLoader workers)."""
        state = self.__dict__.copy()
        rank = _process_rank()
        if rank is not None:
            state["_rank"] = rank
        return state

    def _rng(self) -> random.Random:
        info = get_worker_info()
        if info is not None and not self._epoch_set:
            key = f"relaxclip.SentenceSampler/{self.seed}/worker-seed/{info.seed}/{self._calls}"
        else:
            worker = info.id if info is not None else -1
            if self.seed is not None:
                base = self.seed
            elif info is not None:
                base = info.seed
            else:
                if self._main_base_seed is None:
                    self._main_base_seed = int(torch.randint(0, 2**62, (1,)).item())
                base = self._main_base_seed
            key = f"relaxclip.SentenceSampler/{base}/{self.epoch}/{worker}/{self._calls}"
        rank = _process_rank()
        rank = getattr(self, "_rank", None) if rank is None else rank  # (older pickles lack it)
        if rank:  # ranks > 0 get their own streams; rank 0 keeps the single-process stream
            key += f"/rank-{rank}"
        self._calls += 1
        return random.Random(key)

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        check_type(f"{_NAME}: batch", batch, Sequence, "a list of samples", exclude=(str, bytes))
        if len(batch) == 0:
            raise ValueError(f"{_NAME}: empty batch")
        reports, images, rest = self._unpack_batch(batch)
        pools = [self._lookup(r, i, batch[i]) for i, r in enumerate(reports)]
        keep = list(range(len(batch)))
        if not all(pools):
            keep = self._handle_empty(batch, pools)
            pools = [pools[i] for i in keep]
            images = [images[i] for i in keep]
            rest = [rest[i] for i in keep]
        kept = [(i, batch[i]) for i in keep]  # (batch position, sample), to name them in errors
        if self.training:
            texts = sample_sentences(
                pools,
                self._rng(),
                num_sentences=self.num_sentences,
                keep_order=self.keep_order,
                separator=self.separator,
            )
        else:
            texts = [self.separator.join(p) for p in pools]
        out: dict[str, Any] = {}
        if self.image_key is not None:
            out[self.image_key] = self._collate(images, self.image_key, kept)
        out[_TEXT] = texts
        if self.tokenizer is not None:
            self._tokenize(texts, out)
        if self.group_key is not None:
            _put(out, self.group_key, text_group_ids(texts), "group_key")
        if self.on_empty == "drop":
            _put(out, _DROPPED, len(batch) - len(keep), "the drop count")
        for key in rest[0]:
            values = [other[key] for other in rest]
            value = values if key in self.list_keys else self._collate(values, key, kept)
            _put(out, key, value, "sample key")
        return out

    def _unpack_batch(
        self, batch: Sequence[Any]
    ) -> tuple[list[Any], list[Any], list[Mapping[str, Any]]]:
        """``(reports, images, other fields)`` of the samples; different keys raise naming one."""
        text_key, image_key = self.text_key, self.image_key
        n_fixed = (text_key is not None) + (image_key is not None)
        parts = [
            (s[text_key], None if image_key is None else s[image_key], {})
            if type(s) is dict  # fast path: exactly {image, report}
            and len(s) == n_fixed
            and text_key in s
            and (image_key is None or image_key in s)
            else self._unpack(s, i)
            for i, s in enumerate(batch)
        ]
        reports, images, rest = (list(column) for column in zip(*parts, strict=True))
        for i, other in enumerate(rest):
            if other.keys() != rest[0].keys():
                diff = sorted(map(str, set(other) ^ set(rest[0])))
                raise KeyError(
                    f"{_NAME}: {self._at(i, batch[i])} and batch position 0 differ in keys {diff!r}"
                )
        return reports, images, rest

    def _handle_empty(self, batch: Sequence[Any], pools: list[tuple[str, ...]]) -> list[int]:
        """Indices of the samples kept; raises or logs for those without a sentence."""
        empty = [i for i, p in enumerate(pools) if not p]
        if self.on_empty == "raise":
            raise self._empty_error(self._where(empty[0], batch[empty[0]]))
        names = "; ".join(self._at(i, batch[i]) for i in empty)
        if len(empty) == len(batch):
            raise ValueError(
                f"{_NAME}: every sample of the batch has no sentence in "
                f"{self.pool.describe()} ({names}); on_empty='drop' cannot return an empty batch: "
                "filter such reports out of the dataset"
            )
        self.num_dropped += len(empty)
        what = f"{len(empty)} of {len(batch)} samples with no sentence in {self.pool.describe()}"
        logger.warning(
            "%s: dropped %s (with their images and other fields): %s", _NAME, what, names
        )
        return [i for i, p in enumerate(pools) if p]

    def _unpack(self, sample: Any, i: int) -> tuple[Any, Any, Mapping[str, Any]]:
        if isinstance(sample, Mapping):
            for arg, key in (("image_key", self.image_key), ("text_key", self.text_key)):
                if key is not None and key not in sample:
                    raise KeyError(
                        f"{_NAME}: {self._at(i, sample)} lacks key {key!r} ({arg}); "
                        f"keys: {sorted(map(str, sample))!r}"
                    )
            image = sample[self.image_key] if self.image_key is not None else None
            report = sample if self.text_key is None else sample[self.text_key]
            skip = {self.image_key, self.text_key, *self._section_keys()}
            return report, image, {k: v for k, v in sample.items() if k not in skip}
        if isinstance(sample, (tuple, list)) and len(sample) == 2:
            if self.image_key is None:
                raise TypeError(
                    f"{_NAME}: batch position {i} is an (image, report) pair but image_key=None"
                )
            return sample[1], sample[0], {}
        raise TypeError(
            f"{_NAME}: batch position {i} must be a mapping or an (image, report) pair, "
            f"got {type(sample).__name__}"
            + (f" of length {len(sample)}" if isinstance(sample, (tuple, list)) else "")
        )

    def _tokenize(self, texts: list[str], out: dict[str, Any]) -> None:
        assert self.tokenizer is not None
        result = self.tokenizer(texts, **self.tokenizer_kwargs)
        if isinstance(result, torch.Tensor):
            result = {self.token_key: result}
        elif not (hasattr(result, "keys") and hasattr(result, "__getitem__")):  # e.g. BatchEncoding
            raise TypeError(
                f"{_NAME}: the tokenizer must return a tensor or a mapping of tensors, "
                f"got {type(result).__name__}"
            )
        for key in result.keys():
            value = result[key]
            if isinstance(value, torch.Tensor) and (
                value.dim() == 0 or value.shape[0] != len(texts)
            ):
                raise ValueError(
                    f"{_NAME}: tokenizer output {key!r} has shape {tuple(value.shape)}, "
                    f"expected a first dimension of {len(texts)} (the batch size)"
                )
            _put(out, key, value, "tokenizer output")


def _layout(value: Any) -> tuple[str, str]:
    """(type name, shape) of a value to collate, for error messages."""
    shape = getattr(value, "shape", None)
    return type(value).__name__, f"shape {tuple(shape)}" if shape is not None else "(no shape)"


def _put(out: dict[str, Any], key: str, value: Any, what: str) -> None:
    if key in out:
        raise ValueError(f"{_NAME}: {what} {key!r} collides with an output key; rename it")
    out[key] = value


def _tokenizer_kwargs(tokenizer: Any, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of every tokenizer call (HF-looking tokenizers get padding)."""
    if kwargs is None:
        is_hf = tokenizer is not None and hasattr(tokenizer, "model_input_names")
        return {"padding": True, "truncation": True, "return_tensors": "pt"} if is_hf else {}
    return dict(check_type(f"{_NAME}: tokenizer_kwargs", kwargs, Mapping, "a mapping or None"))
