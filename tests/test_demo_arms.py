"""Arms as data (relaxclip.demo.arms): typed records, one line per arm, sweep arms as records."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from _demo_config import tiny_config

from relaxclip.demo.arms import ARMS, CONFIGURED, REFERENCE, Arm, sweep_arms
from relaxclip.demo.config import DemoConfig
from relaxclip.demo.runner import run_demo
from relaxclip.loss import DEFAULT_THRESHOLD


def _tiny(**kw: Any) -> DemoConfig:
    """One seed, 2 + 2 steps."""
    base: dict[str, Any] = {
        "seeds": (0,),
        "pretrain_steps": 2,
        "finetune_steps": 2,
        "plots": False,
        "n_bootstrap": 20,
    }
    return tiny_config(**(base | kw))


def test_default_arms_are_records() -> None:
    labels = [a.label for a in ARMS]
    assert labels == ["pretrained", "a", "b", "c", "d", "e"] and REFERENCE in labels
    by = {a.label: a for a in ARMS}
    assert (by["a"].text, by["a"].threshold) == ("whole", None)
    assert (by["b"].text, by["b"].threshold) == ("sampled", None)
    assert (by["c"].text, by["c"].threshold) == ("whole", CONFIGURED)
    assert (by["d"].text, by["d"].threshold) == ("sampled", CONFIGURED)
    assert (by["e"].text, by["e"].threshold) == ("sampled", CONFIGURED) and by["e"].text_groups
    assert not any(a.text_groups for a in ARMS if a.label != "e")
    assert not by["pretrained"].finetune and all(a.finetune for a in ARMS[1:])
    assert by["d"].resolve_threshold(0.7) == 0.7 and by["b"].resolve_threshold(0.7) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        by["a"].text = "sampled"  # type: ignore[misc]


def test_sweep_arms_carry_their_threshold() -> None:
    arms = sweep_arms([0.9, 0.6, 0.9, 1.0])
    assert [a.threshold for a in arms] == [0.6, 0.9, 1.0]  # sorted, duplicates dropped
    assert [a.label for a in arms] == ["d@0.6", "d@0.9", "d@1"]
    assert all(a.sweep and a.sampled for a in arms)
    assert arms[0].resolve_threshold(0.8) == 0.6  # its own θ, not the configured one


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"label": ""}, ValueError, "label must be a non-empty str"),
        ({"text": "sentence"}, ValueError, "text must be one of 'whole', 'sampled'"),
        ({"threshold": 1.5}, ValueError, r"threshold must be a number in \(-1.0, 1.0\]"),
        ({"threshold": "0.5"}, TypeError, "threshold must be a real number"),
        ({"threshold": True}, TypeError, "threshold must be a real number"),
        ({"finetune": False, "text": "sampled"}, ValueError, "without fine-tuning"),
    ],
)
def test_arm_rejects_bad_fields(
    kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    fields: dict[str, Any] = {"label": "x", "name": "x"} | kwargs
    with pytest.raises(error, match=needle):
        Arm(**fields)


def test_adding_an_arm_is_one_record() -> None:
    """An extra arm appears in results.json, the table and the conclusion with no other edit."""
    extra = Arm("x", "(x) sampling, theta -0.5", text="sampled", threshold=-0.5)
    lines: list[str] = []
    results = run_demo(_tiny(), None, log=lines.append, arms=(*ARMS, extra))
    arm = results["arms"]["x"]
    assert arm["threshold"] == -0.5 and arm["sentence_sampling"] and arm["text"] == "sampled"
    assert arm["train_stats"][0]["relaxed_fraction"] > 0  # θ = -0.5 relaxes most pairs
    assert "(x) sampling, theta -0.5" in results["table"]
    assert "(x) " in results["conclusion"] and "(d) " in results["conclusion"]
    assert any("arm x:" in line for line in lines)


@pytest.mark.parametrize(
    ("arms", "needle"),
    [
        ((*ARMS, Arm("a", "again")), "unique"),
        (tuple(a for a in ARMS if a.label != REFERENCE), "reference"),
    ],
)
def test_bad_arm_lists(arms: tuple[Arm, ...], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        run_demo(_tiny(), None, log=lambda s: None, arms=arms)


def test_text_groups_arm_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arm (e) (a default arm since issue 14): the runner asks the real SentenceSampler for
    text-group ids and the real group-aware loss receives them as groups=, for that arm only,
    every step, equal to text_group_ids of the texts sampled for that step's batch."""
    import torch

    import relaxclip.demo.runner as runner
    from relaxclip.loss import RelaxedContrastiveLoss
    from relaxclip.sampling import SentenceSampler, text_group_ids

    sampled: list[dict[str, Any]] = []
    seen: list[tuple[int, torch.Tensor | None]] = []

    class SpyLoss(RelaxedContrastiveLoss):
        def forward(  # type: ignore[override]
            self,
            image_features: torch.Tensor,
            text_features: torch.Tensor,
            logit_scale: torch.Tensor | float,
            groups: torch.Tensor | None = None,
        ) -> Any:
            seen.append((image_features.shape[0], groups))
            return super().forward(image_features, text_features, logit_scale, groups=groups)

    class SpySampler(SentenceSampler):
        def __call__(self, batch: Any) -> dict[str, Any]:
            out = super().__call__(batch)
            if self.group_key is not None:
                sampled.append(out)
            return out

    monkeypatch.setattr(runner, "RelaxedContrastiveLoss", SpyLoss)
    monkeypatch.setattr(runner, "SentenceSampler", SpySampler)
    e = next(a for a in ARMS if a.label == "e")
    assert e.text_groups and e.sampled and e.threshold == CONFIGURED
    assert [a.label for a in ARMS if a.text_groups] == ["e"]
    cfg = _tiny()
    results = run_demo(cfg, None, log=lambda s: None)
    assert results["arms"]["e"]["text_groups"] is True and "(e) " in results["conclusion"]
    assert all(results["arms"][a.label]["text_groups"] is False for a in ARMS if a.label != "e")
    grouped = [(n, g) for n, g in seen if g is not None]
    assert len(grouped) == cfg.finetune_steps  # arm (e) only, every step, one seed
    assert len(sampled) == len(grouped)  # one sampled batch per step, in order
    for (n, g), out in zip(grouped, sampled, strict=True):
        assert g.shape == (n,) and g.dtype == torch.int64
        assert torch.equal(out[runner.TEXT_GROUP_KEY], g)
        assert torch.equal(g, text_group_ids(out["text"]))


