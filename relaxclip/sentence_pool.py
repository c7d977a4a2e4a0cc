"""Candidate sentences of radiology reports: section choice, fallback chain, splitting, cache.

:class:`SentencePool` turns one report (a string, or a mapping of section name to text) into the
tuple of its candidate sentences, the sentences a sampler may draw from. It parses and splits with
:func:`~relaxclip.sentences.parse_report_sections` and :func:`~relaxclip.sentences.split_sentences`
and caches the result per distinct report in a bounded cache. :class:`~relaxclip.sampling.
SentenceSampler` uses one; it is usable on its own (count sentences, find empty reports before
training, or feed another sampler)::

    pool = SentencePool(sections=("findings", "impression"), fallback=("indication",))
    pool.candidates("FINDINGS: Heart normal. Lungs clear.")  # ('Heart normal.', 'Lungs clear.')
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from relaxclip.sentences import HEADER_ALIASES, PREAMBLE_KEY, parse_report_sections, split_sentences

__all__ = ["REPORT", "ReportTypeError", "SentencePool"]

#: A fallback step meaning "every section of the report" (see :class:`SentencePool`).
REPORT = "report"

#: Keys of a mapping report that count as sections for the ``"report"`` fallback step: the
#: canonical names of :data:`~relaxclip.sentences.HEADER_ALIASES` and ``"preamble"``.
KNOWN_SECTIONS: frozenset[str] = frozenset(HEADER_ALIASES) | {PREAMBLE_KEY}


class ReportTypeError(TypeError):
    """A report (or one of its sections) of the wrong type; ``detail`` is the message without the
    name of the raising object, so a caller can prefix where the report came from."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.detail = detail


