"""The leak guard sees through disguises (issue 35): a mirrored or rotated real image, a small crop,
an intensity change, a gzipped / zipped report sentence or image, and a real PNG or a gzipped report
base64-embedded in JSON are each found; other phantoms and ordinary JSON (hashes) still pass."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from genssl_hf.hub.leak import RealDataIndex, scan_files

REPORT = "There is a moderate left pleural effusion with adjacent compressive atelectasis of the lower lobe."


@pytest.fixture(scope="module")
def phantoms():
    from genssl_hf.data.phantom import phantom_dataset

    ds = phantom_dataset(24, size=128, seed=7)
    return [np.asarray(ds[i]["image"].convert("L")) for i in range(24)]


@pytest.fixture(scope="module")
def index(phantoms):
    idx = RealDataIndex()
    for i, g in enumerate(phantoms[:12]):
        idx.add_image(g, f"real{i}.png")
    idx.add_report(REPORT)
    return idx


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _scan(tmp_path, index, name: str, data: bytes):
    (tmp_path / name).write_bytes(data)
    return scan_files(tmp_path, [name], index)


@pytest.mark.parametrize(
    "disguise, transform",
    [
        ("mirrored left-right", lambda g: g[:, ::-1]),
        ("rotated 90", lambda g: np.rot90(g, 1)),
        ("rotated 180", lambda g: g[::-1, ::-1]),
        ("cropped", lambda g: g[6:-6, 6:-6]),  # a 90 % centre crop
        ("cropped", lambda g: g[0:122, 6:128]),  # a 95 % corner crop
        ("", lambda g: np.round(255 * (g / 255.0) ** 0.7)),  # gamma 0.7
        ("", lambda g: np.clip(g * 1.3 - 20, 0, 255)),  # contrast and brightness
    ],
)
def test_transformed_real_images_are_found(tmp_path, index, phantoms, disguise, transform):
    findings = _scan(tmp_path, index, "sample.png", _png(transform(phantoms[3])))
    assert len(findings) == 1 and findings[0].kind.startswith("real-pixels"), findings
    assert "real3.png" in findings[0].detail and disguise in findings[0].detail


def test_gzipped_report_sentence_is_found(tmp_path, index):
    findings = _scan(tmp_path, index, "notes.txt.gz", gzip.compress(f"summary: {REPORT}\n".encode()))
    assert [f.kind for f in findings] == ["report-text"] and findings[0].location == "notes.txt"


def test_zip_archive_with_a_real_image_and_a_report_is_found(tmp_path, index, phantoms):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("figures/a.png", _png(phantoms[5]))
        zf.writestr("inner.gz", gzip.compress(REPORT.encode()))  # nested: gzip inside zip
        zf.writestr("ok.png", _png(phantoms[20]))
    findings = _scan(tmp_path, index, "bundle.zip", buf.getvalue())
    got = {(f.location, f.kind) for f in findings}
    assert got == {("figures/a.png", "real-pixels-exact"), ("inner.gz > inner", "report-text")}, findings


def test_base64_png_and_gzip_in_json_are_found(tmp_path, index, phantoms):
    doc = {
        "thumbnail": base64.b64encode(_png(phantoms[7])).decode(),  # bare base64, no data URI
        "blob": "data:application/gzip;base64," + base64.b64encode(gzip.compress(REPORT.encode())).decode(),
    }
    findings = _scan(tmp_path, index, "config.json", json.dumps(doc).encode())
    assert sorted(f.kind for f in findings) == ["real-pixels-exact", "report-text"], findings
    assert all("base64 at char" in f.location for f in findings)


def test_an_unreadable_archive_is_refused_not_passed(tmp_path, index):
    broken = b"PK\x03\x04" + bytes(range(256)) * 4  # a zip header, then garbage
    findings = _scan(tmp_path, index, "data.bin", broken)
    assert [f.kind for f in findings] == ["unreadable-archive"]


def test_other_phantoms_and_ordinary_json_pass(tmp_path, index, phantoms):
    for i in range(12, 24):
        assert _scan(tmp_path, index, f"gen{i}.png", _png(phantoms[i])) == []
        assert _scan(tmp_path, index, f"gen{i}_flipped.png", _png(phantoms[i][:, ::-1])) == []
    hashes = {f"shard-{i}": hashlib.sha256(str(i).encode()).hexdigest() for i in range(20)}
    hashes["b64_weights"] = base64.b64encode(np.arange(256, dtype=np.float32).tobytes()).decode()
    assert _scan(tmp_path, index, "hashes.json", json.dumps(hashes).encode()) == []
    assert _scan(tmp_path, index, "ok.txt.gz", gzip.compress(b"no pneumothorax.")) == []
