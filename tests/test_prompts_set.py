"""PromptSet, the three builders, the shipped sets, the CLI, and that no report text leaks."""

import json
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from genssl_hf.prompts import (
    DISEASES,
    Prompt,
    PromptSet,
    build_disease_prompts,
    build_elaborated_prompts,
    build_heuristic_prompts,
    load_candidates,
)
from genssl_hf.prompts.build import main as build_main

ROOT = Path(__file__).resolve().parents[1]

# A small synthetic corpus; every sentence is distinctive so a leak is detectable.
CORPUS = [
    "Left lower lobe consolidation with air bronchograms. Small pleural effusion seen zebra-alpha.",
    "No pleural effusion is seen today. Blunting of the costophrenic angle on the right quokka-beta.",
    "Enlarged cardiac silhouette and pulmonary venous congestion narwhal-gamma.",
    "Interstitial markings are prominent. No focal consolidation axolotl-delta.",
    "Volume loss in the left lower lobe with elevated hemidiaphragm pangolin-epsilon.",
]
CANDS = {
    "name": "test candidates",
    "version": "0",
    "diseases": {
        "Consolidation": [
            {"feature": "air bronchograms", "provenance": "curated"},
            {"feature": "cavitation", "provenance": "curated"},
        ],
        "Pleural Effusion": [{"feature": "blunting of costophrenic angles", "provenance": "paper"}],
        "Cardiomegaly": ["pulmonary venous congestion"],
        "Atelectasis": [{"feature": "volume loss", "provenance": "curated"}],
    },
}


def test_disease_and_heuristic_counts():
    d = build_disease_prompts()
    assert len(d) == 5 and d.texts == list(DISEASES)
    assert d.class_labels == list(DISEASES)
    h = build_heuristic_prompts()
    assert len(h) == 30
    assert "Big left-sided atelectasis" in h.texts and "Small bilateral pleural effusion" in h.texts
    assert h.class_labels == list(DISEASES)
    assert {p.existence for p in h} == {"positive"}
    assert all(len(v) == 6 for v in h.by_class().values())


def test_heuristic_vocabulary_matches_phantom_reports():
    phantom = pytest.importorskip("genssl_hf.data.phantom")
    for p in build_heuristic_prompts():
        spec = phantom.findings_from_text(p.text)
        assert list(spec) == [p.disease], p.text
        assert spec[p.disease]["size"] == p.attributes["size"]


def test_elaborated_pairs_scores_and_metadata():
    ps = build_elaborated_prompts(CORPUS, candidates=CANDS, threshold=0.1, corpus_name="synthetic")
    kept = {p.feature for p in ps}
    assert "cavitation" not in kept and "air bronchograms" in kept
    assert len(ps) == 2 * len(kept)
    first, second = ps[0], ps[1]
    assert first.text == "Consolidation with air bronchograms" and first.class_label == "Consolidation"
    assert second.text == "Consolidation with no air bronchograms" and second.class_label == "no Consolidation"
    assert first.existence == "positive" and second.existence == "negative"
    assert set(first.scores) == {"paper", "negation_aware"}
    assert ps.metadata["corpus"]["num_reports"] == 5 and len(ps.metadata["corpus"]["sha256"]) == 64
    assert ps.metadata["threshold"] == 0.1 and ps.metadata["variant"] == "paper"
    feats = {f["feature"]: f for f in ps.metadata["features"]}
    assert feats["pulmonary venous congestion"]["provenance"] == "user"
    assert ps.metadata["survivors_by_threshold"]["paper"]["0"] == 2 * 5
    # the negation-aware variant can be chosen and is never larger than the paper score
    assert all(p.scores["negation_aware"] <= p.scores["paper"] for p in ps)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="at least one"):
        PromptSet([])
    with pytest.raises(ValueError, match="empty prompt"):
        PromptSet([Prompt(text=" ", disease="Edema")])
    with pytest.raises(ValueError, match="duplicate prompt"):
        PromptSet([Prompt(text="Edema", disease="Edema"), Prompt(text="edema ", disease="Edema")])
    with pytest.raises(ValueError, match="existence"):
        Prompt(text="Edema", disease="Edema", existence="maybe")
    with pytest.raises(ValueError, match="class_label"):
        Prompt(text="Edema", disease="Edema", class_label="no Edema")
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(ValueError, match="threshold"):
            build_elaborated_prompts(CORPUS, candidates=CANDS, threshold=bad)
    with pytest.raises(ValueError, match="empty"):
        build_elaborated_prompts([], candidates=CANDS)
    with pytest.raises(TypeError, match="row 2"):
        build_elaborated_prompts(["a", "b", 3], candidates=CANDS)
    with pytest.raises(ValueError, match="no candidate feature reaches"):
        build_elaborated_prompts(CORPUS, candidates=CANDS, threshold=1.0)
    with pytest.raises(ValueError, match="variant"):
        build_elaborated_prompts(CORPUS, candidates=CANDS, variant="fancy")


