"""Triton backend: fused, tiled relaxed contrastive loss with O(B) memory (optional extra).

Same contract as :mod:`relaxclip.backends.dense` (sums, not means), for 2-D CUDA tensors (or CPU
tensors under ``TRITON_INTERPRET=1``, set before triton is imported) in bf16, fp16 or fp32 with
any strides; float64 is rejected. Deterministic (no atomics); theta is read on the device. The
design, the options (``config``, ``allow_tf32``) and the tile sizes: ``docs/triton.md``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from relaxclip._checks import check_bool, check_int, check_tensor, check_type, describe
from relaxclip.backends._common import (
    CallArgs,
    Threshold,
    analytic_backward,
    check_id_dtype,
    check_same,
    group_matrix,
)

try:  # the CPU-only package must import without triton
    import triton
    import triton.language as tl

    _HAS_TRITON = True
except Exception:  # ImportError, or a broken triton install
    triton = None
    tl = None
    _HAS_TRITON = False

Tensor = torch.Tensor

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_SUPPORTED = (torch.bfloat16, torch.float16, torch.float32)


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (kernels then run on CPU tensors, slowly)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_available(device: torch.device | str | None = None) -> bool:
    """Whether the triton backend can run on ``device`` (``None``: on any device): triton
    imports and the device is an available CUDA device, or the CPU under the interpreter."""
    if not _HAS_TRITON:
        return False
    if device is None:
        return torch.cuda.is_available() or interpreter_enabled()
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available()
    # the interpreter only runs when TRITON_INTERPRET=1 was set before triton was imported
    return (
        kind == "cpu" and interpreter_enabled() and type(tl.sum).__name__ == "InterpretedFunction"
    )


@dataclass(frozen=True)
class TritonConfig:
    """Tile sizes and launch parameters (tiles: powers of two >= 16); see ``docs/triton.md``.

    ``block_m/n/d``: forward tile; ``bwd_block_m/n``: backward tile; ``block_do``: widest
    output chunk of the backward (``None``: 256); ``split``: programs per row group / output
    block (``None``: fill the GPU); ``row_group``: row blocks per forward program (``None``:
    column partials within ``col_part_mib`` MiB); ``num_warps``, ``num_stages``: forward
    launch, ``bwd_*``: backward. Raises ValueError (TypeError) naming a bad field.
    """

    block_m: int = 128
    block_n: int = 128
    block_d: int = 64
    bwd_block_m: int = 64
    bwd_block_n: int = 64
    block_do: int | None = None
    split: int | None = None
    row_group: int | None = None
    col_part_mib: int = 32
    num_warps: int = 8
    num_stages: int = 2
    bwd_num_warps: int = 8
    bwd_num_stages: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            name, value = f"TritonConfig.{f.name}", getattr(self, f.name)
            if value is None and f.default is None:  # block_do, split, row_group: optional
                continue
            value = check_int(name, value, minimum=16 if "block" in f.name else 1)
            if "block" in f.name and value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {value}")


DEFAULT_CONFIG = TritonConfig()


#: Keyword options of this backend's entry functions (see ``relaxclip.backends``).
OPTIONS: dict[str, Callable[[object], Any]] = {
    "allow_tf32": functools.partial(check_bool, "allow_tf32"),
    "config": functools.partial(
        check_type,
        "config",
        types=(TritonConfig, type(None)),
        expected="a relaxclip.backends.triton.TritonConfig or None",
    ),
}
#: Small tiles for the CPU interpreter (fast enough for tests, exercises masking).
INTERPRETER_CONFIG = TritonConfig(
    block_m=16, block_n=16, block_d=16, bwd_block_m=16, bwd_block_n=16, num_warps=1, num_stages=1
)


@dataclass(frozen=True, kw_only=True)
class _TritonArgs(CallArgs):
    """:class:`CallArgs` plus the tile ``config`` and the ``tl.dot`` input ``precision``."""

    config: TritonConfig
    precision: str


if _HAS_TRITON:

    @triton.jit
    def _dot(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):  # type: ignore[no-untyped-def]
        """acc + a @ b, accumulated in fp32 (``UPCAST``: computed in fp32)."""
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        return tl.dot(a, b, acc, input_precision=PRECISION)

    @triton.jit
    def _block(blk, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        """Indices ``blk * BLOCK + [0, BLOCK)`` of one block and their mask ``< n``."""
        idx = blk * BLOCK + tl.arange(0, BLOCK)
        return idx, idx < n

    @triton.jit
    def _load(ptr, rows, row_ok, cols, col_ok, stride_r, stride_c):  # type: ignore[no-untyped-def]
        """The masked (rows, cols) tile of a 2-D array (0 outside)."""
        ptrs = ptr + rows[:, None] * stride_r + cols[None, :] * stride_c
        return tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)

    @triton.jit
    def _logit_tile(  # type: ignore[no-untyped-def]
        a_ptr,
        b_ptr,
        a_idx,
        b_idx,
        a_ok,
        b_ok,
        a_key,
        b_key,
        theta,
        t2,
        D,
        stride_am,
        stride_ad,
        stride_bn,
        stride_bd,
        g_ptr,
        n_ids,
        stride_ids,
        HAS_THRESH: tl.constexpr,
        HAS_GROUPS: tl.constexpr,
        BLOCK_A: tl.constexpr,
        BLOCK_B: tl.constexpr,
        BLOCK_D: tl.constexpr,
        PRECISION: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        """Tile ``s = a[a_idx] b[b_idx]^T``; returns ``(s, s_relaxed, z, diag, over)``.

        ``diag``: positives (``a_key == b_key``); ``over``: those with ``s > theta``; base-2
        logits ``z = s_relaxed * t2``, -inf on same-group non-positive pairs (``HAS_GROUPS``).
        """
        s = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)
        offs_d = tl.arange(0, BLOCK_D)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + offs_d
            d_ok = d < D
            a = _load(a_ptr, a_idx, a_ok, d, d_ok, stride_am, stride_ad)
            b = _load(b_ptr, b_idx, b_ok, d, d_ok, stride_bn, stride_bd)
            s = _dot(a, tl.trans(b), s, PRECISION, UPCAST)
        diag = a_key[:, None] == b_key[None, :]
        over = diag & (s > theta)
        s_rel = s
        if HAS_THRESH:
            s_rel = tl.where(over, theta, s)
        z = s_rel * t2
        if HAS_GROUPS:  # ids g[k, a_key] == g[k, b_key] for some k < n_ids
            same = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.int32)
            for kk in range(0, n_ids):
                ga = tl.load(g_ptr + kk * stride_ids + a_key, mask=a_ok, other=-1)
                gb = tl.load(g_ptr + kk * stride_ids + b_key, mask=b_ok, other=-2)
                same = same | (ga[:, None] == gb[None, :]).to(tl.int32)
            z = tl.where((same != 0) & ~diag, float("-inf"), z)
        return s, s_rel, z, diag, over

    @triton.jit
    def _fwd_kernel(  # type: ignore[no-untyped-def]
        q_ptr,
        k_ptr,
        t_ptr,
        row_m_ptr,
        row_l_ptr,
        pos_ptr,
        col_part_ptr,
        g_ptr,
        M,
        N,
        D,
        offset,
        theta_ptr,
        blocks_per_split,
        row_group,
        n_ids,
        stride_ids,
        stride_qm,
        stride_qd,
        stride_kn,
        stride_kd,
        HAS_THRESH: tl.constexpr,
        HAS_GROUPS: tl.constexpr,
        COLS: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
        PRECISION: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        """Program (g, c): row blocks g*R .. g*R+R-1 (R = row_group) x column-block range c.

        Online base-2 log-sum-exps of rows (in row_m/row_l[c, rows]) and columns (registers,
        then col_part[g, cols]); pos[c, rows] gets each row's raw positive similarity.
        """
        pid_g = tl.program_id(0)
        pid_s = tl.program_id(1)
        t2 = tl.load(t_ptr).to(tl.float32) * 1.4426950408889634  # t * log2(e)
        theta = 0.0  # never used without HAS_THRESH
        if HAS_THRESH:
            theta = tl.load(theta_ptr)
        n_blocks = tl.cdiv(N, BLOCK_N)
        cb_start = pid_s * blocks_per_split
        cb_end = tl.minimum(cb_start + blocks_per_split, n_blocks)
        rb_start = pid_g * row_group
        rb_end = tl.minimum(rb_start + row_group, tl.cdiv(M, BLOCK_M))
        for cb in range(cb_start, cb_end):
            cols, col_ok = _block(cb, N, BLOCK_N)
            c_max = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
            c_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
            for rb in range(rb_start, rb_end):
                rows, row_ok = _block(rb, M, BLOCK_M)
                s, _, z, diag, _ = _logit_tile(
                    q_ptr, k_ptr, rows, cols, row_ok, col_ok, rows + offset, cols, theta, t2,
                    D, stride_qm, stride_qd, stride_kn, stride_kd, g_ptr, n_ids, stride_ids,
                    HAS_THRESH, HAS_GROUPS, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION, UPCAST,
                )  # fmt: skip
                z = tl.where(row_ok[:, None] & col_ok[None, :], z, float("-inf"))
                stat = pid_s * M + rows
                pos = tl.load(pos_ptr + stat, mask=row_ok, other=0.0)
                pos += tl.sum(tl.where(diag, s, 0.0), axis=1)  # raw s of the positive pair
                tl.store(pos_ptr + stat, pos, mask=row_ok)
                # rows: online log-sum-exp (base 2) across this program's column blocks
                m_old = tl.load(row_m_ptr + stat, mask=row_ok, other=float("-inf"))
                l_old = tl.load(row_l_ptr + stat, mask=row_ok, other=0.0)
                m_new = tl.maximum(m_old, tl.max(z, axis=1))
                m_use = m_new
                if HAS_GROUPS:  # a row of the tile may be all -inf: shift by 0 instead
                    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
                l_new = l_old * tl.exp2(m_old - m_use)
                l_new += tl.sum(tl.exp2(z - m_use[:, None]), axis=1)
                tl.store(row_m_ptr + stat, m_new, mask=row_ok)
                tl.store(row_l_ptr + stat, l_new, mask=row_ok)
                if COLS:
                    # columns: online log-sum-exp across this program's row blocks
                    cm_new = tl.maximum(c_max, tl.max(z, axis=0))
                    cm_use = cm_new
                    if HAS_GROUPS:
                        cm_use = tl.where(cm_new == float("-inf"), 0.0, cm_new)
                    c_sum = c_sum * tl.exp2(c_max - cm_use)
                    c_sum += tl.sum(tl.exp2(z - cm_use[None, :]), axis=0)
                    c_max = cm_new
            if COLS:
                tl.store(col_part_ptr + pid_g * N + cols, c_max + tl.log2(c_sum), mask=col_ok)

    @triton.jit
    def _bwd_kernel(  # type: ignore[no-untyped-def]
        a_ptr,
        b_ptr,
        t_ptr,
        a_lse_ptr,
        b_lse_ptr,
        diag_s_ptr,
        out_ptr,
        dt_part_ptr,
        g_ptr,
        A,
        B,
        M,
        D,
        offset,
        theta_ptr,
        delta_coef,
        blocks_per_split,
        d_start,
        n_ids,
        stride_ids,
        stride_am,
        stride_ad,
        stride_bn,
        stride_bd,
        stride_os,
        stride_om,
        stride_od,
        A_IS_ROWS: tl.constexpr,
        SYMMETRIC: tl.constexpr,
        HAS_THRESH: tl.constexpr,
        HAS_GROUPS: tl.constexpr,
        BLOCK_A: tl.constexpr,
        BLOCK_B: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_DO: tl.constexpr,
        PRECISION: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        """Gradient of the loss sum w.r.t. the rows of ``a`` (Q with ``A_IS_ROWS``, else K over
        S^T tiles): sum_j G[a, j] b_j over this program's ``b`` blocks, the fp32 ``-delta_coef``
        identity term (split 0), and sum_ij (P + Q)_ij s'_ij into ``dt_part``."""
        pid_a = tl.program_id(0)
        pid_d = tl.program_id(1)
        pid_s = tl.program_id(2)
        a_idx, a_ok = _block(pid_a, A, BLOCK_A)
        t = tl.load(t_ptr).to(tl.float32)
        t2 = t * 1.4426950408889634
        theta = 0.0  # never used without HAS_THRESH
        if HAS_THRESH:
            theta = tl.load(theta_ptr)
        if A_IS_ROWS or SYMMETRIC:  # (the rows-only loss has no column log-sum-exp)
            a_lse = tl.load(a_lse_ptr + a_idx, mask=a_ok, other=0.0)
        if A_IS_ROWS:  # row of S and key of each a, and the b row of its positive partner
            a_row = a_idx
            a_key = a_idx + offset
            partner = a_key
            b_shift = 0
        else:
            a_row = a_idx - offset
            a_key = a_idx
            partner = a_row
            b_shift = offset
        dcols = d_start + pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
        dcol_ok = dcols < D
        acc = tl.zeros((BLOCK_A, BLOCK_DO), dtype=tl.float32)
        dt_acc = tl.zeros((BLOCK_A,), dtype=tl.float32)
        n_blocks = tl.cdiv(B, BLOCK_B)
        bb_start = pid_s * blocks_per_split
        bb_end = tl.minimum(bb_start + blocks_per_split, n_blocks)
        for bb in range(bb_start, bb_end):
            b_idx, b_ok = _block(bb, B, BLOCK_B)
            _, s, z, _, over = _logit_tile(
                a_ptr, b_ptr, a_idx, b_idx, a_ok, b_ok, a_key, b_idx + b_shift, theta, t2, D,
                stride_am, stride_ad, stride_bn, stride_bd, g_ptr, n_ids, stride_ids,
                HAS_THRESH, HAS_GROUPS, BLOCK_A, BLOCK_B, BLOCK_D, PRECISION, UPCAST,
            )  # fmt: skip
            w = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)  # P + Q
            if A_IS_ROWS or SYMMETRIC:  # P when a holds the rows of S, else Q
                w += tl.exp2(z - a_lse[:, None])
            if SYMMETRIC or not A_IS_ROWS:  # Q when a holds the rows of S, else P
                b_lse = tl.load(b_lse_ptr + b_idx, mask=b_ok, other=0.0)
                w += tl.exp2(z - b_lse[None, :])
            w = tl.where(a_ok[:, None] & b_ok[None, :], w, 0.0)
            dt_acc += tl.sum(w * s, axis=1)
            g = w * t
            if HAS_THRESH:
                g = tl.where(over, 0.0, g)
            bv = _load(b_ptr, b_idx, b_ok, dcols, dcol_ok, stride_bn, stride_bd)
            acc = _dot(g.to(bv.dtype), bv, acc, PRECISION, UPCAST)
        # delta term: -coef * t * 1[s_ii <= theta] * (partner row of b), exact in fp32
        partner_ok = a_ok & (a_row >= 0) & (a_row < M)
        dsv = tl.load(diag_s_ptr + a_row, mask=partner_ok, other=0.0)
        coef = tl.where(partner_ok & (pid_s == 0), delta_coef * t, 0.0)  # once per output
        if HAS_THRESH:
            coef = tl.where(dsv <= theta, coef, 0.0)
        pv = _load(b_ptr, partner, partner_ok, dcols, dcol_ok, stride_bn, stride_bd)
        pv = pv.to(tl.float32)
        acc -= coef[:, None] * pv
        tl.store(
            out_ptr + pid_s * stride_os + a_idx[:, None] * stride_om + dcols[None, :] * stride_od,
            acc.to(out_ptr.dtype.element_ty),
            mask=a_ok[:, None] & dcol_ok[None, :],
        )
        n_a_blocks = tl.num_programs(0)
        tl.store(
            dt_part_ptr + (pid_d * tl.num_programs(2) + pid_s) * n_a_blocks + pid_a, tl.sum(dt_acc)
        )


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).multi_processor_count)
    return 1


