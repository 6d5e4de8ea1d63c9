"""No report text in any saved artifact: a report-conditioned generated dataset, the dual encoder
trained on it (text joined back from the corpus by hash), its evaluation and its publication folder
are grepped against every report of the corpus (raw bytes and decoded parquet values)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

WORDS = [
    "amber",
    "basalt",
    "cobalt",
    "dunes",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "indigo",
    "jasper",
    "kelp",
    "lagoon",
]


def _corpus(n: int = 48) -> list[dict[str, str]]:
    """Made-up reports standing in for a licensed corpus: a phantom-vocabulary statement (so the
    phantom oracle draws the finding) plus distinctive sentences that must never leave."""
    findings = ["Big cardiomegaly.", "Big left-sided pleural effusion.", "Small bilateral atelectasis.", "No edema."]
    rows = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 5 + 3) % len(WORDS)]
        f = f"{findings[i % 4]} The {a} marker projects over the {b} region of study {i} today."
        imp = f"Stable {a} appearance compared with the {b} examination number {i} here."
        rows.append({"findings": f, "impression": imp, "text": f + "\n" + imp})
    return rows


def _files(*folders: Path):
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file():
                yield p


@pytest.mark.slow
def test_no_report_text_in_any_output(tmp_path, monkeypatch):
    import datasets

    from genssl_hf.evaluation.vlp import evaluate_dual_encoder
    from genssl_hf.generation.materialize import generate_dataset
    from genssl_hf.hub.leak import LeakError, build_real_data_index, scan_folder
    from genssl_hf.hub.publish import publish
    from genssl_hf.data.pairs import generated_pairs
    from genssl_hf.training.vlp import pretrain_vlp
    from genssl_hf.training.vlp_args import build_parser

    torch.set_num_threads(1)
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    rows = _corpus()
    corpus_file = tmp_path / "private" / "corpus.parquet"
    corpus_file.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), corpus_file)

    gen = tmp_path / "gen"
    generate_dataset(
        gen,
        "phantom",
        reports=[{"text": r["text"]} for r in rows],
        report_column="text",
        height=32,
        width=32,
        batch_size=16,
        progress=False,
    )
    model = tmp_path / "model"
    args = build_parser().parse_args(
        [
            "--pairs",
            f"generated:{gen}",
            "--reports",
            str(corpus_file),
            "--section",
            "text",
            "--model",
            "tiny",
            "--image_size",
            "32",
            "--text_tower",
            "tiny-bert",
            "--output_dir",
            str(model),
            "--per_device_train_batch_size",
            "16",
            "--max_steps",
            "2",
            "--checkpointing_steps",
            "1",
            "--logging_steps",
            "1",
        ]
    )
    summary = pretrain_vlp(args)
    assert summary["global_step"] == 2
    vlp = json.loads((model / "vlp_config.json").read_text())
    assert vlp["pairs"]["source"] == "generated" and vlp["pairs"]["corpus_hash_matches"]
    assert vlp["truncation"]["num_texts"] == len(rows)
    evaluation = tmp_path / "eval"
    evaluate_dual_encoder(
        model, pairs=generated_pairs(gen, corpus_file, section="text"), output_dir=evaluation, n_bootstrap=10
    )
    hub = tmp_path / "hub"
    result = publish("dual_encoder", model, dry_run=hub, real_data=[corpus_file])
    card = (hub / "README.md").read_text()
    assert vlp["pairs"]["corpus_hash"] in card and "image generator id" in card

    outputs = [gen, model, evaluation, hub] + ([cache] if cache.exists() else [])
    sentences = {
        s.strip()
        for r in rows
        for part in (r["findings"], r["impression"])
        for s in part.split(".")
        if len(s.split()) >= 6
    }
    assert len(sentences) >= len(rows)
    checked = 0
    for f in _files(*outputs):
        data = f.read_bytes()
        checked += 1
        for s in sentences:
            assert s.encode() not in data, f"report text in {f}"
    assert checked > 10
    index = build_real_data_index([corpus_file])
    for folder in outputs:
        assert scan_folder(folder, index) == [], folder  # also parquet values, decoded
    assert result.files and "README.md" in result.files

    # the guard does fire: a planted report stops the publication and names the file
    planted = tmp_path / "planted"
    import shutil

    shutil.copytree(model, planted)
    (planted / "notes.txt").write_text(rows[3]["impression"])
    with pytest.raises(LeakError, match="notes.txt"):
        publish("dual_encoder", planted, dry_run=tmp_path / "hub2", real_data=[corpus_file])
