"""The loss open_clip's trainer uses: relaxclip's, with text groups, logged statistics, θ calibration."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from typing import Any

import torch

from relaxclip._checks import check_int
from relaxclip.calibration import calibrate_threshold
from relaxclip.distributed import DistributedMode
from relaxclip.integrations.open_clip_train.args import SUPPORTED_OPEN_CLIP
from relaxclip.loss import RelaxedContrastiveLoss, positive_pair_stats

_log = logging.getLogger("relaxclip.open_clip_train")
_MISMATCH = (
    "open_clip's train loop no longer matches this integration (supported: "
    f"open_clip_torch{SUPPORTED_OPEN_CLIP})"
)


class TextGroupFeed:
    """Carries the text-group ids of open_clip's training batches from the DataLoader to the loss.

    open_clip's loop cannot pass per-batch data to the loss, so the train loader
    (:class:`~relaxclip.integrations.open_clip_train.data.GroupedLoader`) calls :meth:`push` with
    every batch's ids, ``LongTensor (b,)``, and the loss calls :meth:`take` with the number of
    feature rows it got. The loop runs in windows of ``accum_freq`` batches and calls the loss
    ``accum_freq`` times on the window's features concatenated in batch order, so :meth:`take`
    returns the window's ids concatenated in batch order for each of those calls.

    Raises ``RuntimeError`` at run time when the pairing breaks: :meth:`take` without a complete
    window or more than ``accum_freq`` times per window, a row count different from the window's,
    or :meth:`push` before the previous window's calls. :meth:`start_epoch` discards a window
    left incomplete at the end of an epoch. Counters: ``windows``, ``rows`` and ``shared_rows``
    (rows whose id occurs more than once in their window).
    """

    def __init__(self, accum_freq: int = 1) -> None:
        self.accum_freq = check_int("accum_freq (--accum-freq)", accum_freq, minimum=1)
        self._pending: list[torch.Tensor] = []
        self._ready: torch.Tensor | None = None
        self._uses_left = 0
        self.windows = self.rows = self.shared_rows = 0

    def start_epoch(self) -> None:
        """Forget any window (a new pass over the train loader begins)."""
        self._pending, self._ready, self._uses_left = [], None, 0

    def push(self, groups: torch.Tensor) -> None:
        """Add the ids ``(b,)`` int64 of the batch the loop is about to process."""
        if self._uses_left:
            raise RuntimeError(
                f"--text-groups: open_clip's train loop fetched a new batch after calling the loss "
                f"{self.accum_freq - self._uses_left} of {self.accum_freq} times for the previous "
                f"{self.accum_freq} batch(es) (--accum-freq {self.accum_freq}); {_MISMATCH}"
            )
        if not isinstance(groups, torch.Tensor) or groups.dim() != 1:
            raise TypeError(
                "--text-groups: the train batch's group ids must be a 1-D LongTensor, got "
                f"{type(groups).__name__}{tuple(getattr(groups, 'shape', ()))}"
            )
        self._pending.append(groups)
        if len(self._pending) == self.accum_freq:
            ready = torch.cat(self._pending)
            self._pending = []
            self._ready, self._uses_left = ready, self.accum_freq
            _, inverse, counts = torch.unique(ready, return_inverse=True, return_counts=True)
            self.windows += 1
            self.rows += int(ready.numel())
            self.shared_rows += int((counts[inverse] > 1).sum())

    def take(self, rows: int) -> torch.Tensor:
        """The current window's ids, ``LongTensor (rows,)``, for one loss call on ``rows`` rows."""
        if self._ready is None or self._uses_left == 0:
            why = (
                f"already called {self.accum_freq} times for the current window"
                if self._ready is not None
                else "no complete window of train batches was fetched through relaxclip's loader"
            )
            raise RuntimeError(
                f"--text-groups: the loss was called without group ids for its batch: {why} "
                f"(--accum-freq {self.accum_freq}); {_MISMATCH}"
            )
        if self._ready.shape[0] != rows:
            raise RuntimeError(
                f"--text-groups: the loss got {rows} feature rows, but the last "
                f"{self.accum_freq} train batch(es) hold {self._ready.shape[0]} rows; {_MISMATCH}"
            )
        self._uses_left -= 1
        return self._ready


