"""Vision-language pre-training on synthetic vs real images (MedSyn's question, at CPU scale).

Stages (each writes under --out and is skipped when its output exists):

``generate``  report-conditioned images from the shipped phantom generator for (1) the reports of the
              real-domain phantom training split and (2) the Indiana University reports. The
              generated datasets keep only each report's SHA-256.
``train``     one dual encoder per pair set, same reports and recipe: ``phantom-real`` (real-domain
              phantoms with their own reports), ``phantom-synthetic`` (images generated from those
              same reports), ``iu-synthetic`` (images generated from the IU reports; the text is
              joined back from the archive by hash). ``--run NAME`` trains one (run them in parallel).
``eval``      retrieval + zero-shot on held-out real-domain phantoms; zero-shot on real Kermany and
              NIH images (bootstrap CIs); linear probes of the image towers through the fine-tuning
              harness. Writes ``results.json`` and ``results.md`` under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("GENSSL_SHARED_DATA", ROOT.parent / "shared" / "data"))
IU_TGZ = SHARED / "iu-xray-reports" / "NLMCXR_reports.tgz"
# the demo's real-domain acquisition: the generator never saw these exposures / contrasts
REAL_DOMAIN = {"exposure": (1.2, 1.6), "gamma": (1.15, 1.4)}


def generate(out: Path, n_phantom: int, n_iu: int | None, steps: int, size: int) -> None:
    from genssl_hf.data.phantom import PhantomConfig, phantom_dataset
    from genssl_hf.data.reports import iter_iu_reports
    from genssl_hf.generation.materialize import generate_dataset, load_report_corpus
    from genssl_hf.generation.pretrained import PHANTOM_GENERATOR_DIR

    common = dict(
        seed=0,
        batch_size=50,
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=3.0,
        call_kwargs={"dtype": "bfloat16"},
        overwrite=False,
        progress=True,
    )
    target = out / "gen-phantom-reports"
    if not (target / "README.md").is_file():
        real = phantom_dataset(n_phantom, size=size, seed=0, config=PhantomConfig(**REAL_DOMAIN), split="train")
        corpus = load_report_corpus(real.select_columns(["report"]), "report", name="phantom-real-domain-train")
        t0 = time.perf_counter()
        generate_dataset(target, str(PHANTOM_GENERATOR_DIR), reports=corpus, **common)
        print(f"phantom reports: {n_phantom} images in {time.perf_counter() - t0:.0f} s", flush=True)
    target = out / "gen-iu-reports"
    if IU_TGZ.is_file() and not (target / "README.md").is_file():
        rows = [{"text": r["text"]} for r in iter_iu_reports(IU_TGZ) if r["text"]]
        corpus = load_report_corpus(rows[:n_iu] if n_iu else rows, "text", name="iu-xray-reports (NLMCXR_reports.tgz)")
        t0 = time.perf_counter()
        generate_dataset(target, str(PHANTOM_GENERATOR_DIR), reports=corpus, **common)
        print(f"IU reports: {corpus.num_reports} images in {time.perf_counter() - t0:.0f} s", flush=True)


# The CI recipe of tests/test_vlp.py, run longer: frozen all-MiniLM-L6-v2 text tower (its token features
# are cached once per distinct report; only its pooler and the projections train), tiny ViT at 32 px.
RECIPE = [
    "--model",
    "tiny",
    "--text_tower",
    "minilm",
    "--freeze_text_layers",
    "6",
    "--per_device_train_batch_size",
    "64",
    "--learning_rate",
    "1e-3",
    "--warmup_ratio",
    "0.1",
    "--logging_steps",
    "50",
    "--checkpointing_steps",
    "0",
    "--num_threads",
    "1",
    "--section",
    "findings",
    "--figure",
    "off",
    "--crop_scale_min",
    "0.8",
]


def run_specs(out: Path, n_phantom: int) -> dict[str, list[str]]:
    return {
        "phantom-real": ["--pairs", f"phantom:{n_phantom}", "--phantom_config", json.dumps(REAL_DOMAIN)],
        "phantom-synthetic": [
            "--pairs",
            f"generated:{out / 'gen-phantom-reports'}",
            "--reports",
            str(out / "phantom-reports.parquet"),
        ],
        "iu-synthetic": [
            "--pairs",
            f"generated:{out / 'gen-iu-reports'}",
            "--reports",
            f"iu:{IU_TGZ}",
            "--section",
            "text",
        ],
    }


def phantom_report_corpus(out: Path, n: int, size: int) -> Path:
    """The reports of the real-domain phantom training split (the corpus both phantom runs share)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genssl_hf.data.phantom import PhantomConfig, phantom_dataset

    path = out / "phantom-reports.parquet"
    if not path.is_file():
        real = phantom_dataset(n, size=size, seed=0, config=PhantomConfig(**REAL_DOMAIN), split="train")
        pq.write_table(pa.table({"report": real["report"]}), path)
    return path


