"""Dataset adapters on small fixture files written in each official format."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import tarfile

import numpy as np
import pytest
from PIL import Image

from genssl_hf.data import (
    CHEXPERT5,
    COVIDX3,
    NIH14,
    CXRDataError,
    CXRReadError,
    load_chexpert,
    load_covidx,
    load_image_csv,
    load_image_folder,
    load_mimic_cxr,
    load_nih_cxr14,
    stratified_split,
)
from genssl_hf.data.adapters.shared import kermany_patient_id
from genssl_hf.data.reports import (
    iter_iu_reports,
    load_iu_reports,
    load_mimic_reports,
    parse_report_sections,
    report_findings_impression,
)


def _img(path, value=128, size=(10, 8), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path, format=fmt)
    return path


def _write_csv(path, header, rows, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(buf.getvalue())
    else:
        path.write_text(buf.getvalue())
    return path


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "hf-cache"


def _names(ds, col="labels"):
    feat = ds.features[col]
    feat = getattr(feat, "feature", feat)
    return [[feat.names[i] for i in row] for row in ds[col]]


# ------------------------------------------------------------------------------ CheXpert

CHEXPERT_HEADER = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def _chexpert_row(path, fl, appa, **labels):
    row = {h: "" for h in CHEXPERT_HEADER}
    row.update({"Path": path, "Sex": "Female", "Age": "68", "Frontal/Lateral": fl, "AP/PA": appa})
    row.update({k.replace("_", " "): v for k, v in labels.items()})
    return [row[h] for h in CHEXPERT_HEADER]


@pytest.fixture
def chexpert(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    p = "CheXpert-v1.0-small/train/"
    rows = [
        _chexpert_row(
            p + "patient00001/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            Atelectasis="-1.0",
            Cardiomegaly="1.0",
            Consolidation="-1.0",
            Pleural_Effusion="0.0",
        ),
        _chexpert_row(p + "patient00001/study1/view2_lateral.jpg", "Lateral", "", Edema="-1.0", Pleural_Effusion="1.0"),
        _chexpert_row(p + "patient00002/study1/view1_frontal.jpg", "Frontal", "PA", **{"No_Finding": "1.0"}),
    ]
    _write_csv(root / "train.csv", CHEXPERT_HEADER, rows)
    _write_csv(
        root / "valid.csv",
        CHEXPERT_HEADER,
        [
            _chexpert_row(
                "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg",
                "Frontal",
                "AP",
                Edema="1.0",
                Atelectasis="0.0",
            ),
        ],
    )
    for r in rows[:3]:
        _img(tmp_path / r[0], fmt="JPEG")
    _img(tmp_path / "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", fmt="JPEG")
    return root


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("u_ones", [["Atelectasis", "Cardiomegaly", "Consolidation"], ["Edema", "Pleural Effusion"], []]),
        ("u_zeros", [["Cardiomegaly"], ["Pleural Effusion"], []]),
        ("mixed", [["Atelectasis", "Cardiomegaly"], ["Edema", "Pleural Effusion"], []]),
    ],
)
def test_chexpert_uncertainty_policies(chexpert, cache, policy, expected):
    ds = load_chexpert(chexpert, "train", uncertainty=policy, cache_dir=cache)
    assert _names(ds) == expected
    assert ds.features["labels"].feature.names == list(CHEXPERT5)


def test_chexpert_metadata_frontal_only_and_valid(chexpert, cache):
    ds = load_chexpert(chexpert, cache_dir=cache)
    assert ds["patient_id"] == ["patient00001", "patient00001", "patient00002"]
    assert ds["study_id"] == ["patient00001/study1"] * 2 + ["patient00002/study1"]
    assert ds["view"] == ["AP", "LATERAL", "PA"]
    assert ds["source"] == ["chexpert"] * 3 and ds["age"] == [68] * 3
    img = ds[0]["image"]
    assert img.mode == "L" and img.size == (10, 8)
    front = load_chexpert(chexpert, frontal_only=True, cache_dir=cache)
    assert front["view"] == ["AP", "PA"]
    valid = load_chexpert(chexpert, "valid", cache_dir=cache)
    assert _names(valid) == [["Edema"]]
    with pytest.raises(ValueError, match="uncertainty"):
        load_chexpert(chexpert, uncertainty="u_ignore", cache_dir=cache)


def test_chexpert_missing_file_names_csv_row_and_file(chexpert, cache, tmp_path):
    (tmp_path / "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg").unlink()
    with pytest.raises(CXRDataError) as exc:
        load_chexpert(chexpert, cache_dir=cache)
    msg = str(exc.value)
    assert "train.csv line 4" in msg and "patient00002/study1/view1_frontal.jpg" in msg and "does not exist" in msg
    skipped = []
    ds = load_chexpert(chexpert, on_error="skip", skipped=skipped, cache_dir=cache)
    assert len(ds) == 2
    assert len(skipped) == 1 and skipped[0].path.endswith("patient00002/study1/view1_frontal.jpg")
    assert "line 4" in skipped[0].where


def test_chexpert_unknown_label_value(chexpert, cache):
    text = (chexpert / "train.csv").read_text().splitlines()
    row = next(csv.reader([text[2]]))
    row[CHEXPERT_HEADER.index("Edema")] = "2.0"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    text[2] = buf.getvalue()
    (chexpert / "train.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(CXRDataError, match=r"train.csv line 3, column 'Edema': unknown label value '2.0'"):
        load_chexpert(chexpert, cache_dir=cache)


def test_truncated_image_raises_or_is_skipped(chexpert, cache, tmp_path):
    f = tmp_path / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(CXRDataError, match="truncated JPEG"):
        load_chexpert(chexpert, cache_dir=cache)
    skipped = []
    ds = load_chexpert(chexpert, on_error="skip", skipped=skipped, cache_dir=cache)
    assert len(ds) == 2 and [s.path for s in skipped] == [str(f)]
    # verify="exists" defers the check to decoding time (documented trade-off)
    assert len(load_chexpert(chexpert, verify="exists", cache_dir=cache)) == 3


def test_cache_reuse_and_invalidation(chexpert, cache):
    a = load_chexpert(chexpert, cache_dir=cache)
    b = load_chexpert(chexpert, cache_dir=cache)
    assert a.cache_files == b.cache_files  # unchanged inputs -> cached Arrow reused
    lines = (chexpert / "train.csv").read_text().splitlines()
    (chexpert / "train.csv").write_text("\n".join(lines[:2]) + "\n")
    c = load_chexpert(chexpert, cache_dir=cache)
    assert len(c) == 1  # the CSV changed -> rebuilt


# ------------------------------------------------------------------------------ NIH


NIH_HEADER = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]


@pytest.fixture
def nih(tmp_path):
    root = tmp_path / "nih"
    rows = [
        ["00000001_000.png", "Cardiomegaly|Emphysema", "0", "1", "058Y", "M", "PA", "2682", "2749", "0.143", "0.143"],
        ["00000001_001.png", "No Finding", "1", "1", "058Y", "M", "PA", "2894", "2729", "0.143", "0.143"],
        ["00000002_000.png", "Hernia", "0", "2", "81", "F", "AP", "2500", "2048", "0.168", "0.168"],
        ["00000003_000.png", "Effusion|Infiltration", "0", "3", "74", "F", "PA", "2500", "2048", "0.168", "0.168"],
    ]
    _write_csv(root / "Data_Entry_2017_v2020.csv", NIH_HEADER, rows)
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    (root / "test_list.txt").write_text("00000003_000.png\n")
    for i, r in enumerate(rows):
        _img(root / f"images_00{1 + i // 2}" / "images" / r[0], value=10 * i)
    return root


def test_nih_official_splits_and_label_order(nih, cache):
    tv = load_nih_cxr14(nih, "train_val", cache_dir=cache)
    assert _names(tv) == [["Cardiomegaly", "Emphysema"], [], ["Hernia"]]
    assert tv["labels"][0] == [NIH14.index("Cardiomegaly"), NIH14.index("Emphysema")]
    assert tv["patient_id"] == ["1", "1", "2"] and tv["age"] == [58, 58, 81]
    assert tv["view"] == ["PA", "PA", "AP"] and tv["study_id"][1] == "00000001_001"
    assert int(np.asarray(tv[2]["image"])[0, 0]) == 20  # found in images_002/images/
    test = load_nih_cxr14(nih, "test", cache_dir=cache)
    assert _names(test) == [["Effusion", "Infiltration"]]
    assert len(load_nih_cxr14(nih, "all", cache_dir=cache)) == 4


def test_nih_errors(nih, cache):
    (nih / "test_list.txt").write_text("00000003_000.png\n00000009_000.png\n")
    with pytest.raises(CXRDataError, match=r"test_list.txt have no row .*00000009_000.png"):
        load_nih_cxr14(nih, "test", cache_dir=cache)
    text = (nih / "Data_Entry_2017_v2020.csv").read_text().replace("Hernia", "Covid")
    (nih / "Data_Entry_2017_v2020.csv").write_text(text)
    with pytest.raises(CXRDataError, match=r"line 4, column 'Finding Labels': unknown label value 'Covid'"):
        load_nih_cxr14(nih, "train_val", cache_dir=cache)


# ------------------------------------------------------------------------------ COVIDx


def test_covidx_split_file(tmp_path, cache):
    root = tmp_path / "covidx"
    lines = [
        "3 SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg COVID-19 cohen",
        "8 e63e7a7c.png normal rsna",
        "",
        "ABC-1 scan with space.png pneumonia actmed",
    ]
    (root / "train").mkdir(parents=True)
    (root / "train_COVIDx9A.txt").write_text("\n".join(lines) + "\n")
    _img(root / "train" / "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg", fmt="JPEG")
    _img(root / "train" / "e63e7a7c.png")
    _img(root / "train" / "scan with space.png")
    ds = load_covidx(root, "train_COVIDx9A.txt", cache_dir=cache)
    assert [COVIDX3[i] for i in ds["label"]] == ["COVID-19", "normal", "pneumonia"]
    assert ds.features["label"].names == list(COVIDX3)
    assert ds["data_source"] == ["cohen", "rsna", "actmed"] and ds["patient_id"] == ["3", "8", "ABC-1"]
    (root / "train_COVIDx9A.txt").write_text("9 x.png flu rsna\n")
    with pytest.raises(CXRDataError, match=r"train_COVIDx9A.txt line 1, column 'class': unknown label value 'flu'"):
        load_covidx(root, "train_COVIDx9A.txt", cache_dir=cache)
    (root / "odd.txt").write_text("9 x.png normal rsna\n")
    with pytest.raises(CXRDataError, match="image_dir"):
        load_covidx(root, "odd.txt", cache_dir=cache)


# ------------------------------------------------------------------------------ MIMIC


@pytest.fixture
def mimic(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    meta = [  # dicom_id, subject, study, view
        ("d1", "10000032", "50414267", "PA"),
        ("d2", "10000032", "50414267", "LATERAL"),
        ("d3", "10000764", "57375967", "AP"),
        ("d4", "11000011", "51234567", "PA"),  # test split
        ("d5", "12000000", "59999999", "PA"),  # study without a labeler row
    ]
    _write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"],
        [(d, s, st, "CHEST (PA AND LAT)", v, "3056", "2544") for d, s, st, v in meta],
        gz=True,
    )
    label_cols = [
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Enlarged Cardiomediastinum",
        "Fracture",
        "Lung Lesion",
        "Lung Opacity",
        "No Finding",
        "Pleural Effusion",
        "Pleural Other",
        "Pneumonia",
        "Pneumothorax",
        "Support Devices",
    ]

    def lab(**kw):
        return [kw.get(c.replace(" ", "_"), "") for c in label_cols]

    _write_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv",
        ["subject_id", "study_id", *label_cols],
        [
            ["10000032", "50414267", *lab(Atelectasis="-1.0", Consolidation="-1.0", Edema="1.0")],
            ["10000764", "57375967", *lab(Pleural_Effusion="1.0", Cardiomegaly="0.0")],
            ["11000011", "51234567", *lab(No_Finding="1.0")],
        ],
    )
    _write_csv(
        root / "mimic-cxr-2.0.0-split.csv",
        ["dicom_id", "study_id", "subject_id", "split"],
        [(d, st, s, "test" if d == "d4" else "train") for d, s, st, _ in meta],
    )
    for d, s, st, _ in meta:
        _img(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg", fmt="JPEG")
    return root


def test_mimic_views_split_uncertainty(mimic, cache, caplog):
    with caplog.at_level(logging.WARNING, logger="genssl_hf.data.adapters"):
        ds = load_mimic_cxr(mimic, "train", cache_dir=cache)
    assert ds["dicom_id"] == ["d1", "d3"]  # LATERAL filtered out, d4 is test, d5 unlabeled
    assert "no row in mimic-cxr-2.0.0-chexpert.csv" in caplog.text and "59999999" in caplog.text
    assert _names(ds) == [["Atelectasis", "Edema"], ["Pleural Effusion"]]  # mixed policy
    assert ds["patient_id"] == ["10000032", "10000764"] and ds["view"] == ["PA", "AP"]
    assert ds["path"][0] == "files/p10/p10000032/s50414267/d1.jpg"
    ones = load_mimic_cxr(mimic, "train", views=None, uncertainty="u_ones", cache_dir=cache)
    assert ones["dicom_id"] == ["d1", "d2", "d3"]
    assert _names(ones)[0] == ["Atelectasis", "Consolidation", "Edema"]
    assert load_mimic_cxr(mimic, "test", cache_dir=cache)["dicom_id"] == ["d4"]


def test_mimic_reports(tmp_path, cache):
    root = tmp_path / "mimic-cxr-reports"
    study = root / "files/p10/p10000032/s50414267.txt"
    study.parent.mkdir(parents=True)
    study.write_text(
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___F with new onset ascites  // eval for infection\n \n"
        " COMPARISON:  None.\n \n"
        " FINDINGS: \n \n There is no focal consolidation, pleural effusion or pneumothorax.\n"
        " Bilateral nodular opacities.\n \n"
        " IMPRESSION: \n \n No acute cardiopulmonary process.\n"
    )
    (root / "files/p10/p10000764").mkdir(parents=True)
    (root / "files/p10/p10000764/s57375967.txt").write_text(
        "FINAL REPORT\nFINDINGS AND IMPRESSION:  Small left pleural effusion.\n"
    )
    sections = parse_report_sections(study.read_text())
    assert sections["EXAMINATION"] == "CHEST (PA AND LAT)" and sections["COMPARISON"] == "None."
    ds = load_mimic_reports(root, cache_dir=cache)
    assert ds["study_id"] == ["50414267", "57375967"] and ds["patient_id"] == ["10000032", "10000764"]
    assert (
        ds[0]["findings"]
        == "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities."
    )
    assert ds[0]["impression"] == "No acute cardiopulmonary process."
    assert ds[0]["text"] == ds[0]["findings"] + "\n" + ds[0]["impression"]
    assert ds[1]["findings"] == "Small left pleural effusion." and ds[1]["impression"] == ""
    assert report_findings_impression("CONCLUSION: Normal.") == ("", "Normal.")


# ------------------------------------------------------------------------------ generic


def _write_dicom(path, stored, photometric="MONOCHROME2"):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.set_pixel_data(stored, photometric_interpretation=photometric, bits_stored=12)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_image_folder_with_16bit_and_dicom(tmp_path, cache):
    root = tmp_path / "folder"
    _img(root / "NORMAL" / "a.png", value=100)
    _img(root / "PNEUMONIA" / "b.jpg", value=200, fmt="JPEG")
    (root / "PNEUMONIA" / "sub").mkdir()
    Image.fromarray(np.full((8, 10), 65535, np.uint16)).save(root / "PNEUMONIA" / "sub" / "c16.png")
    ramp = np.tile(np.arange(10, dtype=np.uint16) * 400, (8, 1))
    _write_dicom(root / "PNEUMONIA" / "d.dcm", ramp, photometric="MONOCHROME1")
    (root / "PNEUMONIA" / ".DS_Store").write_bytes(b"x")
    (root / "PNEUMONIA" / "notes.txt").write_text("ignored")
    ds = load_image_folder(root, cache_dir=cache)
    assert ds.features["label"].names == ["NORMAL", "PNEUMONIA"]
    assert ds["path"] == ["NORMAL/a.png", "PNEUMONIA/b.jpg", "PNEUMONIA/d.dcm", "PNEUMONIA/sub/c16.png"]
    assert ds["label"] == [0, 1, 1, 1]
    dcm = np.asarray(ds[2]["image"])
    assert dcm[0, 0] == 255 and dcm[0, -1] == 0  # MONOCHROME1 inverted, windowed to 8 bits
    assert np.asarray(ds[3]["image"]).min() == 255  # 16-bit white stays white (not clipped garbage)
    with pytest.raises(CXRDataError, match="not among label_names"):
        load_image_folder(root, label_names=["NORMAL"], cache_dir=cache)


def test_conversion_failure_skip_is_recorded_also_from_cache(tmp_path, cache):
    root = tmp_path / "folder"
    _img(root / "A" / "ok.png")
    good = _write_dicom(tmp_path / "good.dcm", np.zeros((8, 10), np.uint16))
    (root / "A" / "bad.dcm").write_bytes(good.read_bytes()[:-30])  # header fine, pixels truncated
    with pytest.raises(CXRReadError, match="bad.dcm"):
        load_image_folder(root, cache_dir=cache)
    for _ in range(2):  # second call comes from the cache and must report the skip again
        skipped = []
        ds = load_image_folder(root, on_error="skip", skipped=skipped, cache_dir=cache)
        assert ds["path"] == ["A/ok.png"]
        assert [s.path for s in skipped] == [str(root / "A" / "bad.dcm")]


def test_image_csv_modes(tmp_path, cache):
    for name in ("x1.png", "x2.png", "x3.png"):
        _img(tmp_path / "imgs" / name)
    csv_path = _write_csv(
        tmp_path / "meta" / "labels.csv",
        ["file", "finding", "findings", "effusion", "edema", "fold", "pid", "age"],
        [
            ["x1.png", "sick", "Edema|Effusion", "1", "0.0", "train", "p1", "40"],
            ["x2.png", "healthy", "No Finding", "0", "", "train", "p2", ""],
            ["x3.png", "sick", "Effusion", "true", "1", "test", "p3", "71"],
        ],
    )
    kw = dict(path_column="file", image_root=tmp_path / "imgs", cache_dir=cache)
    mc = load_image_csv(csv_path, label_column="finding", **kw)
    assert mc.features["label"].names == ["healthy", "sick"] and mc["label"] == [1, 0, 1]
    ml = load_image_csv(
        csv_path,
        label_column="findings",
        separator="|",
        label_names=["Effusion", "Edema"],
        patient_id_column="pid",
        extra_columns={"age": __import__("datasets").Value("int32")},
        **kw,
    )
    assert _names(ml) == [["Effusion", "Edema"], [], ["Effusion"]]
    assert ml["patient_id"] == ["p1", "p2", "p3"] and ml["age"] == [40, None, 71]
    cols = load_image_csv(csv_path, label_columns=["effusion", "edema"], split_column="fold", split="train", **kw)
    assert _names(cols) == [["effusion"], []]
    bad = _write_csv(tmp_path / "imgs" / "bad.csv", ["file", "effusion"], [["x1.png", "-1"]])
    with pytest.raises(CXRDataError, match=r"bad.csv line 2, column 'effusion': unknown label value '-1'"):
        load_image_csv(bad, path_column="file", label_columns=["effusion"], cache_dir=cache)
    with pytest.raises(CXRDataError, match=r"labels.csv line 3, column 'findings': unknown label value 'No Finding'"):
        load_image_csv(
            csv_path, label_column="findings", separator="|", label_names=["Effusion", "Edema"], none_values=(), **kw
        )
    with pytest.raises(CXRDataError, match=r"lacks column\(s\) \['nope'\]"):
        load_image_csv(csv_path, path_column="nope", label_column="finding", cache_dir=cache)
    missing = _write_csv(tmp_path / "imgs" / "missing.csv", ["file", "y"], [["x1.png", "a"], ["gone.png", "b"]])
    with pytest.raises(CXRDataError, match=r"missing.csv line 3: .*gone.png: file does not exist"):
        load_image_csv(missing, path_column="file", label_column="y", cache_dir=cache)


# ------------------------------------------------------------------------------ split


def test_stratified_split_seeded_and_grouped(tmp_path, cache):
    import datasets

    from genssl_hf.data.schema import cxr_features

    n = 200
    rng = np.random.default_rng(0)
    labels = (rng.random(n) < 0.25).astype(int)
    patients = [f"p{i // 2}" for i in range(n)]
    feats = cxr_features(["neg", "pos"], multi_label=False)
    ds = datasets.Dataset.from_dict(
        {
            "image": [None] * n,
            "label": labels.tolist(),
            "patient_id": patients,
            "study_id": [""] * n,
            "view": [""] * n,
            "source": ["t"] * n,
        },
        features=feats,
    )
    a = stratified_split(ds, 0.2, seed=1)
    b = stratified_split(ds, 0.2, seed=1)
    c = stratified_split(ds, 0.2, seed=2)
    assert len(a["validation"]) == 40 and len(a["train"]) == 160
    assert a["validation"]["patient_id"] == b["validation"]["patient_id"] != c["validation"]["patient_id"]
    assert abs(np.mean(a["validation"]["label"]) - labels.mean()) < 0.03
    g = stratified_split(ds, 0.2, seed=1, group_by="patient_id")
    assert not set(g["train"]["patient_id"]) & set(g["validation"]["patient_id"])
    assert len(g["train"]) + len(g["validation"]) == n and 30 <= len(g["validation"]) <= 50
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(ds, 1.5)


def test_kermany_patient_ids():
    assert kermany_patient_id("train/PNEUMONIA/person1000_bacteria_2931.jpeg") == "person1000"
    assert kermany_patient_id("train/PNEUMONIA/person447_virus_921_1.jpeg") == "person447"
    assert kermany_patient_id("train/NORMAL/IM-0429-0001-0002.jpeg") == "IM-0429"
    assert kermany_patient_id("train/NORMAL/NORMAL2-IM-0927-0001.jpeg") == "NORMAL2-IM-0927"


# ------------------------------------------------------------------------------ IU reports


def _iu_xml(uid, findings, impression, major=(), automatic=()):
    mesh = "".join(f"<major>{m}</major>" for m in major) + "".join(f"<automatic>{a}</automatic>" for a in automatic)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{uid}"/><MedlineCitation><Article>'
        f'<Abstract><AbstractText Label="COMPARISON">None.</AbstractText>'
        f'<AbstractText Label="INDICATION">Chest pain</AbstractText>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract>'
        f"</Article></MedlineCitation><MeSH>{mesh}</MeSH>"
        f'<parentImage id="{uid}_IM-1"/></eCitation>'
    ).encode()


def _tgz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_iu_reports_from_tgz(tmp_path, cache):
    tgz = _tgz(
        tmp_path / "NLMCXR_reports.tgz",
        [
            ("ecgen-radiology/1.xml", _iu_xml("CXR1", "No  pleural\n effusion.", "Normal chest.", major=["normal"])),
            ("ecgen-radiology/2.xml", _iu_xml("CXR2", "", "", major=["Cardiomegaly/mild"], automatic=["cardiomegaly"])),
        ],
    )
    reports = list(iter_iu_reports(tgz))
    assert [r["report_id"] for r in reports] == ["CXR1", "CXR2"]
    r = reports[0]
    assert r["findings"] == "No pleural effusion." and r["impression"] == "Normal chest."
    assert r["text"] == "No pleural effusion.\nNormal chest." and r["indication"] == "Chest pain"
    assert r["mesh_major"] == ["normal"] and r["image_ids"] == ["CXR1_IM-1"]
    assert reports[1]["mesh_automatic"] == ["cardiomegaly"] and reports[1]["text"] == ""
    ds = load_iu_reports(tgz, cache_dir=cache)
    assert len(ds) == 2 and ds["report_id"] == ["CXR1", "CXR2"]
    assert len(load_iu_reports(tgz, drop_empty=True, cache_dir=cache)) == 1
    broken = _tgz(tmp_path / "broken.tgz", [("ecgen-radiology/3.xml", b"<eCitation><uId id='x'>")])
    with pytest.raises(CXRDataError, match=r"broken.tgz:ecgen-radiology/3.xml: not well-formed XML"):
        list(iter_iu_reports(broken))
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(tgz.read_bytes()[:60])
    with pytest.raises(CXRDataError, match="cut.tgz"):
        list(iter_iu_reports(cut))


def test_derive_hash_distinguishes_lambdas(tmp_path, cache):
    _img(tmp_path / "a.png")
    csv_path = _write_csv(tmp_path / "l.csv", ["path", "y"], [["a.png", "k"]])
    one = load_image_csv(
        csv_path, path_column="path", label_column="y", derive=lambda r: {"view": "PA"}, cache_dir=cache
    )
    two = load_image_csv(
        csv_path, path_column="path", label_column="y", derive=lambda r: {"view": "AP"}, cache_dir=cache
    )
    assert one["view"] == ["PA"] and two["view"] == ["AP"]


def test_shared_layout_wrappers_on_fixtures(tmp_path, cache):
    from genssl_hf.data import load_kermany, load_nih_subset

    k = tmp_path / "kermany"
    _img(k / "train/NORMAL/IM-0115-0001.jpeg", fmt="JPEG")
    _img(k / "train/PNEUMONIA/person1_virus_6.jpeg", fmt="JPEG")
    _write_csv(
        k / "labels.csv",
        ["path", "split", "label", "subtype"],
        [
            ["train/NORMAL/IM-0115-0001.jpeg", "train", "NORMAL", "normal"],
            ["train/PNEUMONIA/person1_virus_6.jpeg", "train", "PNEUMONIA", "viral"],
        ],
    )
    ds = load_kermany(k, cache_dir=cache)
    assert ds["label"] == [0, 1] and ds["patient_id"] == ["IM-0115", "person1"] and ds["subtype"] == ["normal", "viral"]
    n = tmp_path / "nih"
    _img(n / "train/1_abnormal/00000001_000.png")
    _img(n / "test/0_normal/00000002_000.png")
    _write_csv(
        n / "labels.csv",
        ["path", "split", "binary", "finding_labels", "view", "patient_id", "age", "sex"],
        [
            ["train/1_abnormal/00000001_000.png", "train", "1_abnormal", "Mass|Nodule", "PA", "1", "58", "M"],
            ["test/0_normal/00000002_000.png", "test", "0_normal", "No Finding", "AP", "2", "81", "F"],
        ],
    )
    dd = load_nih_subset(n, split=None, cache_dir=cache)
    assert set(dd) == {"train", "test"}
    assert _names(dd["train"]) == [["Mass", "Nodule"]] and dd["test"]["labels"] == [[]]
    assert dd["train"]["study_id"] == ["00000001_000"] and dd["test"]["age"] == [81]


def test_embed_images_makes_dataset_self_contained(tmp_path, cache):
    from genssl_hf.data import embed_images

    _img(tmp_path / "imgs" / "a.png", value=77)
    csv_path = _write_csv(tmp_path / "imgs" / "l.csv", ["path", "y"], [["a.png", "k"]])
    ds = load_image_csv(csv_path, path_column="path", label_column="y", cache_dir=cache)
    assert ds.with_format("arrow")[0]["image"][0].as_py()["bytes"] is None  # lazy path reference
    emb = embed_images(ds)
    (tmp_path / "imgs" / "a.png").unlink()
    assert int(np.asarray(emb[0]["image"])[0, 0]) == 77 and emb.features == ds.features
