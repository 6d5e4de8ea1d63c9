"""genssl_hf: GEN-SSL (generative self-supervised learning for chest X-ray classification)
in the Hugging Face ecosystem.

Subpackages follow the pipeline, one per stage:
``prompts -> generation -> data -> processing -> training -> evaluation -> hub``.
"""

from genssl_hf.core import __version__  # noqa: E402,F401

from genssl_hf.utils import PRETRAINED, pretrained_path  # noqa: E402,F401  ("genssl_hf/<name>" -> shipped folder)

# Registers AdaINImageProcessor with AutoImageProcessor (no trust_remote_code needed).
from genssl_hf import processing as _processing  # noqa: E402,F401

# Registers the classifier's own model_type (genssl_hf_vit) with AutoConfig /
# AutoModelForImageClassification / AutoImageProcessor, so pipeline("image-classification") loads
# it exactly; without this package, transformers refuses such a folder instead of guessing.
from genssl_hf.training.classifier import register_auto_classes as _register_auto_classes  # noqa: E402

_register_auto_classes()
