"""Image-report pairs: phantom, generated (joined back by hash), spec errors."""

from __future__ import annotations

import json

import pytest

from genssl_hf.data.pairs import (
    generated_pairs,
    load_pairs,
    load_report_rows,
    phantom_pairs,
    phantom_report_sections,
)
from genssl_hf.data.adapters import CXRDataError


def test_phantom_pairs_sections_and_labels():
    pairs = phantom_pairs(40, size=32, section="findings")
    assert len(pairs) == 40 and pairs.label_names[0] == "Atelectasis"
    assert "report" not in pairs.images.column_names and "findings" not in pairs.images.column_names
    y = pairs.labels_multi_hot()
    for t, row in zip(pairs.texts, y):  # the report states exactly the labelled findings
        for name, v in zip(pairs.label_names, row):
            assert (f"no {name.lower()}." in t.lower()) == (v == 0)
    imp = phantom_pairs(40, size=32, section="impression")
    assert all(not s.lower().startswith("no ") or s == "No acute cardiopulmonary abnormality." for s in imp.texts)
    assert imp.provenance["corpus_hash"] == pairs.provenance["corpus_hash"]
    sub = pairs.select([3, 1])
    assert sub.texts == [pairs.texts[3], pairs.texts[1]] and sub.provenance["num_pairs"] == 2
    groups = pairs.text_groups()
    assert all((groups[i] == groups[j]) == (pairs.texts[i] == pairs.texts[j]) for i in range(10) for j in range(10))


def test_phantom_report_sections():
    s = phantom_report_sections("Big cardiomegaly. No atelectasis. No edema.")
    assert s["impression"] == "Big cardiomegaly."
    assert phantom_report_sections("No atelectasis. No edema.")["impression"].startswith("No acute")


def test_load_pairs_spec_errors():
    with pytest.raises(ValueError, match="section"):
        load_pairs("phantom:4", section="history")
    with pytest.raises(ValueError, match="corpus"):
        load_pairs("generated:/nonexistent")
    with pytest.raises(ValueError, match="unknown pairs spec"):
        load_pairs("imagenet:3")
    with pytest.raises(ValueError, match="integer"):
        load_pairs("phantom:many")


def _fake_generated(tmp_path, reports, column="text"):
    """A report-mode generated dataset written by the real writer with the phantom oracle."""
    from genssl_hf.generation.materialize import generate_dataset

    out = tmp_path / "gen"
    generate_dataset(
        out,
        "phantom",
        reports=[{column: r} for r in reports],
        report_column=column,
        height=32,
        width=32,
        batch_size=4,
        progress=False,
        num_inference_steps=1,
    )
    return out


def test_generated_pairs_join_by_hash(tmp_path):
    corpus = [
        {"findings": "Big cardiomegaly.", "impression": "Cardiomegaly.", "text": "Big cardiomegaly.\nCardiomegaly."},
        {"findings": "", "impression": "No acute disease.", "text": "No acute disease."},
        {
            "findings": "Small left-sided pleural effusion.",
            "impression": "Effusion.",
            "text": "Small left-sided pleural effusion.\nEffusion.",
        },
    ]
    out = _fake_generated(tmp_path, [r["text"] for r in corpus])
    cfg = json.loads((out / "generation_config.json").read_text())
    assert cfg["mode"] == "reports"
    pairs = generated_pairs(out, corpus, section="impression")
    assert pairs.texts == ["Cardiomegaly.", "No acute disease.", "Effusion."]
    assert pairs.provenance["corpus_hash_matches"] and pairs.provenance["generator_id"]
    assert "prompt" not in pairs.images.column_names
    findings = generated_pairs(out, corpus, section="findings")  # the empty findings row is left out
    assert findings.texts == ["Big cardiomegaly.", "Small left-sided pleural effusion."]
    assert findings.provenance["num_empty_section"] == 1
    with pytest.raises(CXRDataError, match="have no report"):
        generated_pairs(out, corpus[:2], section="text")
    with pytest.raises(CXRDataError, match="no column"):
        generated_pairs(out, [{"report": "x"}], section="text")


def test_load_report_rows_iu(shared_data):
    tgz = shared_data / "iu-xray-reports" / "NLMCXR_reports.tgz"
    rows, name, licence = load_report_rows(f"iu:{tgz}")
    assert len(rows) == 3955 and "CC BY-NC-ND" in licence and {"findings", "impression", "text"} <= set(rows[0])
