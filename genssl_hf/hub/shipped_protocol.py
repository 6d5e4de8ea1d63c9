"""The shipped GEN-SSL encoder chosen under the real-data protocol (issue 34, item 5).

    python scripts/package_pretrained.py --protocol-encoder --run_dir outputs/kermany_base \\
        --candidates genssl=outputs/kermany_base/mae_genssl/model,genssl_10k=outputs/kermany_long/model \\
        --pooled outputs/kermany_base/protocol_pooled_long.json --baseline random_init_adain --real_arm real_10k \\
        --results_row genssl_realdata_kermany_long --name nih-genssl-mae-64-protocol

Every candidate is a GEN-SSL MAE folder fine-tuned as an arm of a protocol run
(``benchmarks/bench_genssl_realdata.py --protocol``, :mod:`genssl_hf.pipeline.protocol`):

1. **Choice, on validation only.** Each candidate's score is the mean over the few-shot fractions
   (1 % and 10 %) of its mean *validation* AUC over the seeds every candidate ran, read from its
   fine-tuning stages (``ft_<arm>__<recipe>_f<pct>_s<seed>/run/metrics.json``, the recipe and
   seeds of its pooled row). Test numbers are never read for the choice. The table goes into the
   card and ``protocol_release.json``.
2. **Numbers, from the protocol.** The card gives the pooled test AUC of the chosen arm at each
   fraction (mean over seeds, range) and its paired differences (95 % bootstrap CI over seeds and
   test cases) against the standardised baseline and MAE on real images, exactly as the pooled rows
   and the ``benchmarks/results.json`` row that recorded them hold them (checked before any work).
3. **Shipping.** The chosen folder goes through :func:`genssl_hf.hub.shipped.ship_encoder` (the
   publisher's dry run with the real-data leak guard), with its MAE loss on the NIH test images
   (:func:`genssl_hf.hub.shipped.measure_mae`, re-measured by ``tests/test_shipped_weights.py``).

Every input is checked first; all problems are reported together, each naming its input.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..utils import PRETRAINED, read_json
from .shipped import measure_mae, nih_test_images, ship_encoder, shipped_folder
from .shipped_cards import _steps
from .shipped_protocol_card import (
    CHECKOUT,
    card_body,
    encoder_parameters,
    model_index,
    portable,
    pretraining_command,
    release_record,
    without_roots,
)

__all__ = [
    "FRACTIONS",
    "RECORD_FILE",
    "ProtocolInputError",
    "parse_candidates",
    "load_pooled",
    "plan_release",
    "package_protocol_encoder",
    "main",
]

FRACTIONS = (0.01, 0.1)  # the protocol's few-shot fractions the choice and the card use
RECORD_FILE = "protocol_release.json"  # beside the card: the choice table and where every number came from


class ProtocolInputError(ValueError):
    """An input of the protocol packager that cannot be used (found before any work; names the input)."""


def parse_candidates(text: str) -> dict[str, Path]:
    """``"genssl=DIR,genssl_10k=DIR"`` -> ``{arm: model folder}`` in the order given."""
    out: dict[str, Path] = {}
    for item in (t.strip() for t in text.split(",")):
        arm, sep, folder = item.partition("=")
        if not sep or not arm.strip() or not folder.strip():
            raise ProtocolInputError(f"--candidates: expected ARM=FOLDER[,ARM=FOLDER...]; got {item!r}")
        if arm.strip() in out:
            raise ProtocolInputError(f"--candidates: arm {arm.strip()!r} is given twice")
        out[arm.strip()] = Path(folder.strip())
    return out


def parse_real_arms(text: str) -> str | dict[str, str]:
    """``"real_10k"`` (every candidate's) or ``"genssl=real_mae,genssl_10k=real_10k"`` (each its own)."""
    if "=" not in text:
        return text.strip()
    pairs = [item.strip().partition("=") for item in text.split(",")]
    if any(not a.strip() or not sep or not r.strip() for a, sep, r in pairs) or len({a for a, _, _ in pairs}) < len(
        pairs
    ):
        raise ProtocolInputError(
            f"--real_arm: expected ARM or CANDIDATE=ARM[,CANDIDATE=ARM...] (each once); got {text!r}"
        )
    return {a.strip(): r.strip() for a, _, r in pairs}


def load_pooled(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, dict]]:
    """The rows of the protocol's pooled files (``protocol_pooled*.json``), each with its file."""
    rows: list[tuple[Path, dict]] = []
    need = {"arm", "fraction", "mean", "seeds", "recipe", "title", "vs"}
    for path in map(Path, paths):
        if not path.is_file():
            raise ProtocolInputError(f"--pooled {path}: no such file")
        data = read_json(path)
        if not isinstance(data, list) or not all(isinstance(r, dict) and need <= set(r) for r in data):
            raise ProtocolInputError(f"--pooled {path}: not a list of pooled protocol rows ({', '.join(sorted(need))})")
        rows += [(path, r) for r in data]
    return rows


