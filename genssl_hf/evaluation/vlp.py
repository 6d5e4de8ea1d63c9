"""Evaluation of an image-report dual encoder: zero-shot classification from text prompts and
image <-> report retrieval.

**Zero-shot.** Each finding gets a set of positive prompts ("Big left-sided pleural effusion.",
"There is pleural effusion.", ...) and a set of negative ones ("No pleural effusion.", ...). Each set
is an *ensemble*: its prompts' normalised text embeddings are averaged and renormalised (CLIP's prompt
ensembling). Multi-label: the score of finding j is softmax(scale * [cos(img, pos_j), cos(img, neg_j)])[0].
Multi-class: softmax over one ensemble per class (a "normal" class uses normal-study prompts; a
two-class normal-vs-finding task uses the finding's positive / negative pair). AUC, sensitivity and
bootstrap CIs come from :func:`genssl_hf.evaluation.classification.classification_metrics`; the
prompts used are written into the output.

**Retrieval.** Recall@K (K = 1, 5, 10) image -> report and report -> image over an evaluation set of
pairs. Identical reports cannot be told apart, so a retrieved item counts as correct when its report
text is identical to the query's (group ids from ``ImageReportPairs.text_groups``); the chance level
of each recall is reported next to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from genssl_hf.evaluation.classification import classification_metrics
from genssl_hf.training.dual_encoder import VLP_CONFIG, embed_images, embed_texts
from genssl_hf.utils import atomic_write_text, write_json, writer_lock

logger = logging.getLogger(__name__)

__all__ = [
    "finding_prompts",
    "build_prompts",
    "LoadedDualEncoder",
    "zero_shot_scores",
    "zero_shot_evaluate",
    "retrieval_recall",
    "evaluate_dual_encoder",
    "main",
]

POSITIVE_TEMPLATES = ("{Finding}.", "There is {finding}.", "Findings consistent with {finding}.")
NEGATIVE_TEMPLATES = ("No {finding}.", "There is no {finding}.", "No evidence of {finding}.")
NORMAL_PROMPTS = ("No acute cardiopulmonary abnormality.", "Normal chest radiograph.", "The lungs are clear.")
# How reports name a label (dataset label names differ: "Effusion", "Pleural_Thickening", "PNEUMONIA").
SYNONYMS: dict[str, tuple[str, ...]] = {
    "effusion": ("pleural effusion",),
    "pleural effusion": ("pleural effusion",),
    "pneumonia": ("pneumonia", "airspace disease"),
    "infiltration": ("infiltrate", "infiltration"),
    "pleural thickening": ("pleural thickening",),
    "mass": ("mass", "lung mass"),
    "nodule": ("nodule", "pulmonary nodule"),
}
# Sizes and sides, the first words of a report's statement (the phantom world and the heuristic prompts).
SIDED = ("atelectasis", "consolidation", "pleural effusion", "effusion", "pneumonia", "pneumothorax")
NORMAL_CLASS_NAMES = ("normal", "no finding", "no_finding", "healthy")


def _clean(name: str) -> str:
    return re.sub(r"[_\s]+", " ", name).strip().lower()


def finding_prompts(name: str, *, attributes: bool = True) -> dict[str, list[str]]:
    """Positive and negative prompts of one finding (see the module doc). With ``attributes``, the
    positive set also states sizes and sides ("Small bilateral atelectasis.")."""
    base = _clean(name)
    terms = SYNONYMS.get(base, (base,))
    pos, neg = [], []
    for term in terms:
        pos += [t.format(finding=term, Finding=term.capitalize()) for t in POSITIVE_TEMPLATES]
        neg += [t.format(finding=term) for t in NEGATIVE_TEMPLATES]
        if attributes:
            sides = ("left-sided", "right-sided", "bilateral") if term in SIDED else ("",)
            for size in ("Small", "Big"):
                for side in sides:
                    pos.append(" ".join(w for w in (size, side, term) if w) + ".")
    return {"positive": list(dict.fromkeys(pos)), "negative": list(dict.fromkeys(neg))}


def build_prompts(
    label_names: Sequence[str], multi_label: bool, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The prompt table of a task: ``{"mode": "pairs", "classes": {name: {"positive", "negative"}}}``
    for multi-label tasks and two-class normal-vs-finding tasks, ``{"mode": "classes", "classes":
    {name: [prompts]}}`` for other multi-class tasks. ``overrides`` replaces entries by label name."""
    names = list(label_names)
    overrides = dict(overrides or {})
    normal = [n for n in names if _clean(n) in NORMAL_CLASS_NAMES]
    if multi_label:
        return {"mode": "pairs", "classes": {n: overrides.get(n) or finding_prompts(n) for n in names}}
    if len(names) == 2 and len(normal) == 1:
        finding = next(n for n in names if n not in normal)
        return {
            "mode": "pairs",
            "classes": {finding: overrides.get(finding) or finding_prompts(finding)},
            "binary": {"negative_class": normal[0], "positive_class": finding},
        }
    classes = {}
    for n in names:
        classes[n] = overrides.get(n) or (list(NORMAL_PROMPTS) if n in normal else finding_prompts(n)["positive"])
    return {"mode": "classes", "classes": classes}


