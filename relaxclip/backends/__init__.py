"""Loss backends behind one dispatch.

Every backend module exposes the same two functions (sums, not means; see ``relaxclip.loss``)::

    symmetric_loss_sum(x, y, logit_scale, threshold, *, chunk_size=None, groups=None) -> 0-d tensor
    rows_loss_sum(q, k, logit_scale, threshold, offset, *, chunk_size=None, groups=None) -> 0-d tensor

``groups``: ``None`` or integer ids (K, N) (or (N,)) of the N keys (columns) on their device; row i
of ``q`` has the ids of key ``offset + i``; same-group pairs other than the positive get logit -inf.

Backends: ``"dense"`` (one B x B matrix, fastest for small batches), ``"chunked"`` (O(B) memory,
any device), ``"triton"`` (fused GPU kernel, optional extra). ``"auto"`` resolves as documented in
:func:`resolve_backend`.
"""

from __future__ import annotations

from types import ModuleType

import torch

BACKENDS = ("auto", "dense", "chunked", "triton")

#: ``"auto"`` uses the dense backend while the logit matrix has at most this many entries
#: (4096 x 4096 = 64 MiB in fp32), the chunked backend above it.
AUTO_DENSE_MAX_LOGITS = 4096 * 4096

#: ``"auto"`` uses the triton backend for fp16/bf16 features on CUDA from this many logits on, when
#: triton is importable. Not tuned on a GPU yet (see docs/triton.md).
AUTO_TRITON_MIN_LOGITS = 2048 * 2048

#: Feature dtypes for which ``"auto"`` may pick the triton backend (tensor-core dtypes; the kernel
#: rejects float64, and exact fp32 dots would not use tensor cores).
AUTO_TRITON_DTYPES = (torch.float16, torch.bfloat16)


def triton_available() -> bool:
    """Whether the triton backend can run (triton importable, its kernels loadable)."""
    try:
        from relaxclip.backends import triton as triton_backend
    except ImportError:
        return False
    return bool(triton_backend.is_available())


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
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name != "auto":
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
    if name == "dense":
        from relaxclip.backends import dense

        return dense
    if name == "chunked":
        from relaxclip.backends import chunked

        return chunked
    if name == "triton":
        if not triton_available():
            raise RuntimeError(
                'backend="triton" needs the optional triton extra (pip install "relaxclip[triton]") '
                "and a CUDA device (or TRITON_INTERPRET=1 for the CPU interpreter)"
            )
        from relaxclip.backends import triton as triton_backend

        return triton_backend
    raise ValueError(f"backend must be one of {BACKENDS[1:]} here, got {name!r}")


__all__ = [
    "AUTO_DENSE_MAX_LOGITS",
    "AUTO_TRITON_DTYPES",
    "AUTO_TRITON_MIN_LOGITS",
    "BACKENDS",
    "get_backend",
    "resolve_backend",
    "triton_available",
]
