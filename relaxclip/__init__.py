"""relaxclip: contrastive fine-tuning of image-text encoders for zero-shot chest X-ray classification.

Implements Jang et al., arXiv 2212.07050: a CLIP loss with positive-pair relaxation
(:class:`RelaxedContrastiveLoss`), random sentence sampling from reports (:class:`SentenceSampler`)
and the CheXzero zero-shot protocol with its metrics (:class:`ZeroShotClassifier`, :func:`macro_auroc`).
"""

from relaxclip import metrics
from relaxclip.calibration import calibrate_threshold
from relaxclip.distributed import DISTRIBUTED_MODES, distributed_loss, is_distributed_active
from relaxclip.loss import (
    DEFAULT_THRESHOLD,
    LossOutput,
    RelaxedContrastiveLoss,
    positive_pair_stats,
    relaxed_contrastive_loss,
)
from relaxclip.metrics import *  # noqa: F403 (re-exports relaxclip.metrics.__all__)
from relaxclip.sampling import SentenceSampler, sample_sentences, text_group_ids
from relaxclip.sentence_pool import SentencePool
from relaxclip.sentences import parse_report_sections, split_sentences
from relaxclip.zeroshot import (
    NoFindingTemplateWarning,
    ZeroShotClassifier,
    hf_text_encoder,
    open_clip_text_encoder,
    plot_roc,
)

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_THRESHOLD",
    "DISTRIBUTED_MODES",
    "LossOutput",
    "NoFindingTemplateWarning",
    "RelaxedContrastiveLoss",
    "SentencePool",
    "SentenceSampler",
    "ZeroShotClassifier",
    "__version__",
    "calibrate_threshold",
    "distributed_loss",
    "hf_text_encoder",
    "is_distributed_active",
    "open_clip_text_encoder",
    "parse_report_sections",
    "plot_roc",
    "positive_pair_stats",
    "relaxed_contrastive_loss",
    "sample_sentences",
    "split_sentences",
    "text_group_ids",
]
__all__ += metrics.__all__
