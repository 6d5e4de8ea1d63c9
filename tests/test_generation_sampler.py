"""The sampler choice through the dataset path (issue 37.1): ``sampler=`` / ``genssl generate --sampler``
/ the pipeline's ``generation.sampler`` reach the pipeline's scheduler (class and step count), bad
names and generators without denoising steps fail before anything is written, a folder started with
another sampler is not resumed, and configs without the key keep their stage fingerprints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import genssl_hf.generation.materialize as mz
from genssl_hf.generation.materialize import generators
from genssl_hf.generation.pretrained import PHANTOM_GENERATOR_DIR
from genssl_hf.generation.schedulers import GENERATION_PRESETS
from genssl_hf.utils import read_json

PROMPTS = [
    {"text": "Big cardiomegaly.", "disease": "Cardiomegaly"},
    {"text": "No finding.", "disease": "No Finding"},
]
# two images in one pipeline call: cond + uncond share one UNet batch, so UNet calls = denoising steps
SETTINGS = dict(prompts=PROMPTS, num_images=2, batch_size=2, guidance_scale=3.0, progress=False)
KNOWN = r"known: \['bundle', 'dpm\+\+2m-5', 'fast', 'unipc-3', 'unipc-5', 'unipc-5-unguided'\]"


@pytest.fixture
def loaded_pipelines(monkeypatch):
    """Every pipeline the writer loads, with the number of UNet forward calls it made."""
    seen: list[tuple[object, list[int]]] = []
    load = generators._load_pipeline

    def recording(path):
        pipe = load(path)
        calls: list[int] = []
        pipe.unet.register_forward_pre_hook(lambda mod, args: calls.append(1))
        seen.append((pipe, calls))
        return pipe

    monkeypatch.setattr(generators, "_load_pipeline", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield seen
    torch.set_num_threads(threads)


def test_the_sampler_reaches_the_scheduler_and_the_record(tmp_path, loaded_pipelines):
    out = tmp_path / "unipc5"
    mz.generate_dataset(out, str(PHANTOM_GENERATOR_DIR), **SETTINGS, sampler="unipc-5")
    ((pipe, calls),) = loaded_pipelines
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    assert pipe.scheduler.config["prediction_type"] == "v_prediction"  # the folder's noise schedule
    assert len(calls) == GENERATION_PRESETS["unipc-5"]["num_inference_steps"] == 5  # steps from the preset
    config = read_json(out / mz.CONFIG_NAME)
    assert config["sampler"] == "unipc-5" and config["num_inference_steps"] == 5
    assert config["sampler_settings"] == {
        "scheduler": "UniPCMultistepScheduler",
        "scheduler_kwargs": {},
        "guidance_fraction": 1.0,
    }
    assert "sampler preset `unipc-5` (UniPCMultistepScheduler), 5 steps" in (out / "README.md").read_text()

    # an explicit step count wins over the preset's; the DPM-Solver++ preset's solver settings arrive
    out2 = tmp_path / "dpm3"
    mz.generate_dataset(out2, str(PHANTOM_GENERATOR_DIR), **SETTINGS, sampler="dpm++2m-5", num_inference_steps=3)
    pipe, calls = loaded_pipelines[1]
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.scheduler.config["algorithm_type"] == "dpmsolver++" and pipe.scheduler.config["solver_order"] == 2
    assert len(calls) == 3
    assert read_json(out2 / mz.CONFIG_NAME)["num_inference_steps"] == 3

    # a folder started with another sampler (or none) is not continued: refused before loading anything
    for other, shown in (("dpm++2m-5", "'dpm++2m-5'"), (None, "None")):
        refused = rf"different settings.*sampler: folder has 'unipc-5', this run {re.escape(shown)}"
        with pytest.raises(ValueError, match=refused):
            mz.generate_dataset(out, str(PHANTOM_GENERATOR_DIR), **SETTINGS, sampler=other, num_inference_steps=5)
    assert mz.generate_dataset(out, str(PHANTOM_GENERATOR_DIR), **SETTINGS, sampler="unipc-5").verification.ok
    assert len(loaded_pipelines) == 2  # the finished folder's rerun loaded no pipeline


def test_without_a_sampler_the_config_is_the_one_of_before(tmp_path):
    out = tmp_path / "phantom"
    mz.generate_dataset(out, "phantom", prompts=PROMPTS, num_images=2, height=32, width=32, progress=False)
    config = read_json(out / mz.CONFIG_NAME)
    assert config["num_inference_steps"] == 50  # the writer's default step count, as before
    assert "sampler" not in config and "sampler_settings" not in config
    # a folder made without a sampler is not continued with one
    with pytest.raises(ValueError, match=r"sampler: folder has None, this run 'bundle'"):
        mz.generate_dataset(
            out, str(PHANTOM_GENERATOR_DIR), **SETTINGS, sampler="bundle", generator_id=config["generator_id"]
        )


def test_bad_sampler_names_and_generators_without_steps_fail_before_anything(tmp_path, loaded_pipelines):
    out = tmp_path / "gen"
    with pytest.raises(ValueError, match=rf"sampler 'turbo' is not a generation preset; {KNOWN}"):
        mz.generate_dataset(out, str(PHANTOM_GENERATOR_DIR), **SETTINGS, sampler="turbo")
    with pytest.raises(ValueError, match="sampler 'fast': the phantom generator renders its images directly"):
        mz.generate_dataset(out, "phantom", **SETTINGS, sampler="fast")
    with pytest.raises(ValueError, match="sampler 'fast' applies to a diffusers pipeline folder; this generator is a"):
        mz.generate_dataset(out, generators.PhantomGenerator(size=32), **SETTINGS, sampler="fast")
    with pytest.raises(ValueError, match="sampler 'fast': generator 'json:loads' is a 'module:factory'"):
        mz.generate_dataset(out, "json:loads", **SETTINGS, height=32, width=32, sampler="fast")
    assert not out.exists() and not loaded_pipelines
    with pytest.raises(ValueError, match=rf"sampler 'turbo' is not a generation preset; {KNOWN}"):
        generators.load_generator(str(PHANTOM_GENERATOR_DIR), sampler="turbo")


def test_genssl_generate_takes_the_sampler(tmp_path):
    from genssl_hf.generation.materialize.cli import build_parser

    args = build_parser().parse_args(["--pipeline", "phantom", "--prompts", "disease", "--output_dir", "x"])
    assert args.sampler is None and args.num_inference_steps is None
    args = build_parser().parse_args(
        ["--pipeline", "p", "--prompts", "disease", "--output_dir", "x", "--sampler", "unipc-5"]
    )
    assert args.sampler == "unipc-5"
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["--pipeline", "p", "--prompts", "disease", "--output_dir", "x", "--sampler", "turbo"]
        )


def test_the_pipeline_key_enters_the_fingerprint_only_when_set_and_reaches_the_launched_command(tmp_path, monkeypatch):
    from genssl_hf.generation.materialize.cli import build_parser
    from genssl_hf.pipeline import steps
    from genssl_hf.pipeline.config import load_preset
    from genssl_hf.pipeline.stages import fingerprint
    from genssl_hf.pipeline.steps import stage_evaluation, stage_generated_dataset

    def stages(cfg):
        return (
            stage_generated_dataset(cfg, Path("g"), Path("p")),
            stage_evaluation(cfg, Path("r"), ["genssl"], Path("d"), print, 1.0, 0, ""),
        )

    for preset in ("smoke", "demo", "paper"):
        base, unset = load_preset(preset), load_preset(preset, ["generation.sampler=null"])
        base["generation"].pop("sampler", None)  # the preset without the key (the demo's sets one)
        for a, b in zip(stages(base), stages(unset)):
            assert "sampler" not in b.config["generation"]
            assert fingerprint(a.config) == fingerprint(b.config)
    chosen = load_preset("smoke", ["generation.sampler=unipc-5"])
    assert fingerprint(stages(chosen)[0].config) != fingerprint(stages(load_preset("smoke"))[0].config)

    with pytest.raises(ValueError, match=rf"generation.sampler 'turbo' is not a generation preset; {KNOWN}"):
        load_preset("smoke", ["generation.sampler=turbo"])
    with pytest.raises(ValueError, match="generation.sampler 'fast': generator.source 'phantom-oracle'"):
        load_preset("smoke", ["generation.sampler=fast", 'generator={"source": "phantom-oracle"}'])

    # steps: the preset's when the config names none; the config's count wins when it does
    no_steps = load_preset("smoke", ["generation.sampler=unipc-5"])
    del no_steps["generation"]["num_inference_steps"]
    settings = steps._generation_settings(no_steps, tmp_path / "g", tmp_path / "p")
    assert settings["sampler"] == "unipc-5" and settings["num_inference_steps"] is None
    assert "sampler" not in steps._generation_settings(load_preset("smoke"), tmp_path / "g", tmp_path / "p")

    # generation.num_processes > 1: the launched `genssl generate` gets the sampler
    commands = []

    class Launched(Exception):
        pass

    def capture(command, folder, log, **kwargs):
        commands.append(command)
        raise Launched

    monkeypatch.setattr(steps, "_run_command", capture)
    launched = load_preset(
        "smoke", ["generation.sampler=unipc-5", "generation.num_processes=2", 'launcher=["accelerate", "launch"]']
    )
    settings = steps._generation_settings(launched, tmp_path / "g", tmp_path / "p")
    with pytest.raises(Launched):
        steps._generate_in_processes(launched, tmp_path, settings, print)
    options_file = commands[0][-1]
    assert read_json(options_file)["sampler"] == "unipc-5"
    assert build_parser().parse_args([options_file]).sampler == "unipc-5"
