"""A tensor that refuses every host read of its value, to prove that code never syncs on it.

``NoSyncTensor`` is a ``torch.Tensor`` subclass whose ``item``, ``tolist``, ``__float__``,
``__int__``, ``__bool__`` and ``__index__`` raise :class:`HostSyncError`. Through the default
``__torch_function__`` every tensor computed from it (``t * theta``, ``s <= bound``, ...) is a
``NoSyncTensor`` as well, so a host read of anything derived from theta raises too.
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch


class HostSyncError(RuntimeError):
    """A host read (``.item()``, ``float()``, ``bool()``, ...) of a :class:`NoSyncTensor`."""


class NoSyncTensor(torch.Tensor):
    """See the module docstring; build one with ``torch.tensor(v).as_subclass(NoSyncTensor)``."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise HostSyncError("host read of a tensor derived from theta")

    item = _refuse
    tolist = _refuse
    __float__ = _refuse
    __int__ = _refuse
    __bool__ = _refuse
    __index__ = _refuse


def plain(t: torch.Tensor) -> torch.Tensor:
    """The same data as an ordinary tensor (so the test itself may read it)."""
    return t.as_subclass(torch.Tensor)
