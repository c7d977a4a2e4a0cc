"""Loss backends behind one dispatch, with one registry of backends and their options.

Every backend module exposes the same two functions (sums, not means)::

    symmetric_loss_sum(x, y, logit_scale, threshold, *, groups=None, **options) -> 0-d tensor
    rows_loss_sum(q, k, logit_scale, threshold, offset, *, groups=None, **options) -> 0-d tensor

and declares its keyword options in ``OPTIONS`` (name -> validator returning the normalised
value). Backends: ``"dense"``, ``"chunked"`` and ``"triton"``; ``"auto"`` (:func:`resolve_backend`)
takes no options. The contract and how to choose: ``docs/concepts.md#backends``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import torch

from relaxclip._checks import check_choice, check_type


def _load(name: str) -> ModuleType:
    if name == "dense":
        from relaxclip.backends import dense

        return dense
    if name == "chunked":
        from relaxclip.backends import chunked

        return chunked
    from relaxclip.backends import triton  # imports without triton installed

    return triton


#: The registry: concrete backend name -> loader of its module (imported lazily: the triton
#: module imports triton; ``import`` statements, unlike ``importlib``, trace under
#: ``torch.compile``).
BACKEND_MODULES: dict[str, Callable[[], ModuleType]] = {
    name: functools.partial(_load, name) for name in ("dense", "chunked", "triton")
}

BACKENDS = ("auto", *BACKEND_MODULES)

#: ``"auto"`` uses the dense backend while the logit matrix has at most this many entries
#: (4096 x 4096 = 64 MiB in fp32), the chunked backend above it.
AUTO_DENSE_MAX_LOGITS = 4096 * 4096

#: ``"auto"`` uses the triton backend for fp16/bf16 features on CUDA from this many logits on, when
#: triton is importable.
AUTO_TRITON_MIN_LOGITS = 2048 * 2048

#: Feature dtypes for which ``"auto"`` may pick the triton backend (tensor-core dtypes).
AUTO_TRITON_DTYPES = (torch.float16, torch.bfloat16)


def _check_name(name: object, allowed: tuple[str, ...] = BACKENDS) -> str:
    return str(check_choice("backend", name, allowed))


def _module(name: str) -> ModuleType:
    return BACKEND_MODULES[_check_name(name, tuple(BACKEND_MODULES))]()


def backend_options(name: str) -> tuple[str, ...]:
    """The keyword options a concrete backend takes (``()`` for ``"dense"``)."""
    return tuple(_module(name).OPTIONS)


def check_backend_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``options`` against backend ``name``; return them normalised (e.g. ``int`` sizes).

    Raises ValueError for an unknown backend, for any option with ``backend="auto"`` and for an
    option the backend does not take; the validators raise naming the option for a bad value.
    """
    _check_name(name)
    expected = "a mapping of option name to value or None"
    given = dict(check_type("backend_options", options, (Mapping, type(None)), expected) or {})
    if not given:
        return {}
    if name == "auto":
        owners = {key: [b for b in BACKEND_MODULES if key in backend_options(b)] for key in given}
        for key, value in given.items():
            if not owners[key]:
                raise ValueError(f"backend_options: {key!r} is not an option of any backend")
            _module(owners[key][0]).OPTIONS[key](value)  # a bad value is reported as such first
        hint = "; ".join(
            f"{key!r} is an option of backend " + " and ".join(map(repr, owners[key]))
            for key in sorted(given)
        )
        raise ValueError(
            f"backend options {sorted(given)} need an explicit backend: backend='auto' picks "
            f"dense, chunked or triton by batch size, device and dtype, and an option of a "
            f"backend it did not pick would do nothing ({hint})"
        )
    declared = _module(name).OPTIONS
    for key in given:
        if key not in declared:
            takes = ", ".join(map(repr, declared)) or "no options"
            raise ValueError(
                f"backend_options: {key!r} is not an option of backend {name!r} (it takes {takes})"
            )
    return {key: declared[key](value) for key, value in given.items()}


def triton_available() -> bool:
    """Whether the triton backend can run (triton importable, its kernels loadable)."""
    return bool(_load("triton").is_available())


def resolve_backend(
    name: str,
    device: torch.device,
    n_rows: int,
    n_cols: int,
    dtype: torch.dtype = torch.float32,
) -> str:
    """Resolve ``"auto"`` to a concrete backend name; check that an explicit name exists.

    Rule for ``"auto"``: fp16/bf16 features on a CUDA device with triton importable and
    ``n_rows * n_cols >= AUTO_TRITON_MIN_LOGITS`` use ``"triton"``; otherwise ``"dense"`` while
    ``n_rows * n_cols <= AUTO_DENSE_MAX_LOGITS`` and ``"chunked"`` beyond.
    """
    if _check_name(name) != "auto":
        return name
    logits = n_rows * n_cols
    if (
        device.type == "cuda"
        and dtype in AUTO_TRITON_DTYPES
        and logits >= AUTO_TRITON_MIN_LOGITS
        and triton_available()
    ):
        return "triton"
    return "dense" if logits <= AUTO_DENSE_MAX_LOGITS else "chunked"


def get_backend(name: str) -> ModuleType:
    """The backend module for a concrete name (``"dense"``, ``"chunked"`` or ``"triton"``)."""
    if name == "triton" and not triton_available():
        raise RuntimeError(
            'backend="triton" needs the optional triton extra (pip install "relaxclip[triton]") '
            "and a CUDA device (or TRITON_INTERPRET=1 for the CPU interpreter)"
        )
    return _module(name)


__all__ = [
    "AUTO_DENSE_MAX_LOGITS",
    "AUTO_TRITON_DTYPES",
    "AUTO_TRITON_MIN_LOGITS",
    "BACKENDS",
    "BACKEND_MODULES",
    "backend_options",
    "check_backend_options",
    "get_backend",
    "resolve_backend",
    "triton_available",
]
