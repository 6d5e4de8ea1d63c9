"""``ReportGeneratorProcessor``: the ``AdaINImageProcessor`` and a tokenizer as one transformers processor.

It is what a report-generation folder (a ``VisionEncoderDecoderModel``) carries, so that
``AutoProcessor.from_pretrained(folder)`` and ``transformers.pipeline("image-to-text", model=folder)``
work once ``genssl_hf`` is imported (no remote code). transformers 5 replaced the ``image-to-text``
task by ``image-text-to-text``, which always passes a text: here that text is a *decoder prompt*
(the report's first words; ``""`` for a whole report), returned as ``decoder_input_ids`` that start
with the decoder start token.

Targets for training (:meth:`ReportGeneratorProcessor.encode_reports`): the report's tokens without
the start token, ended by the end-of-sequence token, padded with ``-100`` (ignored by the loss); the
``VisionEncoderDecoderModel`` shifts them right behind ``decoder_start_token_id`` itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin


def special_token_ids(tokenizer) -> dict[str, int]:
    """Start / end / pad ids of a decoder tokenizer: BERT-style ([CLS] / [SEP] / [PAD]) or GPT-style
    (bos / eos, pad falling back to eos)."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    if start is None or end is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no start (cls/bos) or end (sep/eos) token")
    return {"decoder_start_token_id": int(start), "eos_token_id": int(end), "pad_token_id": int(pad)}


class ReportGeneratorProcessor(ProcessorMixin):
    """Images -> ``pixel_values`` (AdaIN image processor); text -> ``decoder_input_ids`` (a prompt) or
    training ``labels`` (:meth:`encode_reports`); generated ids -> text (:meth:`batch_decode`)."""

    def __init__(self, image_processor=None, tokenizer=None, max_report_tokens: int = 128, **kwargs: Any):
        if int(max_report_tokens) < 2:
            raise ValueError(f"max_report_tokens must be >= 2, got {max_report_tokens}")
        self.max_report_tokens = int(max_report_tokens)
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def special_ids(self) -> dict[str, int]:
        return special_token_ids(self.tokenizer)

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("ReportGeneratorProcessor needs images, a decoder prompt text, or both")
        for k in (
            "padding",
            "truncation",
            "add_special_tokens",
        ):  # the pipeline's text defaults; prompts are never padded
            kwargs.pop(k, None)
        data: dict[str, Any] = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors="np", **kwargs))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
            if len({len(i) for i in ids}) > 1:
                raise ValueError("decoder prompts in one batch must have the same number of tokens")
            start = self.special_ids["decoder_start_token_id"]
            data["decoder_input_ids"] = np.asarray([[start, *i] for i in ids], dtype=np.int64)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def encode_reports(self, reports: Sequence[str], max_length: int | None = None) -> torch.Tensor:
        """Training targets (N, L): report tokens + end token, truncated to ``max_length`` (default
        ``max_report_tokens``) and padded with -100."""
        L = int(max_length or self.max_report_tokens)
        eos = self.special_ids["eos_token_id"]
        rows = []
        for i, r in enumerate(reports):
            if not isinstance(r, str):
                raise TypeError(f"report {i} is {type(r).__name__}, not a string")
            ids = self.tokenizer(r, add_special_tokens=False, truncation=True, max_length=L - 1)["input_ids"]
            rows.append([*ids, eos])
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.masked_fill(sequences < 0, self.special_ids["pad_token_id"])
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)
        return [t.strip() for t in texts]

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs: Any):
        return self.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


def register_report_processor() -> None:
    """Make ``AutoProcessor.from_pretrained(folder)`` resolve :class:`ReportGeneratorProcessor` (the
    class is found by the name stored in ``processor_config.json``; a private config class carries
    the registration and never shadows a stock mapping)."""
    from transformers import AutoProcessor, PretrainedConfig

    if "_ReportProcessorRegistrationConfig" not in globals():

        class _ReportProcessorRegistrationConfig(PretrainedConfig):  # noqa: N801 (private)
            model_type = "genssl_report_processor"

        globals()["_ReportProcessorRegistrationConfig"] = _ReportProcessorRegistrationConfig
    AutoProcessor.register(globals()["_ReportProcessorRegistrationConfig"], ReportGeneratorProcessor, exist_ok=True)
