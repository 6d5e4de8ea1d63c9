"""The pipeline's results table: every variant's test metrics side by side (mAUC for ranking;
balanced accuracy and macro F1 at the thresholds chosen on validation, for decisions), each
pre-trained variant compared with random init by a paired bootstrap on the same test cases, and a
plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..utils import atomic_write_bytes, atomic_write_text, read_json, write_json


def load_predictions(results_dir: Path, title: str) -> tuple[np.ndarray, np.ndarray]:
    """The (targets, probs) that ``genssl_hf.evaluation.report`` saved for the model ``title``
    (same file naming as the report)."""
    from ..evaluation.report_inputs import safe_file_name

    path = results_dir / f"predictions_{safe_file_name(title)}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no saved predictions for {title!r} in {results_dir} (looked for {path.name})")
    data = np.load(path)
    return data["targets"], data["probs"]


def build_results(
    results_dir: Path,
    titles: Mapping[str, str],
    context: Mapping[str, Any],
    *,
    baseline: str = "random_init",
    n_bootstrap: int = 1000,
    seed: int = 0,
    extra_predictions: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Write ``results.md``, ``comparison.json`` and ``mauc_comparison.png`` into ``results_dir``.

    ``titles`` maps variant keys to the model names used in the evaluation; ``context`` is
    printed above the table (what was generated and trained, how long). ``extra_predictions``
    maps a row title to a ``.npz`` of (targets, probs) on the same test cases from a model that was
    not fine-tuned here (the zero-shot dual encoder): its row is scored and compared the same way."""
    from ..evaluation import paired_bootstrap_auc_difference

    metrics = read_json(results_dir / "metrics.json")
    per_model = _per_model_metrics(metrics)
    rows, comparison = [], {}
    base_title = titles.get(baseline)
    base_pred = load_predictions(results_dir, base_title) if base_title else None
    for key, title in titles.items():
        m = per_model.get(title, {})
        mauc = m.get("mean_auc")
        ci = (m.get("ci") or {}).get("mean_auc") or {}
        row = {"variant": key, "title": title, "mean_auc": mauc, "low": ci.get("low"), "high": ci.get("high")}
        for name in ("balanced_accuracy", "macro_f1"):
            row[name] = {
                "value": m.get(name),
                **{k: ((m.get("ci") or {}).get(name) or {}).get(k) for k in ("low", "high")},
            }
        row["threshold_rule"] = (m.get("operating_point") or {}).get("rule")
        if base_pred is not None and key != baseline:
            targets, probs = load_predictions(results_dir, title)
            diff = paired_bootstrap_auc_difference(targets, probs, base_pred[1], n_bootstrap=n_bootstrap, seed=seed)
            comparison[key] = diff
            row["vs_baseline"] = diff
        rows.append(row)
    for title, path in (extra_predictions or {}).items():
        rows.append(_extra_row(title, Path(path), base_pred, n_bootstrap, seed))

    lines = ["# GEN-SSL pipeline results", ""]
    for k, v in context.items():
        lines.append(f"- **{k}**: {v}")
    lines += [
        "",
        "| Variant | Test mAUC (95% CI) | Balanced accuracy (95% CI) | Macro F1 (95% CI) "
        "| Difference in mAUC vs random init (paired 95% CI) | p |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mauc = _pct(r["mean_auc"]) + (f" ({_pct(r['low'])}-{_pct(r['high'])})" if r["low"] is not None else "")
        decisions = [_with_ci(r[k]) for k in ("balanced_accuracy", "macro_f1")]
        d = r.get("vs_baseline")
        diff = f"{100 * d['difference']:+.1f} ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})" if d else "-"
        p = "-" if not d else (f"<{1 / d['valid_replicates']:.3f}" if d["p_value"] == 0 else f"{d['p_value']:.3f}")
        lines.append(f"| {r['title']} | {mauc} | {' | '.join(decisions)} | {diff} | {p} |")
    rules = sorted({r["threshold_rule"] for r in rows if r.get("threshold_rule")})
    lines += [
        "",
        "Balanced accuracy and macro F1 (mean over findings) are decisions at per-finding thresholds chosen "
        f"on the validation split ({', '.join(rules) or 'n/a'}), never on test; mAUC ranks without a threshold.",
        "",
        _verdict(rows),
        "",
    ]
    tables = results_dir / "tables.md"
    if tables.is_file():
        lines += ["## Detailed tables", "", tables.read_text().split("\n", 1)[1].strip(), ""]
    atomic_write_text(results_dir / "results.md", "\n".join(lines))
    write_json(results_dir / "comparison.json", {"baseline": baseline, "rows": rows})
    _plot(rows, results_dir / "mauc_comparison.png", baseline, context.get("label fraction"))
    return {"rows": rows, "comparison": comparison}


def _extra_row(title: str, path: Path, base_pred, n_bootstrap: int, seed: int) -> dict[str, Any]:
    from ..evaluation import classification_metrics, paired_bootstrap_auc_difference

    data = np.load(path)
    targets, probs = data["targets"], data["probs"]
    m = classification_metrics(targets, probs, n_bootstrap=n_bootstrap, seed=seed)
    ci = m["ci"]["mean_auc"]
    row = {
        "variant": title,
        "title": title,
        "mean_auc": m["mean_auc"],
        "low": ci["low"],
        "high": ci["high"],
        # no validation split chose thresholds for it: decisions at a threshold are not reported (n/a)
        "balanced_accuracy": {"value": None},
        "macro_f1": {"value": None},
        "threshold_rule": None,
    }
    if base_pred is not None:
        if base_pred[0].shape != targets.shape or not np.array_equal(base_pred[0], targets):
            raise ValueError(f"{path}: predictions are not on the same test cases as the fine-tuned models")
        row["vs_baseline"] = paired_bootstrap_auc_difference(
            targets, probs, base_pred[1], n_bootstrap=n_bootstrap, seed=seed
        )
    return row


def _per_model_metrics(metrics: Any) -> dict[str, dict]:
    """``{model title: test metrics}`` from the evaluation report's metrics.json."""
    models = metrics.get("models", metrics) if isinstance(metrics, dict) else {}
    out = {}
    for title, m in models.items():
        if isinstance(m, dict):
            out[title] = m.get("classification", m)
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _with_ci(entry: Mapping[str, Any]) -> str:
    text = _pct(entry.get("value"))
    if entry.get("low") is not None:
        text += f" ({_pct(entry['low'])}-{_pct(entry['high'])})"
    return text


def _verdict(rows: list[dict]) -> str:
    """One plain sentence per pre-trained variant: better, worse, or no clear difference."""
    out = []
    for r in rows:
        d = r.get("vs_baseline")
        if not d:
            continue
        if d["low"] > 0:
            word = "beats random init"
        elif d["high"] < 0:
            word = "is worse than random init"
        else:
            word = "shows no clear difference from random init"
        out.append(
            f"{r['title']} {word} on the test split ({100 * d['difference']:+.1f} mAUC points, "
            f"paired bootstrap 95% CI {100 * d['low']:+.1f} to {100 * d['high']:+.1f})."
        )
    return "\n".join(f"- {s}" for s in out)


def _plot(rows: list[dict], path: Path, baseline: str, label_fraction: str | None = None) -> None:
    """Bars of test mAUC with CIs; the baseline's bar (if it is among the rows) grey, the title names
    the label fraction and seed when the evaluation has them."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rows), 3.4))
    xs = np.arange(len(rows))
    vals = [100 * (r["mean_auc"] or 0) for r in rows]
    lo = [100 * ((r["mean_auc"] or 0) - (r["low"] if r["low"] is not None else r["mean_auc"] or 0)) for r in rows]
    hi = [100 * ((r["high"] if r["high"] is not None else r["mean_auc"] or 0) - (r["mean_auc"] or 0)) for r in rows]
    # a percentile bootstrap CI need not contain the point estimate (tiny test splits): no negative bars
    lo, hi = [max(0.0, v) for v in lo], [max(0.0, v) for v in hi]
    colours = ["#999999" if r.get("variant") == baseline else "#3b7dd8" for r in rows]
    ax.bar(xs, vals, yerr=[lo, hi], capsize=4, color=colours)
    ax.set_xticks(xs, [r["title"] for r in rows], rotation=15, fontsize=8)
    ax.set_ylabel("test mAUC (%)")
    ax.set_ylim(max(0, min(vals) - 15), min(100, max(vals) + 10))
    ax.axhline(50, color="k", lw=0.5, ls=":")
    title = "Fine-tuned on the labelled real split; 95% bootstrap CIs"
    if label_fraction:
        title += f"\nlabel fraction {label_fraction}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
