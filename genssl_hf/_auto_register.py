"""Teach transformers' Auto classes the genssl_hf classes when transformers needs them, not when
genssl_hf is imported.

Why: ``import genssl_hf`` must stay light (no torch, no transformers: a few hundred milliseconds
instead of seconds) for the many users of its data, prompts and utilities; yet after it, whichever of
genssl_hf and transformers is imported first, ``AutoImageProcessor`` / ``AutoProcessor`` /
``AutoConfig`` / ``AutoModelForImageClassification`` and so ``pipeline("image-classification")`` must
resolve the genssl_hf classes (``AdaINImageProcessor``, ``ReportGeneratorProcessor``, the
``genssl_hf_vit`` classifier) without ``trust_remote_code``.

How: transformers keeps each registry in one module (``_REGISTRATIONS`` below). A meta path finder
watches the imports of ``transformers.*`` and ``genssl_hf.*`` modules; once such a registry module
is in ``sys.modules``, its registration runs as soon as the outermost watched import has finished
(immediately in :func:`install` if transformers imported it before genssl_hf). Not earlier: the
registry modules are usually imported from inside another module that is still half-executed
(``modeling_auto`` while ``transformers.models.vit.modeling_vit`` runs, ``configuration_auto`` while
``modeling_utils`` runs, or a ``genssl_hf.processing`` module importing transformers), and the
classes being registered import those very modules.

The registrations themselves live in the layer that owns the classes (``genssl_hf.models``,
``genssl_hf.processing``); this module only decides when to call them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from typing import Callable


def _register_config() -> None:
    from genssl_hf.models.vit_classifier import register_auto_config

    register_auto_config()


def _register_model() -> None:
    from genssl_hf.models.vit_classifier import register_auto_model

    register_auto_model()


def _register_image_processor() -> None:
    from genssl_hf.processing.image_processor import register_auto_class

    register_auto_class()


def _register_processor() -> None:
    from genssl_hf.processing.report_processor import register_report_processor

    register_report_processor()


# transformers module holding a registry -> the registration that needs it (and nothing heavier).
_REGISTRATIONS: dict[str, Callable[[], None]] = {
    "transformers.models.auto.configuration_auto": _register_config,
    "transformers.models.auto.modeling_auto": _register_model,
    "transformers.models.auto.image_processing_auto": _register_image_processor,
    "transformers.models.auto.processing_auto": _register_processor,
}
_WATCHED = ("transformers", "genssl_hf")
_FILE_LOADERS = (
    importlib.machinery.SourceFileLoader,
    importlib.machinery.SourcelessFileLoader,
    importlib.machinery.ExtensionFileLoader,
)
_done: set[str] = set()
_local = threading.local()  # .depth: watched module bodies now executing in this thread


def _flush() -> None:
    """Run every due registration (its registry module is imported) that has not run yet."""
    for module, register in _REGISTRATIONS.items():
        if module in _done or module not in sys.modules:
            continue
        _done.add(module)  # first: the registration imports watched modules, which flush again
        try:
            register()
        except Exception as exc:  # never break the user's transformers import; retry at the next flush
            _done.discard(module)
            warnings.warn(
                f"genssl_hf could not register its classes with {module} ({type(exc).__name__}: {exc}); "
                "call genssl_hf.training.classifier.register_auto_classes() once imports are done",
                RuntimeWarning,
                stacklevel=2,
            )


def _watch(exec_module: Callable) -> Callable:
    def exec_then_register(module) -> None:
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            exec_module(module)
        finally:
            _local.depth -= 1
        if _local.depth == 0:
            _flush()

    return exec_then_register


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the other finders and wraps the loader of watched modules."""

    def find_spec(self, name, path=None, target=None):
        if len(_done) == len(_REGISTRATIONS) or name.partition(".")[0] not in _WATCHED:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find_spec(name, path, target) if find_spec is not None else None
            if spec is not None:
                break
        else:
            return None
        # A file loader is made for this one module, so wrapping its method touches nothing else and
        # keeps its type (importlib.resources, inspect and linecache still see a SourceFileLoader).
        if isinstance(spec.loader, _FILE_LOADERS):
            spec.loader.exec_module = _watch(spec.loader.exec_module)
        return spec


def install() -> None:
    """Start watching (once per process) and register what transformers has already imported."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    _flush()