def _split(cfg: TritonConfig, n_outer: int, n_inner: int, device: torch.device) -> int:
    """Programs per outer block (over ``n_inner`` inner blocks), every split non-empty."""
    want = cfg.split if cfg.split is not None else max(1, (2 * _num_sms(device)) // max(n_outer, 1))
    want = max(1, min(want, n_inner))
    per = math.ceil(n_inner / want)
    return math.ceil(n_inner / per)


def _upcast(a: Tensor) -> bool:
    """Whether dots run in fp32: bf16 under the interpreter (its bf16 ``tl.dot`` is wrong)."""
    return a.device.type == "cpu" and a.dtype == torch.bfloat16


def _row_group(cfg: TritonConfig, n_row_blocks: int, n_cols: int, symmetric: bool) -> int:
    """Row blocks per forward program: the smallest power of two within ``cfg.col_part_mib``."""
    if cfg.row_group is not None:
        return cfg.row_group
    if not symmetric:
        return 1
    group = 1
    while (
        group < n_row_blocks
        and math.ceil(n_row_blocks / group) * n_cols * 4 > cfg.col_part_mib * 2**20
    ):
        group *= 2
    return group


def _output_chunks(dim: int, max_width: int) -> list[tuple[int, int, int]]:
    """Cover ``dim`` output features with power-of-two chunks of at most ``max_width``: a list of
    (start, width, count) launches, e.g. 768 with 512 -> [(0, 512, 1), (512, 256, 1)]."""
    out: list[tuple[int, int, int]] = []
    start = 0
    while start < dim:
        rest = dim - start
        width = min(max_width, max(16, 1 << (rest - 1).bit_length()))
        count = rest // width if rest >= width else 1
        if out and out[-1][1] == width:  # extend the previous launch
            out[-1] = (out[-1][0], width, out[-1][2] + count)
        else:
            out.append((start, width, count))
        start += width * count
    return out


def _precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``tl.dot`` input precision: exact IEEE for fp32 unless TF32 is allowed."""
    return "ieee" if dtype == torch.float32 and not allow_tf32 else "tf32"


def _launch_bwd(
    a: Tensor,
    b: Tensor,
    t: Tensor,
    a_lse2: Tensor,
    b_lse2: Tensor,
    diag_s: Tensor,
    args: _TritonArgs,
    a_is_rows: bool,
) -> tuple[Tensor, Tensor]:
    """Launch the backward kernel for ``a``; returns (grad of the sum w.r.t. a, dt partials)."""
    cfg, groups, threshold = args.config, args.groups, args.threshold
    n_a, dim = a.shape
    n_b = b.shape[0]
    m_rows = a.shape[0] if a_is_rows else b.shape[0]
    block_a = cfg.bwd_block_m if a_is_rows else cfg.bwd_block_n
    block_b = cfg.bwd_block_n if a_is_rows else cfg.bwd_block_m
    chunks = _output_chunks(dim, cfg.block_do or 256)
    n_ab = triton.cdiv(n_a, block_a)
    n_bb = triton.cdiv(n_b, block_b)
    split = _split(cfg, n_ab * sum(c for _, _, c in chunks), n_bb, a.device)
    per = triton.cdiv(n_bb, split)
    out_dtype = a.dtype if split == 1 else torch.float32
    out = torch.empty((split, n_a, dim), device=a.device, dtype=out_dtype)
    dt_parts = []
    for start, width, count in chunks:
        dt_part = torch.empty((count, split, n_ab), device=a.device, dtype=torch.float32)
        dt_parts.append(dt_part)
        _bwd_kernel[(n_ab, count, split)](
            a, b, t, a_lse2, b_lse2, diag_s, out, dt_part, _or_dummy(groups, t),
            n_a, n_b, m_rows, dim, args.offset, _or_dummy(threshold, t),
            2.0 if args.symmetric else 1.0,
            per, start,
            0 if groups is None else groups.shape[0], 0 if groups is None else groups.stride(0),
            a.stride(0), a.stride(1), b.stride(0), b.stride(1),
            out.stride(0), out.stride(1), out.stride(2),
            A_IS_ROWS=a_is_rows, SYMMETRIC=args.symmetric, HAS_THRESH=threshold is not None,
            HAS_GROUPS=groups is not None,
            BLOCK_A=block_a, BLOCK_B=block_b, BLOCK_D=cfg.block_d, BLOCK_DO=width,
            PRECISION=args.precision, UPCAST=_upcast(a),
            num_warps=cfg.bwd_num_warps, num_stages=cfg.bwd_num_stages, enable_fp_fusion=True,
        )  # fmt: skip
    grad = out[0] if split == 1 else out.sum(0).to(a.dtype)
    return grad, dt_parts[0][0]  # every chunk sees all tiles: the first one's dt sums suffice


def _or_dummy(tensor: Tensor | None, dummy: Tensor) -> Tensor:
    """``tensor``, or when absent a never-read placeholder pointer (reads behind constexprs)."""
    return dummy if tensor is None else tensor


class _TritonLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, logit_scale: Tensor, args: _TritonArgs) -> Tensor:
        cfg, groups, threshold, symmetric = args.config, args.groups, args.threshold, args.symmetric
        n_q, dim = q.shape
        n_k = k.shape[0]
        t = logit_scale.detach().to(device=q.device, dtype=torch.float32).reshape(())
        n_rb = triton.cdiv(n_q, cfg.block_m)
        n_cb = triton.cdiv(n_k, cfg.block_n)
        group = _row_group(cfg, n_rb, n_k, symmetric)
        n_groups = triton.cdiv(n_rb, group)
        split = _split(cfg, n_groups, n_cb, q.device)
        per = triton.cdiv(n_cb, split)
        f32 = torch.float32
        row_m = torch.full((split, n_q), float("-inf"), device=q.device, dtype=f32)
        row_l = torch.zeros((split, n_q), device=q.device, dtype=f32)
        pos_part = torch.zeros((split, n_q), device=q.device, dtype=f32)
        col_part = torch.empty((n_groups, n_k) if symmetric else (1, 1), device=q.device, dtype=f32)
        _fwd_kernel[(n_groups, split)](
            q, k, t, row_m, row_l, pos_part, col_part, _or_dummy(groups, t),
            n_q, n_k, dim, args.offset, _or_dummy(threshold, t),
            per, group,
            0 if groups is None else groups.shape[0], 0 if groups is None else groups.stride(0),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            HAS_THRESH=threshold is not None, HAS_GROUPS=groups is not None, COLS=symmetric,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=cfg.block_d,
            PRECISION=args.precision, UPCAST=_upcast(q),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=True,
        )  # fmt: skip
        row_part = row_m + torch.log2(row_l)  # per-split base-2 log-sum-exp of each row
        # deterministic reductions of the partials (base-2 log-sum-exps -> natural units)
        row_lse = torch.logsumexp(row_part.mul_(_LN2), dim=0)
        diag_s = pos_part.sum(0)  # exactly one non-zero partial per row
        pos = diag_s if threshold is None else diag_s.clamp(max=threshold)
        pos_sum = pos.sum()
        loss = row_lse.sum() - t * pos_sum
        if symmetric:
            col_lse = torch.logsumexp(col_part.mul_(_LN2), dim=0)  # in place: no copy
            loss = loss + col_lse.sum() - t * pos_sum
        else:
            col_lse = row_lse.new_zeros(1)
        ctx.args = args
        ctx.scale = (logit_scale.shape, logit_scale.dtype, logit_scale.device)
        ctx.save_for_backward(q, k, t, row_lse * _LOG2E, col_lse * _LOG2E, diag_s, pos_sum)
        return loss

    @staticmethod
    @analytic_backward
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, t, row_lse2, col_lse2, diag_s, pos_sum = ctx.saved_tensors
        need_q, need_k, need_t = ctx.needs_input_grad[:3]
        args = ctx.args
        g = grad.to(torch.float32)
        grad_q = grad_k = grad_t = None
        if need_q or need_t:
            dq, dt_part = _launch_bwd(q, k, t, row_lse2, col_lse2, diag_s, args, a_is_rows=True)
            if need_q:
                grad_q = dq.mul_(g)  # in place: a fresh buffer, no second B x D copy
            if need_t:
                coef = 2.0 if args.symmetric else 1.0
                shape, dtype, device = ctx.scale
                grad_t = ((dt_part.sum() - coef * pos_sum) * g).reshape(shape)
                grad_t = grad_t.to(device=device, dtype=dtype)
        if need_k:
            dk, _ = _launch_bwd(k, q, t, col_lse2, row_lse2, diag_s, args, a_is_rows=False)
            grad_k = dk.mul_(g)
        return grad_q, grad_k, grad_t, None


def _check(name: str, a: Tensor) -> None:
    check_tensor(name, a, ndim=2)
    if a.dtype not in _SUPPORTED:
        hint = "; use backend='dense' or backend='chunked'" if a.dtype == torch.float64 else ""
        raise TypeError(
            f"{name} must be bfloat16, float16 or float32 for the triton backend, got dtype "
            f"{a.dtype}{hint}"
        )
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one feature, got {tuple(a.shape)}")
    span = (a.shape[0] - 1) * abs(a.stride(0)) + (a.shape[1] - 1) * abs(a.stride(1))
    if span >= 2**31 or a.shape[0] * a.shape[1] >= 2**31:
        raise ValueError(
            f"{name} must fit the triton kernels' 32-bit indexing, got shape {tuple(a.shape)}; "
            "use backend='chunked'"
        )


def _kernel_ids(groups: Tensor | None, keys: Tensor) -> Tensor | None:
    """``groups`` as the kernels read them: (K, N) int64, unit column stride, keys' device."""
    ids = group_matrix(groups)
    if groups is None or ids is None:
        return None
    if ids.dim() != 2 or ids.shape[1] != keys.shape[0] or ids.shape[0] < 1:
        raise ValueError(
            f"groups must have shape (N,) or (K, N) with K >= 1 and N = {keys.shape[0]} (the "
            f"keys), got {tuple(groups.shape)}"
        )
    check_id_dtype(ids)
    return ids.to(device=keys.device, dtype=torch.int64).contiguous()


def _call(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    threshold: Threshold,
    offset: int,
    symmetric: bool,
    allow_tf32: bool,
    config: TritonConfig | None,
    groups: Tensor | None,
) -> Tensor:
    """Check the operands and options, then launch (availability is checked last)."""
    if not _HAS_TRITON:
        raise RuntimeError('the triton backend needs triton: pip install "relaxclip[triton]"')
    names = ("x", "y") if symmetric else ("q", "k")
    for name, a in zip(names, (q, k), strict=True):
        _check(name, a)
    check_same(names, q, k, "dtype", "device")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same feature dim")
    if symmetric and q.shape[0] != k.shape[0]:
        raise ValueError(
            f"x and y must have the same number of rows, got {q.shape[0]}, {k.shape[0]}"
        )
    offset = check_int("offset", offset, minimum=0)
    if offset + q.shape[0] > k.shape[0]:
        raise ValueError(
            f"offset must satisfy offset + b <= N, got offset={offset}, b={q.shape[0]}, N={k.shape[0]}"
        )
    if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != 1:
        raise TypeError(f"logit_scale must be a one-element tensor, got {describe(logit_scale)}")
    cfg = OPTIONS["config"](config) or (
        INTERPRETER_CONFIG if q.device.type == "cpu" else DEFAULT_CONFIG
    )
    prec = _precision(q.dtype, OPTIONS["allow_tf32"](allow_tf32))
    ids = _kernel_ids(groups, k)
    if not is_available(q.device):
        late = q.device.type == "cpu" and interpreter_enabled()
        raise RuntimeError(
            "the triton backend cannot run on cpu: TRITON_INTERPRET=1 must be set before triton "
            "is imported (it was set later, so triton's functions were built for the GPU); set "
            "it in the environment of the process, e.g. TRITON_INTERPRET=1 python ..."
            if late
            else f"the triton backend cannot run on {q.device}: it needs a CUDA device, or CPU "
            "tensors with TRITON_INTERPRET=1 set before triton is imported"
        )
    fields = {"offset": offset, "symmetric": symmetric, "config": cfg, "precision": prec}
    return _TritonArgs.run(_TritonLoss, q, k, logit_scale, threshold, ids, **fields)


def symmetric_loss_sum(
    x: Tensor, y: Tensor, logit_scale: Tensor, threshold: Threshold,
    *, allow_tf32: bool = False, config: TritonConfig | None = None, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Fused-kernel form of :func:`relaxclip.backends.dense.symmetric_loss_sum` for bf16, fp16
    or fp32 features (any strides); ``logit_scale`` a one-element tensor.

    Args:
        allow_tf32: fp32 inputs only: TF32 tensor-core dots (about 1e-3 relative error).
        config: tile sizes (:class:`TritonConfig`); default :data:`DEFAULT_CONFIG`, or
            :data:`INTERPRETER_CONFIG` under the interpreter.

    Returns:
        0-d fp32 tensor, differentiable w.r.t. ``x``, ``y`` and ``logit_scale``.
    """
    return _call(x, y, logit_scale, threshold, 0, True, allow_tf32, config, groups)


def rows_loss_sum(
    q: Tensor, k: Tensor, logit_scale: Tensor, threshold: Threshold, offset: int,
    *, allow_tf32: bool = False, config: TritonConfig | None = None, groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Fused-kernel form of :func:`relaxclip.backends.dense.rows_loss_sum` (``0 <= offset``,
    ``offset + b <= N``); options as :func:`symmetric_loss_sum`."""
    return _call(q, k, logit_scale, threshold, offset, False, allow_tf32, config, groups)


__all__ = [
    "DEFAULT_CONFIG",
    "INTERPRETER_CONFIG",
    "OPTIONS",
    "TritonConfig",
    "interpreter_enabled",
    "is_available",
    "rows_loss_sum",
    "symmetric_loss_sum",
]