def fraction_label(fraction: float) -> str:
    """``0.01`` -> ``"1%"``: how the results.json row's keys name a fraction."""
    return f"{fraction:.0%}"


def stage_name(arm: str, recipe: str, fraction: float, seed: int) -> str:
    # genssl_hf.pipeline.protocol.arm_stage_name (the pipeline sits above this layer; a test checks they agree)
    return f"ft_{arm}__{recipe}_f{round(fraction * 100):d}_s{seed}"


def _comparison(rows: dict[str, dict], arm: str, against: str, fraction: float) -> dict | None:
    """``arm`` minus ``against`` from one pooled file's rows at one fraction: the arm's own ``vs``
    entry, else the other arm's entry negated (the paired bootstrap of ``-d`` is ``d``'s, mirrored)."""
    key = fraction_label(fraction)
    if against in rows[arm]["vs"]:
        v, sign, row_key, entry = rows[arm]["vs"][against], 1, f"{key} {arm}", f"vs_{against}"
    elif against in rows and arm in rows[against]["vs"]:
        v, sign, row_key, entry = rows[against]["vs"][arm], -1, f"{key} {against}", f"vs_{arm}"
    else:
        return None
    low, high = (v["low"], v["high"]) if sign > 0 else (-v["high"], -v["low"])
    return {
        "against": against,
        "difference": sign * v["difference"],
        "low": low,
        "high": high,
        "p_value": v.get("p_value"),
        "runs": v.get("runs", len(rows[arm]["seeds"])),
        "results_key": row_key,
        "results_entry": entry,
        "sign": sign,
    }


def _fraction_numbers(pooled: list[tuple[Path, dict]], arm: str, against: Sequence[str], fraction: float):
    """The pooled numbers of ``arm`` at ``fraction`` with its comparisons against ``against``, all from
    one file (the same seeds behind every number): among the files holding every comparison, the row
    with the most seeds (ties: the file given first). ``(numbers, None)`` or ``(None, why not)``."""
    options = []
    for path in dict.fromkeys(p for p, _ in pooled):
        rows = {r["arm"]: r for p, r in pooled if p == path and math.isclose(r["fraction"], fraction)}
        if arm not in rows:
            continue
        comparisons = [_comparison(rows, arm, a, fraction) for a in against]
        if all(comparisons) and all(a in rows for a in against):
            options.append((path, rows, comparisons))
    if not options:
        files = [str(p) for p in dict.fromkeys(p for p, r in pooled if r["arm"] == arm and r["fraction"] == fraction)]
        if not files:
            return None, f"no pooled row of arm {arm!r} at {fraction_label(fraction)}"
        return None, (
            f"no pooled file holds arm {arm!r} at {fraction_label(fraction)} together with rows of and paired "
            f"comparisons against {list(against)} (files with the arm: {files})"
        )
    path, rows, comparisons = max(options, key=lambda o: len(o[1][arm]["seeds"]))
    summary = {
        a: {k: rows[a][k] for k in ("mean", "median", "min", "max", "seeds", "recipe", "title") if k in rows[a]}
        for a in (arm, *against)
    }
    return {"file": str(path), "arms": summary, "comparisons": comparisons}, None


def _validation_auc(stage: Path) -> float:
    return float(read_json(stage / "run" / "metrics.json")["best"]["validation"]["mean_auc"])


def _same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return Path(a).resolve() == Path(b).resolve()


@dataclass
class ReleasePlan:
    """What the packager will do, all checked: the choice table, the chosen folder, the card's numbers."""

    run_dir: Path
    candidates: dict[str, Path]
    choice: list[dict]
    chosen: str
    numbers: dict[str, dict]  # fraction label -> _fraction_numbers of the chosen arm
    baseline: str
    real_arm: str
    real_folder: Path
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.candidates[self.chosen]


