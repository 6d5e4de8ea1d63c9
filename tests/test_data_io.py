"""Image I/O: every supported file kind becomes float32 (H, W) in [0, 1], bright = dense."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from genssl_hf.data.io import (
    CXRReadError,
    SkippedFile,
    check_image_file,
    cxr_image_value,
    encode_png,
    iter_cxr,
    needs_conversion,
    read_cxr,
    to_pil,
)

H, W = 12, 16


def _ramp8() -> np.ndarray:
    """A uint8 ramp with every value distinct enough to test exact scaling."""
    return (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)


def _write_dicom(
    path,
    stored: np.ndarray,
    *,
    photometric="MONOCHROME2",
    bits_stored=12,
    slope=None,
    intercept=None,
    center=None,
    width=None,
    voi_lut=None,
    frames=1,
):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.Modality = "DX"
    ds.set_pixel_data(stored, photometric_interpretation=photometric, bits_stored=bits_stored)
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if center is not None:
        ds.WindowCenter = center
        ds.WindowWidth = width
    if voi_lut is not None:
        item = pydicom.Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.LUTData = np.asarray(voi_lut, dtype="<u2").tobytes()
        ds.VOILUTSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------- PIL formats


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_8bit_gray_exact(tmp_path, fmt):
    a = _ramp8()
    p = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(a).save(p, format=fmt)
    out = read_cxr(p)
    assert out.dtype == np.float32 and out.shape == (H, W)
    np.testing.assert_allclose(out, a / 255.0, atol=1e-7)


def test_16bit_png_full_range_and_minmax(tmp_path):
    a = (np.arange(H * W).reshape(H, W) * 300).astype(np.uint16)  # up to 57,300
    p = tmp_path / "x16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode == "I;16"
    np.testing.assert_allclose(read_cxr(p), a / 65535.0, atol=1e-7)
    mm = read_cxr(p, normalize="minmax")
    assert mm.min() == 0.0 and mm.max() == pytest.approx(1.0)
    assert needs_conversion(p)
    # PIL's own I;16 -> L conversion (what datasets.Image(mode="L") does) clips: the reason
    # 16-bit sources are converted before storage.
    clipped = np.asarray(Image.open(p).convert("L"))
    assert (clipped == 255).mean() > 0.9


def test_16bit_window_override(tmp_path):
    a = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16)
    p = tmp_path / "w.png"
    Image.fromarray(a).save(p)
    out = read_cxr(p, window=(2000.5, 2001))  # LINEAR: c-0.5=2000, w-1=2000 -> [1000, 3000] maps to [0, 1]
    np.testing.assert_allclose(out, [[0, 0, 0.5, 1, 1]], atol=1e-6)


def test_rgb_rgba_luma(tmp_path):
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(p)
    expect = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    np.testing.assert_allclose(read_cxr(p), expect, atol=1e-6)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 7, np.uint8)], axis=-1)
    p2 = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(p2)
    np.testing.assert_allclose(read_cxr(p2), expect, atol=1e-6)  # alpha ignored
    # equal channels (how Kermany stores grayscale as RGB) give the gray value back exactly
    eq = np.repeat(_ramp8()[..., None], 3, axis=-1)
    p3 = tmp_path / "eq.png"
    Image.fromarray(eq).save(p3)
    np.testing.assert_allclose(read_cxr(p3), _ramp8() / 255.0, atol=1e-6)


def test_mode_i_and_f(tmp_path):
    a = (np.arange(H * W).reshape(H, W) * 100).astype(np.int32)
    im = Image.fromarray(a)
    assert im.mode == "I"
    p = tmp_path / "i.tif"
    im.save(p)
    np.testing.assert_allclose(read_cxr(p), a / 65535.0, atol=1e-7)
    neg = Image.fromarray(a - 5000)  # outside [0, 65535]: own min..max
    p2 = tmp_path / "ineg.tif"
    neg.save(p2)
    out = read_cxr(p2)
    assert out.min() == 0 and out.max() == pytest.approx(1)
    f = np.linspace(0.1, 0.9, H * W, dtype=np.float32).reshape(H, W)
    p3 = tmp_path / "f.tif"
    Image.fromarray(f).save(p3)
    np.testing.assert_allclose(read_cxr(p3), f, atol=1e-7)
    p4 = tmp_path / "f2.tif"
    Image.fromarray(f * 1000 - 50).save(p4)
    np.testing.assert_allclose(read_cxr(p4), (f - f.min()) / (f.max() - f.min()), atol=1e-5)


def test_jpeg_and_truncated_jpeg(tmp_path):
    a = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    p = tmp_path / "x.jpg"
    Image.fromarray(a).save(p, quality=95)
    out = read_cxr(p)
    assert out.shape == (H, W) and np.abs(out - a / 255.0).max() < 0.05
    data = p.read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CXRReadError, match="truncated.jpg") as exc:
        read_cxr(bad)
    assert exc.value.path == str(bad)
    with pytest.raises(CXRReadError, match="truncated"):
        check_image_file(bad)


def test_truncated_detected_even_with_lenient_pil(tmp_path, monkeypatch):
    """Another library switching PIL to lenient mode must not make truncation silent."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    p = tmp_path / "x.png"
    Image.fromarray(_ramp8()).save(p)
    bad = tmp_path / "cut.png"
    bad.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(CXRReadError, match="cut.png"):
        read_cxr(bad)


