"""The columns of a generated dataset: its ``datasets.Features`` and the row sources that give the
prompt, labels and metadata of index ``i`` (prompt mode: the balance plan; report mode: the corpus)."""

from __future__ import annotations

import collections
from typing import Any, Iterator, Sequence

from genssl_hf.generation.balance import BalancePlan, sample_seed

from .layout import SOURCE
from genssl_hf.prompts.promptset import PromptSet

from .plan import ReportCorpus, report_hash


def generated_features(
    *,
    label_names: Sequence[str] | None,
    class_names: Sequence[str] | None = None,
    report_mode: bool = False,
    keep_prompt_text: bool = True,
):
    """The ``datasets.Features`` of a generated dataset.

    Prompt mode with diseases: the canonical multi-label schema over the prompt set's diseases
    (``labels`` holds the prompt's disease when it is stated present or unspecified, nothing
    when it is stated absent) plus ``prompt``, ``prompt_id``, ``disease``, ``existence`` and
    ``class_label`` (the balance class). Prompt mode without diseases: the multi-class schema
    with ``label`` = the prompt's class. Report mode: ``labels`` when the corpus has them, and
    ``report_sha256`` (``prompt`` only when the text is kept on request). Always ``seed``,
    ``index`` and ``generator_id``.
    """
    import datasets

    from genssl_hf.data.schema import METADATA_FEATURES, cxr_features

    tail = {
        "seed": datasets.Value("int64"),
        "index": datasets.Value("int64"),
        "generator_id": datasets.Value("string"),
        # tokens of the prompt the text encoder cut off (0: none; null: the generator cannot say)
        "prompt_tokens_truncated": datasets.Value("int32"),
    }
    if report_mode:
        extra: dict[str, Any] = {}
        if keep_prompt_text:
            extra["prompt"] = datasets.Value("string")
        extra["report_sha256"] = datasets.Value("string")
        extra.update(tail)
        if label_names:
            return cxr_features(label_names, multi_label=True, extra=extra)
        return datasets.Features({"image": datasets.Image(mode="L"), **METADATA_FEATURES, **extra})
    extra = {
        "prompt": datasets.Value("string"),
        "prompt_id": datasets.Value("int32"),
        "disease": datasets.Value("string"),
        "existence": datasets.Value("string"),
    }
    if label_names:
        extra["class_label"] = datasets.ClassLabel(names=list(class_names or []))
        extra.update(tail)
        return cxr_features(label_names, multi_label=True, extra=extra)
    extra.update(tail)
    return cxr_features(list(class_names or []), multi_label=False, extra=extra)


def _features_yaml(features: Any) -> list[dict[str, Any]]:
    import datasets

    return datasets.DatasetInfo(features=features)._to_yaml_dict()["features"]


def _features_from_yaml(items: list[dict[str, Any]]) -> Any:
    import datasets

    return datasets.DatasetInfo._from_yaml_dict({"features": items}).features


class _PromptRows:
    def __init__(self, prompts: PromptSet, plan: BalancePlan, seed: int, generator_id: str):
        self.prompts, self.plan, self.seed, self.generator_id = prompts, plan, int(seed), generator_id
        self._items = prompts.prompts
        self.label_index = {d: i for i, d in enumerate(prompts.diseases)}

    def rows(self, start: int, stop: int) -> dict[str, list]:
        pids = self.plan.prompt_ids(start, stop)
        cols: dict[str, list] = collections.defaultdict(list)
        for i, pid in zip(range(start, stop), pids.tolist()):
            p = self._items[pid]
            cols["prompt"].append(p.text)
            cols["prompt_id"].append(pid)
            cols["disease"].append(p.disease)
            cols["existence"].append(p.existence)
            if self.label_index:
                positive = p.disease and p.existence != "negative"
                cols["labels"].append([self.label_index[p.disease]] if positive else [])
                cols["class_label"].append(self.plan.prompt_class[pid])
            else:
                cols["label"].append(self.plan.prompt_class[pid])
            _common(cols, i, sample_seed(self.seed, i), self.generator_id)
        return cols


class _ReportRows:
    """Forward cursor over the corpus; ranges must come in increasing order (they do: a process
    walks its shards and their chunks in index order)."""

    def __init__(self, corpus: ReportCorpus, seed: int, generator_id: str, keep_prompt_text: bool):
        self.corpus, self.seed, self.generator_id, self.keep = corpus, int(seed), generator_id, keep_prompt_text
        self._it: Iterator | None = None
        self._pending: tuple | None = None

    def rows(self, start: int, stop: int) -> dict[str, list]:
        if self._it is None or (self._pending is not None and self._pending[0] > start):
            self._it, self._pending = self.corpus.iter_records(start), None
        cols: dict[str, list] = collections.defaultdict(list)
        while True:
            rec = self._pending if self._pending is not None else next(self._it, None)
            self._pending = None
            if rec is None:
                break
            i, text, labels = rec
            if i < start:
                continue
            if i >= stop:
                self._pending = rec
                break
            cols["_text"].append(text)  # the prompt for the generator; dropped before writing unless kept
            if self.keep:
                cols["prompt"].append(text)
            cols["report_sha256"].append(report_hash(text))
            if self.corpus.label_names:
                cols["labels"].append(list(labels or []))
            _common(cols, i, sample_seed(self.seed, i), self.generator_id)
        if len(cols["index"]) != stop - start:
            raise RuntimeError(f"report corpus ended early: rows [{start}, {stop}) are not all present")
        return cols


def _common(cols: dict[str, list], i: int, seed: int, generator_id: str) -> None:
    cols["patient_id"].append(f"synthetic-{i:09d}")
    cols["study_id"].append(f"synthetic-{i:09d}")
    cols["view"].append("")
    cols["source"].append(SOURCE)
    cols["seed"].append(seed)
    cols["index"].append(i)
    cols["generator_id"].append(generator_id)