# ---------------------------------------------------------------- calibrated quantile thresholds


def test_quantile_arm_resolves_to_a_calibrated_threshold() -> None:
    arm = Arm("q", "(q) quantile", text="sampled", threshold_quantile=0.7)
    assert arm.resolve_threshold(0.8) is None and arm.resolve_quantile() == 0.7
    # the configured arms follow the run's configured relaxation: a quantile when one is set
    d = next(a for a in ARMS if a.label == "d")
    assert d.resolve_threshold(0.8) == 0.8 and d.resolve_quantile() is None
    assert d.resolve_threshold(0.8, 0.6) is None and d.resolve_quantile(0.6) == 0.6
    b = next(a for a in ARMS if a.label == "b")
    assert b.resolve_threshold(0.8, 0.6) is None and b.resolve_quantile(0.6) is None


def test_default_arms_relaxation_is_set_in_one_place() -> None:
    """DEFAULT_THRESHOLD_QUANTILE is the default of DemoConfig.threshold_quantile, which decides
    how the configured arms (c), (d), (e) relax; today it keeps the absolute default."""
    from relaxclip.demo.config import DEFAULT_THRESHOLD_QUANTILE

    cfg = DemoConfig()
    assert cfg.threshold_quantile == DEFAULT_THRESHOLD_QUANTILE
    configured = [a for a in ARMS if a.threshold == CONFIGURED]
    assert [a.label for a in configured] == ["c", "d", "e"]
    for arm in configured:
        theta = arm.resolve_threshold(cfg.absolute_threshold, cfg.threshold_quantile)
        q = arm.resolve_quantile(cfg.threshold_quantile)
        if DEFAULT_THRESHOLD_QUANTILE is None:
            assert (theta, q) == (DEFAULT_THRESHOLD, None)
        else:
            assert (theta, q) == (None, DEFAULT_THRESHOLD_QUANTILE)


