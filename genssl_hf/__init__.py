"""genssl_hf: GEN-SSL (generative self-supervised learning for chest X-ray classification)
in the Hugging Face ecosystem.

Subpackages follow the pipeline, one per stage:
``prompts -> generation -> data -> processing -> training -> evaluation -> hub``.
"""

from genssl_hf.core import __version__  # noqa: E402,F401

# Registers AdaINImageProcessor with AutoImageProcessor (no trust_remote_code needed).
from genssl_hf import processing as _processing  # noqa: E402,F401