class SentencePool:
    """The candidate sentences of reports, chosen by section with a fallback chain, cached.

    Args:
        sections: canonical section names whose sentences are the candidates (e.g.
            ``("findings", "impression")``, the default), or ``None`` for every section. Order of
            the candidates: for a string report, the order in which the sections appear in it; for
            a mapping report, the order of ``sections`` (the mapping's order for ``None``).
        fallback: what to use when the chosen sections give no sentence. ``None`` (default):
            nothing (:meth:`candidates` returns ``()``). Otherwise a chain tried in order until a
            step gives a sentence: a section name (``"indication"``) or ``"report"`` (:data:`REPORT`:
            every section of the report, in report order; for a string report also the text before
            the first header; for a mapping report every key in :data:`KNOWN_SECTIONS` plus the
            chosen and fallback sections, never other string fields such as ``uid``). A plain
            string other than ``"report"`` is rejected (write ``("indication",)`` for a one-section
            chain); ``fallback="report"`` == ``("report",)``. ``"report"`` must
            be the last step (nothing after it can give a sentence); a section already in
            ``sections`` or listed twice is rejected; named steps need explicit ``sections``.
        cache_size: at most this many distinct reports keep their candidates cached (oldest evicted
            first); ``0`` disables the cache. The cache is not pickled (a copy starts empty).
        name: the name error messages start with (:class:`~relaxclip.sampling.SentenceSampler`
            passes its own).

    A report is either

    * a ``str``: parsed with :func:`~relaxclip.sentences.parse_report_sections`. A string with no
      recognised header at all (only ``"preamble"`` text, e.g. a bare impression) is used whole,
      since it has no sections to choose from;
    * a mapping of section name to text (e.g. ``{"findings": ..., "impression": ...}``, or a record
      of :func:`~relaxclip.data.openi.read_openi_reports`): missing keys, ``None`` and blank values
      count as absent; a chosen or fallback section that is neither ``str`` nor ``None`` raises
      :class:`ReportTypeError` (a ``TypeError``); other non-string fields (lists of MeSH terms,
      image ids) are ignored.

    Each section is split with :func:`~relaxclip.sentences.split_sentences`.
    """

    def __init__(
        self,
        sections: Sequence[str] | None = ("findings", "impression"),
        *,
        fallback: str | Sequence[str] | None = None,
        cache_size: int = 50_000,
        name: str = "SentencePool",
    ) -> None:
        self.name = name
        if sections is not None:
            if isinstance(sections, str) or not all(isinstance(s, str) for s in sections):
                raise TypeError(
                    f"{name}: sections must be a sequence of str section names "
                    f"(e.g. ('findings', 'impression')) or None, got {sections!r}"
                )
            if len(sections) == 0:
                raise ValueError(f"{name}: sections must not be empty (use None for all)")
            sections = tuple(sections)
        self.sections: tuple[str, ...] | None = sections
        self.fallback: tuple[str, ...] = self._check_fallback(fallback)
        if (
            isinstance(cache_size, bool)
            or not isinstance(cache_size, numbers.Integral)
            or cache_size < 0
        ):
            raise ValueError(f"{name}: cache_size must be an int >= 0, got {cache_size!r}")
        self.cache_size: int = int(cache_size)
        self._named: tuple[str, ...] = tuple(s for s in self.fallback if s != REPORT)
        self._whole: bool = REPORT in self.fallback
        # mapping reports: the values that decide the candidates, when that is a fixed key list
        self._lookup_keys: tuple[str, ...] | None = (
            None if sections is None or self._whole else (*sections, *self._named)
        )
        self._cache: dict[Any, tuple[str, ...]] = {}

    def _check_fallback(self, fallback: Any) -> tuple[str, ...]:
        if fallback is None:
            return ()
        if isinstance(fallback, str) and fallback != REPORT:
            raise ValueError(
                f"{self.name}: fallback must be None, 'report' or a sequence of section names "
                f"(optionally ending with 'report'), got {fallback!r}; for one fallback section "
                f"write ({fallback!r},)"
            )
        chain = (fallback,) if isinstance(fallback, str) else fallback
        if not isinstance(chain, Sequence) or not all(isinstance(s, str) for s in chain):
            raise ValueError(
                f"{self.name}: fallback must be None, 'report' or a sequence of section names "
                f"(optionally ending with 'report'), got {fallback!r}"
            )
        chain = tuple(chain)
        problem = ""
        if not chain:
            problem = "it is empty (use None)"
        elif REPORT in chain[:-1]:
            problem = "'report' must be its last step (no later step can give a sentence)"
        elif len(set(chain)) != len(chain):
            problem = "it lists a step twice"
        elif any(s != REPORT for s in chain) and self.sections is None:
            problem = "named fallback sections need explicit sections (sections=None uses all)"
        elif self.sections is not None and set(chain) & set(self.sections):
            problem = f"steps {sorted(set(chain) & set(self.sections))!r} are already in sections"
        if problem:
            raise ValueError(f"{self.name}: invalid fallback {fallback!r}: {problem}")
        return chain

    # ------------------------------------------------------------------ public
    def candidates(self, report: Any) -> tuple[str, ...]:
        """Candidate sentences of ``report`` (see the class docstring), ``()`` when the chosen
        sections and every fallback step give none. Cached.

        Raises:
            ReportTypeError: ``report`` is not a ``str`` or mapping, or a chosen/fallback section
                is neither ``str`` nor ``None``.
        """
        key = self._key(report)
        if key is not None:
            try:
                hit = self._cache.get(key)
            except TypeError:  # an unhashable section value: _compute raises a clear error
                key, hit = None, None
            if hit is not None:
                return hit
        value = self._compute(report)
        if key is not None and self.cache_size:
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = value
        return value

    def describe(self) -> str:
        """What is tried, in order, as used in error messages (e.g. ``"sections ('findings',
        'impression'), then section 'indication'"``)."""
        if self.sections is None:
            steps = ["every section"]
        else:
            steps = [f"sections {self.sections!r}"]
        steps += [f"section {s!r}" for s in self._named]
        tried = ", then ".join(steps)
        if self._whole:
            return f"the whole report (tried: {tried}, then the whole report)"
        return tried

    def clear_cache(self) -> None:
        """Empty the cache."""
        self._cache.clear()

    def __len__(self) -> int:
        """Number of reports in the cache."""
        return len(self._cache)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __repr__(self) -> str:
        return (
            f"SentencePool(sections={self.sections!r}, fallback={self.fallback!r}, "
            f"cache_size={self.cache_size!r})"
        )

    # ------------------------------------------------------------------ internals
    def _key(self, report: Any) -> Any:
        """The cache key of ``report`` (``None``: not cacheable); raises on a bad report type."""
        if isinstance(report, str):
            return report
        if not isinstance(report, Mapping):
            raise ReportTypeError(
                self.name,
                "the report must be a str or a mapping of section name to str, "
                f"got {type(report).__name__}",
            )
        if self._lookup_keys is not None:
            return tuple(map(report.get, self._lookup_keys))  # validated in _compute on a miss
        return self._mapping_items(report)

    def _compute(self, report: str | Mapping[Any, Any]) -> tuple[str, ...]:
        if isinstance(report, str):
            parsed = parse_report_sections(report)
            if set(parsed) <= {PREAMBLE_KEY}:  # no header: the whole text
                return _sentences(parsed.values())
            for step in self._steps():
                if step is None:
                    found = _sentences(parsed.values())
                else:
                    found = _sentences(v for k, v in parsed.items() if k in step)  # report order
                if found:
                    return found
            return ()
        items = dict(self._mapping_items(report))
        for step in self._steps():
            if step is None:
                found = _sentences(items.values())
            else:
                found = _sentences(items[n] for n in step if n in items)
            if found:
                return found
        return ()

    def _steps(self) -> Iterable[tuple[str, ...] | None]:
        """The chain: a tuple of section names per step, ``None`` for every section."""
        yield self.sections
        for name in self._named:
            yield (name,)
        if self._whole:
            yield None

    def _mapping_items(self, report: Mapping[Any, Any]) -> tuple[tuple[str, str], ...]:
        """The text sections of a mapping report that any step can use, in mapping order."""
        items = []
        for name, text in report.items():
            needed = self.sections is None or name in self.sections or name in self._named
            usable = needed or (self._whole and name in KNOWN_SECTIONS)
            if text is None or not usable:
                continue
            if not isinstance(text, str):
                if needed:
                    raise ReportTypeError(
                        self.name,
                        f"section {name!r} must be str or None, got {type(text).__name__}",
                    )
                continue  # non-text fields of a record (mesh, images) are not sections
            items.append((str(name), text))
        return tuple(items)


def _sentences(texts: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for text in texts:
        out.extend(split_sentences(text))
    return tuple(out)