class LoadedDualEncoder:
    """A dual-encoder folder: model (``VisionTextDualEncoderModel``), ``AutoImageProcessor`` and tokenizer."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        import genssl_hf.processing  # noqa: F401 - registers AdaINImageProcessor
        from transformers import AutoImageProcessor, AutoTokenizer, VisionTextDualEncoderModel

        self.folder = Path(folder)
        self.model = VisionTextDualEncoderModel.from_pretrained(self.folder).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(self.folder)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        vlp = self.folder / VLP_CONFIG
        self.max_length = int(json.loads(vlp.read_text()).get("max_text_length", 128)) if vlp.is_file() else 128
        self.device = device

    def embed_texts(self, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        return embed_texts(self.model, self.tokenizer, texts, self.max_length, batch_size)

    def embed_images(self, images: Sequence[Any], batch_size: int = 128) -> torch.Tensor:
        chunks = [
            embed_images(
                self.model,
                self.processor(list(images[s : s + batch_size]), return_tensors="pt")["pixel_values"],
                batch_size,
            )
            for s in range(0, len(images), batch_size)
        ]
        return torch.cat(chunks)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def _ensemble(encoder: LoadedDualEncoder, prompts: Sequence[str]) -> torch.Tensor:
    e = encoder.embed_texts(prompts).mean(dim=0)
    return e / e.norm().clamp_min(1e-12)


def zero_shot_scores(
    encoder: LoadedDualEncoder, image_embeds: torch.Tensor, prompts: Mapping[str, Any], label_names: Sequence[str]
) -> np.ndarray:
    """(N, C) scores in the column order of ``label_names`` for a prompt table from :func:`build_prompts`."""
    scale = encoder.logit_scale
    if prompts["mode"] == "pairs":
        cols = {}
        for name, pn in prompts["classes"].items():
            pair = torch.stack([_ensemble(encoder, pn["positive"]), _ensemble(encoder, pn["negative"])])
            cols[name] = torch.softmax(scale * image_embeds @ pair.t(), dim=1)[:, 0].numpy()
        if "binary" in prompts:
            p = cols[prompts["binary"]["positive_class"]]
            by_name = {prompts["binary"]["positive_class"]: p, prompts["binary"]["negative_class"]: 1.0 - p}
            return np.stack([by_name[n] for n in label_names], axis=1)
        return np.stack([cols[n] for n in label_names], axis=1)
    classes = torch.stack([_ensemble(encoder, prompts["classes"][n]) for n in label_names])
    return torch.softmax(scale * image_embeds @ classes.t(), dim=1).numpy()


def zero_shot_evaluate(
    encoder: LoadedDualEncoder,
    images: Sequence[Any],
    targets: np.ndarray,
    label_names: Sequence[str],
    multi_label: bool,
    *,
    prompts: Mapping[str, Any] | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
    image_embeds: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Zero-shot metrics (``classification_metrics``) with the prompt table used."""
    prompts = dict(prompts or build_prompts(label_names, multi_label))
    emb = image_embeds if image_embeds is not None else encoder.embed_images(images)
    scores = zero_shot_scores(encoder, emb, prompts, label_names)
    metrics = classification_metrics(targets, scores, label_names=label_names, n_bootstrap=n_bootstrap, seed=seed)
    return {"metrics": metrics, "prompts": prompts, "scores": scores}