def train(out: Path, name: str, steps: int, size: int, n_phantom: int) -> None:
    """One dual encoder; ``random-init`` is the same initialisation (same seed) saved after one step at
    learning rate 0: the row every trained model is compared with."""
    from genssl_hf.training.vlp import main as vlp_main

    phantom_report_corpus(out, n_phantom, 64)
    target = out / "models" / name
    if (target / "model.safetensors").is_file():
        return
    spec = run_specs(out, n_phantom)["phantom-real" if name == "random-init" else name]
    argv = (
        spec
        + RECIPE
        + [
            "--image_size",
            str(size),
            "--max_steps",
            str(1 if name == "random-init" else steps),
            "--output_dir",
            str(target),
            "--overwrite_output_dir",
        ]
    )
    if name == "random-init":
        argv += ["--learning_rate", "0"]
    t0 = time.perf_counter()
    vlp_main(argv)
    print(f"{name}: {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)


KERMANY = SHARED / "kermany-pneumonia-224"
NIH = SHARED / "nih-cxr14-1000-64px"


def tower_features(encoder, images, batch_size: int = 256):
    """(N, hidden) image-tower features (the vision pooler output, before the projection) of PIL images,
    preprocessed by the dual encoder's own AdaINImageProcessor."""
    import numpy as np
    import torch

    chunks = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            px = encoder.processor(list(images[s : s + batch_size]), return_tensors="pt")["pixel_values"]
            chunks.append(encoder.model.vision_model(pixel_values=px).pooler_output.float().numpy())
    return np.concatenate(chunks)


def linear_probe(train_x, train_y, test_x, test_y, label_names, multi_label: bool, n_boot: int, seed: int = 0) -> dict:
    """Logistic regression on frozen, standardised features (CLIP's linear-probe protocol, fixed C = 1):
    one binary model per finding (multi-label) or one multinomial model; test metrics through
    ``classification_metrics`` with bootstrap CIs."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from genssl_hf.core.classification_metrics import classification_metrics

    scaler = StandardScaler().fit(train_x)
    tr, te = scaler.transform(train_x), scaler.transform(test_x)
    if multi_label:
        scores = np.zeros(test_y.shape, dtype=np.float64)
        for c in range(test_y.shape[1]):
            col = train_y[:, c]
            if col.min() == col.max():  # no positive (or no negative) to learn from: the training prior
                scores[:, c] = float(col.mean())
                continue
            scores[:, c] = LogisticRegression(C=1.0, max_iter=2000).fit(tr, col).predict_proba(te)[:, 1]
    else:
        scores = LogisticRegression(C=1.0, max_iter=2000).fit(tr, train_y).predict_proba(te)
    return classification_metrics(test_y, scores, label_names=label_names, n_bootstrap=n_boot, seed=seed)


def _labelled(ds, rows):
    from genssl_hf.training.finetune_data import targets_of

    targets, names, multi_label = targets_of(ds)
    return [ds[int(i)]["image"] for i in rows], targets[rows], names, multi_label


def probe_sets(size: int, kermany_samples: int, seed: int = 0) -> dict:
    """Train / test images of each linear probe: real-domain phantoms (1,000 train, the 500 test
    phantoms of the retrieval evaluation), Kermany (a seeded stratified half / half split of
    ``kermany_samples`` training images: the Kermany test split is not in ../shared/data), NIH subset
    (train + valid -> test)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from genssl_hf.data.phantom import PhantomConfig, phantom_dataset
    from genssl_hf.evaluation.report import load_eval_split, sample_indices

    sets = {}
    cfg = PhantomConfig(**REAL_DOMAIN)
    tr = phantom_dataset(1000, size=64, seed=1, config=cfg, split="train")
    te = phantom_dataset(500, size=64, seed=0, config=cfg, split="test")
    sets["phantom"] = (_labelled(tr, np.arange(len(tr))), _labelled(te, np.arange(len(te))))
    if KERMANY.is_dir():
        ds = load_eval_split(f"kermany:{KERMANY}", "train", seed=seed)
        rows = sample_indices(len(ds), kermany_samples, seed)
        from genssl_hf.training.finetune_data import targets_of

        y = targets_of(ds)[0][rows]
        a, b = train_test_split(rows, test_size=0.5, random_state=seed, stratify=y)
        sets["kermany"] = (_labelled(ds, np.sort(a)), _labelled(ds, np.sort(b)))
    if NIH.is_dir():
        import datasets

        tr = datasets.concatenate_datasets([load_eval_split(f"nih-subset:{NIH}", s) for s in ("train", "validation")])
        te = load_eval_split(f"nih-subset:{NIH}", "test")
        sets["nih"] = (_labelled(tr, np.arange(len(tr))), _labelled(te, np.arange(len(te))))
    return sets


def _short(m: dict) -> dict:
    """mean AUC with its CI and per-class AUCs of a classification_metrics result."""
    return {
        "mean_auc": m.get("mean_auc"),
        "ci": {"mean_auc": (m.get("ci") or {}).get("mean_auc")},
        "num_samples": m.get("num_samples"),
        "per_class": {k: {"auc": v.get("auc")} for k, v in (m.get("per_class") or {}).items()},
    }


def evaluate(out: Path, size: int, n_boot: int, kermany_samples: int, probe: bool) -> dict:
    """Every dual encoder under ``models/`` (the trained ones and ``random-init``): retrieval (with
    bootstrap CIs) + zero-shot on 500 held-out real-domain phantoms, zero-shot on real Kermany / NIH
    images, and (``probe``) linear probes of the image tower on phantoms, Kermany and NIH."""
    from genssl_hf.data.pairs import phantom_pairs
    from genssl_hf.evaluation.vlp import LoadedDualEncoder, evaluate_dual_encoder
    from genssl_hf.utils import read_json, write_json

    results_path = out / "results.json"
    results = read_json(results_path) if results_path.is_file() else {}
    test = phantom_pairs(500, size=64, split="test", config=REAL_DOMAIN)
    sets = None
    for model in sorted((out / "models").glob("*/model.safetensors")):
        name = model.parent.name
        r = results.setdefault(name, {})
        ev = out / "eval" / name
        t0 = time.perf_counter()
        if "phantom" not in r:
            res = evaluate_dual_encoder(model.parent, pairs=test, output_dir=ev / "phantom", n_bootstrap=n_boot)
            r["phantom"] = {"retrieval": res["retrieval"], "zero_shot": _short(res["zero_shot"]["metrics"])}
            write_json(results_path, results)
        for key, spec, split, cap in (
            ("kermany", f"kermany:{KERMANY}", "train", kermany_samples),
            ("nih", f"nih-subset:{NIH}", "test", None),
        ):
            if key not in r and Path(spec.split(":", 1)[1]).is_dir():
                res = evaluate_dual_encoder(
                    model.parent, dataset=spec, split=split, output_dir=ev / key, n_bootstrap=n_boot, max_samples=cap
                )
                r[key] = _short(res["zero_shot"]["metrics"])
                write_json(results_path, results)
        if probe and "probe" not in r:
            sets = sets or probe_sets(size, kermany_samples)
            encoder = LoadedDualEncoder(model.parent)
            r["probe"] = {}
            for key, ((tr_img, tr_y, names, ml), (te_img, te_y, _, _)) in sets.items():
                r["probe"][key] = _short(
                    linear_probe(
                        tower_features(encoder, tr_img), tr_y, tower_features(encoder, te_img), te_y, names, ml, n_boot
                    )
                )
            write_json(results_path, results)
        print(f"{name}: evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    return results


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _auc_ci(m: dict | None) -> str:
    if not m:
        return "not run"
    ci = (m.get("ci") or {}).get("mean_auc") or {}
    return (
        f"{_pct(m.get('mean_auc'))} ({_pct(ci.get('low'))}-{_pct(ci.get('high'))})" if ci else _pct(m.get("mean_auc"))
    )


def _recall(ret: dict, direction: str) -> str:
    x = ret[direction]
    ci = (x.get("ci") or {}).get("R@5") or {}
    band = f" ({_pct(ci.get('low'))}-{_pct(ci.get('high'))})" if ci else ""
    return f"{_pct(x['R@1'])} / {_pct(x['R@5'])}{band} / {_pct(x['R@10'])} [chance {_pct(x['chance']['R@5'])}]"


ORDER = ("random-init", "phantom-real", "phantom-synthetic", "iu-synthetic")


def write_table(out: Path, results: dict) -> str:
    """``results.md``: retrieval / zero-shot table and linear-probe table, one row per dual encoder."""
    names = [n for n in ORDER if n in results] + [n for n in results if n not in ORDER]
    lines = [
        "| pre-training pairs | phantom image->report R@1 / R@5 (95% CI) / R@10 "
        "| phantom report->image R@1 / R@5 (95% CI) / R@10 "
        "| phantom zero-shot mAUC (95% CI) | Kermany zero-shot AUC (95% CI) | NIH-subset zero-shot mAUC (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        r = results[name]
        ph = r.get("phantom") or {}
        ret = ph.get("retrieval")
        i2t, t2i = (_recall(ret, "image_to_text"), _recall(ret, "text_to_image")) if ret else ("not run", "not run")
        lines.append(
            f"| {name} | {i2t} | {t2i} | {_auc_ci(ph.get('zero_shot'))} | "
            f"{_auc_ci(r.get('kermany'))} | {_auc_ci(r.get('nih'))} |"
        )
    lines += [
        "",
        "| image tower of | linear probe: phantom mAUC (95% CI) | Kermany AUC (95% CI) | NIH-subset mAUC (95% CI) |",
        "|---|---|---|---|",
    ]
    for name in names:
        pr = results[name].get("probe") or {}
        lines.append(
            f"| {name} | {_auc_ci(pr.get('phantom'))} | {_auc_ci(pr.get('kermany'))} | {_auc_ci(pr.get('nih'))} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    return table


RUNS = ("random-init", "phantom-real", "phantom-synthetic", "iu-synthetic")


def result_rows(results: dict, info: dict, command: str) -> list[dict]:
    """JSON rows for benchmarks/results.json: each headline metric of each dual encoder, with its CI."""
    rows = []

    def add(name, metric, unit, m):
        if m and m.get("mean_auc") is not None:
            rows.append(
                {
                    "name": f"vlp_{name.replace('-', '_')}_{metric}",
                    "value": round(m["mean_auc"], 4),
                    "unit": unit,
                    "ci95": (m.get("ci") or {}).get("mean_auc"),
                    "command": command,
                    "machine": info,
                }
            )

    for name, r in results.items():
        ph = r.get("phantom") or {}
        add(name, "phantom_zero_shot", "mean AUC", ph.get("zero_shot"))
        add(name, "kermany_zero_shot", "AUC", r.get("kermany"))
        add(name, "nih_zero_shot", "mean AUC", r.get("nih"))
        for key, m in (r.get("probe") or {}).items():
            add(name, f"{key}_linear_probe", "mean AUC", m)
        if ph.get("retrieval"):
            for d in ("image_to_text", "text_to_image"):
                x = ph["retrieval"][d]
                rows.append(
                    {
                        "name": f"vlp_{name.replace('-', '_')}_phantom_{d}_R5",
                        "value": round(x["R@5"], 4),
                        "unit": "recall@5",
                        "ci95": (x.get("ci") or {}).get("R@5"),
                        "chance": round(x["chance"]["R@5"], 4),
                        "command": command,
                        "machine": info,
                    }
                )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", default="all", choices=["all", "generate", "train", "eval"])
    p.add_argument("--run", choices=list(RUNS), help="train: one run (default all)")
    p.add_argument("--quick", action="store_true", help="CI-sized: 256 phantom / 200 IU reports, 40 steps, no probe")
    p.add_argument(
        "--out", type=Path, default=None, help="default outputs/bench-vlp (outputs/bench-vlp-quick with --quick)"
    )
    p.add_argument("--n-phantom", type=int, default=2000)
    p.add_argument("--n-iu", type=int, default=None)
    p.add_argument("--steps", type=int, default=15, help="DDIM steps of the generator")
    p.add_argument("--size", type=int, default=64, help="generated image size")
    p.add_argument("--train-steps", type=int, default=1500)
    p.add_argument(
        "--train-size", type=int, default=32, help="image size of the dual encoders (generated images are downsampled)"
    )
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument(
        "--kermany-samples",
        type=int,
        default=1000,
        help="random Kermany images scored zero-shot (and split for the probe)",
    )
    p.add_argument("--probe", choices=["on", "off"], default="on")
    p.add_argument("--record", action="store_true", help="eval: put the rows into benchmarks/results.json")
    args = p.parse_args(argv)
    if args.quick:
        args.n_phantom, args.n_iu, args.train_steps, args.kermany_samples, args.probe, args.n_bootstrap = (
            256,
            200,
            40,
            200,
            "off",
            200,
        )
    args.out = args.out or ROOT / "outputs" / ("bench-vlp-quick" if args.quick else "bench-vlp")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "generate"):
        generate(args.out, args.n_phantom, args.n_iu, args.steps, args.size)
    if args.stage in ("all", "train"):
        for run in [args.run] if args.run else RUNS:
            if run != "iu-synthetic" or (args.out / "gen-iu-reports").is_dir():
                train(args.out, run, args.train_steps, args.train_size, args.n_phantom)
    if args.stage in ("all", "eval"):
        from benchmarks.machine import finish, machine_info, print_machine, record_results

        info = machine_info()
        print_machine(info)
        results = evaluate(args.out, args.train_size, args.n_bootstrap, args.kermany_samples, args.probe == "on")
        print(write_table(args.out, results))
        info = finish(info)
        if args.record:
            record_results(
                result_rows(
                    results,
                    info,
                    "python benchmarks/bench_vlp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                )
            )
        syn = ((results.get("phantom-synthetic") or {}).get("phantom") or {}).get("zero_shot") or {}
        real = ((results.get("phantom-real") or {}).get("phantom") or {}).get("zero_shot") or {}
        print(
            json.dumps(
                {
                    "name": "vlp_phantom_zero_shot_synthetic_vs_real",
                    "value": syn.get("mean_auc"),
                    "unit": "mAUC",
                    "baseline": real.get("mean_auc"),
                    "machine": info,
                    "ratio": syn["mean_auc"] / real["mean_auc"]
                    if syn.get("mean_auc") and real.get("mean_auc")
                    else None,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
