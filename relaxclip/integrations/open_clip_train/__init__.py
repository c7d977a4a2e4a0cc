"""open_clip's own trainer with the relaxed loss and random sentence sampling.

Usage (every ``open_clip_train.main`` argument is accepted unchanged; relaxclip adds its own)::

    python -m relaxclip.integrations.open_clip_train \\
        --relax-threshold 0.8 --sentence-sampling --num-sentences 1 \\
        --report-sections findings,impression --text-groups \\
        --dataset-type csv --train-data train.csv --csv-img-key filepath --csv-caption-key report \\
        --model ViT-B-32-quickgelu --pretrained openai --batch-size 64 --epochs 10 ...

    torchrun --nproc_per_node=8 -m -- relaxclip.integrations.open_clip_train ...   # DDP, GPUs

relaxclip's options (``--help`` lists them; ``docs/integrations.md`` explains them):
``--relax-threshold θ`` or ``--relax-quantile q`` (θ calibrated once on the pre-trained model's
first ``--relax-calibration-batches`` training batches), ``--sentence-sampling`` with
``--num-sentences``, ``--report-sections``, ``--report-fallback``, ``--on-empty`` and
``--text-groups``.

While open_clip's ``main`` runs, a few of its module globals are replaced and restored
afterwards: ``open_clip_train.main.create_loss`` (:func:`make_loss`, after calibration),
``setup_logging`` (keeps torch's internal loggers quiet), with ``--relax-quantile``
``create_model_and_transforms`` and ``get_data`` (to capture the model and the training data),
and with ``--sentence-sampling`` ``open_clip_train.data.get_csv_dataset`` (the report dataset).
The loss returns open_clip's loss dict plus relaxation statistics that open_clip logs at each
``--log-every-n-steps`` step but does not add to the loss (:class:`LoggedLosses`).

Options, the CSV data and the open_clip version (:data:`SUPPORTED_OPEN_CLIP`) are checked before
any model is built: :class:`OptionError` and :class:`OpenClipVersionError`, one line on the
command line.
"""

from relaxclip.integrations.open_clip_train.args import (
    SUPPORTED_OPEN_CLIP,
    TESTED_OPEN_CLIP,
    OpenClipVersionError,
    OptionError,
    RelaxOptions,
    build_parser,
    parse_relax_args,
)
from relaxclip.integrations.open_clip_train.data import (
    GroupedLoader,
    OpenClipReportCollate,
    ReportCsvDataset,
    check_csv_data,
    read_csv,
    sampler_seed,
)
from relaxclip.integrations.open_clip_train.entry import (
    check_open_clip,
    check_supported,
    cli,
    main,
)
from relaxclip.integrations.open_clip_train.loss import (
    LoggedLosses,
    OpenClipLoss,
    TextGroupFeed,
    calibrate,
    make_loss,
    relax_stats,
)

__all__ = [
    "SUPPORTED_OPEN_CLIP",
    "TESTED_OPEN_CLIP",
    "GroupedLoader",
    "LoggedLosses",
    "OpenClipLoss",
    "OpenClipReportCollate",
    "OpenClipVersionError",
    "OptionError",
    "RelaxOptions",
    "ReportCsvDataset",
    "TextGroupFeed",
    "build_parser",
    "calibrate",
    "check_csv_data",
    "check_open_clip",
    "check_supported",
    "cli",
    "main",
    "make_loss",
    "parse_relax_args",
    "read_csv",
    "relax_stats",
    "sampler_seed",
]
