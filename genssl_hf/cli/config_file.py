"""Options from a file: ``genssl pretrain recipe.yaml --max_steps 10``.

A JSON or YAML mapping of option names (without ``--``) to values becomes command-line options
placed before the ones typed, so the command line wins. ``true`` switches a flag on, ``false`` and
``null`` leave an option out, a list gives several values, a mapping is passed as JSON text. YAML is
read with YAML 1.2 booleans (only ``true`` / ``false``), so ``adain: on`` stays the string ``on``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genssl_hf.utils import options_argv

__all__ = ["CONFIG_SUFFIXES", "read_config_file", "config_file_argv"]

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def _error(exc_type: type[Exception], message: str) -> Exception:
    err = exc_type(message)
    err.genssl_config_file = True  # the front door prints it as a usage error, not a traceback
    return err


def _yaml_loader():
    import re

    import yaml

    class Yaml12Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 booleans: ``on`` / ``off`` / ``yes`` / ``no`` stay strings."""

    Yaml12Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Yaml12Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Yaml12Loader


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON or YAML file (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise _error(FileNotFoundError, f"config file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise _error(ValueError, f"config file {p} is not valid {p.suffix[1:].upper()}: {e}") from None
    if not isinstance(data, dict):
        raise _error(
            ValueError, f"config file {p} must hold a mapping of option names to values, got {type(data).__name__}"
        )
    return data


def config_file_argv(path: str | Path) -> list[str]:
    """The command-line options that the file at ``path`` stands for."""
    options = read_config_file(path)
    for key in options:
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise _error(ValueError, f"config file {path}: option names are written without dashes, got {key!r}")
    return options_argv(options)
