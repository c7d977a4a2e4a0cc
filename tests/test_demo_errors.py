"""Issue 13 for the demo: bad input gets a clear error before any work, and no output is lost.

Evaluation splits (item 5), strict results.json (item 5), --out checks, atomic outputs, stale
outputs and Ctrl-C (item 6), and the CLI / demo model / tokenizer "unhelpful errors".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _demo_config import tiny_config

from relaxclip.demo import report
from relaxclip.demo.cli import main
from relaxclip.demo.config import DemoConfig, available_cores
from relaxclip.demo.models import TinyCLIP, WordTokenizer
from relaxclip.demo.results import dumps_strict
from relaxclip.demo.runner import run_demo

TINY = [
    "demo", "--n-train", "48", "--n-val", "32", "--n-test", "48", "--image-size", "32",
    "--pretrain-steps", "2", "--finetune-steps", "2", "--batch-size", "16", "--seeds", "0",
    "--bootstrap", "10", "--no-progress", "--threads", "1", "--device", "cpu",
]  # fmt: skip


def _tiny(**kw: Any) -> DemoConfig:
    """One seed, 2 + 2 steps."""
    base: dict[str, Any] = {
        "seeds": (0,),
        "pretrain_steps": 2,
        "finetune_steps": 2,
        "n_bootstrap": 20,
    }
    return tiny_config(**(base | kw))


def _strict_loads(text: str) -> Any:
    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


# ----------------------------------------------------------------------------- item 5


@pytest.mark.parametrize(("split", "kw"), [("test", {"n_test": 1}), ("validation", {"n_val": 1})])
def test_degenerate_evaluation_split_is_rejected_before_training(
    split: str, kw: dict[str, Any]
) -> None:
    """Before: --n-test 1 trained every arm and reported NaN everywhere ("not distinguishable")."""
    lines: list[str] = []
    with pytest.raises(ValueError, match=f"{split} split: no finding has both"):
        run_demo(_tiny(**kw), None, log=lines.append)
    assert not any("pre-train" in line for line in lines)


def test_cli_n_test_1_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*TINY, "--n-test", "1", "--out", str(tmp_path)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "test split" in captured.err and "--n-test" in captured.err
    assert not (tmp_path / "results.json").exists() and "pre-train" not in captured.out


def test_results_json_is_strict_json_with_null(tmp_path: Path) -> None:
    """16 test studies of seed 0 have no pneumothorax: its AUROC is undefined -> null, not NaN."""
    results = run_demo(_tiny(n_test=16, plots=False), tmp_path, log=lambda s: None)
    saved = _strict_loads((tmp_path / "results.json").read_text())
    per_label = saved["arms"]["a"]["per_label_auroc"]["pneumothorax"]
    assert per_label["mean"] is None and per_label["per_seed"] == [None]
    assert saved["arms"]["a"]["macro_auroc"]["mean"] is not None
    assert results["arms"]["a"]["per_label_auroc"]["pneumothorax"]["mean"] is None
    assert "n/a" in results["table"]


def test_dumps_strict() -> None:
    text = dumps_strict({"a": float("nan"), "b": [np.float64("inf"), 1.5], "c": (np.int64(2),)})
    assert _strict_loads(text) == {"a": None, "b": [None, 1.5], "c": [2]}


# ----------------------------------------------------------------------------- item 6


def _bad_out(tmp_path: Path) -> dict[str, str]:
    file = tmp_path / "file.txt"
    file.write_text("x")
    return {"existing file": str(file), "under a file": str(file / "sub"), "empty": ""}


@pytest.mark.parametrize("case", ["existing file", "under a file", "empty"])
def test_unusable_out_is_an_option_error_before_training(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: each surfaced only after the whole run, as a raw traceback, results lost."""
    out = _bad_out(tmp_path)[case]
    with pytest.raises(SystemExit) as exc:
        main([*TINY, "--out", out])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "--out" in captured.err or "out:" in captured.err
    assert "pre-train" not in captured.out


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_out_is_rejected_before_training() -> None:
    """A directory that cannot be written (/proc/self refuses new files, even for root)."""
    lines: list[str] = []
    with pytest.raises(ValueError, match="out: cannot write to /proc/self"):
        run_demo(_tiny(), "/proc/self", log=lines.append)
    assert lines == []