def _chance_any_of(n: int, group_sizes: np.ndarray, k: int) -> float:
    """Mean over queries of P(at least one of a query's g relevant items is in a random top k of n):
    1 - C(n-g, k) / C(n, k)."""
    p = []
    for g in group_sizes:
        miss = 1.0
        for j in range(min(k, n)):
            miss *= max(0.0, (n - g - j) / (n - j))
        p.append(1.0 - miss)
    return float(np.mean(p))


def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    groups: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall@K both ways over N pairs (row i of each is pair i; ``groups[i]`` is the id of pair i's
    report, equal for identical reports), with the recall of a random ranking (``chance``) per direction.

    Identical reports have identical text embeddings, so they are one candidate, not many:

    - ``image_to_text``: each of the N images ranks the D *distinct* reports; a hit is its own report
      in the top K (chance K / D).
    - ``text_to_image``: one query per distinct report ranks the N images; a hit is any image of that
      report in the top K (chance 1 - C(N-g, K) / C(N, K) for a report with g images).

    ``median_rank`` is the 1-based rank of the (first) correct item. With ``n_bootstrap`` each recall
    gets a 95 % percentile interval over queries resampled with replacement (``ci``; the gallery is fixed)."""
    groups = np.asarray(groups)
    n = len(groups)
    if n == 0 or len(image_embeds) != n or len(text_embeds) != n:
        raise ValueError(
            f"retrieval_recall: {len(image_embeds)} images, {len(text_embeds)} texts and "
            f"{n} groups must match (and be > 0)"
        )
    distinct, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    d = len(distinct)
    sim = (image_embeds @ text_embeds[torch.as_tensor(first)].t()).numpy()  # (N images, D distinct reports)
    out: dict[str, Any] = {"num_pairs": int(n), "num_distinct_reports": int(d)}

    def ranks_of_first_hit(s: np.ndarray, relevant: np.ndarray) -> np.ndarray:
        order = np.argsort(-s, axis=1, kind="stable")
        return np.array([np.flatnonzero(relevant[i, order[i]])[0] for i in range(len(s))])  # 0-based

    group_sizes = np.bincount(inverse, minlength=d)
    directions = (
        ("image_to_text", sim, inverse[:, None] == np.arange(d)[None, :], {f"R@{k}": min(k, d) / d for k in ks}),
        (
            "text_to_image",
            sim.T,
            np.arange(d)[:, None] == inverse[None, :],
            {f"R@{k}": _chance_any_of(n, group_sizes, k) for k in ks},
        ),
    )
    for name, s, relevant, chance in directions:
        hit_rank = ranks_of_first_hit(s, relevant)
        out[name] = {f"R@{k}": float((hit_rank < k).mean()) for k in ks}
        out[name].update(
            median_rank=float(np.median(hit_rank + 1)),
            num_queries=int(len(s)),
            num_candidates=int(s.shape[1]),
            chance=chance,
        )
        if n_bootstrap:
            rows = np.random.default_rng(seed).integers(0, len(s), size=(int(n_bootstrap), len(s)))
            out[name]["ci"] = {}
            for k in ks:
                boot = (hit_rank[rows] < k).mean(axis=1)
                out[name]["ci"][f"R@{k}"] = {
                    "low": float(np.percentile(boot, 2.5)),
                    "high": float(np.percentile(boot, 97.5)),
                }
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown_report(result: Mapping[str, Any]) -> str:
    lines = ["# Dual-encoder evaluation", ""]
    if "retrieval" in result:
        r = result["retrieval"]
        lines += [
            f"## Retrieval ({r['num_pairs']} pairs, {r['num_distinct_reports']} distinct reports)",
            "",
            "Image -> report ranks the distinct reports; report -> image has one query per distinct report "
            "(any of its images is a hit).",
            "",
            "| direction | queries | R@1 | R@5 | R@10 | median rank | chance R@1 | chance R@5 | chance R@10 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for d in ("image_to_text", "text_to_image"):
            x, c = r[d], r[d]["chance"]
            lines.append(
                f"| {d.replace('_', ' ')} | {x['num_queries']} | "
                f"{_fmt(x['R@1'])} | {_fmt(x['R@5'])} | {_fmt(x['R@10'])} "
                f"| {x['median_rank']:.0f} | {_fmt(c['R@1'])} | {_fmt(c['R@5'])} | {_fmt(c['R@10'])} |"
            )
        lines.append("")
    if "zero_shot" in result:
        m = result["zero_shot"]["metrics"]
        lines += [
            f"## Zero-shot classification ({m['num_samples']} images)",
            "",
            "| finding | AUC | 95% CI |",
            "|---|---|---|",
        ]
        ci = m.get("ci", {}).get("per_class", {})
        for name, v in m["per_class"].items():
            iv = ci.get(name, {}).get("auc", {})
            lines.append(
                f"| {name} | {_fmt(v['auc'])} | {_fmt(iv.get('low'))}-{_fmt(iv.get('high'))} |"
                if iv
                else f"| {name} | {_fmt(v['auc'])} | |"
            )
        mi = m.get("ci", {}).get("mean_auc", {})
        lines += [
            f"| **mean** | **{_fmt(m['mean_auc'])}** | {_fmt(mi.get('low'))}-{_fmt(mi.get('high'))} |"
            if mi
            else f"| **mean** | **{_fmt(m['mean_auc'])}** | |",
            "",
        ]
        lines += ["### Prompts", ""]
        for name, p in result["zero_shot"]["prompts"]["classes"].items():
            if isinstance(p, Mapping):
                lines.append(f"- **{name}**: positive {p['positive']}; negative {p['negative']}")
            else:
                lines.append(f"- **{name}**: {list(p)}")
    return "\n".join(lines) + "\n"


def evaluate_dual_encoder(
    model_dir: str | Path,
    *,
    pairs: Any = None,
    dataset: Any = None,
    split: str = "test",
    output_dir: str | Path | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_samples: int | None = None,
    prompts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Retrieval on ``pairs`` (an ``ImageReportPairs``) and zero-shot classification on the pairs'
    labels, or on ``dataset`` (a labelled ``datasets.Dataset`` or a spec of
    :func:`genssl_hf.evaluation.report_inputs.load_eval_split`). Writes ``vlp_metrics.json`` (with the
    prompts), ``vlp_metrics.md`` and, for ``dataset``, ``zero_shot_predictions.npz`` (targets,
    probs) to ``output_dir`` when given. No report text is written."""
    from genssl_hf.training.finetune_data import targets_of

    if pairs is None and dataset is None:
        raise ValueError("give pairs= (retrieval + zero-shot) and/or dataset= (zero-shot)")
    encoder = LoadedDualEncoder(model_dir)
    result: dict[str, Any] = {"model": str(model_dir)}
    predictions = None
    if pairs is not None:
        if max_samples is not None and len(pairs) > max_samples:
            pairs = pairs.select(np.sort(np.random.default_rng(seed).choice(len(pairs), max_samples, replace=False)))
        images = [pairs.images[i][pairs.image_column] for i in range(len(pairs))]
        img = encoder.embed_images(images)
        txt = encoder.embed_texts(pairs.texts)
        result["retrieval"] = retrieval_recall(img, txt, pairs.text_groups(), n_bootstrap=n_bootstrap, seed=seed)
        result["pairs"] = pairs.provenance
        y = pairs.labels_multi_hot()
        if y is not None and dataset is None:
            zs = zero_shot_evaluate(
                encoder,
                images,
                y,
                pairs.label_names,
                True,
                prompts=prompts,
                n_bootstrap=n_bootstrap,
                seed=seed,
                image_embeds=img,
            )
            result["zero_shot"] = {"metrics": zs["metrics"], "prompts": zs["prompts"]}
    if dataset is not None:
        if isinstance(dataset, str):
            from genssl_hf.evaluation.report_inputs import load_eval_split

            result["dataset"] = dataset
            dataset = load_eval_split(dataset, split, seed=seed)
        targets, names, multi_label = targets_of(dataset)
        from genssl_hf.evaluation.report_inputs import sample_indices

        rows = sample_indices(len(dataset), max_samples, seed)
        images = [dataset[int(i)]["image"] for i in rows]
        zs = zero_shot_evaluate(
            encoder, images, targets[rows], names, multi_label, prompts=prompts, n_bootstrap=n_bootstrap, seed=seed
        )
        result["zero_shot"] = {"metrics": zs["metrics"], "prompts": zs["prompts"]}
        predictions = (targets[rows], zs["scores"])
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "vlp_metrics.json", result)
        if predictions is not None:  # the same layout as the classifier evaluation's predictions_*.npz
            import io

            from genssl_hf.utils import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, targets=predictions[0], probs=predictions[1])
            atomic_write_bytes(out / "zero_shot_predictions.npz", buf.getvalue())
        atomic_write_text(out / "vlp_metrics.md", markdown_report(result))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Zero-shot classification and retrieval of a dual-encoder folder")
    p.add_argument("--model", required=True, help="dual-encoder folder (scripts/pretrain_vlp.py output)")
    p.add_argument(
        "--pairs", default=None, help="evaluation pairs for retrieval: phantom[:N], generated:DIR, mimic:ROOT"
    )
    p.add_argument("--pairs_split", default="test", help="phantom split of --pairs (default test)")
    p.add_argument("--reports", default=None, help="report corpus for generated:/mimic: pairs")
    p.add_argument("--section", choices=["findings", "impression", "text"], default="findings")
    p.add_argument("--phantom_config", default=None, help="JSON PhantomConfig fields for phantom pairs")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument(
        "--dataset", default=None, help="labelled dataset for zero-shot: phantom, kermany:ROOT, nih-subset:ROOT, ..."
    )
    p.add_argument("--split", default="test")
    p.add_argument("--prompts", default=None, help="JSON file with a prompt table (overrides the built-in prompts)")
    p.add_argument("--max_samples", type=int, default=None)
    p.add_argument("--n_bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    pairs = None
    if args.pairs:
        from genssl_hf.data.pairs import load_pairs

        cfg = json.loads(args.phantom_config) if args.phantom_config else None
        pairs = load_pairs(
            args.pairs,
            section=args.section,
            corpus=args.reports,
            split=args.pairs_split,
            image_size=args.image_size,
            seed=args.seed,
            phantom_config=cfg,
        )
    prompts = json.loads(Path(args.prompts).read_text()) if args.prompts else None
    with writer_lock(args.output_dir, "--output_dir"):
        result = _evaluate(args, pairs, prompts)
    print(markdown_report(result))
    return result


def _evaluate(args, pairs, prompts) -> dict[str, Any]:
    return evaluate_dual_encoder(
        args.model,
        pairs=pairs,
        dataset=args.dataset,
        split=args.split,
        output_dir=args.output_dir,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        max_samples=args.max_samples,
        prompts=prompts,
    )


if __name__ == "__main__":
    main()
