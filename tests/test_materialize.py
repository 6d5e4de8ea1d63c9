"""Generated-dataset materialisation: balance, layout, load_dataset round trip, verification,
report mode privacy, card, push (mocked), bad input before compute."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

from genssl_hf.generation import materialize as mz
from genssl_hf.generation.balance import balance_plan, golden_stride, sample_seed
from genssl_hf.generation.materialize.plan import prompt_from

PROMPTS = [
    {"text": "Atelectasis with lung collapse", "disease": "Atelectasis", "existence": "positive"},
    {"text": "Atelectasis with no lung collapse", "disease": "Atelectasis", "existence": "negative"},
    {"text": "Big left-sided pleural effusion", "disease": "Pleural Effusion", "existence": "positive"},
    {"text": "Small right-sided pleural effusion", "disease": "Pleural Effusion", "existence": "positive"},
    {"text": "Cardiomegaly", "disease": "Cardiomegaly"},
]


class HashGenerator:
    """Deterministic fake: each image is a pure function of (prompt, seed), float in [0, 1]."""

    generator_id = "hash-fake"

    def __init__(self, size=16):
        self.size = size
        self.calls = 0
        self.seen_prompts: list[str] = []

    def __call__(self, prompts, seeds):
        self.calls += 1
        self.seen_prompts.extend(prompts)
        return np.stack([expected_image(p, s, self.size) for p, s in zip(prompts, seeds)])


def expected_image(prompt: str, seed: int, size: int = 16) -> np.ndarray:
    h = int.from_bytes(hashlib.sha256(f"{prompt}|{seed}".encode()).digest()[:8], "little")
    return np.random.default_rng(h).random((size, size), dtype=np.float32)


def _run(out, gen=None, **kw):
    args = dict(
        prompts=PROMPTS,
        num_images=23,
        shard_size=5,
        rows_per_checkpoint=2,
        height=16,
        width=16,
        batch_size=3,
        progress=False,
    )
    args.update(kw)
    return mz.generate_dataset(out, gen or HashGenerator(), **args)


def _rows(out):
    """All rows of a generated folder, by index, with raw PNG bytes."""
    table = pq.read_table(sorted(Path(out, "data").rglob("*.parquet")))
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: r["index"])


# ---------------------------------------------------------------------------------- plan


def test_balance_counts_and_remainder_rule():
    labels = ["A", "A", "noA", "B", "B", "B"]
    plan = balance_plan(labels, 20)
    # 20 over 3 classes: 7, 7, 6 (first class gets the extra); then over prompts of a class.
    assert plan.class_names == ("A", "noA", "B")
    assert plan.class_counts == (7, 7, 6)
    assert plan.prompt_counts == (4, 3, 7, 2, 2, 2)
    ids = plan.prompt_ids(0, 20)
    assert np.bincount(ids, minlength=6).tolist() == list(plan.prompt_counts)
    # the mapping is a pure function: any sub-range agrees with the whole
    assert plan.prompt_ids(7, 13).tolist() == ids[7:13].tolist()


def test_balance_is_interleaved_in_every_window():
    plan = balance_plan([f"c{i}" for i in range(10)], 10_000)
    ids = plan.prompt_ids(0, 10_000)
    for start in range(0, 10_000, 500):
        counts = np.bincount(ids[start : start + 500], minlength=10)
        assert counts.min() >= 48 and counts.max() <= 52, counts


def test_impossible_balance_and_bad_n():
    with pytest.raises(ValueError, match="impossible balance: 3 images .* 4 class labels"):
        balance_plan(["a", "b", "c", "d"], 3)
    with pytest.raises(ValueError, match="positive integer"):
        balance_plan(["a"], 0)


def test_seed_rule_is_documented_and_distinct():
    lo, hi = np.random.SeedSequence([7, 12]).generate_state(2, dtype=np.uint32)
    assert sample_seed(7, 12) == ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)
    seeds = {sample_seed(0, i) for i in range(5000)}
    assert len(seeds) == 5000 and max(seeds) < 2**63
    assert golden_stride(1000) == 617 or np.gcd(golden_stride(1000), 1000) == 1


def test_shard_size_and_layout():
    assert mz.parse_shard_size(1000) == ("images", 1000)
    assert mz.parse_shard_size("256MB") == ("bytes", 256_000_000)
    assert mz.parse_shard_size("1GiB") == ("bytes", 2**30)
    assert mz.shard_images_for("256MiB", 512, 512) == 2**28 // (512 * 512 + 512)
    for bad in ("0", "12.5", "lots", -3):
        with pytest.raises(ValueError, match="shard size"):
            mz.parse_shard_size(bad)
    flat = mz.ShardLayout(num_images=100, shard_images=30)
    assert flat.num_shards == 4 and flat.shard_range(3) == (90, 100)
    assert flat.shard_relpath(1) == "data/train-00001-of-00004.parquet"
    big = mz.ShardLayout(num_images=20_001 * 10, shard_images=10)
    assert big.nested and big.num_shards == 20_001
    assert big.shard_relpath(12_345) == "data/00012/train-12345-of-20001.parquet"
    assert big.data_files_pattern == "data/*/train-*.parquet"
    # no folder over 10k files
    folders = {}
    for k in range(big.num_shards):
        folders.setdefault(big.shard_relpath(k).rsplit("/", 1)[0], 0)
        folders[big.shard_relpath(k).rsplit("/", 1)[0]] += 1
    assert max(folders.values()) <= mz.MAX_FILES_PER_FOLDER


def test_to_uint8_gray_formats():
    f = np.full((2, 4, 4, 1), 0.5, np.float32)
    assert [a.tolist() for a in mz.to_uint8_gray(f, 4, 4)] == [[[128] * 4] * 4] * 2
    chw = np.zeros((2, 1, 4, 4), np.float32)
    assert mz.to_uint8_gray(chw)[0].shape == (4, 4)
    with pytest.raises(ValueError, match="expected 8x8"):
        mz.to_uint8_gray(f, 8, 8)
    with pytest.raises(ValueError, match="non-finite"):
        mz.to_uint8_gray(np.full((1, 4, 4), np.nan, np.float32))


# ---------------------------------------------------------------------------------- writing


def test_roundtrip_load_dataset_and_streaming(tmp_path):
    out = tmp_path / "gen"
    result = _run(out, quality={"FID (MAE ViT-S features)": 12.3, "mean NN cosine similarity": 0.81})
    assert result.verification.ok and result.num_shards == 5
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-0000{k}-of-00005.parquet" for k in range(5)]
    assert not (out / mz.INCOMPLETE_DIR).exists()

    ds = datasets.load_dataset(str(out), split="train")
    assert len(ds) == 23
    assert list(ds.features)[:3] == ["image", "labels", "patient_id"]  # canonical order kept
    assert ds.features["image"] == datasets.Image(mode="L")
    assert ds.features["labels"].feature.names == ["Atelectasis", "Pleural Effusion", "Cardiomegaly"]
    assert ds.features["class_label"].names == ["Atelectasis", "no Atelectasis", "Pleural Effusion", "Cardiomegaly"]
    plan = balance_plan([prompt_from(p, "").class_label for p in PROMPTS], 23)
    for row in ds:
        i = row["index"]
        assert row["seed"] == sample_seed(0, i)
        assert row["prompt"] == PROMPTS[plan.prompt_ids(i, i + 1)[0]]["text"]
        want = mz.to_uint8_gray(expected_image(row["prompt"], row["seed"])[None])[0]
        assert np.array_equal(np.asarray(row["image"]), want)
        assert row["image"].mode == "L"
        negative = row["existence"] == "negative"
        assert row["labels"] == ([] if negative else [ds.features["labels"].feature.str2int(row["disease"])])
        assert row["generator_id"] == "hash-fake"

    streamed = list(datasets.load_dataset(str(out), split="train", streaming=True))
    assert [r["index"] for r in streamed] == list(range(23))
    assert np.array_equal(np.asarray(streamed[7]["image"]), np.asarray(ds[7]["image"]))

    card = (out / "README.md").read_text()
    cfg = json.loads((out / mz.CONFIG_NAME).read_text())
    assert "Not for clinical use" in card and "configs:" in card and "dataset_info:" in card
    assert cfg["prompt_set_hash"] in card and "hash-fake" in card
    assert (
        "| Atelectasis | 6 | 6 |" in card
        and "| no Atelectasis | 6 | 6 |" in card
        and "| Cardiomegaly | 5 | 5 |" in card
    )
    assert "| Big left-sided pleural effusion | Pleural Effusion | positive | Pleural Effusion | 3 | 3 |" in card
    assert "FID (MAE ViT-S features) | 12.3" in card and "16 x 16 px" in card


def test_independent_of_batch_size_and_checkpoint_size(tmp_path):
    _run(tmp_path / "a", batch_size=1, rows_per_checkpoint=5)
    _run(tmp_path / "b", batch_size=7, rows_per_checkpoint=3)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")


def test_verification_reports_missing_and_duplicates(tmp_path):
    out = tmp_path / "gen"
    _run(out)
    (out / "data" / "train-00002-of-00005.parquet").unlink()
    report = mz.verify_dataset(out)
    assert not report.ok and report.missing == [[10, 15]] and report.num_found == 18
    assert "5 missing" in report.summary()

    # a shard with a repeated row
    out2 = tmp_path / "gen2"
    _run(out2)
    path = out2 / "data" / "train-00001-of-00005.parquet"
    t = pq.read_table(path)
    import pyarrow as pa

    pq.write_table(pa.concat_tables([t, t.slice(0, 1)]), path)
    report = mz.verify_dataset(out2)
    assert not report.ok and report.duplicates == [5]
    (out2 / "data" / "stray.parquet").write_bytes(b"")
    assert mz.verify_dataset(out2).unexpected_files == ["data/stray.parquet"]


def test_rerun_is_a_noop_and_changed_settings_refuse(tmp_path):
    out = tmp_path / "gen"
    _run(out)
    before = _rows(out)
    gen = HashGenerator()
    res = _run(out, gen, batch_size=4)  # finished folder: nothing to do, still verified
    assert gen.calls == 0 and res.verification.ok and _rows(out) == before
    with pytest.raises(ValueError, match="different settings.*seed"):
        _run(out, seed=1)
    res = _run(out, seed=1, overwrite=True)
    assert res.verification.ok and _rows(out) != before


def test_bad_input_fails_before_compute(tmp_path):
    gen = HashGenerator()
    out = tmp_path / "never"
    cases = [
        (dict(prompts=[]), "empty"),
        (dict(prompts=["a", "b", "a"]), "duplicates prompt 0"),
        (dict(prompts=[{"text": ""}]), "non-empty string"),
        (dict(prompts=[{"text": "x", "existence": "maybe"}]), "existence must be one of"),
        (dict(prompts=str(tmp_path / "nope.json")), "nope.json.* is neither a file"),
        (dict(prompts=PROMPTS, num_images=3), "impossible balance: 3 images .* 4 class labels"),
        (dict(prompts=PROMPTS, batch_size=0), "batch_size"),
        (dict(prompts=PROMPTS, shard_size="big"), "shard size"),
    ]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    cases.append((dict(prompts=str(bad_json)), "not valid JSON"))
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            _run(out, gen, **kwargs)
    with pytest.raises(ValueError, match="pipeline folder .*does not exist"):
        _run(out, str(tmp_path / "missing-pipeline"))
    (tmp_path / "notapipe").mkdir()
    with pytest.raises(ValueError, match="no model_index.json"):
        _run(out, str(tmp_path / "notapipe"))
    assert gen.calls == 0 and not out.exists()


def test_cli_bad_input_exits_before_compute(tmp_path, capsys):
    with pytest.raises(ValueError, match="does not exist"):
        mz.main(
            [
                "--pipeline",
                str(tmp_path / "nope"),
                "--prompts",
                "disease",
                "--num_images",
                "10",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    pj = tmp_path / "prompts.json"
    pj.write_text(json.dumps(PROMPTS))
    with pytest.raises(ValueError, match="impossible balance"):
        mz.main(
            [
                "--pipeline",
                "phantom",
                "--prompts",
                str(pj),
                "--num_images",
                "3",
                "--image_size",
                "32",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    assert not (tmp_path / "o").exists()


def _shipped(name):
    try:
        from genssl_hf.prompts.promptset import PromptSet

        return PromptSet.from_pretrained(name)
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"shipped prompt set {name!r} not available yet: {exc}")


def test_shipped_prompt_set_with_phantom_generator(tmp_path):
    _shipped("heuristic")
    out = tmp_path / "ph"
    res = mz.generate_dataset(
        out, "phantom", prompts="heuristic", num_images=10, height=32, width=32, shard_size=4, progress=False
    )
    assert res.verification.ok
    ds = datasets.load_dataset(str(out), split="train")
    assert len(ds) == 10 and ds[0]["image"].size == (32, 32)
    cfg = json.loads((out / mz.CONFIG_NAME).read_text())
    assert cfg["prompt_set_name"] == "heuristic" and cfg["prompt_set_source_hash"]
    # 10 images over the 5 disease classes of the heuristic set: 2 each
    assert dict(cfg["planned_class_counts"]) == {c: 2 for c in ds.features["class_label"].names}
    assert len(ds.features["class_label"].names) == 5


# ---------------------------------------------------------------------------------- reports

REPORTS = [
    "Big left-sided pleural effusion. No cardiomegaly. Zebra7 marker alpha.",
    "Small bilateral atelectasis. Quokka marker beta.",
    "No acute findings. Narwhal marker gamma, patient Okapi.",
    "Cardiomegaly with pulmonary venous congestion. Axolotl marker delta.",
    "Edema. Pangolin marker epsilon.",
]


def _report_dataset():
    feats = datasets.Features(
        {
            "report": datasets.Value("string"),
            "labels": datasets.List(datasets.ClassLabel(names=["Cardiomegaly", "Edema"])),
        }
    )
    return datasets.Dataset.from_dict({"report": REPORTS, "labels": [[], [], [], [0], [1]]}, features=feats)


def _all_output_bytes(out: Path) -> bytes:
    blob = b""
    for p in sorted(out.rglob("*")):
        if p.is_file():
            blob += p.read_bytes()
            if p.suffix == ".parquet":  # decoded values too (parquet may compress strings)
                t = pq.read_table(p)
                blob += json.dumps(t.drop_columns(["image"]).to_pylist()).encode()
                blob += str(t.schema.metadata).encode()
    return blob


def test_report_mode_keeps_report_text_out(tmp_path):
    out = tmp_path / "rep"
    gen = HashGenerator()
    res = mz.generate_dataset(
        out,
        gen,
        reports=_report_dataset(),
        height=16,
        width=16,
        shard_size=2,
        rows_per_checkpoint=1,
        batch_size=2,
        progress=False,
    )
    assert res.verification.ok and gen.seen_prompts == REPORTS  # the text *was* the prompt
    blob = _all_output_bytes(out)
    for word in ("Zebra7", "Quokka", "Narwhal", "Okapi", "Axolotl", "Pangolin"):  # words of REPORTS
        assert word.encode() not in blob
    ds = datasets.load_dataset(str(out), split="train")
    assert "prompt" not in ds.column_names
    assert ds["report_sha256"] == [hashlib.sha256(r.encode()).hexdigest() for r in REPORTS]
    assert ds["labels"] == [[], [], [], [0], [1]]
    cfg = json.loads((out / mz.CONFIG_NAME).read_text())
    assert cfg["corpus_hash"] and cfg["corpus_num_reports"] == 5
    for row in ds:
        want = mz.to_uint8_gray(expected_image(REPORTS[row["index"]], sample_seed(0, row["index"]))[None])[0]
        assert np.array_equal(np.asarray(row["image"]), want)

    # explicit opt-in keeps the text
    out2 = tmp_path / "rep-keep"
    mz.generate_dataset(
        out2,
        HashGenerator(),
        reports=REPORTS,
        report_column="x",
        keep_prompt_text=True,
        height=16,
        width=16,
        shard_size=3,
        progress=False,
    )
    assert datasets.load_dataset(str(out2), split="train")["prompt"] == REPORTS


def test_report_mode_cli_with_phantom_generator(tmp_path):
    corpus = tmp_path / "corpus"
    _report_dataset().save_to_disk(str(corpus))
    out = tmp_path / "rep-cli"
    assert (
        mz.main(
            [
                "--pipeline",
                "phantom",
                "--reports",
                str(corpus),
                "--image_size",
                "32",
                "--output_dir",
                str(out),
                "--shard_size",
                "2",
                "--no_progress",
            ]
        )
        == 0
    )
    blob = _all_output_bytes(out)
    assert not any(w.encode() in blob for w in ("Zebra7", "Quokka", "Narwhal", "Okapi", "Axolotl", "Pangolin"))
    ds = datasets.load_dataset(str(out), split="train")
    assert len(ds) == 5 and ds[0]["image"].size == (32, 32)
    card = (out / "README.md").read_text()
    assert "report corpus" in card and "**not** published" in card


def test_report_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="no text column 'text'"):
        mz.load_report_corpus(_report_dataset(), "text")
    with pytest.raises(ValueError, match="empty"):
        mz.load_report_corpus([], "report")
    with pytest.raises(ValueError, match="report 1 is empty"):
        mz.load_report_corpus(["ok", "  "], "report")
    with pytest.raises(ValueError, match="fewer than the 9"):
        mz.load_report_corpus(REPORTS, limit=9)
    with pytest.raises(ValueError, match="not text"):
        mz.load_report_corpus([{"report": 3}], "report")


# ---------------------------------------------------------------------------------- hub


class FakeHfApi:
    """Records calls; "uploads" by copying the allowed files into a local folder."""

    def __init__(self, remote: Path):
        self.remote = remote
        self.calls: list[tuple] = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, repo_type=None, **kw):
        from huggingface_hub.utils import filter_repo_objects

        root = Path(folder_path)
        files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
        chosen = list(filter_repo_objects(files, allow_patterns=allow_patterns))
        for rel in chosen:
            (self.remote / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, self.remote / rel)
        self.calls.append(("upload_folder", repo_id, repo_type, sorted(chosen)))


def test_push_to_hub_mocked_same_layout(tmp_path):
    out = tmp_path / "gen"
    api = FakeHfApi(tmp_path / "remote")
    res = _run(out, push_to_hub="me/synthetic-cxr", hub_api=api)
    assert res.pushed_to == "me/synthetic-cxr"
    assert api.calls[0] == (
        "create_repo",
        "me/synthetic-cxr",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    uploads = [c for c in api.calls if c[0] == "upload_folder"]
    assert all(c[2] == "dataset" for c in uploads)
    assert "README.md" in uploads[-1][3]  # card last: the repo never lists missing shards
    local = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    remote = sorted(str(p.relative_to(api.remote)) for p in api.remote.rglob("*") if p.is_file())
    assert remote == local
    a = datasets.load_dataset(str(api.remote), split="train")
    assert len(a) == 23 and a.features == datasets.load_dataset(str(out), split="train").features

    out2 = tmp_path / "gen2"
    _run(out2)
    (out2 / "data" / "train-00000-of-00005.parquet").unlink()
    with pytest.raises(ValueError, match="not a finished|failed verification"):
        mz.push_dataset_to_hub(out2, "me/x", api=FakeHfApi(tmp_path / "r2"))


def test_load_prompts_sources(tmp_path):
    from genssl_hf.prompts.promptset import PromptSet

    _shipped("elaborated")
    shipped = mz.load_prompts("elaborated")
    ps = PromptSet.from_pretrained("elaborated")
    assert [p.text for p in shipped.prompts] == ps.texts and shipped.source_hash == ps.fingerprint
    assert mz.load_prompts(ps).content_hash == shipped.content_hash
    saved = ps.save_pretrained(tmp_path / "ps")
    assert mz.load_prompts(str(saved)).content_hash == shipped.content_hash
    plain = tmp_path / "p.json"
    plain.write_text(json.dumps(["Edema", "Cardiomegaly"]))
    col = mz.load_prompts(str(plain))
    assert col.class_names == ["Edema", "Cardiomegaly"] and col.diseases == []
    with pytest.raises(ValueError, match="'no-such-set' is neither a file, a folder nor a shipped prompt set"):
        mz.load_prompts("no-such-set")
    # the CLI's bad-prompt-set path: an error naming the input, before any compute
    with pytest.raises(ValueError, match="no-such-set"):
        mz.main(
            [
                "--pipeline",
                "phantom",
                "--prompts",
                "no-such-set",
                "--num_images",
                "5",
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
    assert not (tmp_path / "o").exists()