def test_save_load_round_trip_and_dataset(tmp_path):
    ps = build_elaborated_prompts(CORPUS, candidates=CANDS, threshold=0.1, corpus_name="synthetic")
    out = ps.save_pretrained(tmp_path / "set")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "prompts.json"]
    back = PromptSet.from_pretrained(out)
    assert back == ps and back.texts == ps.texts
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "Consolidation with no air bronchograms" in card
    assert "How many prompts survive" in card
    with pytest.raises(FileExistsError):
        ps.save_pretrained(out)
    ps.save_pretrained(out, overwrite=True)
    ds = ps.to_dataset()
    assert ds.num_rows == len(ps)
    assert ds.features["class_label"].names == ps.class_labels
    assert ds[1]["class_label"] == ps.class_labels.index("no Consolidation")
    assert json.loads(ds.info.description)["strategy"] == "elaborated"


def test_nothing_written_on_failure(tmp_path, monkeypatch):
    ps = build_heuristic_prompts()

    def boom(self):
        raise RuntimeError("card failed")

    monkeypatch.setattr(PromptSet, "render_card", boom)
    with pytest.raises(RuntimeError):
        ps.save_pretrained(tmp_path / "h")
    assert list(tmp_path.iterdir()) == []


def test_no_corpus_text_in_saved_folder(tmp_path):
    ps = build_elaborated_prompts(CORPUS, candidates=CANDS, threshold=0.0, corpus_name="synthetic")
    out = ps.save_pretrained(tmp_path / "set")
    blob = "\n".join(p.read_text() for p in out.rglob("*") if p.is_file()).lower()
    for report in CORPUS:
        for sentence in re.split(r"(?<=\.)\s+", report):
            assert sentence.lower().rstrip(".") not in blob, sentence
        for marker in re.findall(r"\w+-(?:alpha|beta|gamma|delta|epsilon)", report):
            assert marker not in blob


def test_no_iu_text_in_saved_folder(shared_data, tmp_path):
    from genssl_hf.prompts.build import iter_report_texts

    corpus, name = iter_report_texts(shared_data / "iu-xray-reports" / "NLMCXR_reports.tgz")
    assert "NLMCXR_reports.tgz" in name and "Indiana" in name
    texts = [t for _, t in zip(range(400), corpus)]
    ps = build_elaborated_prompts(texts, corpus_name="IU subset", readings_table=False)
    out = ps.save_pretrained(tmp_path / "iu")
    blob = " ".join(" ".join(p.read_text().split()) for p in out.iterdir()).lower()
    sentences = {s.strip().lower() for t in texts for s in re.split(r"(?<=[.;])\s+", t)}
    leaked = [s for s in sentences if len(s) >= 25 and s in blob]
    assert not leaked, leaked[:3]


def test_shipped_sets_load_by_name():
    counts = {}
    for name in ("disease", "heuristic", "elaborated"):
        ps = PromptSet.from_pretrained(name)
        counts[name] = len(ps)
        assert ps.strategy == name
        assert (ROOT / "genssl_hf" / "prompts" / "sets" / name / "README.md").is_file()
    assert counts["disease"] == 5 and counts["heuristic"] == 30
    assert 50 <= counts["elaborated"] <= 80 and counts["elaborated"] % 2 == 0
    el = PromptSet.from_pretrained("elaborated")
    assert el.metadata["corpus"]["num_reports"] > 3000 and el.metadata["threshold"] == 0.015
    assert all(p.scores and set(p.scores) == {"paper", "negation_aware"} for p in el)
    assert "build_command" in el.metadata
    with pytest.raises(FileNotFoundError, match="shipped"):
        PromptSet.from_pretrained("no-such-set")


def test_shipped_candidates_file():
    c = load_candidates()
    assert c["version"] and len(c["sha256"]) == 64
    assert list(c["diseases"]) == list(DISEASES)
    provs = {e["provenance"] for v in c["diseases"].values() for e in v}
    assert provs == {"paper", "curated"}
    paper = {e["feature"] for v in c["diseases"].values() for e in v if e["provenance"] == "paper"}
    assert {
        "airspace opacification",
        "vascular congestion",
        "bronchiectasis",
        "blunting of costophrenic angles",
    } <= paper


