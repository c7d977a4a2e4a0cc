"""The demo's experimental arms as data: one frozen :class:`Arm` record per arm.

Adding an arm is one line in :data:`ARMS`; the runner, results.json, the table, the plots and
the conclusion line pick it up from there.  Every fine-tuned arm starts from the same
pre-trained checkpoint and gets the identical budget (data, batch order, steps, optimizer,
schedule, seeds); arms differ only in the fields of their record:

* ``text``: ``"whole"`` pairs each image with its whole report (findings + impression),
  ``"sampled"`` with one random report sentence (``SentenceSampler(num_sentences=1)``);
* ``threshold``: the positive-pair relaxation threshold θ of
  :class:`~relaxclip.loss.RelaxedContrastiveLoss`: ``None`` (plain CLIP loss, unless
  ``threshold_quantile`` is set), an absolute cosine in (-1, 1], or :data:`CONFIGURED`: the
  run's configured relaxation, i.e. ``DemoConfig.threshold_quantile`` when set
  (``--relax-quantile``), else ``DemoConfig.threshold`` (``--threshold``); the default of both
  is set in one place, :mod:`relaxclip.demo.config`;
* ``threshold_quantile``: a quantile q in (0, 1): θ is calibrated once per seed, before
  fine-tuning, as the q-quantile of the pre-trained model's positive cosines on the first
  fine-tuning batches (:func:`~relaxclip.calibration.calibrate_threshold`), then fixed;
  exclusive with an absolute ``threshold``;
* ``text_groups``: pass text-group ids (``SentenceSampler(group_key=...)``) to the loss as
  ``groups=`` so that identical sentences in a batch are not negatives; the ids are
  :func:`~relaxclip.sampling.text_group_ids` of the sampled sentences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from relaxclip._checks import check_choice, check_real, describe

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
    threshold_quantile: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"Arm.label must be a non-empty str, got {describe(self.label)}")
        check_choice(f"Arm {self.label}: text", self.text, ("whole", "sampled"))
        t = self.threshold
        if t is not None and t != CONFIGURED:
            check_real(f"Arm {self.label}: threshold", t, low=-1.0, high=1.0, low_open=True)
        q = self.threshold_quantile
        if q is not None:
            name = f"Arm {self.label}: threshold_quantile"
            check_real(name, q, low=0.0, high=1.0, low_open=True, high_open=True)
            if t is not None:
                raise ValueError(
                    f"Arm {self.label}: threshold and threshold_quantile are mutually exclusive "
                    f"(got threshold={t!r}, threshold_quantile={q!r})"
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
        """The absolute θ this arm trains with (``None``: none, or a calibrated quantile θ).

        :data:`CONFIGURED` stands for the run's configured relaxation: ``configured_quantile``
        when it is not ``None`` (then θ is calibrated per seed), else ``configured``.
        """
        if self.threshold == CONFIGURED:
            return None if configured_quantile is not None else float(configured)
        return None if self.threshold is None else float(self.threshold)

    def resolve_quantile(self, configured_quantile: float | None = None) -> float | None:
        """The quantile q that calibrates this arm's θ, or ``None`` (see
        :meth:`resolve_threshold` for :data:`CONFIGURED`)."""
        if self.threshold == CONFIGURED:
            return configured_quantile
        return None if self.threshold_quantile is None else float(self.threshold_quantile)


ARMS: tuple[Arm, ...] = (
    Arm("pretrained", "pre-trained, no fine-tuning", finetune=False),
    Arm("a", "(a) CLIP loss, whole reports"),
    Arm("b", "(b) + sentence sampling", text="sampled"),
    Arm("c", "(c) + pos.-pair relaxation", threshold=CONFIGURED),
    Arm("d", "(d) + both", text="sampled", threshold=CONFIGURED),
    Arm("e", "(e) + both + text groups", text="sampled", threshold=CONFIGURED, text_groups=True),
)
"""The default arms, in run and report order."""


def sweep_key(threshold: float | None = None, quantile: float | None = None) -> str:
    """The display / results.json key of a sweep setting: ``"0.6"`` for an absolute θ
    (``f"{θ:g}"``), ``"q=0.7"`` for a θ calibrated at quantile q."""
    if (threshold is None) == (quantile is None):
        raise ValueError("sweep_key: pass exactly one of threshold and quantile")
    return f"q={quantile:g}" if quantile is not None else f"{threshold:g}"


def sweep_arms(thresholds: Sequence[float], quantiles: Sequence[float] = ()) -> tuple[Arm, ...]:
    """Arm (d) once per absolute θ in ``thresholds``, then once per quantile q in ``quantiles``
    (each sorted, duplicates dropped): the sweep.

    Labels are ``"d@<key>"`` (:func:`sweep_key`: ``"d@0.6"``, ``"d@q=0.7"``) for display and
    results.json keys only; the setting of a sweep arm is its ``threshold`` /
    ``threshold_quantile`` field, never parsed back from the label.
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
            f"d@{sweep_key(quantile=q)}",
            f"(d) + both, quantile q={q:g}",
            "sampled",
            sweep=True,
            threshold_quantile=q,
        )
        for q in qs
    )
    return absolute + quantile
