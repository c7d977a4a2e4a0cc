"""Arms as data (relaxclip.demo.arms): typed records, one line per arm, sweep arms as records."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from _demo_config import tiny_config

from relaxclip.demo.arms import ARMS, CONFIGURED, REFERENCE, Arm, sweep_arms
from relaxclip.demo.config import DemoConfig
from relaxclip.demo.runner import run_demo


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
    ("kwargs", "needle"),
    [
        ({"label": ""}, "label"),
        ({"text": "sentence"}, "text"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"finetune": False, "text": "sampled"}, "without fine-tuning"),
    ],
)
def test_arm_rejects_bad_fields(kwargs: dict[str, Any], needle: str) -> None:
    fields: dict[str, Any] = {"label": "x", "name": "x"} | kwargs
    with pytest.raises(ValueError, match=needle):
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
