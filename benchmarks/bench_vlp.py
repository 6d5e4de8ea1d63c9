"""Vision-language pre-training on synthetic vs real images (MedSyn's question, at CPU scale).

Stages (each writes under --out and is skipped when its output exists):

``generate``  report-conditioned images from the shipped phantom generator for (1) the reports of the
              real-domain phantom training split and (2) the Indiana University reports. The
              generated datasets keep only each report's SHA-256.
"""

from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["generate"])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-vlp")
    p.add_argument("--n-phantom", type=int, default=2000)
    p.add_argument("--n-iu", type=int, default=None)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "generate":
        generate(args.out, args.n_phantom, args.n_iu, args.steps, args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