def test_push_to_hub_uses_hfapi(tmp_path):
    ps = build_disease_prompts()
    seen = {}

    def upload_folder(**kw):
        seen["files"] = sorted(p.name for p in Path(kw["folder_path"]).iterdir())
        seen.update(kw)
        return "commit"

    with mock.patch("huggingface_hub.HfApi") as Api:
        api = Api.return_value
        api.upload_folder.side_effect = upload_folder
        assert ps.push_to_hub("me/gen-ssl-prompts", token="t") == "commit"
    Api.assert_called_once_with(token="t")
    api.create_repo.assert_called_once_with("me/gen-ssl-prompts", repo_type="dataset", private=True, exist_ok=True)
    assert seen["repo_type"] == "dataset" and seen["files"] == ["README.md", "prompts.json"]


# --- command line ------------------------------------------------------------------------------
def test_cli_elaborated_txt_and_errors(tmp_path, capsys):
    reports = tmp_path / "reports.txt"
    reports.write_text("\n".join(CORPUS) + "\n")
    cand = tmp_path / "cands.json"
    cand.write_text(json.dumps(CANDS))
    out = tmp_path / "el"
    args = [
        "--strategy",
        "elaborated",
        "--reports",
        str(reports),
        "--candidates",
        str(cand),
        "--output_dir",
        str(out),
        "--threshold",
        "0.1",
        "--no-progress",
    ]
    assert build_main(args) == 0
    ps = PromptSet.from_pretrained(out)
    assert ps.metadata["corpus"]["name"] == "reports.txt" and len(ps) >= 2
    assert "--strategy elaborated" in ps.metadata["build_command"]
    # bad threshold, missing column, missing file, existing output: clear errors, nothing written
    bad = tmp_path / "bad"
    with pytest.raises(SystemExit):  # argparse, through the shared numeric ranges
        build_main(
            ["--strategy", "elaborated", "--reports", str(reports), "--output_dir", str(bad), "--threshold", "1.5"]
        )
    assert "argument --threshold: must be in [0, 1], got 1.5" in capsys.readouterr().err
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("\n".join(json.dumps({"report": t}) for t in CORPUS))
    assert (
        build_main(["--strategy", "elaborated", "--reports", str(jsonl), "--output_dir", str(bad), "--no-progress"])
        == 2
    )
    assert "no text column 'text'" in capsys.readouterr().err
    assert (
        build_main(
            [
                "--strategy",
                "elaborated",
                "--reports",
                str(jsonl),
                "--column",
                "report",
                "--output_dir",
                str(bad),
                "--candidates",
                str(cand),
                "--threshold",
                "0.1",
                "--variant",
                "negation-aware",
                "--no-progress",
            ]
        )
        == 0
    )
    assert PromptSet.from_pretrained(bad).metadata["variant"] == "negation_aware"
    assert (
        build_main(
            ["--strategy", "elaborated", "--reports", str(tmp_path / "nope.tgz"), "--output_dir", str(tmp_path / "x")]
        )
        == 2
    )
    with pytest.raises(SystemExit, match="already exists"):
        build_main(args)
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "cands.json", "el", "r.jsonl", "reports.txt"]


def test_script_runs_as_a_new_user_would(tmp_path):
    out = tmp_path / "heuristic"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_prompts.py"),
            "--strategy",
            "heuristic",
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "saved 30 heuristic prompts" in r.stdout
    assert len(PromptSet.from_pretrained(out)) == 30


def test_shipped_elaborated_set_rebuilds_from_iu(shared_data):
    """The shipped elaborated set is what the documented command produces from the IU archive."""
    from genssl_hf.prompts.build import iter_report_texts

    shipped = PromptSet.from_pretrained("elaborated")
    corpus, name = iter_report_texts(shared_data / "iu-xray-reports" / "NLMCXR_reports.tgz")
    ps = build_elaborated_prompts(corpus, corpus_name=name, readings_table=False)
    assert ps.texts == shipped.texts
    assert ps.metadata["corpus"] == shipped.metadata["corpus"]
    for a, b in zip(ps, shipped):
        assert a.scores == pytest.approx(b.scores)
    # and no IU report sentence is in any shipped file
    shipped_dir = ROOT / "genssl_hf" / "prompts" / "sets"
    blob = " ".join(" ".join(p.read_text().split()) for p in shipped_dir.rglob("*") if p.is_file()).lower()
    sentences = {s.strip().lower() for t in corpus for s in re.split(r"(?<=[.;])\s+", " ".join(t.split()))}
    leaked = [s for s in sentences if len(s) >= 25 and s in blob]
    assert not leaked, leaked[:3]


def test_from_pretrained_unknown_repo_offline_is_clear(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="Hub dataset repo"):
        PromptSet.from_pretrained("someone/missing-prompts")
