"""Options from a file: ``genssl pretrain recipe.yaml --max_steps 10``.

A JSON or YAML mapping of option names (without ``--``) to values becomes command-line options
placed before the ones typed, so the command line wins. ``true`` switches a flag on, ``false`` and
``null`` leave an option out, a list gives several values, a mapping is passed as JSON text. YAML is
read with YAML 1.2 booleans (only ``true`` / ``false``), so ``adain: on`` stays the string ``on``.

Commands whose parser is a :class:`genssl_hf.typed_args.TypedArgumentParser` (dataclass options)
read the file themselves and check it key by key (type, range, choice, unknown key) with errors
naming the file and the key; :func:`config_file_argv` is the untyped expansion for the others.
"""

from __future__ import annotations

from pathlib import Path

from genssl_hf.typed_args import CONFIG_SUFFIXES, is_config_path, options_to_argv, read_config_file

__all__ = ["CONFIG_SUFFIXES", "is_config_path", "read_config_file", "config_file_argv"]


def config_file_argv(path: str | Path) -> list[str]:
    """The command-line options that the file at ``path`` stands for (no parser: unchecked)."""
    options = read_config_file(path)
    for key in options:
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise ValueError(f"config file {path}: option names are written without dashes, got {key!r}")
    return options_to_argv(options)