def _check_candidate(run_dir: Path, arm: str, folder: Path, pooled, problems: list[str]) -> dict | None:
    """The candidate's folder, pooled rows (their seeds and recipe: the fine-tuning runs the choice
    reads) and fine-tuning stages, or None (problems appended)."""
    before = len(problems)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors", "run_config.json"):
        if not (folder / name).is_file():
            problems.append(f"--candidates {arm}={folder}: no {name} (a finished MAE model folder is expected)")
    if len(problems) > before:
        return None
    if read_json(folder / "config.json").get("model_type") != "vit_mae":
        problems.append(f"--candidates {arm}={folder}: config.json is not a ViTMAE (model_type vit_mae)")
    try:
        _steps(folder)
    except FileNotFoundError as exc:
        problems.append(f"--candidates {arm}={folder}: {exc} (has the pre-training finished?)")
    dataset = read_json(folder / "run_config.json").get("args", {}).get("dataset")
    generated = run_dir / "generated_dataset" / "dataset"
    if not dataset or not _same_folder(dataset, generated):
        problems.append(
            f"--candidates {arm}={folder}: pre-trained on {dataset}, not on the run's generated images ({generated}); "
            "a GEN-SSL candidate sees generated images only"
        )
    numbers = {}
    for fraction in FRACTIONS:
        found, why = _fraction_numbers(pooled, arm, (), fraction)
        if found is None:
            problems.append(f"--pooled: {why}")
            continue
        numbers[fraction_label(fraction)] = found
        row = found["arms"][arm]
        for seed in row["seeds"]:
            stage = run_dir / stage_name(arm, row["recipe"], fraction, seed)
            if not (stage / "run" / "metrics.json").is_file() or not (stage / "stage.json").is_file():
                problems.append(f"--run_dir {run_dir}: no finished fine-tuning stage {stage.name} (stage.json, run/)")
                continue
            init = read_json(stage / "stage.json").get("config", {}).get("init")
            if not init or not _same_folder(init, folder):
                problems.append(f"--candidates {arm}={folder}: stage {stage.name} fine-tuned {init}, not this folder")
    return numbers if len(problems) == before else None


def _choice_table(run_dir: Path, numbers: dict[str, dict[str, dict]]) -> list[dict]:
    """Per candidate: mean validation AUC at each fraction over the seeds every candidate ran there,
    and the score (the mean over fractions); the best score first-given wins ties."""
    table = []
    for arm, by_fraction in numbers.items():
        entry = {"arm": arm, "validation_auc": {}, "seeds": {}}
        for fraction in FRACTIONS:
            label = fraction_label(fraction)
            common = set.intersection(*(set(n[label]["arms"][a]["seeds"]) for a, n in numbers.items()))
            row = by_fraction[label]["arms"][arm]
            seeds = sorted(common)
            aucs = [_validation_auc(run_dir / stage_name(arm, row["recipe"], fraction, s)) for s in seeds]
            entry["validation_auc"][label] = sum(aucs) / len(aucs) if aucs else float("nan")
            entry["seeds"][label] = seeds
        entry["score"] = sum(entry["validation_auc"].values()) / len(FRACTIONS)
        table.append(entry)
    return table


def _results_row(results_json: Path, name: str) -> dict:
    doc = read_json(results_json)
    rows = [r for r in doc.get("results", []) if r.get("name") == name]
    if not rows:
        raise ProtocolInputError(f"--results_row {name!r}: no such row in {results_json}")
    return rows[-1]


def cited_numbers(numbers: dict[str, dict], chosen: str) -> list[tuple[str, str, float]]:
    """``(results key, entry, value)`` of every number the card cites: means, and differences
    ``[difference, low, high]`` as the results row stores them (in its own direction)."""
    out = []
    for label, found in numbers.items():
        for arm, summary in found["arms"].items():
            out.append((f"{label} {arm}", "mean", summary["mean"]))
        for c in found["comparisons"]:
            stored = (
                [c["difference"], c["low"], c["high"]] if c["sign"] > 0 else [-c["difference"], -c["high"], -c["low"]]
            )
            for i, value in enumerate(stored):
                out.append((c["results_key"], f"{c['results_entry']}[{i}]", value))
    return out


def _check_results_row(row: dict, numbers: dict[str, dict], chosen: str, name: str, problems: list[str]) -> None:
    """The results.json row must hold the pooled numbers the card gives (rounded to 4 places there)."""
    pooled = row.get("pooled") or {}
    for key, entry, value in cited_numbers(numbers, chosen):
        stored = pooled.get(key, {})
        if entry == "mean":
            recorded = stored.get("mean")
        else:
            field_name, index = entry[:-3], int(entry[-2])
            recorded = (stored.get(field_name) or [None] * 3)[index]
        if recorded is None:
            problems.append(f"--results_row {name}: no pooled[{key!r}] {entry}")
        elif abs(recorded - value) > 5.1e-5:
            problems.append(f"--results_row {name}: pooled[{key!r}] {entry} is {recorded}, the pooled file {value:.6f}")