def _earlier_run(out: Path) -> dict[str, str]:
    old = {"results.json": '{"old": true}\n', "roc.png": "old roc", "summary.png": "old summary"}
    for name, text in old.items():
        (out / name).write_text(text)
    return old


def test_interrupted_write_leaves_earlier_outputs_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: results.json was written first, so a failure in the plots left a new
    results.json beside the old plots."""
    old = _earlier_run(tmp_path)

    def interrupt(*args: Any) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_plot_summary", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_demo(_tiny(), tmp_path, log=lambda s: None)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old  # no temp dir left either


def test_stale_outputs_of_an_earlier_run_are_removed(tmp_path: Path) -> None:
    """Before: a --no-plots run left the earlier run's roc.png/summary.png beside it."""
    _earlier_run(tmp_path)
    lines: list[str] = []
    results = run_demo(_tiny(plots=False), tmp_path, log=lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    saved = _strict_loads((tmp_path / "results.json").read_text())
    assert saved["arms"]["a"]["macro_auroc"] == results["arms"]["a"]["macro_auroc"]
    assert any("of an earlier run" in line for line in lines)
    assert any(line.startswith("removed") and "roc.png" in line for line in lines)


def test_ctrl_c_exits_130_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import relaxclip.demo.runner as runner

    def interrupted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_demo", interrupted)
    assert main([*TINY, "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--pretrain-lr", "inf"], "--pretrain-lr: expected a learning rate in (0, 1], got inf"),
        (["--finetune-lr", "1e30"], "--finetune-lr: expected a learning rate in (0, 1], got 1e+30"),
        (["--finetune-lr", "nan"], "--finetune-lr: expected a learning rate"),
        (["--device", "meta"], "device: 'meta' tensors hold no data"),
        (["--device", "cuda:99" if torch.cuda.is_available() else "cuda"], "device:"),
        (["--threads", "100000"], "threads must be an int in [1, 1024], got 100000"),
    ],
)
def test_cli_rejects_up_front(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the learning rates were accepted and failed deep inside (or trained nonsense),
    --device meta ended in a torch traceback, --threads 100000 crashed torch."""
    with pytest.raises(SystemExit) as exc:
        main([*TINY, *extra, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("n_bootstrap", ["1", "2", "3"])
def test_tiny_bootstrap_still_plots(
    n_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: --bootstrap 2 crashed in summary.png ("'yerr' must not contain negative
    values"): with so few replicates the CI need not contain the mean."""
    argv = [*TINY, "--bootstrap", n_bootstrap, "--out", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "summary.png").stat().st_size > 0
    assert "rough 95% CI" in capsys.readouterr().out


def test_threads_above_core_count_warn() -> None:
    lines: list[str] = []
    with pytest.raises(ValueError, match="test split"):  # stops before any training
        run_demo(_tiny(threads=available_cores() + 1, n_test=1), None, log=lines.append)
    assert lines[0].startswith("warning: threads=") and "exceeds" in lines[0]


# ----------------------------------------------------------------------------- models


def _tok() -> WordTokenizer:
    return WordTokenizer(["a", "b"], context_length=4)


def _model(**kw: Any) -> TinyCLIP:
    return TinyCLIP(10, 8, image_size=32, embed_dim=8, **kw)


MODEL_ERRORS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("build(str)", lambda: WordTokenizer.build("a str"), TypeError, "not a single str"),
    ("build(None)", lambda: WordTokenizer.build(None), TypeError, "texts"),  # type: ignore[arg-type]
    ("build min_count str", lambda: WordTokenizer.build(["a"], min_count="1"), TypeError, "min_count"),  # type: ignore[arg-type]
    ("build context 2", lambda: WordTokenizer.build(["a"], context_length=2), ValueError, "context_length"),
    ("vocab str", lambda: WordTokenizer("abc"), TypeError, "vocab"),
    ("vocab int", lambda: WordTokenizer([1]), TypeError, r"vocab\[0\]"),  # type: ignore[list-item]
    ("vocab two words", lambda: WordTokenizer(["a b"]), ValueError, "single lower-case tokens"),
    ("vocab empty word", lambda: WordTokenizer([""]), ValueError, "single lower-case tokens"),
    ("count_truncated str", lambda: _tok().count_truncated("a b"), TypeError, "texts"),
    ("call int item", lambda: _tok()(["a", 1]), TypeError, r"texts\[1\]"),  # type: ignore[list-item]
    ("vocab_size float", lambda: TinyCLIP(5.5, 8), TypeError, "vocab_size"),  # type: ignore[arg-type]
    ("context float", lambda: TinyCLIP(10, 8.0), TypeError, "context_length"),  # type: ignore[arg-type]
    ("image_size 0", lambda: TinyCLIP(10, 8, image_size=0), ValueError, "image_size"),
    ("channels ()", lambda: TinyCLIP(10, 8, channels=()), ValueError, "channels"),
    ("channels 0", lambda: TinyCLIP(10, 8, channels=(0,), image_size=16), ValueError, "channels"),
    ("embed_dim 0", lambda: TinyCLIP(10, 8, embed_dim=0), ValueError, "embed_dim"),
    ("heads 3", lambda: TinyCLIP(10, 8, text_heads=3), ValueError, "text_heads"),
    ("layers 0", lambda: TinyCLIP(10, 8, text_layers=0), ValueError, "text_layers"),
    ("in_channels 0", lambda: TinyCLIP(10, 8, in_channels=0), ValueError, "in_channels"),
    ("logit scale 0", lambda: TinyCLIP(10, 8, init_logit_scale=0), ValueError, "init_logit_scale"),
    ("logit scale -1", lambda: TinyCLIP(10, 8, init_logit_scale=-1.0), ValueError, "init_logit_scale"),
    ("logit scale nan", lambda: TinyCLIP(10, 8, init_logit_scale=float("nan")), ValueError, "init_logit_scale"),
    ("image channels", lambda: _model().encode_image(torch.zeros(2, 3, 32, 32)), ValueError, r"\(N, 1, 32, 32\)"),
    ("image size", lambda: _model().encode_image(torch.zeros(2, 1, 48, 48)), ValueError, "images"),
    ("image int", lambda: _model().encode_image(torch.zeros(2, 1, 32, 32, dtype=torch.long)), TypeError, "floating"),
    ("image list", lambda: _model().encode_image([1]), TypeError, "torch.Tensor"),  # type: ignore[arg-type]
    ("token id too large", lambda: _model().encode_text(torch.full((2, 3), 10)), ValueError, "id 10"),
    ("token id negative", lambda: _model().encode_text(torch.full((2, 3), -1)), ValueError, "id -1"),
    ("tokens all padding", lambda: _model().encode_text(torch.zeros(2, 3, dtype=torch.long)), ValueError, "only padding"),
    ("forward batch mismatch", lambda: _model()(torch.zeros(2, 1, 32, 32), torch.ones(3, 3, dtype=torch.long)), ValueError, "batch size"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "error", "needle"),
    [case[1:] for case in MODEL_ERRORS],
    ids=[case[0] for case in MODEL_ERRORS],
)
def test_demo_model_and_tokenizer_errors(
    make: Callable[[], object], error: type[Exception], needle: str
) -> None:
    """Before: IndexError, ZeroDivisionError, AssertionError, math domain errors, torch
    RuntimeErrors -- or silent acceptance (build("a str") built a character vocabulary, a
    zero image_size or embed_dim built a model)."""
    with pytest.raises(error, match=needle):
        make()


def test_good_inputs_still_work() -> None:
    tok = WordTokenizer.build(["No effusion.", "Mild edema."])
    assert "effusion" in tok.stoi and "e" not in tok.stoi
    model = TinyCLIP(tok.vocab_size, tok.context_length, image_size=32, embed_dim=8)
    model.eval()
    img, txt, _ = model(torch.zeros(2, 1, 32, 32), tok(["no effusion", "edema"]))
    assert img.shape == txt.shape == (2, 8)
    assert TinyCLIP(10, 8, channels=[8], image_size=np.int64(16)).image_size == 16


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_sigint_exits_130_and_keeps_earlier_outputs(tmp_path: Path) -> None:
    """End to end: SIGINT during pre-training -> exit 130, one line on stderr, no traceback,
    the earlier run's outputs untouched."""
    old = _earlier_run(tmp_path)
    argv = [*TINY, "--pretrain-steps", "2000", "--out", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "relaxclip", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the run is past the data and into training
        if line.startswith("benchmark:"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old
