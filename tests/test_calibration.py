"""calibrate_threshold: the quantile of positive cosines, over batches and across gloo ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _workers import gloo_rank, run_ranks
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxclip import calibrate_threshold


def _pairs(seed: int, sizes: list[int], dim: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)) for n in sizes]


def _reference(pairs: list[tuple[torch.Tensor, torch.Tensor]], q: float) -> float:
    s = torch.cat([F.cosine_similarity(x.double(), y.double(), dim=1) for x, y in pairs])
    return float(torch.quantile(s, q))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    q=st.floats(0.0, 1.0),
)
def test_equals_torch_quantile_of_all_positive_cosines(seed: int, sizes: list[int], q: float):
    pairs = _pairs(seed, sizes)
    theta = calibrate_threshold(pairs, q)
    assert isinstance(theta, float)
    assert theta == pytest.approx(_reference(pairs, q), abs=1e-12)
    assert -1.0 <= theta <= 1.0


def test_scale_invariant_and_accepts_a_generator():
    pairs = _pairs(0, [5, 7])
    scaled = ((x * 1e3, y.half()) for x, y in pairs)
    assert calibrate_threshold(scaled, 0.5) == pytest.approx(
        calibrate_threshold(pairs, 0.5), abs=1e-3
    )


@pytest.mark.parametrize(
    ("pairs", "q", "error", "match"),
    [
        ([], 0.9, ValueError, "at least one"),
        (_pairs(0, [3]), 1.5, ValueError, r"quantile must be a number in \[0.0, 1.0\]"),
        (_pairs(0, [3]), "0.9", TypeError, "quantile must be a real number"),
        ([torch.zeros(3, 4)], 0.5, TypeError, r"feature_pairs\[0\] must be an"),
        ([(torch.ones(3, 4), torch.ones(3, 5))], 0.5, ValueError, "one shape"),
        ([(torch.ones(3, 4), torch.ones(3, 4, dtype=torch.int64))], 0.5, TypeError, "floating"),
        ([(torch.ones(3, 4), torch.zeros(3, 4))], 0.5, ValueError, "all-zero rows"),
        (
            [(torch.ones(3, 4), torch.tensor([[1.0] * 4, [0.0] * 4, [1.0] * 4]))],
            0.5,
            ValueError,
            r"feature_pairs\[0\]\[1\] must have no all-zero rows.*got rows \[1\] \(1 of 3\)",
        ),
        (
            [(torch.randn(3, 0), torch.randn(3, 0))],
            0.5,
            ValueError,
            r"feature_pairs\[0\]\[0\] must have feature dimension D >= 1, got shape \(3, 0\)",
        ),
        (
            [(torch.ones(3, 4), torch.tensor([[1.0] * 4, [float("nan")] * 4, [1.0] * 4]))],
            0.5,
            ValueError,
            r"feature_pairs\[0\]\[1\] must be finite.*rows \[1\]",
        ),
    ],
)
def test_bad_input_names_the_argument(pairs, q, error, match):
    with pytest.raises(error, match=match):
        calibrate_threshold(pairs, q)


def _rank_worker(rank: int, world: int, out_dir: str) -> None:
    with gloo_rank(rank, world, out_dir):
        pairs = _pairs(10 + rank, [3 + 2 * rank, 4])  # uneven batch sizes across ranks
        theta = calibrate_threshold(pairs, 0.7)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(theta))


def test_is_global_across_gloo_ranks(tmp_path: Path):
    run_ranks(_rank_worker, 2, (2, str(tmp_path)), timeout_s=120, what="calibrate_threshold")
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected = _reference(_pairs(10, [3, 4]) + _pairs(11, [5, 4]), 0.7)
    assert got[0] == got[1]
    assert got[0] == pytest.approx(expected, abs=1e-12)


def _three_rank_worker(rank: int, world: int, out_dir: str) -> None:
    with gloo_rank(rank, world, out_dir):
        sub = dist.new_group([0, 2])
        pairs = {0: _pairs(20, [3]), 1: _pairs(21, [2, 2]), 2: []}[rank]  # rank 2 has none
        theta = calibrate_threshold(pairs, 0.3)
        in_sub = calibrate_threshold(pairs, 0.3, process_group=sub) if rank != 1 else None
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps([theta, in_sub]))


def test_ranks_without_pairs_and_subgroups(tmp_path: Path):
    """A rank with no batch still joins the gather; ``process_group`` limits it to a subgroup."""
    run_ranks(_three_rank_worker, 3, (3, str(tmp_path)), timeout_s=120, what="calibrate_threshold")
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    world = _reference(_pairs(20, [3]) + _pairs(21, [2, 2]), 0.3)
    assert all(g[0] == pytest.approx(world, abs=1e-12) for g in got)
    assert got[0][1] == got[2][1] == pytest.approx(_reference(_pairs(20, [3]), 0.3), abs=1e-12)


def test_parallel_pairs_give_a_threshold_the_loss_accepts():
    """Rounding can put a cosine of parallel rows a hair past ±1: θ is clamped to [-1, 1]."""
    from relaxclip import RelaxedContrastiveLoss

    x = torch.randn(200, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert calibrate_threshold([(x, 3.7 * x)], 1.0) == 1.0
    assert calibrate_threshold([(x, -x)], 0.0) == -1.0
    RelaxedContrastiveLoss(threshold=calibrate_threshold([(x, x)], 1.0))


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_any_finite_magnitude_gives_the_cosines_of_the_unscaled_features(scale: float):
    pairs = _pairs(3, [6, 5])
    wide = [(x.double() * scale, y.double()) for x, y in pairs]
    assert calibrate_threshold(wide, 0.4) == pytest.approx(_reference(pairs, 0.4), abs=1e-12)


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        (None, r"feature_pairs must be an iterable .* got NoneType None"),
        (5, r"feature_pairs must be an iterable .* got int 5"),
        (torch.ones(2, 3), r"feature_pairs must be an iterable .* got Tensor of shape \(2, 3\)"),
        (
            (torch.ones(2, 3), torch.ones(2, 3)),
            r"feature_pairs\[0\] must be .* got Tensor of shape",
        ),
    ],
)
def test_a_wrong_container_is_named_with_what_was_given(pairs, match):
    with pytest.raises(TypeError, match=match):
        calibrate_threshold(pairs)