def test_corrupt_missing_empty_raise_naming_file(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for p in (garbage, empty, tmp_path / "missing.png"):
        with pytest.raises(CXRReadError, match=p.name):
            read_cxr(p)


def test_skip_policy_records_every_skip(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_ramp8()).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    skipped: list[SkippedFile] = []
    assert read_cxr(bad, on_error="skip", skipped=skipped) is None
    out = list(iter_cxr([good, bad, tmp_path / "gone.png"], on_error="skip", skipped=skipped))
    assert [p for p, _ in out] == [good]
    assert [s.path for s in skipped] == [str(bad), str(bad), str(tmp_path / "gone.png")]
    assert all(s.reason for s in skipped)
    with pytest.raises(ValueError, match="on_error"):
        read_cxr(good, on_error="ignore")


# ---------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_no_voi_minmax(tmp_path):
    stored = (np.arange(H * W).reshape(H, W) * 10 + 100).astype(np.uint16)
    p = _write_dicom(tmp_path / "m2.dcm", stored)
    out = read_cxr(p)
    np.testing.assert_allclose(out, (stored - 100) / (stored.max() - 100), atol=1e-6)
    assert needs_conversion(p)


def test_dicom_monochrome1_inverted(tmp_path):
    stored = (np.arange(H * W).reshape(H, W) * 10).astype(np.uint16)
    m2 = read_cxr(_write_dicom(tmp_path / "a.dcm", stored, photometric="MONOCHROME2"))
    m1 = read_cxr(_write_dicom(tmp_path / "b.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m1[0, 0] == pytest.approx(1.0)  # lowest stored value = brightest in MONOCHROME1


def test_dicom_rescale_and_window(tmp_path):
    # stored 0..4095, rescale to modality values -1024..3071; window 0 +- 1000 (LINEAR)
    stored = np.array([[0, 1024, 2048, 3072, 4095]], dtype=np.uint16)
    p = _write_dicom(tmp_path / "w.dcm", stored, slope=1, intercept=-1024, center=500.5, width=1001)
    out = read_cxr(p)
    # modality values: -1024, 0, 1024, 2048, 3071; window maps [0, 1000] -> [0, 1]
    np.testing.assert_allclose(out, [[0, 0, 1, 1, 1]], atol=1e-6)
    p2 = _write_dicom(tmp_path / "w2.dcm", stored, slope=2, intercept=-1000, center=1000.5, width=2001)
    # modality values -1000, 1048, 3096, 5144, 7190; window [0, 2000]
    np.testing.assert_allclose(read_cxr(p2), [[0, 1048 / 2000, 1, 1, 1]], atol=1e-4)
    # use_voi=False: own min..max of modality values
    np.testing.assert_allclose(read_cxr(p2, use_voi=False), (stored * 2.0) / (4095 * 2.0), atol=1e-6)
    # explicit override window
    np.testing.assert_allclose(read_cxr(p2, window=(3096.5, 4097)), [[0, 0, 0.5, 1, 1]], atol=1e-4)


def test_dicom_monochrome1_with_window(tmp_path):
    stored = np.array([[0, 500, 1000]], dtype=np.uint16)
    p = _write_dicom(tmp_path / "w1.dcm", stored, photometric="MONOCHROME1", center=500.5, width=1001)
    np.testing.assert_allclose(read_cxr(p), [[1, 0.5, 0]], atol=1e-6)


def test_dicom_voi_lut_sequence(tmp_path):
    stored = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    lut = [100, 200, 300, 500]
    p = _write_dicom(tmp_path / "lut.dcm", stored, bits_stored=2, voi_lut=lut)
    np.testing.assert_allclose(read_cxr(p), [[0, 0.25, 0.5, 1.0]], atol=1e-6)


def test_dicom_broken(tmp_path):
    stored = np.zeros((H, W), dtype=np.uint16)
    p = _write_dicom(tmp_path / "ok.dcm", stored)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(p.read_bytes()[:-100])  # truncated pixel data
    with pytest.raises(CXRReadError, match="cut.dcm"):
        read_cxr(cut)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 50)
    with pytest.raises(CXRReadError, match="junk.dcm"):
        read_cxr(junk)
    multi = _write_dicom(tmp_path / "multi.dcm", np.zeros((2, H, W), np.uint16), frames=2)
    with pytest.raises(CXRReadError, match="multi-frame"):
        read_cxr(multi)


# ---------------------------------------------------------------------- writing


def test_to_pil_and_png_roundtrip(tmp_path):
    a = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    im8 = to_pil(a)
    assert im8.mode == "L"
    np.testing.assert_array_equal(np.asarray(im8), np.rint(a * 255).astype(np.uint8))
    im16 = to_pil(a, bits=16)
    assert im16.mode == "I;16"
    p = tmp_path / "r16.png"
    p.write_bytes(encode_png(a, bits=16))
    np.testing.assert_allclose(read_cxr(p), a, atol=1 / 65535)
    back = Image.open(io.BytesIO(encode_png(a)))
    assert back.mode == "L" and back.size == (W, H)
    with pytest.raises(ValueError, match="2-D"):
        to_pil(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        to_pil(np.full((2, 2), np.nan, np.float32))


def test_cxr_image_value_path_ref_vs_converted(tmp_path):
    import datasets

    p8 = tmp_path / "a.png"
    Image.fromarray(_ramp8()).save(p8)
    p16 = tmp_path / "b.png"
    a16 = (np.arange(H * W).reshape(H, W) * 300).astype(np.uint16)
    Image.fromarray(a16).save(p16)
    dcm = _write_dicom(tmp_path / "c.dcm", a16 // 16, photometric="MONOCHROME1")
    v8, v16, vd = (cxr_image_value(p) for p in (p8, p16, dcm))
    assert v8 == {"path": str(p8), "bytes": None}
    assert v16["path"] is None and v16["bytes"][:4] == b"\x89PNG"
    feats = datasets.Features({"image": datasets.Image(mode="L")})
    ds = datasets.Dataset.from_dict({"image": [v8, v16, vd]}, features=feats)
    got = [np.asarray(ds[i]["image"]) for i in range(3)]
    np.testing.assert_array_equal(got[0], _ramp8())
    np.testing.assert_array_equal(got[1], np.rint(a16 / 65535 * 255).astype(np.uint8))
    assert got[2][0, 0] == 255  # MONOCHROME1 minimum -> white
    skipped: list = []
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"junk")
    assert cxr_image_value(bad, on_error="skip", skipped=skipped, where="x.csv line 3") is None
    assert skipped[0].where == "x.csv line 3"
    with pytest.raises(CXRReadError, match="x.csv line 3"):
        cxr_image_value(bad, where="x.csv line 3")
