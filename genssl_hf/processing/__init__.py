"""genssl_hf.processing: AdaIN alignment of images to real reference statistics.

* :class:`AdaINImageProcessor`: transformers image processor (PIL/numpy backend), reachable through
  ``AutoImageProcessor.from_pretrained(dir)`` once ``genssl_hf`` is imported (``genssl_hf`` calls
  :func:`register_auto_class` / :func:`register_report_processor` when transformers' Auto modules load).
* :func:`compute_reference_stats`: streaming pooled / per-image statistics with provenance.
* :class:`ReportGeneratorProcessor`: AdaIN image processor + tokenizer for report generation (``AutoProcessor``).
* :func:`adain_batch`, :class:`MAEAugment`: batched tensor AdaIN and the MAE augmentation for training loops.
"""

from .augment import ADAIN_MODES, MAEAugment, adain_batch
from .image_processor import PAPER_ADAIN_MEAN, PAPER_ADAIN_STD, AdaINImageProcessor, adain_numpy, register_auto_class
from .report_processor import ReportGeneratorProcessor, register_report_processor, special_token_ids
from .report_vocab import build_report_vocabulary_tokenizer
from .stats import (
    STATISTICS,
    ReferenceStats,
    ReferenceStatsAccumulator,
    RunningMoments,
    compute_reference_stats,
    save_reference_stats,
    to_gray_uint8_or_float,
)

__all__ = [
    "ADAIN_MODES",
    "AdaINImageProcessor",
    "MAEAugment",
    "PAPER_ADAIN_MEAN",
    "PAPER_ADAIN_STD",
    "ReferenceStats",
    "ReportGeneratorProcessor",
    "register_report_processor",
    "build_report_vocabulary_tokenizer",
    "special_token_ids",
    "ReferenceStatsAccumulator",
    "RunningMoments",
    "STATISTICS",
    "adain_batch",
    "adain_numpy",
    "compute_reference_stats",
    "register_auto_class",
    "save_reference_stats",
    "to_gray_uint8_or_float",
]
