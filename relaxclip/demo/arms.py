"""The demo's experimental arms as data: one frozen :class:`Arm` record per arm.

Adding an arm is one line in :data:`ARMS`; the runner, results.json, the table, the plots and
the conclusion line pick it up from there.  Every fine-tuned arm starts from the same
pre-trained checkpoint and gets the identical budget (data, batch order, steps, optimizer,
schedule, seeds); arms differ only in the fields of their record:

* ``text``: ``"whole"`` pairs each image with its whole report (findings + impression),
  ``"sampled"`` with one random report sentence (``SentenceSampler(num_sentences=1)``);
* ``threshold``: the positive-pair relaxation threshold θ of
  :class:`~relaxclip.loss.RelaxedContrastiveLoss`: ``None`` (plain CLIP loss, unless
  ``relax_quantile`` is set), an absolute cosine in (-1, 1], or :data:`CONFIGURED`: the run's
  configured relaxation, i.e. ``DemoConfig.relax_quantile`` when set (``--relax-quantile``),
  else ``DemoConfig.threshold`` (``--threshold``); the default of both is set in one place,
  :mod:`relaxclip.demo.config`;
* ``relax_quantile``: a quantile threshold q in (0, 1) (issue 18): θ is the q-quantile of each
  batch's positive cosines (``RelaxedContrastiveLoss(relax_quantile=q)``); exclusive with an
  absolute ``threshold``;
* ``text_groups``: pass text-group ids (``SentenceSampler(group_key=...)``) to the loss as
  ``groups=`` so that identical sentences in a batch are not negatives (issue 14); the ids are
  :func:`~relaxclip.sampling.text_group_ids` of the sampled sentences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "ARMS",
    "CONFIGURED",
    "REFERENCE",
    "Arm",
    "TextMode",
    "sweep_arms",
    "sweep_key",
]

TextMode = Literal["whole", "sampled"]

CONFIGURED: Final = "configured"
"""``Arm.threshold`` value meaning "the run's configured threshold" (``--threshold``)."""

REFERENCE: Final = "a"
"""Label of the arm every other arm is compared with (plain CLIP fine-tuning)."""


@dataclass(frozen=True)
class Arm:
    """One experimental arm (see the module docstring for the fields' meaning).

    ``finetune=False`` marks the pre-trained checkpoint itself, evaluated without fine-tuning
    (``text``, ``threshold`` and ``text_groups`` then describe nothing and must keep their
    defaults).  ``sweep`` marks arms of the threshold sweep (reported in the sweep table, not in
    the conclusion line).
    """

    label: str
    name: str
    text: TextMode = "whole"
    threshold: float | Literal["configured"] | None = None
    text_groups: bool = False
    finetune: bool = True
    sweep: bool = False
    relax_quantile: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"Arm.label must be a non-empty str, got {self.label!r}")
        if self.text not in ("whole", "sampled"):
            raise ValueError(
                f"Arm {self.label}: text must be 'whole' or 'sampled', got {self.text!r}"
            )
        t = self.threshold
        if t is not None and t != CONFIGURED:
            if isinstance(t, bool) or not isinstance(t, int | float) or not -1.0 < t <= 1.0:
                raise ValueError(
                    f"Arm {self.label}: threshold must be None, {CONFIGURED!r} or a number in "
                    f"(-1, 1], got {t!r}"
                )
        q = self.relax_quantile
        if q is not None:
            if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 < q < 1.0:
                raise ValueError(
                    f"Arm {self.label}: relax_quantile must be None or a number in (0, 1), "
                    f"got {q!r}"
                )
            if t is not None:
                raise ValueError(
                    f"Arm {self.label}: threshold and relax_quantile are mutually exclusive "
                    f"(got threshold={t!r}, relax_quantile={q!r})"
                )
        relaxed = t is not None or q is not None
        if not self.finetune and (self.text != "whole" or relaxed or self.text_groups):
            raise ValueError(f"Arm {self.label}: an arm without fine-tuning has no training text")

    @property
    def sampled(self) -> bool:
        """Whether the arm trains on one random sentence per report."""
        return self.text == "sampled"

    def resolve_threshold(
        self, configured: float, configured_quantile: float | None = None
    ) -> float | None:
        """The absolute θ this arm trains with (``None``: none, or a quantile threshold).

        :data:`CONFIGURED` stands for the run's configured relaxation: ``configured_quantile``
        when it is not ``None`` (then there is no absolute θ), else ``configured``.
        """
        if self.threshold == CONFIGURED:
            return None if configured_quantile is not None else float(configured)
        return None if self.threshold is None else float(self.threshold)

    def resolve_quantile(self, configured_quantile: float | None = None) -> float | None:
        """The quantile q of this arm's quantile threshold, or ``None`` (see
        :meth:`resolve_threshold` for :data:`CONFIGURED`)."""
        if self.threshold == CONFIGURED:
            return configured_quantile
        return None if self.relax_quantile is None else float(self.relax_quantile)

    def loss_kwargs(
        self, configured: float, configured_quantile: float | None = None
    ) -> dict[str, Any]:
        """Keyword arguments of :class:`~relaxclip.loss.RelaxedContrastiveLoss` for this arm:
        ``{"relax_quantile": q}`` for a quantile threshold, else ``{"threshold": θ or None}``."""
        q = self.resolve_quantile(configured_quantile)
        if q is not None:
            return {"relax_quantile": q}
        return {"threshold": self.resolve_threshold(configured, configured_quantile)}


ARMS: tuple[Arm, ...] = (
    Arm("pretrained", "pre-trained, no fine-tuning", finetune=False),
    Arm("a", "(a) CLIP loss, whole reports"),
    Arm("b", "(b) + sentence sampling", text="sampled"),
    Arm("c", "(c) + pos.-pair relaxation", threshold=CONFIGURED),
    Arm("d", "(d) + both", text="sampled", threshold=CONFIGURED),
    Arm("e", "(e) + both + text groups", text="sampled", threshold=CONFIGURED, text_groups=True),
)
"""The default arms, in run and report order."""


def sweep_key(threshold: float | None = None, relax_quantile: float | None = None) -> str:
    """The display / results.json key of a sweep setting: ``"0.6"`` for an absolute θ
    (``f"{θ:g}"``), ``"q=0.7"`` for a quantile threshold."""
    if (threshold is None) == (relax_quantile is None):
        raise ValueError("sweep_key: pass exactly one of threshold and relax_quantile")
    return f"q={relax_quantile:g}" if relax_quantile is not None else f"{threshold:g}"


def sweep_arms(thresholds: Sequence[float], quantiles: Sequence[float] = ()) -> tuple[Arm, ...]:
    """Arm (d) once per absolute θ in ``thresholds``, then once per quantile q in ``quantiles``
    (each sorted, duplicates dropped): the sweep.

    Labels are ``"d@<key>"`` (:func:`sweep_key`: ``"d@0.6"``, ``"d@q=0.7"``) for display and
    results.json keys only; the setting of a sweep arm is its ``threshold`` /
    ``relax_quantile`` field, never parsed back from the label.
    """
    values = sorted({float(t) for t in thresholds})
    for t in values:
        if not math.isfinite(t):
            raise ValueError(f"sweep thresholds must be finite, got {t}")
    qs = sorted({float(q) for q in quantiles})
    absolute = tuple(
        Arm(f"d@{t:g}", f"(d) + both, threshold {t:g}", "sampled", t, sweep=True) for t in values
    )
    quantile = tuple(
        Arm(
            f"d@{sweep_key(relax_quantile=q)}",
            f"(d) + both, quantile q={q:g}",
            "sampled",
            sweep=True,
            relax_quantile=q,
        )
        for q in qs
    )
    return absolute + quantile
