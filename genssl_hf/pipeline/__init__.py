"""genssl_hf.pipeline: the end-to-end GEN-SSL run (prompts -> generator -> generated dataset ->
reference statistics -> MAE pre-training -> fine-tuning -> evaluation -> Hub-ready folders), every
setting in a preset config, each stage skipping itself when its output already exists and is valid."""

from .config import PRESET_DIR, load_preset
from .runner import run_pipeline

__all__ = ["PRESET_DIR", "load_preset", "run_pipeline"]
