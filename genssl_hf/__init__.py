"""genssl_hf: GEN-SSL (generative self-supervised learning for chest X-ray classification)
in the Hugging Face ecosystem.

Subpackages follow the pipeline, one per stage:
``prompts -> generation -> data -> processing -> training -> evaluation -> hub``.

Importing the package is light (no torch, no transformers). It still teaches transformers' Auto
classes the genssl_hf classes (``AdaINImageProcessor``, ``ReportGeneratorProcessor``, the
``genssl_hf_vit`` classifier config and model, so ``pipeline("image-classification")`` loads a
genssl_hf classifier exactly): each registration runs when transformers imports the module holding
that Auto class, or at once if it already has (see ``genssl_hf/_auto_register.py``).
"""

from genssl_hf.core import __version__  # noqa: E402,F401

from genssl_hf.utils import PRETRAINED, pretrained_path  # noqa: E402,F401  ("genssl_hf/<name>" -> shipped folder)

from genssl_hf import _auto_register

_auto_register.install()
