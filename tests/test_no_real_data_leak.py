"""The leak guard: a folder carrying report text or real pixels is refused (naming the file), a
clean one passes; against fixture-made real sets and, when present, the shared real data."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from genssl_hf.hub import publish as pub
from genssl_hf.hub.leak import LeakError, RealDataIndex, build_real_data_index, check_folder, scan_folder

from _publish_artifacts import make_dataset, make_prompt_set

REPORTS = [
    "The cardiomediastinal silhouette is within normal limits for size and contour. "
    "Right lower lobe airspace disease concerning for pneumonia.",
    "Stable appearance of the chest with chronic blunting of the left costophrenic sulcus. No pneumothorax.",
]
UNIQUE_SENTENCE = "Right lower lobe airspace disease concerning for pneumonia."


def _smooth(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = (255 * rng.random((6, 6))).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    """A fixture-made real set: an IU-style report archive and a folder of real images."""
    root = tmp_path_factory.mktemp("realdata")
    with tarfile.open(root / "reports.tgz", "w:gz") as tar:
        for i, text in enumerate(REPORTS):
            xml = (
                f'<eCitation><uId id="CXR{i}"/><MedlineCitation><Article><Abstract>'
                f'<AbstractText Label="FINDINGS">{text}</AbstractText>'
                f'<AbstractText Label="IMPRESSION">No acute disease.</AbstractText>'
                f"</Abstract></Article></MedlineCitation></eCitation>"
            ).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{i}.xml")
            info.size = len(xml)
            tar.addfile(info, io.BytesIO(xml))
    (root / "images").mkdir()
    for i in range(3):
        Image.fromarray(_smooth(i)).convert("RGB").save(root / "images" / f"patient{i}.jpeg", quality=95)
    return root


@pytest.fixture(scope="module")
def index(real_dir):
    return build_real_data_index([real_dir / "reports.tgz", real_dir / "images"])


def test_index_counts_reports_and_images(index):
    assert len(index.reports) == 2 and len(index.images) == 3


def test_clean_folder_passes(index, tmp_path):
    d = tmp_path / "clean"
    d.mkdir()
    Image.fromarray(_smooth(100)).save(d / "sample.png")
    (d / "notes.json").write_text(
        json.dumps({"prompt": "Big left-sided pleural effusion", "report": "No pneumothorax."})
    )
    (d / "README.md").write_text("# A model\n\nThe lungs are clear. No acute disease.\n")
    assert scan_folder(d, index) == []
    check_folder(d, index)


@pytest.mark.parametrize("where", ["readme", "json", "parquet", "spliced"])
def test_report_text_is_refused(where, index, tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    if where == "readme":
        (d / "README.md").write_text(f"# Samples\n\nPrompt used: {UNIQUE_SENTENCE}\n")
        name = "README.md"
    elif where == "json":
        (d / "config.json").write_text(json.dumps({"prompts": ["ok", UNIQUE_SENTENCE.upper()]}))
        name = "config.json"
    elif where == "parquet":
        pq.write_table(pa.table({"prompt": ["Small left-sided atelectasis", UNIQUE_SENTENCE]}), d / "train.parquet")
        name = "train.parquet"
    else:  # eight consecutive report words inside other text
        (d / "log.txt").write_text("caption: blunting of the left costophrenic sulcus no pneumothorax, seed 3")
        name = "log.txt"
    with pytest.raises(LeakError) as err:
        check_folder(d, index)
    assert name in str(err.value) and "report-text" in str(err.value)
    if where == "parquet":
        assert "column prompt row 1" in str(err.value)


@pytest.mark.parametrize("variant", ["exact-png", "jpeg-resized", "parquet-embedded", "npy", "data-uri"])
def test_real_pixels_are_refused(variant, index, real_dir, tmp_path):
    real = np.asarray(Image.open(real_dir / "images" / "patient1.jpeg").convert("L"))
    d = tmp_path / "out"
    d.mkdir()
    if variant == "exact-png":
        Image.fromarray(real).save(d / "sample_0.png")
        name, kind = "sample_0.png", "real-pixels-exact"
    elif variant == "jpeg-resized":
        Image.fromarray(real).resize((64, 64), Image.BILINEAR).save(d / "grid.jpg", quality=70)
        name, kind = "grid.jpg", "real-pixels-near"
    elif variant == "parquet-embedded":
        buf = io.BytesIO()
        Image.fromarray(real).save(buf, "PNG")
        ok = io.BytesIO()
        Image.fromarray(_smooth(7)).save(ok, "PNG")
        struct = pa.array(
            [{"bytes": ok.getvalue(), "path": None}, {"bytes": buf.getvalue(), "path": None}],
            type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
        (d / "data").mkdir()
        pq.write_table(pa.table({"image": struct}), d / "data" / "train-00000-of-00001.parquet")
        name, kind = "data/train-00000-of-00001.parquet", "real-pixels"
    elif variant == "npy":
        np.save(d / "batch.npy", np.stack([_smooth(9), real.astype(np.float32) / 255.0]))
        name, kind = "batch.npy", "real-pixels"
    else:
        import base64

        buf = io.BytesIO()
        Image.fromarray(real).save(buf, "PNG")
        (d / "README.md").write_text(f"![x](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})\n")
        name, kind = "README.md", "real-pixels"
    findings = scan_folder(d, index)
    assert len(findings) == 1, findings
    assert findings[0].file == name and findings[0].kind.startswith(kind) and "patient1.jpeg" in findings[0].detail
    if variant == "parquet-embedded":
        assert findings[0].location == "column image.bytes row 1"


def test_similar_but_different_images_pass(index, tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    real = np.asarray(
        Image.open(sorted((index.sources and Path(index.sources[-1])).glob("*.jpeg"))[0]).convert("L")
    ).astype(float)
    other = np.clip(0.6 * real + 0.4 * _smooth(50).astype(float), 0, 255).astype(np.uint8)  # a blend, not a copy
    Image.fromarray(other).save(d / "blend.png")
    assert scan_folder(d, index) == []


def test_publish_refuses_before_writing(index, real_dir, tmp_path):
    src = make_prompt_set(tmp_path / "ps")
    data = json.loads((src / "prompts.json").read_text())
    data["metadata"]["note"] = UNIQUE_SENTENCE
    (src / "prompts.json").write_text(json.dumps(data))
    with pytest.raises(LeakError, match="prompts.json"):
        pub.publish("prompt_set", src, "me/ps", dry_run=tmp_path / "out", real_data=[real_dir / "reports.tgz"])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    # real text slipped into the card through a caller-supplied tag is caught too
    clean = make_prompt_set(tmp_path / "ps2")
    with pytest.raises(LeakError, match="README.md"):
        pub.publish("prompt_set", clean, "me/ps", dry_run=tmp_path / "out", real_data=index, tags=[UNIQUE_SENTENCE])


def test_unknown_or_empty_real_data_paths_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_real_data_index([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        build_real_data_index([tmp_path / "empty"])


# ------------------------------------------------------------------ the shared real data
@pytest.fixture(scope="module")
def iu_index(shared_data):
    tgz = shared_data / "iu-xray-reports" / "NLMCXR_reports.tgz"
    if not tgz.is_file():
        pytest.skip("IU report archive absent")
    return build_real_data_index([tgz])


def _some_iu_sentence(shared_data: Path) -> str:
    """A long sentence of a real IU report (read at test time, never stored)."""
    from genssl_hf.hub.leak import _iter_report_archive

    for text in _iter_report_archive(shared_data / "iu-xray-reports" / "NLMCXR_reports.tgz"):
        for sent in text.replace("\n", ". ").split(". "):
            if len(sent.split()) >= 12 and "XXXX" not in sent:
                return sent
    pytest.skip("no long sentence found")


def test_shared_iu_sentence_is_refused_and_shipped_text_passes(iu_index, shared_data, tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "prompts.json").write_text(json.dumps({"prompts": [_some_iu_sentence(shared_data)]}))
    with pytest.raises(LeakError, match="prompts.json"):
        check_folder(d, iu_index)
    # no false positives: the shipped prompt sets and a phantom dataset (with its reports) pass
    clean = tmp_path / "clean"
    clean.mkdir()
    make_prompt_set(clean / "ps")
    make_dataset(clean / "ds", n=32)
    assert scan_folder(clean, iu_index) == []


def test_shared_real_image_is_refused(shared_data, tmp_path):
    nih = sorted((shared_data / "nih-cxr14-1000-64px" / "train").rglob("*.png"))[:20]
    ker = sorted((shared_data / "kermany-pneumonia-224" / "train").rglob("*.jpeg"))[:20]
    if not nih or not ker:
        pytest.skip("shared image folders absent")
    idx = RealDataIndex()
    for p in nih + ker:
        idx.add_image(Image.open(p), p.name)
    d = tmp_path / "out"
    d.mkdir()
    Image.open(ker[3]).convert("L").resize((128, 128)).save(d / "sample.png")  # re-encoded, resized copy
    Image.open(nih[5]).save(d / "exact.png")
    found = {f.file: f.kind for f in scan_folder(d, idx)}
    assert found == {"sample.png": "real-pixels-near", "exact.png": "real-pixels-exact"}
    # a phantom radiograph is not mistaken for any real one
    from genssl_hf.data.phantom import sample_phantom

    (d / "sample.png").unlink()
    (d / "exact.png").unlink()
    Image.fromarray(sample_phantom(0, size=64).image).save(d / "phantom.png")
    assert scan_folder(d, idx) == []


def test_generated_dataset_in_report_mode(index, real_dir, tmp_path):
    """Report-conditioned generation: the default drops the report text (publishable); the opt-in
    that keeps it as the prompt column is refused, naming the shard and row."""
    mz = pytest.importorskip("genssl_hf.generation.materialize", reason="the dataset generator is absent")
    kept = tmp_path / "kept"
    mz.generate_dataset(
        kept,
        "phantom",
        reports=REPORTS,
        report_column="x",
        keep_prompt_text=True,
        height=32,
        width=32,
        shard_size=4,
        progress=False,
    )
    with pytest.raises(LeakError, match=r"data/.*\.parquet \[column prompt row 0\]"):
        pub.publish("dataset", kept, "me/syn", dry_run=tmp_path / "out", real_data=index)
    assert not (tmp_path / "out").exists()
    dropped = tmp_path / "dropped"
    mz.generate_dataset(
        dropped, "phantom", reports=REPORTS, report_column="x", height=32, width=32, shard_size=4, progress=False
    )
    res = pub.publish("dataset", dropped, "me/syn", dry_run=tmp_path / "out", real_data=index)
    assert "generation_config.json" in res.files and any(f.startswith("data/") for f in res.files)
    assert "report corpus hash" in (tmp_path / "out" / "README.md").read_text()


def test_real_image_inside_a_figure_is_refused(index, real_dir, tmp_path):
    """Sample grids and matplotlib figures are checked panel by panel."""
    from genssl_hf.data.phantom import render_grid, sample_phantom

    phantoms = [sample_phantom(s, size=64).image for s in range(3)]
    real = np.asarray(Image.open(real_dir / "images" / "patient2.jpeg").convert("L").resize((64, 64)))
    d = tmp_path / "out"
    d.mkdir()
    render_grid(phantoms, ["a", "b", "c"], d / "clean_grid.png", ncols=2)
    assert scan_folder(d, index) == []
    render_grid([*phantoms, real], ["a", "b", "c", "d"], d / "samples.png", ncols=2)
    findings = scan_folder(d, index)
    assert [f.file for f in findings] == ["samples.png"]
    assert "patient2.jpeg" in findings[0].detail and "panel at" in findings[0].detail
