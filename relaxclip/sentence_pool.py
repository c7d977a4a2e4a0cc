"""Candidate sentences of radiology reports: section choice, fallback chain, splitting, cache."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from relaxclip._checks import check_bool, check_int
from relaxclip.sentences import (
    HEADER_ALIASES,
    PREAMBLE_KEY,
    check_names,
    parse_report_sections,
    split_sentences,
)

__all__ = ["REPORT", "ReportTypeError", "SentencePool"]

#: A fallback step meaning "every section of the report" (see :class:`SentencePool`).
REPORT = "report"

#: Section names the report parser produces (the keys the ``"report"`` step reads in a mapping).
KNOWN_SECTIONS: frozenset[str] = frozenset(HEADER_ALIASES) | {PREAMBLE_KEY}


class ReportTypeError(TypeError):
    """A report (or section) of the wrong type; ``detail`` is the message without the prefix."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.detail = detail


class SentencePool:
    """The candidate sentences of reports, chosen by section with a fallback chain, cached.

    A report is a ``str`` (used whole without a header) or a mapping of section name to text;
    sections are split with :func:`~relaxclip.sentences.split_sentences` (``docs/sentences.md``).

    Args:
        sections: section names whose sentences are the candidates, or ``None`` for all.
        fallback: tried when the sections give no sentence: ``None``, ``"report"`` (every
            section) or a chain of section names optionally ending with ``"report"``.
        cache_size: distinct reports whose candidates are cached (oldest evicted; ``0``: off).
        name: the name error messages start with.
        custom_sections: accept names the report parser never produces (mapping reports).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: empty ``sections``, an unknown section name or an invalid fallback chain.

    Example:
        >>> pool = SentencePool(("findings", "impression"), fallback=("indication",))
        >>> pool.candidates("FINDINGS: Heart normal. Lungs clear.")
        ('Heart normal.', 'Lungs clear.')
    """

    def __init__(
        self,
        sections: Sequence[str] | None = ("findings", "impression"),
        *,
        fallback: str | Sequence[str] | None = None,
        cache_size: int = 50_000,
        name: str = "SentencePool",
        custom_sections: bool = False,
    ) -> None:
        self.name = name
        if sections is not None:
            expected = "a sequence of section names (e.g. ('findings', 'impression')) or None"
            sections = check_names(f"{name}: sections", sections, expected)
            if not sections:
                raise ValueError(f"{name}: sections must not be empty (use None for all)")
        self.sections: tuple[str, ...] | None = sections
        self.fallback: tuple[str, ...] = self._check_fallback(fallback)
        self.cache_size: int = check_int(f"{name}: cache_size", cache_size, minimum=0)
        self._named: tuple[str, ...] = tuple(s for s in self.fallback if s != REPORT)
        # names the parser never produces would silently match nothing in a string report
        unknown = [s for s in (*(sections or ()), *self._named) if s not in KNOWN_SECTIONS]
        if not check_bool(f"{name}: custom_sections", custom_sections) and unknown:
            raise ValueError(
                f"{name}: sections and fallback must be section names the report parser "
                f"produces ({', '.join(map(repr, sorted(KNOWN_SECTIONS)))}), got {unknown!r}; for keys of "
                "mapping reports with other names pass custom_sections=True"
            )
        self._whole: bool = REPORT in self.fallback
        # mapping reports: the values that decide the candidates, when that is a fixed key list
        self._lookup_keys: tuple[str, ...] | None = (
            None if sections is None or self._whole else (*sections, *self._named)
        )
        self._cache: dict[Any, tuple[str, ...]] = {}

    def _check_fallback(self, fallback: Any) -> tuple[str, ...]:
        """The fallback chain as a tuple; an invalid chain raises saying why."""
        if fallback is None:
            return ()
        if isinstance(fallback, str) and fallback != REPORT:
            raise ValueError(
                f"{self.name}: fallback must be None, 'report' or a sequence of section names "
                f"(optionally ending with 'report'), got {fallback!r}; for one section write "
                f"({fallback!r},)"
            )
        expected = "None, 'report' or a sequence of section names"
        given = (fallback,) if isinstance(fallback, str) else fallback
        chain = check_names(f"{self.name}: fallback", given, expected)
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

    def candidates(self, report: Any) -> tuple[str, ...]:
        """Candidate sentences of ``report`` (cached); ``()`` when none; ``ReportTypeError``."""
        key = self._key(report)
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
        """What is tried, in order, for error messages (``"sections (...), then section ..."``)."""
        steps = ["every section" if self.sections is None else f"sections {self.sections!r}"]
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
        """The state without the cache (workers start empty)."""
        return {**self.__dict__, "_cache": {}}

    def __repr__(self) -> str:
        return (
            f"SentencePool(sections={self.sections!r}, fallback={self.fallback!r}, "
            f"cache_size={self.cache_size!r})"
        )

    def _key(self, report: Any) -> Any:
        """The cache key of ``report``; raises on a bad report type."""
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
            items = parse_report_sections(report)
            if set(items) <= {PREAMBLE_KEY}:  # no header: the whole text
                return _sentences(items.values())
        else:
            items = dict(self._mapping_items(report))
        for step in self._steps():
            if step is None:
                texts: Iterable[str] = items.values()
            elif isinstance(report, str):
                texts = (v for k, v in items.items() if k in step)  # report order
            else:
                texts = (items[n] for n in step if n in items)  # the order of the step
            found = _sentences(texts)
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
    """The sentences of ``texts``, in order."""
    return tuple(sentence for text in texts for sentence in split_sentences(text))
