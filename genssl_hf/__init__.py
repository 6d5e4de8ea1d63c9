"""genssl_hf: GEN-SSL (generative self-supervised learning for chest X-ray classification)
in the Hugging Face ecosystem.

Subpackages follow the pipeline, one per stage:
``prompts -> generation -> data -> processing -> training -> evaluation -> hub``.
"""

__version__ = "0.1.0"
