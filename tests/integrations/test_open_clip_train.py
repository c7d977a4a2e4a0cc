"""relaxclip inside open_clip's own trainer (``python -m relaxclip.integrations.open_clip_train``).

Runs in the integrations venv (open_clip_torch with ``open_clip_train`` and its training
dependencies); skipped where those are missing. The training tests are tiny and offline: a CSV
built in ``tmp_path`` from the two NIH ChestX-ray14 PNGs of ``../shared/data`` (plus flipped and
rotated copies) and Open-I report text (findings + impression, read in place with
``relaxclip.data.read_openi_reports``), a 2-layer open_clip ViT config loaded with ``local-dir:``
(``pretrained=None``: no download), CPU. They skip when ``../shared/data`` is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
from _shared import needs_shared, shared_path

pytest.importorskip("open_clip")
pytest.importorskip("open_clip_train.main", reason="open_clip_train's dependencies missing")

import open_clip_train.data  # noqa: E402
import open_clip_train.main  # noqa: E402

from relaxclip.calibration import calibrate_threshold  # noqa: E402
from relaxclip.integrations import open_clip_train as roc  # noqa: E402
from relaxclip.integrations.open_clip_train import args as args_mod  # noqa: E402
from relaxclip.integrations.open_clip_train import data as data_mod  # noqa: E402
from relaxclip.integrations.open_clip_train import entry  # noqa: E402
from relaxclip.integrations.open_clip_train import loss as loss_mod  # noqa: E402
from relaxclip.loss import RelaxedContrastiveLoss, relaxed_contrastive_loss  # noqa: E402
from relaxclip.sampling import SentenceSampler, group_text, text_group_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NIH_PNGS = ("nih_cxr14/00000001_000.png", "nih_cxr14/00027426_000.png")
OPENI = "iu_xray/NLMCXR_reports.tgz"
N_ROWS, BATCH = 16, 4  # 4 steps per epoch
TINY_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# --text-groups data: these rows' reports are replaced by one-sentence reports, so every step
# samples exactly that sentence; the variants differ in case, spacing and trailing punctuation
# (one text group under relaxclip.sampling.group_text, although their tokens differ)
DUP_REPORTS = {
    0: "IMPRESSION: No acute cardiopulmonary abnormality.",
    2: "IMPRESSION: no acute cardiopulmonary abnormality",
    5: "IMPRESSION: No acute  cardiopulmonary abnormality !",
    7: "IMPRESSION: No acute cardiopulmonary abnormality.",
    10: "IMPRESSION: NO ACUTE CARDIOPULMONARY ABNORMALITY.",
    13: "IMPRESSION: No acute cardiopulmonary abnormality.",
    3: "FINDINGS: The heart is normal in size.",
    8: "FINDINGS: The heart is normal in size.",
    14: "FINDINGS: The heart is normal in size.",
}


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def report_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tab-separated CSV (filepath, report) of 16 rows: 16 image files made from the two NIH
    PNGs (identity, flips, rotations at 4 sizes' worth of variants) and 16 Open-I reports with at
    least 3 sentences in findings + impression, written as ``FINDINGS: ... IMPRESSION: ...``."""
    if not all(shared_path(p).exists() for p in (*NIH_PNGS, OPENI)):
        pytest.skip("../shared/data (NIH PNGs, Open-I reports) absent")
    from PIL import Image, ImageOps

    from relaxclip.data import read_openi_reports
    from relaxclip.sentences import split_sentences

    out = tmp_path_factory.mktemp("report_csv")
    variants = [
        lambda im: im,
        ImageOps.mirror,
        ImageOps.flip,
        lambda im: im.rotate(90),
        lambda im: im.rotate(180),
        lambda im: im.rotate(270),
        lambda im: ImageOps.mirror(im.rotate(90)),
        lambda im: ImageOps.autocontrast(im, cutoff=2),
    ]
    images = []
    for k, rel in enumerate(NIH_PNGS):
        base = Image.open(shared_path(rel)).convert("L")
        for j, f in enumerate(variants):
            path = out / f"img{k}_{j}.png"
            f(base).resize((48, 48)).save(path)
            images.append(path)
    reports = []
    for rec in read_openi_reports(shared_path(OPENI)):
        n = len(split_sentences(rec["findings"])) + len(split_sentences(rec["impression"]))
        if rec["findings"] and rec["impression"] and n >= 3:
            reports.append(f"FINDINGS: {rec['findings']} IMPRESSION: {rec['impression']}")
        if len(reports) == N_ROWS:
            break
    assert len(images) == len(reports) == N_ROWS
    csv = out / "train.csv"
    lines = ["filepath\treport"] + [f"{p}\t{r}" for p, r in zip(images, reports, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.fixture(scope="module")
def dup_report_csv(report_csv: Path) -> Path:
    """``report_csv`` with the rows of :data:`DUP_REPORTS` replaced: identical sampled sentences
    occur in most batches."""
    lines = report_csv.read_text().splitlines()
    for row, report in DUP_REPORTS.items():
        image = lines[1 + row].split("\t")[0]
        lines[1 + row] = f"{image}\t{report}"
    csv = report_csv.with_name("train_dup.csv")
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An open_clip ``local-dir:`` model folder: config only, no weights (random init)."""
    d = tmp_path_factory.mktemp("tiny_open_clip")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_MODEL_CFG}))
    return d


@pytest.fixture
def clean_logging():
    """open_clip's setup_logging adds root handlers on every run; remove them afterwards."""
    import logging

    before = list(logging.root.handlers)
    yield
    for h in list(logging.root.handlers):
        if h not in before:
            logging.root.removeHandler(h)
            h.close()


def _train_args(csv: Path, model_dir: Path, logs: Path, name: str, epochs: int) -> list[str]:
    return [
        "--dataset-type", "csv", "--train-data", str(csv), "--csv-img-key", "filepath",
        "--csv-caption-key", "report", "--model", f"local-dir:{model_dir}",
        "--batch-size", str(BATCH), "--epochs", str(epochs), "--workers", "0",
        "--device", "cpu", "--precision", "fp32", "--lr", "1e-3", "--warmup", "1", "--seed", "0",
        "--logs", str(logs), "--name", name, "--save-frequency", "1", "--report-to", "",
        "--log-every-n-steps", "1",
    ]  # fmt: skip


class _Spy:
    """Records every call of RelaxedContrastiveLoss.forward and OpenClipReportCollate.__call__."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.losses: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        forward, collate = RelaxedContrastiveLoss.forward, data_mod.OpenClipReportCollate.__call__
        spy = self

        def loss_forward(self: RelaxedContrastiveLoss, *args: Any, **kwargs: Any) -> Any:
            out = forward(self, *args, **kwargs)
            feats = [kwargs["image_features"], kwargs["text_features"], kwargs["logit_scale"]]
            groups = kwargs.get("groups")
            spy.losses.append(
                {
                    "module": self,
                    "kwargs": sorted(kwargs),
                    "inputs": [t.detach().clone() for t in feats],
                    "groups": None if groups is None else groups.clone(),
                    "out": {k: v.detach().clone() for k, v in out.items()},
                    "diagnostics": {
                        k: v.clone() for k, v in getattr(out, "diagnostics", {}).items()
                    },
                    "state": {k: v.clone() for k, v in self.state_dict().items()},
                }
            )
            return out

        def collate_call(self: data_mod.OpenClipReportCollate, batch: Any) -> Any:
            out = collate(self, batch)
            spy.batches.append(
                {
                    "epoch": self.sampler.epoch,
                    "train": self.sampler.training,
                    "reports": [s["report"] for s in batch],
                    "texts": list(self.last_texts),
                    "sampler": self.sampler,
                }
            )
            return out

        monkeypatch.setattr(RelaxedContrastiveLoss, "forward", loss_forward)
        monkeypatch.setattr(data_mod.OpenClipReportCollate, "__call__", collate_call)


def _logged_losses(log: Path) -> list[float]:
    """The per-step 'Contrastive_loss: value (avg)' values open_clip's trainer logged."""
    return [float(v) for v in re.findall(r"Contrastive_loss: (\S+) \(", log.read_text())]


# ---------------------------------------------------------------------------------- version
def test_supported_open_clip_is_accepted() -> None:
    oc = entry.check_open_clip()
    assert oc.version == roc.TESTED_OPEN_CLIP
    assert oc.main is open_clip_train.main and oc.data is open_clip_train.data
    assert entry._in_supported_range(oc.version)


@pytest.mark.parametrize("version", ["9.0.0", "2.32.0", "3.4.0", None])
def test_unsupported_open_clip_version_is_an_error(
    monkeypatch: pytest.MonkeyPatch, version: str | None
) -> None:
    def installed(name: str) -> str:
        if version is None:
            raise entry.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.setattr(entry.metadata, "version", installed)
    with pytest.raises(roc.OpenClipVersionError) as err:
        entry.check_open_clip()
    assert ("not installed" if version is None else f"{version} is not supported") in str(err.value)
    assert roc.SUPPORTED_OPEN_CLIP in str(err.value) and roc.TESTED_OPEN_CLIP in str(err.value)
    assert 'pip install "relaxclip[openclip]"' in str(err.value)


# ---------------------------------------------------------------------------------- arguments
def test_relax_options_are_split_from_open_clip_options() -> None:
    argv = ["--model", "RN50", "--relax-threshold", "0.7", "--local-loss", "--sentence-sampling",
            "--num-sentences", "2-3", "--report-sections", "impression", "--epochs", "2"]  # fmt: skip
    options, rest = args_mod.parse_relax_args(argv)
    assert options == args_mod.RelaxOptions(0.7, True, (2, 3), ("impression",))
    assert rest == ["--model", "RN50", "--local-loss", "--epochs", "2"]
    assert args_mod.parse_relax_args(["--relax-threshold", "none"])[0].threshold is None
    assert args_mod.parse_relax_args([])[0] == args_mod.RelaxOptions()  # plain CLIP, no sampling
    opts = args_mod.parse_relax_args(["--sentence-sampling", "--num-sentences", "0.5",
                                 "--report-sections", "all", "--on-empty", "drop"])[0]  # fmt: skip
    assert opts.num_sentences == 0.5 and opts.sections is None and opts.on_empty == "drop"
    opts = args_mod.parse_relax_args(["--sentence-sampling", "--report-sections", "findings",
                                 "--report-fallback", "impression,report"])[0]  # fmt: skip
    assert opts.sections == ("findings",) and opts.fallback == ("impression", "report")


def test_help_lists_relaxclip_and_open_clip_options(capsys) -> None:
    assert roc.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--relax-threshold",
        "--relax-quantile",
        "--relax-calibration-batches",
        "--sentence-sampling",
        "--num-sentences",
        "--report-sections",
        "--report-fallback",
        "--on-empty",
        "--text-groups",
    ):
        assert flag in out
    for flag in ("--train-data", "--local-loss", "--gather-with-grad", "--resume"):
        assert flag in out  # open_clip's own, unchanged


@pytest.mark.parametrize(
    "argv",
    [
        ["--relax-threshold", "1.5"],
        ["--relax-threshold", "x"],
        ["--num-sentences", "2"],  # without --sentence-sampling: would be ignored
        ["--report-sections", "findings"],
        ["--report-fallback", "report"],
        ["--on-empty", "drop"],
        ["--text-groups"],  # the groups are those of the sampled sentences
        ["--sentence-sampling", "--num-sentences", "0"],
        ["--sentence-sampling", "--num-sentences", "3-1"],
        ["--sentence-sampling", "--report-sections", "findings,"],
        ["--sentence-sampling", "--report-fallback", "report,indication"],  # report must be last
        ["--sentence-sampling", "--report-fallback", "findings"],  # already sampled
        ["--sentence-sampling", "--on-empty", "skip"],
    ],
)
def test_bad_relax_options_exit_with_a_message(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        args_mod.parse_relax_args(argv)
    assert exc.value.code == 2
    assert "--" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--report-sections", "--report-fallback"])
def test_unknown_report_section_is_rejected_up_front(flag: str, capsys) -> None:
    """A misspelt section name used to pass silently (sampling only the other sections)."""
    with pytest.raises(SystemExit) as exc:
        args_mod.parse_relax_args(["--sentence-sampling", flag, "findings,impresion"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: must be comma-separated section names among" in err
    assert "got 'impresion'" in err and "findings, impression, comparison" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--siglip"], "--siglip"),
        (["--model", "coca_ViT-B-32"], "CoCa"),
        (["--distill-model", "RN50", "--distill-pretrained", "openai"], "--distill"),
        (["--horovod"], "--horovod"),
        (["--sentence-sampling", "--dataset-type", "webdataset"], "CSV data"),
        (["--sentence-sampling", "--dataset-type", "synthetic"], "CSV data"),
    ],
)
def test_unsupported_combinations_fail_before_building(
    extra: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(open_clip_train.main, "create_model_and_transforms", _must_not_run)
    argv = ["--train-data", "x.tar", "--device", "cpu", *extra]
    with pytest.raises(roc.OptionError, match=re.escape(message)):
        roc.main(argv)


def _must_not_run(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("open_clip's main built a model")


def test_torchrun_on_cpu_is_rejected_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Several processes on the CPU used to fail after the model was built, in DDP(device_ids)."""
    monkeypatch.setattr(open_clip_train.main, "create_model_and_transforms", _must_not_run)
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["--dataset-type", "synthetic", "--device", "cpu"]
    with pytest.raises(roc.OptionError, match="torchrun on CPU is not supported"):
        roc.main(argv)
    assert roc.cli(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "needs GPUs" in err


def test_csv_columns_and_images_are_checked_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A wrong --csv-caption-key or a missing image used to surface after the model was built."""
    monkeypatch.setattr(open_clip_train.main, "create_model_and_transforms", _must_not_run)
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    csv = tmp_path / "train.csv"
    csv.write_text(f"filepath\treport\n{image}\tFINDINGS: Clear.\n{tmp_path / 'b.png'}\tx\n")
    argv = ["--train-data", str(csv), "--csv-img-key", "filepath", "--device", "cpu"]
    with pytest.raises(roc.OptionError, match=r"no column 'caption' \(--csv-caption-key\)"):
        roc.main([*argv, "--csv-caption-key", "caption"])
    assert roc.cli([*argv, "--csv-caption-key", "caption"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(roc.OptionError, match=r"data row 1: image '.*b\.png' .* is not a file"):
        roc.main([*argv, "--csv-caption-key", "report"])


def test_text_groups_parse_and_need_training_data(monkeypatch: pytest.MonkeyPatch) -> None:
    options, rest = args_mod.parse_relax_args(
        ["--sentence-sampling", "--text-groups", "--epochs", "1"]
    )
    assert options.text_groups and options.sentence_sampling and rest == ["--epochs", "1"]
    assert not args_mod.parse_relax_args(["--sentence-sampling"])[0].text_groups
    monkeypatch.setattr(open_clip_train.main, "create_model_and_transforms", _must_not_run)
    argv = ["--sentence-sampling", "--text-groups", "--val-data", "v.csv", "--device", "cpu"]
    with pytest.raises(roc.OptionError, match="--text-groups needs --train-data"):
        roc.main(argv)


def test_text_group_feed_pairs_each_window_with_its_loss_calls() -> None:
    a, b, c = torch.tensor([1, 2, 1]), torch.tensor([5, 6, 2]), torch.tensor([9, 9, 9])
    feed = loss_mod.TextGroupFeed(accum_freq=2)
    feed.push(a)
    with pytest.raises(RuntimeError, match="before a complete window"):
        feed.take(3)  # the window is not complete yet
    feed.push(b)
    for _ in range(2):  # accum_freq calls, each on the window's rows in batch order
        assert torch.equal(feed.take(6), torch.cat([a, b]))
    with pytest.raises(RuntimeError, match="already called 2 times"):
        feed.take(6)
    # rows 0, 2 (id 1) and 2, 5 (id 2) share a group: 4 of 6 rows
    assert (feed.windows, feed.rows, feed.shared_rows) == (1, 6, 4)
    feed.push(c)
    feed.push(a)
    with pytest.raises(RuntimeError, match="the loss got 3 feature rows, but the window holds 6"):
        feed.take(3)
    assert torch.equal(feed.take(6), torch.cat([c, a]))
    with pytest.raises(RuntimeError, match="a new batch came after 1 of 2 loss calls"):
        feed.push(b)  # the loop skipped a loss call: ids would pair with the wrong batches
    feed.start_epoch()  # a new epoch forgets the window (and an incomplete one)
    feed.push(b)
    feed.start_epoch()
    feed.push(c)
    feed.push(a)
    assert torch.equal(feed.take(6), torch.cat([c, a]))
    with pytest.raises(ValueError, match="accum_freq"):
        loss_mod.TextGroupFeed(0)
    with pytest.raises(TypeError, match="groups must not be passed"):
        loss_mod.OpenClipLoss(0.5, feed=loss_mod.TextGroupFeed())(
            torch.randn(3, 4), torch.randn(3, 4), 10.0, groups=a
        )


def test_a_main_that_never_builds_the_loss_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run never calls create_loss: the entry point must not report success with open_clip's
    own loss silently in use."""

    def main(args: list[str]) -> None:
        pass

    monkeypatch.setattr(open_clip_train.main, "main", main)
    with pytest.raises(roc.OpenClipVersionError, match="without calling create_loss"):
        roc.main(["--dataset-type", "synthetic", "--device", "cpu"])


def test_open_clip_error_status_is_an_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def main(args: list[str]) -> int:  # e.g. "Experiment already exists"
        return -1

    monkeypatch.setattr(open_clip_train.main, "main", main)
    assert roc.main(["--train-data", "x.tar", "--device", "cpu"]) == 1


@pytest.mark.parametrize(
    ("distributed", "world", "local_loss", "mode"),
    [(False, 1, False, None), (True, 2, True, "local"), (True, 4, False, "global")],
)
def test_loss_maps_open_clip_distributed_options(
    distributed: bool, world: int, local_loss: bool, mode: str | None, caplog
) -> None:
    args = argparse.Namespace(
        distributed=distributed, world_size=world, local_loss=local_loss, gather_with_grad=False
    )
    with caplog.at_level("INFO", logger="relaxclip.open_clip_train"):
        loss = loss_mod.make_loss(args, 0.6)
    assert isinstance(loss, RelaxedContrastiveLoss) and loss.threshold == 0.6
    assert loss.distributed is distributed
    if mode is not None:
        assert loss.distributed_mode == mode
        assert "--gather-with-grad is off" in caplog.text  # said, not silently changed
    else:
        assert "--gather-with-grad" not in caplog.text


# ---------------------------------------------------------------------------------- quantile
def test_relax_quantile_options_parse() -> None:
    options, rest = args_mod.parse_relax_args(
        ["--relax-quantile", "0.7", "--epochs", "2", "--relax-calibration-batches", "3"]
    )
    assert (options.relax_quantile, options.calibration_batches, options.threshold) == (
        0.7,
        3,
        None,
    )
    assert rest == ["--epochs", "2"]
    assert args_mod.parse_relax_args(["--relax-quantile", "0.5"])[0].calibration_batches == 10
    assert args_mod.parse_relax_args([])[0].relax_quantile is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--relax-threshold", "0.8", "--relax-quantile", "0.5"], "not allowed with argument"),
        (["--relax-quantile", "0"], "(0, 1)"),
        (["--relax-quantile", "1"], "(0, 1)"),
        (["--relax-quantile", "x"], "(0, 1)"),
        (["--relax-quantile", "0.5", "--relax-calibration-batches", "0"], "an int >= 1"),
        (["--relax-quantile", "0.5", "--relax-calibration-batches", "x"], "an int >= 1"),
        (["--relax-calibration-batches", "3"], "needs --relax-quantile"),
    ],
)
def test_bad_relax_quantile_options_exit_with_a_message(
    argv: list[str], message: str, capsys
) -> None:
    with pytest.raises(SystemExit) as exc:
        args_mod.parse_relax_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_logged_statistics_are_not_added_to_the_loss() -> None:
    """open_clip sums losses.values() and logs losses.items(): the statistics are only logged."""
    x, y = torch.randn(8, 4), torch.randn(8, 4)
    losses = loss_mod.OpenClipLoss(0.1)(x, y, 10.0, output_dict=True)
    assert sorted(losses) == ["contrastive_loss", "pos_cos_p10", "pos_cos_p50", "pos_cos_p90",
                              "relax_share", "relax_theta"]  # fmt: skip
    torch.testing.assert_close(sum(losses.values()), losses["contrastive_loss"])
    torch.testing.assert_close(
        losses["contrastive_loss"], relaxed_contrastive_loss(x, y, 10.0, threshold=0.1)
    )
    cos = _positive_cosines(x, y)
    torch.testing.assert_close(losses["relax_share"], (cos > 0.1).float().mean())
    torch.testing.assert_close(losses["pos_cos_p50"], torch.quantile(cos, 0.5), rtol=0, atol=1e-6)
    assert float(losses["relax_theta"]) == pytest.approx(0.1)
    assert "relax_theta" not in loss_mod.OpenClipLoss(None)(x, y, 10.0, output_dict=True)


# ---------------------------------------------------------------------------------- data
def test_reports_without_a_sentence_are_named_with_command_line_advice(tmp_path: Path) -> None:
    """The advice used to name the Python arguments fallback= and on_empty=."""
    csv = tmp_path / "bad.csv"
    csv.write_text("filepath\treport\na.png\tFINDINGS: Clear lungs.\nb.png\tIMPRESSION: \n")
    images, reports = data_mod.read_csv(csv, "filepath", "report", "\t", check_images=False)
    options = args_mod.RelaxOptions(sentence_sampling=True)
    with pytest.raises(roc.OptionError) as err:
        data_mod.check_reports(str(csv), images, reports, data_mod._make_sampler(options))
    message = str(err.value)
    assert re.search(r"bad\.csv: data row 1 \(image 'b\.png'\)", message)
    assert "--report-fallback" in message and "--on-empty drop" in message
    assert "fallback=" not in message and "on_empty=" not in message
    drop = data_mod._make_sampler(args_mod.RelaxOptions(sentence_sampling=True, on_empty="drop"))
    assert data_mod.check_reports(str(csv), images, reports, drop) == 1
    reports[1] = "INDICATION: Cough. IMPRESSION: "  # --report-fallback indication finds it
    options = args_mod.RelaxOptions(sentence_sampling=True, fallback=("indication",))
    assert data_mod.check_reports(str(csv), images, reports, data_mod._make_sampler(options)) == 0
    with pytest.raises(roc.OptionError, match="no column 'caption'"):
        data_mod.read_csv(csv, "filepath", "caption", "\t")


def test_collate_follows_the_shared_epoch_in_dataloader_workers() -> None:
    """Per-epoch randomness through open_clip's SharedEpoch, with 2 (non-persistent) workers
    and shuffle off: the sampled sentences change between epochs although the sampler object in
    the main process never sees set_epoch."""
    from torch.utils.data import DataLoader

    reports = [" ".join(f"Sentence {i} number {j}." for j in range(6)) for i in range(32)]
    data = [{"image": torch.zeros(1), "report": r} for r in reports]
    tokenizer = lambda texts: torch.tensor([[zlib.crc32(t.encode())] for t in texts])  # noqa: E731
    shared = open_clip_train.data.SharedEpoch(0)
    collate = data_mod.OpenClipReportCollate(SentenceSampler(tokenizer=tokenizer, seed=3), shared)
    loader = DataLoader(data, batch_size=8, num_workers=2, collate_fn=collate)

    def epoch(e: int) -> list[int]:
        shared.set_value(e)
        return [int(v) for _, tokens in loader for v in tokens[:, 0]]

    e0, e0_again, e1 = epoch(0), epoch(0), epoch(1)
    assert e0 == e0_again  # reproducible per epoch
    assert e0 != e1  # and different across epochs
    assert collate.sampler.epoch == 0  # the main-process copy was never told


def test_grouped_loader_strips_the_ids_from_worker_batches() -> None:
    """--text-groups' train loader with 2 DataLoader workers: the loop gets (images, texts) and
    the feed the ids of exactly those texts, batch by batch."""
    from torch.utils.data import DataLoader

    sentences = ["No effusion.", "no effusion", "Clear lungs.", "Small nodule."]
    data = [{"image": torch.zeros(1), "report": sentences[i % 4]} for i in range(16)]
    tokenizer = lambda texts: torch.tensor([[zlib.crc32(t.encode())] for t in texts])  # noqa: E731
    sampler = SentenceSampler(tokenizer=tokenizer, seed=1, group_key="text_group")
    collate = data_mod.OpenClipReportCollate(sampler, open_clip_train.data.SharedEpoch(0))
    feed = loss_mod.TextGroupFeed()
    loader = data_mod.GroupedLoader(DataLoader(data, batch_size=4, num_workers=2,
                                           collate_fn=collate), feed)  # fmt: skip
    assert (len(loader), loader.num_batches, loader.num_samples) == (4, 4, 16)
    by_token = {int(tokenizer([s])[0, 0]): s for s in sentences}
    for batch in loader:
        images, texts = batch  # what open_clip's loop unpacks
        ids = feed.take(len(texts))
        assert torch.equal(ids, text_group_ids([by_token[int(t)] for t in texts[:, 0]]))
    assert feed.windows == 4 and feed.shared_rows == 8  # the two "no effusion" rows per batch


# ---------------------------------------------------------------------------------- training
@needs_shared(*NIH_PNGS, OPENI)
def test_trains_with_relaxed_loss_and_sampling_then_resumes(
    report_csv: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch, clean_logging
) -> None:
    spy = _Spy(monkeypatch)
    scalars: list[tuple[str, int, float]] = []

    class Writer:  # stands in for open_clip's tensorboard SummaryWriter
        def add_scalar(self, name: str, value: float, step: int) -> None:
            scalars.append((name, step, value))

    inner = open_clip_train.main.train_one_epoch
    monkeypatch.setattr(open_clip_train.main, "train_one_epoch",
                        lambda *a, **k: inner(*a, **{**k, "tb_writer": Writer()}))  # fmt: skip
    theta = 0.0  # a random tiny model has positive cosines around 0: about half are relaxed
    relax = ["--relax-threshold", str(theta), "--sentence-sampling"]
    args = _train_args(report_csv, tiny_model_dir, tmp_path, "run", epochs=2)
    assert roc.main([*relax, *args, "--val-data", str(report_csv)]) == 0

    steps = N_ROWS // BATCH
    # -- the loss open_clip's trainer called is relaxclip's, with θ, called as the trainer does
    assert len(spy.losses) == 2 * steps
    for call in spy.losses:
        assert call["module"].threshold == theta and call["module"].distributed is False
        assert call["kwargs"] == ["image_features", "logit_scale", "output_dict", "text_features"]
        x, y, t = call["inputs"]
        ours = call["out"]["contrastive_loss"]
        torch.testing.assert_close(ours, relaxed_contrastive_loss(x, y, t, threshold=theta))
    relaxed_steps = 0
    for call in spy.losses:
        x, y, t = call["inputs"]
        plain = relaxed_contrastive_loss(x, y, t, threshold=None)
        if bool(((x * y).sum(1) > theta).any()):  # some positive relaxed: value differs
            relaxed_steps += 1
            assert not torch.allclose(call["out"]["contrastive_loss"], plain)
    assert relaxed_steps > 0
    # open_clip logged exactly these values (its loss meter saw our loss)
    logged = _logged_losses(tmp_path / "run" / "out.log")
    ours = [float(c["out"]["contrastive_loss"]) for c in spy.losses]
    assert logged == pytest.approx(ours, rel=1e-4, abs=1e-4)
    # -- relaxation statistics at every logged step, in open_clip's log lines and tensorboard
    log = (tmp_path / "run" / "out.log").read_text()
    want = [loss_mod.relax_stats(c["inputs"][0], c["inputs"][1], theta) for c in spy.losses]
    for key in ("relax_theta", "relax_share", "pos_cos_p10", "pos_cos_p50", "pos_cos_p90"):
        expected = [float(w[key]) for w in want]
        in_log = [float(v) for v in re.findall(rf"{key.capitalize()}: (\S+) \(", log)]
        assert in_log == pytest.approx(expected, abs=1e-4), key
        in_tb = [v for name, _, v in scalars if name == f"train/{key}"]
        assert in_tb == pytest.approx(expected, abs=1e-6), key
    totals = [v for name, _, v in scalars if name == "train/loss"]
    assert totals == pytest.approx(ours, rel=1e-5)  # the statistics are not added to the loss

    # -- sampled captions: one sentence of each report, different across epochs
    train_batches = [b for b in spy.batches if b["train"]]
    assert [b["epoch"] for b in train_batches] == [0] * steps + [1] * steps
    per_epoch: list[dict[str, str]] = [{}, {}]
    for b in train_batches:
        for report, text in zip(b["reports"], b["texts"], strict=True):
            assert text in b["sampler"].candidates(report)  # a sentence of this report
            per_epoch[b["epoch"]][report] = text
    assert len(per_epoch[0]) == len(per_epoch[1]) == N_ROWS  # drop_last: 16 = 4 x 4
    changed = sum(per_epoch[0][r] != per_epoch[1][r] for r in per_epoch[0])
    assert changed >= N_ROWS // 4, f"only {changed} of {N_ROWS} captions changed across epochs"
    print(f"\n{changed} of {N_ROWS} captions changed; epoch 0 / epoch 1 captions of 3 reports:")
    for r in list(per_epoch[0])[:3]:
        print(f"  {per_epoch[0][r]!r}\n  {per_epoch[1][r]!r}")
    print("losses:", [round(v, 4) for v in ours])

    # -- validation (open_clip's evaluate after each epoch): every sentence, deterministic
    val_batches = [b for b in spy.batches if not b["train"]]
    assert len(val_batches) == 2 * math.ceil(N_ROWS / BATCH)
    for b in val_batches:
        for report, text in zip(b["reports"], b["texts"], strict=True):
            assert text == " ".join(b["sampler"].candidates(report))
    assert "val_loss" in (tmp_path / "run" / "out.log").read_text()

    # -- checkpoints written
    ckpt = tmp_path / "run" / "checkpoints"
    for e in (1, 2):
        state = torch.load(ckpt / f"epoch_{e}.pt", map_location="cpu", weights_only=False)
        assert state["epoch"] == e
        steps_done = {int(s["step"]) for s in state["optimizer"]["state"].values()}
        assert steps_done == {e * steps}

    # -- resume: a 3-epoch run of the same experiment continues from epoch_2.pt
    spy.losses.clear()
    spy.batches.clear()
    args3 = _train_args(report_csv, tiny_model_dir, tmp_path, "run", epochs=3)
    assert roc.main([*relax, *args3, "--resume", "latest"]) == 0
    assert "=> resuming checkpoint" in (tmp_path / "run" / "out.log").read_text()
    assert len(spy.losses) == steps  # only the third epoch ran
    assert {b["epoch"] for b in spy.batches if b["train"]} == {2}
    state = torch.load(ckpt / "epoch_3.pt", map_location="cpu", weights_only=False)
    # the optimizer continued from epoch 2's state (AdamW step counters)
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {3 * steps}
    print("resumed losses (epoch 3):", [round(float(c["out"]["contrastive_loss"]), 4)
                                        for c in spy.losses])  # fmt: skip


def _positive_cosines(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (torch.nn.functional.normalize(x, dim=1) * torch.nn.functional.normalize(y, dim=1)).sum(
        1
    )


@needs_shared(*NIH_PNGS, OPENI)
def test_relax_quantile_calibrates_theta_once_before_training(
    report_csv: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch, clean_logging
) -> None:
    """--relax-quantile q --relax-calibration-batches n: before the first training step, θ is
    calibrate_threshold of the model's positive cosines on the first n training batches; every
    training call uses that fixed θ, and the log says so (once, then at every logged step)."""
    spy = _Spy(monkeypatch)
    calls: list[tuple[list[Any], float, float, int]] = []

    def recording(pairs: Any, quantile: float, **kwargs: Any) -> float:
        pairs = list(pairs)
        theta = calibrate_threshold(pairs, quantile, **kwargs)
        calls.append((pairs, quantile, theta, len(spy.losses)))
        return theta

    monkeypatch.setattr(loss_mod, "calibrate_threshold", recording)
    q, n = 0.5, 2
    args = _train_args(report_csv, tiny_model_dir, tmp_path, "calib", epochs=1)
    relax = ["--relax-quantile", str(q), "--relax-calibration-batches", str(n)]
    assert roc.main([*relax, "--sentence-sampling", *args]) == 0
    assert len(calls) == 1
    pairs, quantile, theta, losses_before = calls[0]
    assert quantile == q and losses_before == 0  # before any training step
    assert len(pairs) == n and all(
        x.shape == (BATCH, TINY_MODEL_CFG["embed_dim"]) for x, _ in pairs
    )
    cosines = torch.cat([_positive_cosines(x.double(), y.double()) for x, y in pairs])
    assert theta == pytest.approx(float(torch.quantile(cosines, q)), abs=1e-6)
    steps = N_ROWS // BATCH
    assert len(spy.losses) == steps
    for call in spy.losses:
        assert call["module"].threshold == pytest.approx(theta)
        x, y, t = call["inputs"]
        torch.testing.assert_close(
            call["out"]["contrastive_loss"], relaxed_contrastive_loss(x, y, t, threshold=theta)
        )
    log = (tmp_path / "calib" / "out.log").read_text()
    assert f"calibrated θ = {theta:.6g}" in log
    logged = [float(v) for v in re.findall(r"Relax_theta: (\S+) \(", log)]
    assert logged == pytest.approx([theta] * steps, abs=1e-4)
    print(f"\ncalibrated θ = {theta:.4f} from {cosines.numel()} pairs")


@needs_shared(*NIH_PNGS, OPENI)
def test_documented_tiny_config_command_runs_offline_without_torch_internals(
    report_csv: Path, tmp_path: Path
) -> None:
    """The command of docs/integrations.md with examples/open_clip_tiny (no download) trains;
    its output has relaxclip's statistics and no lines of torch's internal loggers (open_clip's
    setup_logging used to set them to INFO: 'FakeTensor cache stats' at exit)."""
    docs = (ROOT / "docs" / "integrations.md").read_text()
    block = re.search(r"```bash\n(python -m relaxclip\.integrations\.open_clip_train "
                      r"--model local-dir:examples/open_clip_tiny[^`]*)```", docs)  # fmt: skip
    assert block, "docs/integrations.md lost the tiny-config command"
    text = block.group(1).replace("\\\n", " ").split("#")[0]
    argv = [str(report_csv) if w == "train.csv" else w for w in shlex.split(text)]
    argv = [sys.executable, *argv[1:], "--logs", str(tmp_path), "--name", "tiny"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "calibrated θ" in out and "Relax_share:" in out and "Pos_cos_p90:" in out
    internal = [line for line in out.splitlines() if re.match(r"[IWE]\d{4} .*torch/", line)]
    assert "FakeTensor" not in out and internal == [], internal[:5]


@needs_shared(*NIH_PNGS, OPENI)
def test_plain_clip_without_sampling_uses_open_clips_csv_dataset(
    report_csv: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch, clean_logging
) -> None:
    """No relaxclip flags: open_clip's own CsvDataset (whole caption), relaxclip's loss with
    threshold None (= ClipLoss)."""
    spy = _Spy(monkeypatch)
    args = _train_args(report_csv, tiny_model_dir, tmp_path, "plain", epochs=1)
    assert roc.main(args) == 0
    assert spy.batches == []  # open_clip's CsvDataset tokenised in __getitem__
    assert len(spy.losses) == N_ROWS // BATCH
    from open_clip.loss import ClipLoss

    for call in spy.losses:
        assert call["module"].threshold is None
        x, y, t = call["inputs"]
        torch.testing.assert_close(call["out"]["contrastive_loss"], ClipLoss()(x, y, t))


@needs_shared(*NIH_PNGS, OPENI)
@pytest.mark.parametrize("accum_freq", [1, 2])
def test_text_groups_reach_the_loss(
    dup_report_csv: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_logging: None,
    accum_freq: int,
) -> None:
    """--text-groups: every loss call gets the text-group ids of exactly the rows it sees (with
    --accum-freq 2: the two micro-batches concatenated in order), rows share an id iff their
    sampled sentences are equal after group_text, and the loss is the core loss with those ids."""
    spy = _Spy(monkeypatch)
    theta = 0.0
    args = _train_args(dup_report_csv, tiny_model_dir, tmp_path, "groups", epochs=1)
    argv = ["--relax-threshold", str(theta), "--sentence-sampling", "--text-groups", *args,
            "--accum-freq", str(accum_freq)]  # fmt: skip
    assert roc.main(argv) == 0

    steps = N_ROWS // BATCH
    batches = [b for b in spy.batches if b["train"]]
    assert len(batches) == steps and len(spy.losses) == steps  # A calls per window of A batches
    shared_calls, shared_rows, rows, variant_pairs = 0, 0, 0, 0
    with_groups, without = [], []
    for k, call in enumerate(spy.losses):
        assert isinstance(call["module"], loss_mod.OpenClipLoss) and call["module"].feed is not None
        assert call["kwargs"] == [
            "groups", "image_features", "logit_scale", "output_dict", "text_features"
        ]  # fmt: skip
        first = (k // accum_freq) * accum_freq  # the window's first batch
        texts = [t for b in batches[first : first + accum_freq] for t in b["texts"]]
        groups = call["groups"]
        x, y, t = call["inputs"]
        assert x.shape[0] == len(texts) == BATCH * accum_freq
        assert torch.equal(groups, text_group_ids(texts))
        norm = [group_text(s) for s in texts]
        same = groups[:, None] == groups[None, :]
        assert same.tolist() == [[a == b for b in norm] for a in norm]
        pairs = list(zip(texts, norm, strict=True))
        variant_pairs += sum(a != b and na == nb for a, na in pairs for b, nb in pairs)
        ours = call["out"]["contrastive_loss"]
        torch.testing.assert_close(
            ours, relaxed_contrastive_loss(x, y, t, threshold=theta, groups=groups)
        )
        plain = relaxed_contrastive_loss(x, y, t, threshold=theta)
        with_groups.append(round(float(ours), 4))
        without.append(round(float(plain), 4))
        n_shared = int((same.sum(1) > 1).sum())
        if k % accum_freq == 0:  # count each window once
            rows, shared_rows = rows + len(texts), shared_rows + n_shared
        if n_shared:
            shared_calls += 1
            assert not torch.allclose(ours, plain)  # some negatives were left out
        else:
            torch.testing.assert_close(ours, plain)
    assert shared_calls > 0
    assert variant_pairs > 0  # different strings (case, spacing, "!"), one group
    log = (tmp_path / "groups" / "out.log").read_text()
    assert f"--text-groups: {shared_rows} of {rows} training rows" in log
    print(f"\naccum_freq {accum_freq}: {shared_rows} of {rows} rows shared a text group; "
          f"loss with groups {with_groups}, without {without}")  # fmt: skip


# ---------------------------------------------------------------------------------- torchrun
_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from relaxclip.integrations import open_clip_train as roc
    from relaxclip.integrations.open_clip_train import data, entry
    from relaxclip.loss import RelaxedContrastiveLoss

    forward = RelaxedContrastiveLoss.forward
    collate = data.OpenClipReportCollate.__call__
    calls, texts = [], []

    def spy(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        groups = kwargs.get("groups")
        calls.append({
            "mode": self.distributed_mode, "distributed": self.distributed,
            "image": kwargs["image_features"].detach().tolist(),
            "text": kwargs["text_features"].detach().tolist(),
            "scale": float(kwargs["logit_scale"]),
            "groups": None if groups is None else groups.tolist(),
            "loss": float(out["contrastive_loss"]),
        })
        return out

    def collate_spy(self, batch):
        out = collate(self, batch)
        if self.sampler.training:
            texts.append(list(self.last_texts))
        return out

    RelaxedContrastiveLoss.forward = spy
    data.OpenClipReportCollate.__call__ = collate_spy

    # open_clip's trainer wraps the model as DDP(model, device_ids=[device]), which torch rejects
    # for CPU modules; this test-only shim drops device_ids on CPU so that gloo on CPU can run.
    DDP = torch.nn.parallel.DistributedDataParallel

    class CpuDDP(DDP):
        def __init__(self, module, device_ids=None, **kwargs):
            if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                device_ids = None
            super().__init__(module, device_ids=device_ids, **kwargs)

    torch.nn.parallel.DistributedDataParallel = CpuDDP
    entry._cpu_torchrun = lambda args: False  # the entry point rejects CPU torchrun otherwise
    status = roc.main(sys.argv[1:])
    with open(os.path.join(os.environ["SPY_DIR"], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"status": status, "calls": calls, "texts": texts}, f)
    """
)


@needs_shared(*NIH_PNGS, OPENI)
def test_torchrun_two_ranks_train_on_the_global_batch(
    dup_report_csv: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """torchrun --nproc_per_node=2 (gloo, CPU) with --text-groups: both ranks run relaxclip's
    loss in local mode, each with the text-group ids of its own sampled sentences; at every step
    the mean of the two ranks' losses is the loss of the global batch (both ranks' features and
    ids concatenated), so a sentence drawn on both ranks is one group."""
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    theta = 0.0
    args = _train_args(dup_report_csv, tiny_model_dir, tmp_path / "logs", "ddp", epochs=2)
    env = {**os.environ, "SPY_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    # "--": torchrun would otherwise read open_clip's --logs as an abbreviation of its --logs-specs
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", "--", str(driver), "--relax-threshold", str(theta),
           "--sentence-sampling", "--text-groups", "--local-loss", "--gather-with-grad",
           *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    steps = N_ROWS // (2 * BATCH)  # DistributedSampler: 8 rows per rank
    for r in ranks:
        assert r["status"] == 0
        assert len(r["calls"]) == len(r["texts"]) == 2 * steps
        assert all(c["distributed"] and c["mode"] == "local" for c in r["calls"])
        for c, texts in zip(r["calls"], r["texts"], strict=True):  # this rank's own ids
            assert c["groups"] == text_group_ids(texts).tolist()
    cross_rank = 0
    for c0, c1 in zip(ranks[0]["calls"], ranks[1]["calls"], strict=True):
        x = torch.tensor(c0["image"] + c1["image"], dtype=torch.float32)
        y = torch.tensor(c0["text"] + c1["text"], dtype=torch.float32)
        assert x.shape == (2 * BATCH, TINY_MODEL_CFG["embed_dim"])
        assert c0["scale"] == c1["scale"]
        groups = torch.tensor(c0["groups"] + c1["groups"])
        global_loss = float(
            relaxed_contrastive_loss(x, y, c0["scale"], threshold=theta, groups=groups)
        )
        assert (c0["loss"] + c1["loss"]) / 2 == pytest.approx(global_loss, rel=1e-5)
        assert c0["loss"] != c1["loss"]  # each rank computed its own rows
        if set(c0["groups"]) & set(c1["groups"]):  # a sentence drawn on both ranks
            cross_rank += 1
            plain = float(relaxed_contrastive_loss(x, y, c0["scale"], threshold=theta))
            assert global_loss != pytest.approx(plain, rel=1e-5)
    assert cross_rank > 0
    assert (tmp_path / "logs" / "ddp" / "checkpoints" / "epoch_2.pt").is_file()
    print("\nrank 0 losses:", [round(c["loss"], 4) for c in ranks[0]["calls"]])
    print("rank 1 losses:", [round(c["loss"], 4) for c in ranks[1]["calls"]])
    print(f"steps with a text group on both ranks: {cross_rank} of {2 * steps}")
    assert math.isfinite(ranks[0]["calls"][-1]["loss"])
