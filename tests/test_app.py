"""The browser app (issue 22, item 4; issue 36, item 4): every endpoint through gradio_client
against a running app, plus a real headless Chromium (selenium + Debian's chromium-driver, which
`make venv` installs) that runs each tab once and takes a screenshot (slow; skipped where no
browser is installed)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from genssl_hf import app as genssl_app  # noqa: E402
from genssl_hf.data import sample_phantom  # noqa: E402
from genssl_hf.hub import publish as pub  # noqa: E402
from genssl_hf.processing import AdaINImageProcessor  # noqa: E402
from genssl_hf.training.classifier import build_classifier  # noqa: E402

LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _dicom(path: Path, gray: np.ndarray) -> Path:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.Modality = "DX"
    ds.set_pixel_data((gray.astype(np.uint16) * 16), photometric_interpretation="MONOCHROME2", bits_stored=12)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with the layout the pipeline writes: a classifier, its published form, a
    generated dataset, results (table, ROC, comparison plot), an MAE reconstruction, a summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genssl_hf.generation import materialize

    root = tmp_path_factory.mktemp("run")
    best = root / "finetune_genssl" / "run" / "best"
    model = build_classifier("tiny", LABELS, multi_label=True, pooling="mean", image_size=32)
    model.save_pretrained(best)
    AdaINImageProcessor(size={"height": 32, "width": 32}).save_pretrained(best)
    pub.publish("classifier", best, dry_run=root / "hub" / "dry_run" / "classifier", allow_unchecked=True)
    materialize.generate_dataset(
        root / "generated_dataset", "phantom", prompts="heuristic", num_images=10, height=32, width=32, progress=False
    )
    results = root / "evaluation" / "results"
    results.mkdir(parents=True)
    (results / "results.md").write_text(
        "# GEN-SSL pipeline results\n\n| Variant | Test mAUC (95% CI) |\n|---|---|\n| GEN-SSL | 64.8 (62.0-67.5) |\n"
    )
    for name in ("roc_GEN-SSL.png", "reliability_GEN-SSL.png", "mauc_comparison.png"):
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.plot([0, 0.2, 1], [0, 0.7, 1])
        fig.savefig(results / name)
        plt.close(fig)
    recon = root / "mae_genssl" / "model"
    recon.mkdir(parents=True)
    _png(recon / "reconstruction.png", sample_phantom(seed=0, size=64).image)
    (results / "attention" / "GEN-SSL").mkdir(parents=True)  # the layout evaluation/report.py writes
    _png(results / "attention" / "GEN-SSL" / "attention_000.png", sample_phantom(seed=1, size=64).image)
    (root / "summary.json").write_text(json.dumps({"stages": {"evaluation": "done"}}))
    return root


@pytest.fixture(scope="module")
def client(run_folder, tmp_path_factory):
    from gradio_client import Client

    app = genssl_app.build_app(run_folder, cache_dir=tmp_path_factory.mktemp("cache"))
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_artifacts_of_the_run_are_found(run_folder):
    found = genssl_app.find_artifacts(run_folder)
    # every packaged generator is offered, the phantom one first (the default, matching the default prompts)
    assert list(found["generators"])[:2] == ["shipped: phantom-ldm-64", "shipped: nih-ldm-64"]
    # shipped artifacts are offered by name, never by this machine's path
    assert found["generators"]["shipped: phantom-ldm-64"] == "genssl_hf/phantom-ldm-64"
    assert set(found["classifiers"]) == {"run: finetune_genssl/run/best", "run: hub/dry_run/classifier"}
    assert set(found["datasets"]) == {"run: generated_dataset"}


def test_generate_endpoint_returns_seeded_images_and_settings(client):
    c, _ = client
    folder = genssl_app.find_artifacts(None)["generators"]["shipped: phantom-ldm-64"]
    gallery, settings = c.predict(folder, "Big cardiomegaly.", 2, 7, 3, 4.0, api_name="/generate")
    assert [g["caption"] for g in gallery] == ["seed 7", "seed 8"]
    images = [np.asarray(Image.open(_image_path(g)).convert("L")) for g in gallery]
    assert images[0].shape == (64, 64) and images[0].std() > 5 and not np.array_equal(images[0], images[1])
    assert settings["seeds"] == [7, 8] and settings["num_inference_steps"] == 3 and settings["guidance_scale"] == 4.0
    # the same seed gives the same image (what "seeds shown" is for)
    again = genssl_app.generate(folder, "Big cardiomegaly.", 1, 8, 3, 4.0)[0][0][0]
    np.testing.assert_array_equal(np.asarray(again.convert("L")), images[1])


def test_generate_endpoint_names_a_bad_folder(client, tmp_path):
    from gradio_client.exceptions import AppError

    c, _ = client
    with pytest.raises(AppError, match="has no model_index.json"):
        c.predict(str(tmp_path), "Big cardiomegaly.", 1, 0, 2, 4.0, api_name="/generate")


def test_browse_endpoint_filters_by_prompt_and_class_and_shows_the_card(client, run_folder):
    c, _ = client
    folder = str(run_folder / "generated_dataset")
    gallery, card, selection, used = c.predict(folder, "all", 50, api_name="/browse")
    assert len(gallery) == 10 and used == folder and "Synthetic" in card
    # the card as Markdown: its YAML header summed up, not shown raw
    assert "```yaml" not in card and "configs:" not in card and "**license**" in card
    # the filter box comes back with the dataset's classes and prompts as its choices
    filters = [choice[0] for choice in selection["choices"]]
    assert selection["value"] == "all" and "class: Edema" in filters
    prompt = next(f for f in filters if f.startswith("prompt: "))
    gallery, _, selection, _ = c.predict(folder, prompt, 50, api_name="/browse")
    assert gallery and all(g["caption"].startswith(prompt[len("prompt: ") :]) for g in gallery)
    assert selection["value"] == prompt
    klass = next(f for f in filters if f.startswith("class: "))
    assert 0 < len(c.predict(folder, klass, 50, api_name="/browse")[0]) < 10


@pytest.mark.parametrize("which", ["run: finetune_genssl/run/best", "run: hub/dry_run/classifier"])
@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom"])
def test_classify_endpoint_gives_probabilities_per_finding_and_an_overlay(client, run_folder, tmp_path, which, kind):
    from gradio_client import handle_file

    c, _ = client
    gray = sample_phantom(seed=2, size=48, findings={"Cardiomegaly": {"size": "big"}}).image
    path = {
        "png": lambda: _png(tmp_path / "x.png", gray),
        "jpeg": lambda: _png(tmp_path / "x.jpg", gray),
        "dicom": lambda: _dicom(tmp_path / "x.dcm", gray),
    }[kind]()
    folder = genssl_app.find_artifacts(run_folder)["classifiers"][which]
    label, overlay, details = c.predict(handle_file(str(path)), folder, api_name="/classify")
    probs = {d["label"]: d["confidence"] for d in label["confidences"]}
    assert set(probs) == set(LABELS) and all(0.0 < p < 1.0 for p in probs.values())
    direct, _, _ = genssl_app.classify(str(path), folder)
    np.testing.assert_allclose([probs[n] for n in LABELS], [direct[n] for n in LABELS], atol=1e-5)
    shown = np.asarray(Image.open(_image_path(overlay)))
    assert shown.shape == (genssl_app.OVERLAY_SIZE, genssl_app.OVERLAY_SIZE, 3) and shown.std() > 5
    assert details["AdaIN"] is True and details["processor"] == "AdaINImageProcessor"


def test_native_and_published_classifier_agree(run_folder, tmp_path):
    gray = sample_phantom(seed=4, size=32).image
    path = _png(tmp_path / "x.png", gray)
    found = genssl_app.find_artifacts(run_folder)["classifiers"]
    a = genssl_app.classify(str(path), found["run: finetune_genssl/run/best"])[0]
    b = genssl_app.classify(str(path), found["run: hub/dry_run/classifier"])[0]
    np.testing.assert_allclose([a[n] for n in LABELS], [b[n] for n in LABELS], atol=1e-4)


def test_results_endpoint_shows_the_table_curves_and_reconstructions(client, run_folder):
    c, _ = client
    table, plots, figures, summary = c.predict(str(run_folder), api_name="/results")
    assert "64.8" in table
    assert sorted(p["caption"] for p in plots) == ["mauc comparison", "reliability GEN-SSL", "roc GEN-SSL"]
    assert [f["caption"] for f in figures] == ["mae_genssl: reconstruction", "attention: GEN-SSL/attention_000"]
    assert summary == {"stages": {"evaluation": "done"}}


def test_results_endpoint_names_an_unfinished_run(client, tmp_path):
    from gradio_client.exceptions import AppError

    c, _ = client
    with pytest.raises(AppError, match="results.md"):
        c.predict(str(tmp_path), api_name="/results")


def _image_path(item) -> str:
    """A gallery item's / image output's file path (gradio_client gives a path or a file dict)."""
    value = item["image"] if isinstance(item, dict) and "image" in item else item
    return value["path"] if isinstance(value, dict) else value


def test_browse_accepts_the_runs_generated_dataset_folder(tmp_path, run_folder):
    """The pipeline writes the dataset one level down (outputs/<run>/generated_dataset/dataset)."""
    outer = tmp_path / "generated_dataset"
    shutil.copytree(run_folder / "generated_dataset", outer / "dataset")
    gallery, card, filters = genssl_app.browse_dataset(str(outer), "all", 5)
    assert len(gallery) == 5 and "class: Edema" in filters and "Synthetic" in card


def test_api_outputs_are_named_and_choices_hold_no_paths(client):
    c, _ = client
    api = c.view_api(return_format="dict", print_info=False)
    text = json.dumps(api)
    assert "value_" not in text, "an API output without a name"
    returns = {name: [r["label"] for r in e["returns"]] for name, e in api["named_endpoints"].items()}
    assert returns["/classify"] == ["probability per finding", "last-layer CLS attention", "classification details"]
    assert returns["/results"][0] == "results table"
    assert str(Path(genssl_app.__file__).parent) not in text  # shipped generators by name


def test_empty_choice_lists_say_what_to_do(tmp_path):
    app = genssl_app.build_app(tmp_path / "unfinished", cache_dir=tmp_path / "cache")
    boxes = {b.label: b for b in app.blocks.values() if isinstance(b, gr.Dropdown)}
    assert boxes["classifier folder"].choices == [] and "type a folder path" in boxes["classifier folder"].info
    with pytest.raises(ValueError, match="no classifier folder was chosen"):
        genssl_app.classify(str(_png(tmp_path / "x.png", sample_phantom(seed=0, size=32).image)), None)


def test_a_bad_upload_is_a_message_not_a_traceback(client, run_folder, tmp_path, capfd):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    c, _ = client
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    folder = genssl_app.find_artifacts(run_folder)["classifiers"]["run: finetune_genssl/run/best"]
    with pytest.raises(AppError, match="not a readable X-ray"):
        c.predict(handle_file(str(bad)), folder, api_name="/classify")
    assert "Traceback" not in capfd.readouterr().err


def _chromedriver() -> str | None:
    return shutil.which("chromedriver")


@pytest.mark.slow
@pytest.mark.skipif(
    _chromedriver() is None or importlib.util.find_spec("selenium") is None,
    reason="no headless Chromium + chromedriver (make venv installs Debian's chromium-driver) or no selenium",
)
def test_headless_chromium_runs_each_tab(client, run_folder, tmp_path):
    """A real browser: each tab's button once, each tab's result on screen, one screenshot per tab."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, url = client
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=_chromedriver())
    driver = webdriver.Chrome(options=options, service=service)
    shots = Path(os.environ.get("GENSSL_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    xray = _png(tmp_path / "xray.png", sample_phantom(seed=2, size=48).image)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 180)

        def click(element) -> None:  # a script click: gradio's overlays never intercept it
            driver.execute_script("arguments[0].click()", element)

        def shown(elements):
            return [e for e in elements if e.is_displayed()]

        steps = [  # tab, its button, what its result puts on the page
            ("Generate", "Generate", ".//img[@alt='seed 0']"),
            ("Browse dataset", "Show", ".//*[contains(text(), 'Synthetic chest X-rays')]"),
            ("Classify", "Classify", ".//*[contains(text(), 'Cardiomegaly')]"),
            ("Run results", "Show", ".//*[contains(text(), '64.8')]"),
        ]
        for name, button, result in steps:
            wait.until(lambda d, n=name: shown(d.find_elements(By.XPATH, f"//button[@role='tab'][contains(., '{n}')]")))
            click(shown(driver.find_elements(By.XPATH, f"//button[@role='tab'][contains(., '{name}')]"))[0])
            time.sleep(1)
            panel = shown(driver.find_elements(By.CSS_SELECTOR, "[role='tabpanel']"))[0]
            if name == "Classify":
                panel.find_element(By.CSS_SELECTOR, "input[type='file']").send_keys(str(xray))
                time.sleep(3)  # the upload lands before the click
            click(shown(panel.find_elements(By.XPATH, f".//button[normalize-space()='{button}']"))[-1])
            wait.until(lambda d, p=panel, r=result: shown(p.find_elements(By.XPATH, r)))
            time.sleep(2)
            driver.save_screenshot(str(shots / f"app_{name.split()[0].lower()}.png"))
            toasts = shown(driver.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']"))
            assert not toasts, f"{name}: {[t.text for t in toasts]}"
    finally:
        driver.quit()
    for name in ("generate", "browse", "classify", "run"):
        img = np.asarray(Image.open(shots / f"app_{name}.png").convert("L"), dtype=np.float32)
        assert img.shape[1] == 1280
        assert img.std() > 10 and len(np.unique(img.astype(np.uint8))) > 20  # a rendered page, not a blank one
