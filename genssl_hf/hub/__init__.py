"""genssl_hf.hub: model / dataset cards, the real-data leak guard, and publishing to the Hub.

>>> from genssl_hf.hub import publish_artifact, publish_all
>>> publish_artifact("encoder", "runs/demo/mae", dry_run="out/hub/encoder", real_data=["../shared/data"])
>>> publish_artifact("encoder", "runs/demo/mae", "me/genssl-mae-encoder", real_data=[...])   # private repo

``genssl_hf.hub.publish`` is the publishing *module* (its dispatcher is
``genssl_hf.hub.publish.publish``, exported here as ``publish_artifact`` so the two names never
clash). Names are resolved lazily so that ``import genssl_hf.hub.cards`` stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "render_model_card": "cards",
    "render_dataset_card": "cards",
    "DISCLAIMER": "cards",
    "KINDS": "publish",
    "REPO_TYPES": "publish",
    "ArtifactError": "publish",
    "PublishResult": "publish",
    "publish_artifact": "publish",
    "publish_encoder": "publish",
    "publish_classifier": "publish",
    "publish_generator": "publish",
    "publish_prompt_set": "publish",
    "publish_dataset": "publish",
    "publish_all": "publish",
    "validate_artifact": "publish",
    "build_card": "publish",
    "DEFAULT_RUN_LAYOUT": "publish",
    "LeakError": "leak",
    "LeakFinding": "leak",
    "RealDataIndex": "leak",
    "build_real_data_index": "leak",
    "scan_folder": "leak",
    "check_folder": "leak",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, "publish" if name == "publish_artifact" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
