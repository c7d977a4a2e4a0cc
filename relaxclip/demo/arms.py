"""The demo's experimental arms as data: one frozen :class:`Arm` record per arm.

Adding an arm is one line in :data:`ARMS`; the runner, results.json, the table, the plots and
the conclusion line pick it up from there.  Every fine-tuned arm starts from the same
pre-trained checkpoint and gets the identical budget (data, batch order, steps, optimizer,
schedule, seeds); arms differ only in the fields of their record:

* ``text``: ``"whole"`` pairs each image with its whole report (findings + impression),
  ``"sampled"`` with one random report sentence (``SentenceSampler(num_sentences=1)``);
* ``threshold``: the positive-pair relaxation threshold θ of
  :class:`~relaxclip.loss.RelaxedContrastiveLoss`: ``None`` (plain CLIP loss), an absolute
  cosine in (-1, 1], or :data:`CONFIGURED` (the run's ``DemoConfig.threshold``, i.e.
  ``--threshold``).  A quantile threshold (issue 18) is meant to become one more kind of value
  of this field, resolved in :meth:`Arm.loss_kwargs`;
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
        if not self.finetune and (self.text != "whole" or t is not None or self.text_groups):
            raise ValueError(f"Arm {self.label}: an arm without fine-tuning has no training text")

    @property
    def sampled(self) -> bool:
        """Whether the arm trains on one random sentence per report."""
        return self.text == "sampled"

    def resolve_threshold(self, configured: float) -> float | None:
        """The absolute θ this arm trains with (``configured`` stands in for :data:`CONFIGURED`)."""
        if self.threshold == CONFIGURED:
            return float(configured)
        return None if self.threshold is None else float(self.threshold)

    def loss_kwargs(self, configured: float) -> dict[str, Any]:
        """Keyword arguments of :class:`~relaxclip.loss.RelaxedContrastiveLoss` for this arm."""
        return {"threshold": self.resolve_threshold(configured)}


ARMS: tuple[Arm, ...] = (
    Arm("pretrained", "pre-trained, no fine-tuning", finetune=False),
    Arm("a", "(a) CLIP loss, whole reports"),
    Arm("b", "(b) + sentence sampling", text="sampled"),
    Arm("c", "(c) + pos.-pair relaxation", threshold=CONFIGURED),
    Arm("d", "(d) + both", text="sampled", threshold=CONFIGURED),
    Arm("e", "(e) + both + text groups", text="sampled", threshold=CONFIGURED, text_groups=True),
)
"""The default arms, in run and report order."""


def sweep_arms(thresholds: Sequence[float]) -> tuple[Arm, ...]:
    """Arm (d) once per absolute θ in ``thresholds`` (sorted, duplicates dropped): the sweep.

    Labels are ``"d@<θ>"`` (``f"{θ:g}"``) for display and results.json keys only; the θ of a
    sweep arm is its ``threshold`` field, never parsed back from the label.
    """
    values = sorted({float(t) for t in thresholds})
    for t in values:
        if not math.isfinite(t):
            raise ValueError(f"sweep thresholds must be finite, got {t}")
    return tuple(
        Arm(f"d@{t:g}", f"(d) + both, threshold {t:g}", "sampled", t, sweep=True) for t in values
    )