class LoggedLosses(dict[str, torch.Tensor]):
    """open_clip's loss dict plus relaxation statistics that open_clip logs but does not sum.

    open_clip's loop sums ``losses.values()`` into the loss it differentiates and logs every
    ``losses.items()`` entry (its log lines, tensorboard, wandb) at each ``--log-every-n-steps``
    step. ``values()`` here yields the loss terms only; the keys in ``stats`` are logged.
    """

    def __init__(self, losses: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> None:
        super().__init__(losses)
        self.update(stats)
        self.stats = frozenset(stats)

    def values(self) -> Any:
        return [v for k, v in self.items() if k not in self.stats]


def relax_stats(
    image_features: torch.Tensor, text_features: torch.Tensor, threshold: float | None
) -> dict[str, torch.Tensor]:
    """``relax_theta`` (with a θ), ``relax_share`` and ``pos_cos_p10/p50/p90`` of a batch."""
    stats = positive_pair_stats(image_features, text_features, threshold)
    out = {} if threshold is None else {"relax_theta": torch.tensor(float(threshold))}
    out["relax_share"] = stats["relaxed_share"]
    for q in ("10", "50", "90"):
        out[f"pos_cos_p{q}"] = stats[f"positive_sim_q{q}"]
    return out


class OpenClipLoss(RelaxedContrastiveLoss):
    """:class:`RelaxedContrastiveLoss` with open_clip's ``ClipLoss.forward`` signature.

    With ``feed`` (``--text-groups``) each call gets ``groups=feed.take(rows)``, this process's
    ids, which the loss gathers with the features under ``torch.distributed``. With
    ``output_dict=True`` (open_clip's loop) it returns :class:`LoggedLosses`: the loss and
    :func:`relax_stats` of the batch (this rank's pairs; one O(B·D) pass). Other arguments:
    those of :class:`RelaxedContrastiveLoss`.
    """

    def __init__(
        self, threshold: float | None, *, feed: TextGroupFeed | None = None, **kwargs: Any
    ) -> None:
        super().__init__(threshold=threshold, **kwargs)
        self.feed = feed
        self.logged_threshold = threshold

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float | None = None,
        output_dict: bool = False,
        *,
        groups: torch.Tensor | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"logit_bias": logit_bias} if logit_bias is not None else {}
        if self.feed is not None:
            if groups is not None:
                raise TypeError("groups must not be passed: this loss takes them from its feed")
            rows = image_features.shape[0] if isinstance(image_features, torch.Tensor) else -1
            kwargs["groups"] = self.feed.take(rows)
        elif groups is not None:
            kwargs["groups"] = groups
        out = super().forward(
            image_features=image_features,
            text_features=text_features,
            logit_scale=logit_scale,
            output_dict=output_dict,
            **kwargs,
        )
        if not output_dict:
            return out
        stats = relax_stats(image_features, text_features, self.logged_threshold)
        return LoggedLosses(dict(out), stats)

    def extra_repr(self) -> str:
        groups = (
            "" if self.feed is None else f", text_groups=True (accum_freq={self.feed.accum_freq})"
        )
        return super().extra_repr() + groups


def make_loss(
    args: argparse.Namespace, threshold: float | None, feed: TextGroupFeed | None = None
) -> OpenClipLoss:
    """The loss open_clip's trainer uses in place of ``create_loss(args)``.

    ``args`` is open_clip's parsed namespace after ``init_distributed_device``. One process:
    ``distributed=False``. Several: ``distributed=True`` and ``distributed_mode`` ``"local"``
    with ``--local-loss``, else ``"global"``; relaxclip always gathers with gradient (a warning
    says so when ``--gather-with-grad`` is off).
    """
    world = int(getattr(args, "world_size", 1))
    distributed = bool(getattr(args, "distributed", False)) and world > 1
    mode: DistributedMode = "local" if getattr(args, "local_loss", False) else "global"
    loss = OpenClipLoss(threshold, distributed=distributed, distributed_mode=mode, feed=feed)
    if distributed and not getattr(args, "gather_with_grad", False):
        _log.warning(
            "relaxclip: --gather-with-grad is off, but relaxclip always gathers features with "
            "gradient (exact global-batch gradients); open_clip's ClipLoss would drop the other "
            "ranks' gradient contributions here. Pass --gather-with-grad to make this explicit."
        )
    where = f", distributed_mode={mode!r}" if distributed else ""
    _log.info(
        "relaxclip: loss %s, distributed=%s%s (world size %d)", loss, distributed, where, world
    )
    return loss


def calibrate(
    model: torch.nn.Module, batches: Iterable[Any], args: argparse.Namespace, quantile: float
) -> float:
    """θ: the ``quantile`` of ``model``'s positive cosines on ``batches`` (all ranks together).

    ``batches``: open_clip's ``(images, texts, ...)`` training batches. The model runs in eval
    mode (restored afterwards) under ``torch.no_grad()`` with open_clip's autocast and input
    dtype for ``--precision``; :func:`~relaxclip.calibrate_threshold` gathers every rank's
    cosines, so each rank gets the same θ.
    """
    from open_clip import get_input_dtype
    from open_clip_train.precision import get_autocast

    device = torch.device(args.device)
    autocast = get_autocast(args.precision, device_type=device.type)
    dtype = get_input_dtype(args.precision)
    pairs, was_training = [], model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                images = batch[0].to(device=device, dtype=dtype)
                with autocast():
                    out = model(images, batch[1].to(device=device))
                pairs.append((out["image_features"].float(), out["text_features"].float()))
    finally:
        model.train(was_training)
    theta = calibrate_threshold(pairs, quantile)
    rows = sum(p[0].shape[0] for p in pairs)
    _log.info(
        "relaxclip: calibrated θ = %.6g: the %g-quantile of the positive cosines of every "
        "rank's first training batches (%d pairs in %d batches on this rank)",
        theta,
        quantile,
        rows,
        len(pairs),
    )
    return theta
