"""Report generation from self-supervised encoders (SSCMIRG's comparison, at CPU scale).

Stages (each writes under --out and is skipped when its output exists):

``encoders``  pre-train the encoders compared: a ViT ``tiny`` MAE (mask 0.9) and a SimCLR ViT ``tiny``
              on phantom images (``--encoder-images`` of them), same architecture as the random-init
              encoder. A VLP image tower can be added with ``--vlp-encoder DIR``.
``phantom``   for every encoder, the same report generator (default: a 2-layer GPT-2 decoder from
              scratch on a word vocabulary of the training reports; ``--decoder minilm`` for MiniLM)
              trained with the same budget on phantom image-report pairs; scored on the phantom test
              split with greedy / beam search against the constant-report and nearest-neighbour
              baselines (language metrics + clinical efficacy over the five phantom findings).
``iu``        synthetic images generated from the Indiana University reports by the shipped phantom
              generator (``--iu-generated``: a report-conditioned generated dataset; only report hashes
              are stored, the text is joined back from the archive in memory), split by report; the
              report generator against both baselines (language metrics; CE over the 14 CheXpert
              observations). Needs ``../shared/data/iu-xray-reports/NLMCXR_reports.tgz``.

Writes ``<out>/report_generation.md`` (tables) and one JSON line per system to ``benchmarks/results.json``.
No report text is written anywhere (phantom examples only).
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
RESULTS = ROOT / "benchmarks" / "results.json"


def _machine() -> dict:
    """The shared machine block (CPU model, AMX, load; no matmul peaks: this benchmark is not a speed one)."""
    from machine import machine_info  # benchmarks/machine.py

    return machine_info(peaks=False)


def encoders(out: Path, n_images: int, steps: int, methods=("mae", "simclr")) -> dict[str, str]:
    """Pre-train the MAE and SimCLR encoders on phantom images (skipped when present)."""
    import subprocess

    from genssl_hf.data.phantom import phantom_dataset

    data = out / "phantom-images"
    if not (data / "state.json").is_file():
        phantom_dataset(n_images, size=64, seed=1, split="train").select_columns(["image"]).save_to_disk(str(data))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    runs = {
        "mae": [
            sys.executable,
            str(ROOT / "scripts" / "pretrain_mae.py"),
            "--model",
            "tiny",
            "--dataset",
            str(data),
            "--max_steps",
            str(steps),
            "--per_device_train_batch_size",
            "64",
            "--mixed_precision",
            "no",
            "--figure",
            "off",
            "--checkpointing_steps",
            "0",
            "--output_dir",
            str(out / "enc-mae"),
        ],
        "simclr": [
            sys.executable,
            str(ROOT / "scripts" / "pretrain.py"),
            "--method",
            "simclr",
            "--model",
            "tiny",
            "--dataset",
            str(data),
            "--max_steps",
            str(steps),
            "--per_device_train_batch_size",
            "64",
            "--mixed_precision",
            "no",
            "--checkpointing_steps",
            "0",
            "--output_dir",
            str(out / "enc-simclr"),
        ],
    }
    done = {}
    for name, cmd in runs.items():
        if name not in methods:
            continue
        target = out / f"enc-{name}"
        if not (target / "config.json").is_file():
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stdout[-2000:], res.stderr[-4000:])
                raise RuntimeError(f"{name} pre-training failed")
            print(f"{name}: {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
        done[name] = str(target)
    return done


def random_encoder(out: Path) -> str:
    """A seeded random-init ViT ``tiny`` saved as a folder (the same architecture as the pre-trained
    ones), so that the retrieval baseline can also be scored under the encoder a generator started from."""
    import torch
    from transformers import ViTModel

    from genssl_hf.models import build_backbone_config

    target = out / "enc-random"
    if not (target / "config.json").is_file():
        torch.manual_seed(0)
        ViTModel(build_backbone_config("tiny"), add_pooling_layer=False).save_pretrained(str(target))
    return str(target)


def iu_generate(out: Path, n_reports: int, steps: int) -> Path:
    """Images from the first ``n_reports`` non-empty IU reports (findings + impression), shipped phantom
    generator, 64 px; the dataset keeps only each report's SHA-256 (skipped when present)."""
    from genssl_hf.data.reports import iter_iu_reports
    from genssl_hf.generation.materialize import generate_dataset, load_report_corpus
    from genssl_hf.generation.pretrained import PHANTOM_GENERATOR_DIR

    target = out / "gen-iu-reports"
    if not (target / "README.md").is_file():
        rows = [{"text": r["text"]} for r in iter_iu_reports(IU_TGZ) if r["text"]][:n_reports]
        corpus = load_report_corpus(rows, "text", name="iu-xray-reports (NLMCXR_reports.tgz)")
        t0 = time.perf_counter()
        generate_dataset(
            target,
            str(PHANTOM_GENERATOR_DIR),
            reports=corpus,
            seed=0,
            batch_size=50,
            height=64,
            width=64,
            num_inference_steps=steps,
            guidance_scale=3.0,
            call_kwargs={"dtype": "bfloat16"},
            progress=False,
        )
        print(f"IU reports: {len(rows)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    return target


def _train_and_score(name: str, encoder: str, pairs, out: Path, args, observations, examples_allowed: bool) -> dict:
    from genssl_hf.evaluation.report_generation import evaluate_report_generator
    from genssl_hf.training.report_generator import train_report_generator
    from genssl_hf.training.report_generator_args import build_parser

    run = out / name
    if not (run / "report_metrics.json").is_file():
        targs = build_parser().parse_args(
            [
                "--model",
                encoder,
                "--decoder",
                args.decoder,
                "--decoder_layers",
                str(args.decoder_layers),
                "--gpt2_hidden",
                str(args.gpt2_hidden),
                "--vocabulary",
                args.vocabulary,
                "--output_dir",
                str(run),
                "--max_steps",
                str(args.steps),
                "--per_device_train_batch_size",
                str(args.batch_size),
                "--learning_rate",
                str(args.lr),
                "--encoder_learning_rate",
                str(args.encoder_lr),
                "--max_new_tokens",
                str(args.max_new_tokens),
                "--logging_steps",
                "25",
                "--overwrite_output_dir",
            ]
        )
        t0 = time.perf_counter()
        summary = train_report_generator(targs, dataset=pairs)
        train_s = time.perf_counter() - t0
        from accelerate.state import AcceleratorState, GradientState, PartialState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
        res = evaluate_report_generator(
            run,
            pairs,
            observations=observations,
            max_test=args.max_test,
            max_train=args.max_train_nn,
            output_dir=run,
            examples_allowed=examples_allowed,
        )
        res["train_seconds"] = train_s
        res["train_summary"] = summary
        (run / "report_metrics.json").write_text(json.dumps(res, indent=1, default=str))
    return json.loads((run / "report_metrics.json").read_text())


def _row(label: str, system: str, m: dict) -> str:
    cells = [f"{m[k]:.3f}" for k in ("bleu1", "bleu4", "rouge_l")]
    cells.append(f"{m['meteor']:.3f}" if "meteor" in m else "skipped")
    cells += [f"{m[k]:.3f}" for k in ("ce_precision", "ce_recall", "ce_f1")]
    return f"| {label} | {system} | " + " | ".join(cells) + " |"


HEADER = (
    "| encoder | system | BLEU-1 | BLEU-4 | ROUGE-L | METEOR | CE precision | CE recall | CE F1 |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _record(bench: str, label: str, res: dict, args, machine: dict) -> list[str]:
    from machine import record_results  # benchmarks/machine.py

    lines, rows = [], []
    for system, m in res["systems"].items():
        lines.append(_row(label, system, m))
        rows.append(
            {
                "name": f"{bench}_{label}_{system}",
                "encoder": label,
                "system": system,
                **{
                    k: m.get(k)
                    for k in (
                        "bleu1",
                        "bleu2",
                        "bleu3",
                        "bleu4",
                        "rouge_l",
                        "meteor",
                        "ce_precision",
                        "ce_recall",
                        "ce_f1",
                        "ce_f1_macro",
                    )
                },
                "num_test": res["num_test"],
                "steps": args.steps,
                "batch_size": args.batch_size,
                "decoder": f"{args.decoder} x{args.decoder_layers}, vocabulary {args.vocabulary}",
                "distinct_outputs": res.get("distinct_outputs", {}).get(system),
                "train_seconds": res.get("train_seconds"),
                "machine": machine,
                "script": "bench_report_generation.py",
            }
        )
    record_results(rows, RESULTS)
    return lines


def _compare(
    bench: str,
    prefix: str,
    pairs,
    out: Path,
    args,
    encs: dict[str, str],
    machine: dict,
    observations,
    examples_allowed: bool,
) -> str:
    lines = [HEADER]
    for label, enc in encs.items():
        res = _train_and_score(f"{prefix}-{label}", enc, pairs, out, args, observations, examples_allowed)
        lines += _record(bench, label, res, args, machine)
        print("\n".join(lines[-4:]), flush=True)
    return "\n".join(lines)


def phantom(out: Path, args, encs: dict[str, str], machine: dict) -> str:
    from genssl_hf.data.schema import CHEXPERT5
    from genssl_hf.training.report_generator import load_report_pairs

    pairs = load_report_pairs(f"phantom:{args.n_train}", image_size=64, seed=0)
    return _compare("report_generation_phantom", "phantom", pairs, out, args, encs, machine, CHEXPERT5, True)


def iu(out: Path, args, encs: dict[str, str], machine: dict) -> str:
    from genssl_hf.data.schema import CHEXPERT14
    from genssl_hf.training.report_generator import load_report_pairs

    if not IU_TGZ.is_file():
        return f"IU stage skipped: {IU_TGZ} is absent"
    if not args.iu_generated:
        args.iu_generated = str(iu_generate(out, args.iu_reports, args.iu_steps))
    pairs = load_report_pairs(
        f"generated:{args.iu_generated}",
        image_size=64,
        seed=0,
        corpus=f"iu:{IU_TGZ}",
        section=args.section,
        val_fraction=0.05,
        test_fraction=0.15,
    )
    return _compare("report_generation_iu_synthetic", "iu", pairs, out, args, encs, machine, CHEXPERT14, False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="+", choices=["encoders", "phantom", "iu"])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-reportgen")
    p.add_argument("--encoder-images", type=int, default=2000)
    p.add_argument("--encoder-steps", type=int, default=200)
    p.add_argument("--encoder-methods", default="mae,simclr", help="pre-training methods of the compared encoders")
    p.add_argument("--vlp-encoder", default=None, help="a VLP image-tower folder (ViT) to add to the comparison")
    p.add_argument(
        "--iu-generated",
        default=None,
        help="report-conditioned generated dataset of the IU reports "
        "(default: generate one for the first --iu-reports reports)",
    )
    p.add_argument("--iu-reports", type=int, default=1000)
    p.add_argument("--iu-steps", type=int, default=10, help="sampling steps of the phantom generator for the IU images")
    p.add_argument("--iu-encoders", default="random", help="comma-separated encoders for the IU stage")
    p.add_argument("--only", default=None, help="comma-separated encoders to run (e.g. one per process)")
    p.add_argument("--section", default="findings", choices=["findings", "impression", "text"])
    p.add_argument("--n-train", type=int, default=1500, help="phantom training pairs")
    p.add_argument("--steps", type=int, default=1500, help="report-generator optimiser steps (same for every encoder)")
    p.add_argument("--batch-size", type=int, default=32)
    # the recipe that reads the image at CPU scale (tests/test_report_generation.py); the MiniLM
    # decoder (--decoder minilm --vocabulary minilm) is the negative result in BENCHMARKS.md
    p.add_argument("--decoder", default="gpt2", choices=["minilm", "gpt2"])
    p.add_argument("--vocabulary", default="reports", choices=["minilm", "reports"])
    p.add_argument("--decoder-layers", type=int, default=2)
    p.add_argument("--gpt2-hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="decoder learning rate")
    p.add_argument("--encoder-lr", type=float, default=2e-3)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument(
        "--max-train-nn", type=int, default=None, help="training pairs searched by the nearest-neighbour baseline"
    )
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    encs = {"random": random_encoder(args.out)}
    if "encoders" in args.stages:
        encs.update(encoders(args.out, args.encoder_images, args.encoder_steps, args.encoder_methods.split(",")))
    else:  # whatever encoders an earlier run pre-trained
        encs.update(
            {
                n: str(args.out / f"enc-{n}")
                for n in ("mae", "simclr")
                if (args.out / f"enc-{n}" / "config.json").is_file()
            }
        )
    if args.vlp_encoder:
        encs["vlp"] = args.vlp_encoder
    if args.only:
        encs = {k: v for k, v in encs.items() if k in args.only.split(",")}
    report = [f"machine: {machine}"]
    if "phantom" in args.stages:
        report += ["## Phantoms", phantom(args.out, args, encs, machine)]
    if "iu" in args.stages:
        chosen = {k: encs[k] for k in args.iu_encoders.split(",") if k in encs}
        report += ["## IU reports, synthetic images", iu(args.out, args, chosen, machine)]
    (args.out / f"report_generation{'-' + args.only if args.only else ''}.md").write_text("\n\n".join(report) + "\n")
    print("\n\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
