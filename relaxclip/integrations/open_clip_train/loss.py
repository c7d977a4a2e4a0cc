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
_MISMATCH = f"open_clip's loop no longer matches (supported: open_clip_torch{SUPPORTED_OPEN_CLIP})"


class TextGroupFeed:
    r"""Carries the text-group ids of open_clip's training batches from the DataLoader to the loss.

    The train loader :meth:`push`\ es every batch's ids ``LongTensor (b,)``; each of the
    ``accum_freq`` loss calls per window of ``accum_freq`` batches :meth:`take`\ s the window's
    ids in batch order, as open_clip concatenates the features. A broken pairing is a
    ``RuntimeError``. Counters: ``windows``, ``rows``, ``shared_rows`` (ids recurring in a window).
    """

    def __init__(self, accum_freq: int = 1) -> None:
        self.accum_freq = check_int("accum_freq (--accum-freq)", accum_freq, minimum=1)
        self.windows = self.rows = self.shared_rows = 0
        self.start_epoch()

    def start_epoch(self) -> None:
        """Forget any window (a new pass over the train loader begins)."""
        self._pending: list[torch.Tensor] = []
        self._ready: torch.Tensor | None = None
        self._uses_left = 0

    def _mismatch(self, what: str) -> RuntimeError:
        return RuntimeError(f"--text-groups: {what} (--accum-freq {self.accum_freq}); {_MISMATCH}")

    def push(self, groups: torch.Tensor) -> None:
        """Add the ids ``(b,)`` int64 of the batch the loop is about to process."""
        if self._uses_left:
            done = self.accum_freq - self._uses_left
            raise self._mismatch(f"a new batch came after {done} of {self.accum_freq} loss calls")
        self._pending.append(groups)
        if len(self._pending) == self.accum_freq:
            ready = self._ready = torch.cat(self._pending)
            self._pending, self._uses_left = [], self.accum_freq
            _, inverse, counts = torch.unique(ready, return_inverse=True, return_counts=True)
            self.windows += 1
            self.rows += int(ready.numel())
            self.shared_rows += int((counts[inverse] > 1).sum())

    def take(self, rows: int) -> torch.Tensor:
        """The current window's ids, ``LongTensor (rows,)``, for one loss call on ``rows`` rows."""
        if self._ready is None:
            raise self._mismatch("the loss was called before a complete window of train batches")
        if self._uses_left == 0:
            raise self._mismatch(f"the loss was already called {self.accum_freq} times for them")
        if self._ready.shape[0] != rows:
            held = self._ready.shape[0]
            raise self._mismatch(f"the loss got {rows} feature rows, but the window holds {held}")
        self._uses_left -= 1
        return self._ready


class LoggedLosses(dict[str, torch.Tensor]):
    """open_clip's loss dict plus ``stats``: open_clip's loop logs every item (log lines,
    tensorboard, wandb) and differentiates the sum of ``values()``, which leaves ``stats`` out."""

    def __init__(self, losses: dict[str, torch.Tensor], stats: dict[str, torch.Tensor]) -> None:
        super().__init__(losses)
        self.update(stats)
        self.stats = frozenset(stats)

    def values(self) -> Any:
        return [v for k, v in self.items() if k not in self.stats]


def relax_stats(
    image_features: torch.Tensor, text_features: torch.Tensor, threshold: float | None
) -> dict[str, torch.Tensor]:
    """``relax_theta`` (with a θ), ``relax_share`` and ``pos_cos_p10/p50/p90`` of a batch the
    loss has already checked (no second device sync for the value checks)."""
    stats = positive_pair_stats(image_features, text_features, threshold, check_finite=False)
    out = {} if threshold is None else {"relax_theta": torch.tensor(float(threshold))}
    out["relax_share"] = stats["relaxed_share"]
    out.update({f"pos_cos_p{q}": stats[f"positive_sim_q{q}"] for q in ("10", "50", "90")})
    return out


class OpenClipLoss(RelaxedContrastiveLoss):
    """:class:`RelaxedContrastiveLoss` with open_clip's ``ClipLoss.forward`` signature, the
    ``groups`` of ``feed`` (``--text-groups``) and, with ``output_dict=True``, a
    :class:`LoggedLosses` holding :func:`relax_stats` of the batch (this rank's pairs)."""

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
        if self.feed is not None:
            if groups is not None:
                raise TypeError("groups must not be passed: this loss takes them from its feed")
            groups = self.feed.take(image_features.shape[0])
        inputs: dict[str, Any] = dict(image_features=image_features, text_features=text_features)
        extra = dict(logit_scale=logit_scale, logit_bias=logit_bias, groups=groups)
        inputs.update({k: v for k, v in extra.items() if v is not None})
        out = super().forward(**inputs, output_dict=output_dict)
        if not output_dict:
            return out
        stats = relax_stats(image_features, text_features, self.logged_threshold)
        return LoggedLosses(dict(out), stats)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.feed is None else ", text_groups=True")


def make_loss(
    args: argparse.Namespace, threshold: float | None, feed: TextGroupFeed | None = None
) -> OpenClipLoss:
    """The loss in place of open_clip's ``create_loss(args)``: with several processes
    ``distributed_mode`` ``"local"`` (``--local-loss``) or ``"global"``, gathering with gradient."""
    distributed = bool(args.distributed) and args.world_size > 1
    mode: DistributedMode = "local" if args.local_loss else "global"
    loss = OpenClipLoss(threshold, distributed=distributed, distributed_mode=mode, feed=feed)
    if distributed and not args.gather_with_grad:
        _log.warning(
            "relaxclip: --gather-with-grad is off, but relaxclip always gathers features with "
            "gradient (exact global-batch gradients); open_clip's ClipLoss would drop the other "
            "ranks' gradient contributions here. Pass --gather-with-grad to make this explicit."
        )
    where = (
        f"distributed_mode={mode!r}, world size {args.world_size}" if distributed else "1 process"
    )
    _log.info("relaxclip: loss %s, %s", loss, where)
    return loss


def calibrate(
    model: torch.nn.Module, batches: Iterable[Any], args: argparse.Namespace, quantile: float
) -> float:
    """θ: :func:`~relaxclip.calibrate_threshold` (every rank's cosines) of ``model``'s features
    on open_clip's ``(images, texts, ...)`` ``batches``, in eval mode under ``torch.no_grad()``."""
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
    where = f"the {quantile:g}-quantile of all ranks' positive cosines ({len(pairs)} batches each)"
    _log.info("relaxclip: calibrated θ = %.6g, %s", theta, where)
    return theta