def plan_release(
    run_dir: str | os.PathLike,
    candidates: dict[str, Path],
    pooled_paths: Sequence[str | os.PathLike],
    *,
    baseline: str,
    real_arm: str | dict[str, str],
    results_json: str | os.PathLike,
    results_row: str,
) -> ReleasePlan:
    """Check every input and make the choice (validation only). Raises :class:`ProtocolInputError`
    with every problem, each naming its input."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ProtocolInputError(f"--run_dir {run_dir}: no such folder")
    if not candidates:
        raise ProtocolInputError("--candidates: no candidate given")
    real_arms = real_arm if isinstance(real_arm, dict) else dict.fromkeys(candidates, real_arm)
    if set(candidates) - set(real_arms):
        raise ProtocolInputError(
            f"--real_arm: no MAE-on-real-images arm for {sorted(set(candidates) - set(real_arms))}"
        )
    if {baseline, *real_arms.values()} & set(candidates):
        raise ProtocolInputError(f"--candidates: the baseline or a real arm ({baseline}, {real_arms}) is a candidate")
    pooled = load_pooled(pooled_paths)
    problems: list[str] = []
    numbers = {}
    for arm, folder in candidates.items():
        found = _check_candidate(run_dir, arm, folder, pooled, problems)
        if found is not None:
            numbers[arm] = found
    if problems:
        raise ProtocolInputError("cannot package the protocol encoder:\n- " + "\n- ".join(problems))
    choice = _choice_table(run_dir, numbers)
    empty = [f"{c['arm']} at {k}" for c in choice for k, s in c["seeds"].items() if not s]
    if empty:
        raise ProtocolInputError(f"--candidates: no seed every candidate fine-tuned ({', '.join(empty)})")
    chosen = max(choice, key=lambda c: c["score"])["arm"]
    real_arm = real_arms[chosen]  # MAE on real images at the chosen encoder's pre-training length
    # the card's numbers: the chosen arm's pooled rows with its paired comparisons (only its own are needed)
    cited = {}
    for fraction in FRACTIONS:
        found, why = _fraction_numbers(pooled, chosen, (baseline, real_arm), fraction)
        if found is None:
            raise ProtocolInputError(
                f"--pooled: {why}; {chosen} was chosen on validation (pool it with "
                f"bench_genssl_realdata.py --contrast {chosen}:{real_arm} beside --baseline's arm)"
            )
        cited[fraction_label(fraction)] = found
    # MAE on real images: its model folder (for its pre-training length) from its first fine-tuning stage
    real_row = cited["10%"]["arms"][real_arm]
    real_stage = run_dir / stage_name(real_arm, real_row["recipe"], 0.1, real_row["seeds"][0])
    real_init = read_json(real_stage / "stage.json").get("config", {}).get("init") if real_stage.is_dir() else None
    if not real_init or not (Path(real_init) / "config.json").is_file():
        problems.append(f"--real_arm {real_arm}: its stage {real_stage} names no model folder it fine-tuned")
    row = _results_row(Path(results_json), results_row)
    _check_results_row(row, cited, chosen, results_row, problems)
    if problems:
        raise ProtocolInputError("cannot package the protocol encoder:\n- " + "\n- ".join(problems))
    return ReleasePlan(
        run_dir, dict(candidates), choice, chosen, cited, baseline, real_arm, Path(real_init), {"row": row}
    )


def package_protocol_encoder(
    plan: ReleasePlan,
    dest: str | os.PathLike,
    name: str,
    *,
    real_data: Path,
    results_row: str,
    protocol_command: str,
    package_command: str,
) -> dict[str, Any]:
    """Measure, card and ship ``plan``'s chosen folder into ``dest`` (see the module's docstring)."""
    roots = {str(plan.run_dir.resolve().parent): "outputs/", str(real_data.resolve()): "../shared/data/"}
    roots.update({str(plan.run_dir.parent): "outputs/", str(real_data): "../shared/data/"})
    base = ["python", "benchmarks/bench_genssl_realdata.py", "--pretrain-only", "--output-dir", str(plan.run_dir)]
    commands = {
        # the run folder first: real splits, generator, generated images, reference statistics, base MAEs
        "base": portable(shlex.join([*base, "--shared", str(real_data)]), roots),
        "pretrain": pretraining_command(plan.folder, roots),
        "protocol": portable(protocol_command, roots),
        "package": portable(package_command, roots),
    }
    nih = real_data / "nih-cxr14-1000-64px"
    measured = measure_mae(plan.folder, nih_test_images(nih))
    record = release_record(plan, name, results_row, commands)
    facts = {
        "name": name,
        "steps": _steps(plan.folder),
        "real_steps": _steps(plan.real_folder),
        "config": read_json(plan.folder / "config.json"),
        "derived": read_json(plan.folder / "run_config.json").get("derived", {}),
        "parameters": encoder_parameters(plan.folder),
        "commands": commands,
        "results_row": results_row,
        "measured": measured,
    }
    body = card_body(record, facts)
    ship_encoder(
        plan.folder,
        Path(dest),
        body,
        model_index(plan, measured),
        real_data=[str(nih), str(real_data / "kermany-pneumonia-224")],
        datasets=[
            "images generated by a latent diffusion model trained on the NIH ChestX-ray14 subset (no real images)"
        ],
        extra_files={RECORD_FILE: json.dumps(record, indent=2) + "\n"},
        rewrite=lambda text: without_roots(text, roots),  # run_config.json names the run's folders
    )
    return {"chosen": plan.chosen, "choice": plan.choice, "measured": measured, "dest": str(dest)}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from ..typed_args import hidden_aliases

    parser = argparse.ArgumentParser(
        prog="package_pretrained.py --protocol-encoder",
        description="Package the GEN-SSL encoder chosen (on validation) among protocol arms, carded with the "
        "protocol's pooled test numbers (see genssl_hf.hub.shipped_protocol).",
    )
    parser.add_argument("--run_dir", required=True, help="the protocol run folder (its ft_<arm>__* stages)")
    parser.add_argument("--candidates", required=True, help="ARM=MODEL_FOLDER[,ARM=MODEL_FOLDER...]: GEN-SSL arms")
    parser.add_argument(
        "--pooled", action="append", required=True, help="a protocol_pooled*.json of the run; repeatable"
    )
    parser.add_argument("--baseline", default="random_init_adain", help="the standardised random-init arm")
    parser.add_argument(
        "--real_arm",
        required=True,
        help="the MAE-on-real-images arm compared with, or CANDIDATE=ARM[,...]: each candidate's "
        "(at its pre-training length)",
    )
    parser.add_argument("--name", required=True, help="the shipped name (genssl_hf/<name>, in PRETRAINED)")
    parser.add_argument("--results_row", required=True, help="the benchmarks/results.json row of the pooled numbers")
    parser.add_argument("--results_json", default=str(CHECKOUT / "benchmarks" / "results.json"))
    parser.add_argument("--protocol_command", default=None, help="the protocol driver command (default: the row's)")
    parser.add_argument("--dest", default=None, help="where to write (default: the package's folder of --name)")
    parser.add_argument("--real_data", default="../shared/data", help="the real data folder (leak guard, MAE loss)")
    dashed = ("run_dir", "real_arm", "results_row", "results_json", "protocol_command", "real_data")
    args = hidden_aliases(parser, {f"--{o.replace('_', '-')}": f"--{o}" for o in dashed}).parse_args(argv)
    try:
        if args.dest is None and args.name not in PRETRAINED:
            raise ProtocolInputError(f"--name {args.name}: not in genssl_hf.utils.PRETRAINED (add it, or pass --dest)")
        real_data = Path(args.real_data)
        for need in ("nih-cxr14-1000-64px", "kermany-pneumonia-224"):
            if not (real_data / need).is_dir():
                raise ProtocolInputError(f"--real_data {real_data}: no {need}/ (leak guard, MAE loss)")
        plan = plan_release(
            args.run_dir,
            parse_candidates(args.candidates),
            args.pooled,
            baseline=args.baseline,
            real_arm=parse_real_arms(args.real_arm),
            results_json=args.results_json,
            results_row=args.results_row,
        )
        command = args.protocol_command or plan.facts["row"].get("command")
        if not command:
            raise ProtocolInputError(f"--protocol_command: the row {args.results_row!r} records no command; pass it")
    except ProtocolInputError as exc:
        raise SystemExit(str(exc)) from None
    dest = Path(args.dest) if args.dest else shipped_folder(args.name)
    package = ["python", "scripts/package_pretrained.py", "--protocol-encoder", "--run_dir", args.run_dir]
    package += ["--candidates", args.candidates, *[w for p in args.pooled for w in ("--pooled", p)]]
    package += ["--baseline", args.baseline, "--real_arm", args.real_arm, "--results_row", args.results_row]
    package += ["--name", args.name, "--real_data", args.real_data]
    out = package_protocol_encoder(
        plan,
        dest,
        args.name,
        real_data=real_data,
        results_row=args.results_row,
        protocol_command=command,
        package_command=shlex.join(package),
    )
    print(json.dumps(out, indent=2, default=str))
    return 0