def test_sweep_arms_include_quantile_records() -> None:
    arms = sweep_arms([0.8, 0.6], [0.9, 0.5, 0.9])
    assert [a.label for a in arms] == ["d@0.6", "d@0.8", "d@q=0.5", "d@q=0.9"]
    assert [a.threshold_quantile for a in arms] == [None, None, 0.5, 0.9]
    assert [a.threshold for a in arms] == [0.6, 0.8, None, None]
    assert all(a.sweep and a.sampled for a in arms)
    assert arms[2].resolve_quantile() == 0.5 and arms[2].resolve_threshold(0.8) is None
    assert DemoConfig().sweep_quantiles == (0.5, 0.7, 0.9)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"threshold_quantile": 1.0}, ValueError, r"threshold_quantile must be a number in \(0"),
        ({"threshold_quantile": 0.0}, ValueError, r"threshold_quantile must be a number in \(0"),
        ({"threshold_quantile": True}, TypeError, "threshold_quantile must be a real number"),
        ({"threshold_quantile": "0.5"}, TypeError, "threshold_quantile must be a real number"),
        ({"threshold_quantile": 0.5, "threshold": 0.8}, ValueError, "mutually exclusive"),
        ({"threshold_quantile": 0.5, "threshold": CONFIGURED}, ValueError, "mutually exclusive"),
        ({"finetune": False, "threshold_quantile": 0.5}, ValueError, "without fine-tuning"),
    ],
)
def test_quantile_arm_rejects_bad_fields(
    kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        Arm(**({"label": "x", "name": "x"} | kwargs))


@pytest.mark.parametrize(
    ("overrides", "error", "needle"),
    [
        ({"threshold_quantile": 1.5}, ValueError, r"threshold_quantile must be a number in \(0"),
        ({"sweep_quantiles": (0.5, 1.0)}, ValueError, r"sweep_quantiles\[i\] must be a number in"),
        ({"sweep_quantiles": [0.5]}, TypeError, "sweep_quantiles must be a tuple"),
        ({"calibration_batches": 0}, ValueError, "calibration_batches must be an int >= 1"),
    ],
)
def test_config_rejects_bad_quantiles(
    overrides: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        _tiny(**overrides).validate()


def test_cli_quantile_options(capsys: pytest.CaptureFixture[str]) -> None:
    from relaxclip.demo.cli import _demo_config, build_parser

    parser = build_parser()
    cfg = _demo_config(
        parser.parse_args(
            [
                "demo",
                "--relax-quantile",
                "0.7",
                "--sweep-threshold",
                "--sweep-quantiles",
                "0.6",
                "0.3",
            ]
        )
    )
    assert cfg.threshold_quantile == 0.7 and cfg.sweep_quantiles == (0.6, 0.3)
    for flag, values in (("--sweep-quantiles", ["0.6"]), ("--sweep-values", ["0.7"])):
        # without --sweep-threshold these used to be accepted and silently ignored
        with pytest.raises(ValueError, match=f"{flag} needs --sweep-threshold"):
            _demo_config(parser.parse_args(["demo", flag, *values]))
    explicit = _demo_config(parser.parse_args(["demo", "--threshold", "0.5"]))
    assert explicit.threshold_quantile is None
    for argv, needle in (
        (["--threshold", "0.5", "--relax-quantile", "0.7"], "not allowed with argument"),
        (["--relax-quantile", "1.5"], "a quantile in (0, 1)"),
        (["--sweep-quantiles", "0"], "a quantile in (0, 1)"),
    ):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["demo", *argv])
        assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_quantile_arms_calibrate_a_fixed_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configured quantile (arms c, d, e) and a quantile sweep arm: each calibrates θ once, on
    the pre-trained model's first ``calibration_batches`` fine-tuning batches (no gradients),
    builds its loss with that fixed θ, and results.json and the table report it."""
    import torch

    import relaxclip.demo.runner as runner
    from relaxclip.calibration import calibrate_threshold
    from relaxclip.loss import RelaxedContrastiveLoss

    built: list[float | None] = []
    calibrated: list[tuple[int, float, float, bool]] = []

    class SpyLoss(RelaxedContrastiveLoss):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self.threshold)

    def spy_calibrate(pairs: Any, q: float) -> float:
        pairs = list(pairs)
        theta = calibrate_threshold(pairs, q)
        grad = any(t.requires_grad for pair in pairs for t in pair)
        calibrated.append((len(pairs), q, theta, grad))
        return theta

    monkeypatch.setattr(runner, "RelaxedContrastiveLoss", SpyLoss)
    monkeypatch.setattr(runner, "calibrate_threshold", spy_calibrate)
    cfg = _tiny(
        threshold_quantile=0.7,
        sweep_threshold=True,
        sweep_thresholds=(1.0,),
        sweep_quantiles=(0.5,),
        calibration_batches=3,
    )
    results = run_demo(cfg, None, log=lambda s: None)
    arms = results["arms"]
    assert [(n, q, grad) for n, q, _, grad in calibrated] == [(3, 0.7, False)] * 3 + [
        (3, 0.5, False)
    ]
    thetas = [theta for *_, theta, _ in calibrated]
    # pre-training (CLIP), a, b (CLIP), c, d, e (q = 0.7), d@1 (θ = 1), d@q=0.5
    assert built == [None] * 3 + thetas[:3] + [1.0, thetas[3]]
    assert all(-1.0 <= t <= 1.0 for t in thetas)
    # d and e pair the same images with the same sampled sentences: the same θ
    assert thetas[1] == thetas[2]
    for label, q, theta in zip(
        ("c", "d", "e", "d@q=0.5"), (0.7, 0.7, 0.7, 0.5), thetas, strict=True
    ):
        assert arms[label]["threshold_quantile"] == q and arms[label]["threshold"] is None
        assert arms[label]["calibrated_threshold"] == [theta], label
    assert arms["a"]["threshold_quantile"] is None and arms["a"]["calibrated_threshold"] is None
    assert arms["d@1"]["threshold"] == 1.0
    sweep = results["sweep"]
    assert sweep["thresholds"] == [1.0] and sweep["quantiles"] == [0.5]
    assert set(sweep["val_macro_auroc_mean"]) == {"1", "q=0.5"}
    assert set(sweep["test_macro_auroc_mean"]) == {"1", "q=0.5"}
    assert sweep["chosen_on_validation"] in (1.0, "q=0.5")
    table = results["table"]
    assert "(d) + both, quantile q=0.5" in table and f"(theta q=0.7 -> {thetas[1]:.3f})" in table
    assert any(
        line.startswith(" q=0.5 ") and f"{thetas[3]:.3f}" in line for line in table.splitlines()
    )
    assert torch.is_grad_enabled()  # calibration left autograd as it found it


def test_calibration_leaves_the_other_arms_unchanged() -> None:
    """A quantile sweep arm calibrates on a stream of its own: arms (a)-(e) and the absolute
    sweep arm train on exactly the batches, and reach exactly the scores, of a run without it."""
    import numpy as np

    base = {"sweep_threshold": True, "sweep_thresholds": (0.5,), "calibration_batches": 2}
    plain = run_demo(_tiny(**base, sweep_quantiles=()), None, log=lambda s: None)
    with_q = run_demo(_tiny(**base, sweep_quantiles=(0.5,)), None, log=lambda s: None)
    assert "d@q=0.5" in with_q["arms"] and "d@q=0.5" not in plain["arms"]
    for label, arm in plain["arms"].items():
        other = with_q["arms"][label]
        assert other["val_curve"] == arm["val_curve"], label
        assert other["train_stats"] == arm["train_stats"], label
        assert np.isclose(other["macro_auroc"]["mean"], arm["macro_auroc"]["mean"]), label


def test_sweep_chooses_on_validation_across_absolute_and_quantile_settings() -> None:
    import numpy as np

    from relaxclip.demo.results import ArmResult, SeedRun, SeedSummary, summarise_sweep

    def result(arm: Arm, val: float, test: float) -> ArmResult:
        run = SeedRun(0, np.zeros((1, 1)), val, 1, {1: val}, None)
        return ArmResult(
            arm=arm,
            threshold=arm.resolve_threshold(0.8),
            threshold_quantile=arm.resolve_quantile(),
            macro=SeedSummary(test, 0.0, [test]),
            macro_ci95=(test, test),
            delta_mean=0.0,
            delta_ci95=(0.0, 0.0),
            per_label={},
            runs=[run],
        )

    arms = sweep_arms([0.6, 0.8], [0.5, 0.7])
    vals = {"d@0.6": 0.70, "d@0.8": 0.72, "d@q=0.5": 0.74, "d@q=0.7": 0.71}
    res = {a.label: result(a, vals[a.label], vals[a.label] - 0.1) for a in arms}
    sweep = summarise_sweep(res, 0.8)
    assert sweep is not None and sweep.chosen == "q=0.5"  # the best validation AUROC
    assert sweep.thresholds == [0.6, 0.8] and sweep.quantiles == [0.5, 0.7]
    assert list(sweep.val_mean) == ["0.6", "0.8", "q=0.5", "q=0.7"]
    assert sweep.test_mean["q=0.5"] == vals["d@q=0.5"] - 0.1
    # ties: the configured kind of setting, closest to the configured value, wins
    tied = {a.label: result(a, 0.7, 0.6) for a in arms}
    assert summarise_sweep(tied, 0.8).chosen == 0.8  # type: ignore[union-attr]
    assert summarise_sweep(tied, 0.6).chosen == 0.6  # type: ignore[union-attr]
    assert summarise_sweep(tied, 0.8, quantile=0.65).chosen == "q=0.7"  # type: ignore[union-attr]


def test_config_refuses_both_an_absolute_and_a_quantile_threshold() -> None:
    """The configured arms relax with one rule: giving both used to let the quantile win
    silently; now it is an error naming both fields."""
    with pytest.raises(ValueError, match="threshold .* and threshold_quantile .* are both set"):
        DemoConfig(threshold=0.9, threshold_quantile=0.7).validate()
    DemoConfig(threshold=0.9, threshold_quantile=None).validate()
    DemoConfig(threshold=None, threshold_quantile=0.7).validate()
    default = DemoConfig(threshold=None, threshold_quantile=None)
    assert default.absolute_threshold == DEFAULT_THRESHOLD
