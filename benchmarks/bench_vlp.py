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

    common = dict(seed=0, batch_size=50, height=size, width=size, num_inference_steps=steps, guidance_scale=3.0,
                  call_kwargs={"dtype": "bfloat16"}, overwrite=False, progress=True)
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


RECIPE = ["--image_tower", "tiny", "--text_tower", "tiny-bert", "--per_device_train_batch_size", "64",
          "--learning_rate", "1e-3", "--warmup_ratio", "0.1", "--logging_steps", "10", "--checkpointing_steps", "0",
          "--num_threads", "1", "--section", "findings"]


def run_specs(out: Path, n_phantom: int) -> dict[str, list[str]]:
    return {
        "phantom-real": ["--pairs", f"phantom:{n_phantom}", "--phantom_config", json.dumps(REAL_DOMAIN)],
        "phantom-synthetic": ["--pairs", f"generated:{out / 'gen-phantom-reports'}", "--reports", str(out / "phantom-reports.parquet")],
        "iu-synthetic": ["--pairs", f"generated:{out / 'gen-iu-reports'}", "--reports", f"iu:{IU_TGZ}", "--section", "text"],
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
    from genssl_hf.training.vlp import main as vlp_main

    phantom_report_corpus(out, n_phantom, 64)
    target = out / "models" / name
    if (target / "model.safetensors").is_file():
        return
    argv = run_specs(out, n_phantom)[name] + RECIPE + ["--image_size", str(size), "--max_train_steps", str(steps),
                                            "--output_dir", str(target), "--overwrite_output_dir"]
    t0 = time.perf_counter()
    vlp_main(argv)
    print(f"{name}: {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)


KERMANY = SHARED / "kermany-pneumonia-224"
NIH = SHARED / "nih-cxr14-1000-64px"


def _probe_summary(result: dict) -> dict:
    test = result.get("test", {})
    return {"test_mean_auc": test.get("mean_auc"), "ci": (test.get("ci") or {}).get("mean_auc"),
            "per_class": {k: v.get("auc") for k, v in (test.get("per_class") or {}).items()}}


def evaluate(out: Path, size: int, n_boot: int, kermany_samples: int, probe: bool) -> dict:
    """Every trained dual encoder: retrieval + zero-shot on held-out real-domain phantoms, zero-shot
    on real Kermany / NIH images, and (``probe``) a linear probe of its image tower on the NIH subset
    next to a random-init tower of the same architecture."""
    from genssl_hf.data.pairs import phantom_pairs
    from genssl_hf.evaluation.vlp import evaluate_dual_encoder
    from genssl_hf.training.finetune import main as finetune_main
    from genssl_hf.training.vlp import export_image_tower
    from genssl_hf.utils import read_json, write_json

    results_path = out / "results.json"
    results = read_json(results_path) if results_path.is_file() else {}
    test = phantom_pairs(500, size=64, split="test", config=REAL_DOMAIN)
    for model in sorted((out / "models").glob("*/model.safetensors")):
        name = model.parent.name
        r = results.setdefault(name, {})
        ev = out / "eval" / name
        if "phantom" not in r:
            res = evaluate_dual_encoder(model.parent, pairs=test, output_dir=ev / "phantom", n_bootstrap=n_boot)
            r["phantom"] = {"retrieval": res["retrieval"], "zero_shot": res["zero_shot"]["metrics"]}
            write_json(results_path, results)
        for key, spec, split, cap in (("kermany", f"kermany:{KERMANY}", "train", kermany_samples),
                                      ("nih", f"nih-subset:{NIH}", "test", None)):
            if key not in r and Path(spec.split(":", 1)[1]).is_dir():
                res = evaluate_dual_encoder(model.parent, dataset=spec, split=split, output_dir=ev / key,
                                            n_bootstrap=n_boot, max_samples=cap)
                r[key] = res["zero_shot"]["metrics"]
                write_json(results_path, results)
        if probe and "nih_probe" not in r and NIH.is_dir():
            tower = export_image_tower(model.parent, out / "towers" / name)
            summary = finetune_main(["--init", str(tower), "--mode", "linear_probe", "--dataset", f"nih-subset:{NIH}",
                                     "--output_dir", str(out / "probes" / name), "--overwrite_output_dir", "--epochs", "20",
                                     "--n_bootstrap", str(n_boot), "--mixed_precision", "no", "--num_workers", "0"])
            r["nih_probe"] = _probe_summary(summary)
            write_json(results_path, results)
    if probe and "random-init" not in results and NIH.is_dir():
        summary = finetune_main(["--init", "tiny", "--image_size", str(size), "--mode", "linear_probe", "--dataset",
                                 f"nih-subset:{NIH}", "--output_dir", str(out / "probes" / "random-init"), "--overwrite_output_dir",
                                 "--epochs", "20", "--n_bootstrap", str(n_boot), "--mixed_precision", "no", "--num_workers", "0"])
        results["random-init"] = {"nih_probe": _probe_summary(summary)}
        write_json(results_path, results)
    return results


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _auc_ci(m: dict | None) -> str:
    if not m:
        return "not run"
    ci = (m.get("ci") or {}).get("mean_auc") or {}
    return f"{_pct(m.get('mean_auc'))} ({_pct(ci.get('low'))}-{_pct(ci.get('high'))})" if ci else _pct(m.get("mean_auc"))


def write_table(out: Path, results: dict) -> str:
    """``results.md``: one row per dual encoder."""
    lines = ["| pre-training pairs | phantom test: R@5 image->report / report->image (chance) | phantom zero-shot mAUC (95% CI) "
             "| Kermany zero-shot AUC (95% CI) | NIH-subset zero-shot mAUC (95% CI) | NIH linear probe mAUC (95% CI) |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        ph = r.get("phantom") or {}
        ret = ph.get("retrieval")
        rtxt = (f"{_pct(ret['image_to_text']['R@5'])} ({_pct(ret['image_to_text']['chance']['R@5'])}) / "
                f"{_pct(ret['text_to_image']['R@5'])} ({_pct(ret['text_to_image']['chance']['R@5'])})" if ret else "not run")
        probe = r.get("nih_probe") or {}
        ptxt = (f"{_pct(probe.get('test_mean_auc'))} ({_pct((probe.get('ci') or {}).get('low'))}-{_pct((probe.get('ci') or {}).get('high'))})"
                if probe.get("test_mean_auc") is not None else "not run")
        lines.append(f"| {name} | {rtxt} | {_auc_ci(ph.get('zero_shot'))} | {_auc_ci(r.get('kermany'))} | {_auc_ci(r.get('nih'))} | {ptxt} |")
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", default="all", choices=["all", "generate", "train", "eval"])
    p.add_argument("--run", choices=["phantom-real", "phantom-synthetic", "iu-synthetic"], help="train: one run (default all)")
    p.add_argument("--quick", action="store_true", help="CI-sized: 256 phantom / 200 IU reports, 40 steps, no probe")
    p.add_argument("--out", type=Path, default=None, help="default outputs/bench-vlp (outputs/bench-vlp-quick with --quick)")
    p.add_argument("--n-phantom", type=int, default=2000)
    p.add_argument("--n-iu", type=int, default=None)
    p.add_argument("--steps", type=int, default=15, help="DDIM steps of the generator")
    p.add_argument("--size", type=int, default=64, help="generated image size")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--train-size", type=int, default=32, help="image size of the dual encoders (generated images are downsampled)")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--kermany-samples", type=int, default=1000, help="random Kermany images scored zero-shot")
    p.add_argument("--probe", choices=["on", "off"], default="on")
    args = p.parse_args(argv)
    if args.quick:
        args.n_phantom, args.n_iu, args.train_steps, args.kermany_samples, args.probe, args.n_bootstrap = 256, 200, 40, 200, "off", 200
    args.out = args.out or ROOT / "outputs" / ("bench-vlp-quick" if args.quick else "bench-vlp")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "generate"):
        generate(args.out, args.n_phantom, args.n_iu, args.steps, args.size)
    if args.stage in ("all", "train"):
        for run in [args.run] if args.run else ["phantom-real", "phantom-synthetic", "iu-synthetic"]:
            if run != "iu-synthetic" or (args.out / "gen-iu-reports").is_dir():
                train(args.out, run, args.train_steps, args.train_size, args.n_phantom)
    if args.stage in ("all", "eval"):
        results = evaluate(args.out, args.train_size, args.n_bootstrap, args.kermany_samples, args.probe == "on")
        print(write_table(args.out, results))
        syn = ((results.get("phantom-synthetic") or {}).get("phantom") or {}).get("zero_shot") or {}
        real = ((results.get("phantom-real") or {}).get("phantom") or {}).get("zero_shot") or {}
        print(json.dumps({"name": "vlp_phantom_zero_shot_synthetic_vs_real", "value": syn.get("mean_auc"), "unit": "mAUC",
                          "baseline": real.get("mean_auc"),
                          "ratio": syn["mean_auc"] / real["mean_auc"] if syn.get("mean_auc") and real.get("mean_auc") else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
