"""Typed options: dataclasses parsed by transformers' ``HfArgumentParser``, from the command line or a file.

Each command declares its options as dataclasses grouped the transformers way (model, data,
optimisation, run ...; a field's ``metadata`` holds its ``help``, a ``Literal`` type its choices) and
builds a :class:`TypedArgumentParser` over them. Because ``HfArgumentParser`` is an
``argparse.ArgumentParser``, the project's argparse checks still apply on top: numeric ranges
(:func:`genssl_hf.validation.checked_parser`), renamed options that stop with the new name
(:func:`genssl_hf.validation.renamed_options`), close-name suggestions.

``parse_args`` returns one flat ``argparse.Namespace`` (the attribute names the trainers read) after
building every dataclass, so a dataclass's ``__post_init__`` check runs before any work;
:meth:`TypedArgumentParser.to_dataclasses` / :meth:`~TypedArgumentParser.to_dict` give the typed,
grouped view back. A JSON or YAML file given as the first argument (``genssl finetune recipe.yaml
--seed 1``) is checked key by key against the options (unknown key with a did-you-mean, wrong type,
out-of-range number, bad choice: an error naming the file and the key) and then stands for the
command-line options it holds, placed first so that the command line wins. A trainer's
``run_config.json`` is such a file too: its options (``args``, or its top level) re-run the run.

Field metadata beyond transformers' (``help``, ``aliases``, argparse keywords): ``nargs`` (an exact
count for a list field; transformers always uses ``+``) and ``parse`` (a converter used as the argparse
``type``, e.g. ``"10%"`` -> 0.1). Options have one spelling, with underscores: transformers' dashed
twins (``--output-dir``) are not added; an old spelling is kept with :func:`hidden_aliases` (accepted)
or :func:`genssl_hf.validation.renamed_options` (an error naming the new one).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence, get_type_hints

from transformers.hf_argparser import HfArgumentParser

from genssl_hf.validation import check_options, suggest_close_options

__all__ = [
    "CONFIG_SUFFIXES",
    "ConfigFileError",
    "TypedArgumentParser",
    "add_dataclass_arguments",
    "hidden_aliases",
    "checked_config_argv",
    "is_config_path",
    "options_to_argv",
    "read_config_file",
]

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
# Keys of a trainer's run_config.json that are records, not options (a run folder re-runs from it).
_RUN_RECORD_KEYS = ("environment", "resolved")


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not fit the command (the message names the file)."""

    genssl_config_file = True  # the front door prints it as a usage error, not a traceback


def is_config_path(arg: str) -> bool:
    """Whether a first argument names a config file (``*.json`` / ``*.yaml`` / ``*.yml``)."""
    return isinstance(arg, str) and not arg.startswith("-") and arg.lower().endswith(CONFIG_SUFFIXES)


def _yaml_loader():
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
    """The mapping in a JSON or YAML file (YAML 1.2 booleans; errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigFileError(f"config file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise ConfigFileError(f"config file {p} is not valid {p.suffix[1:].upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"config file {p} must hold a mapping of option names to values, got {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise ConfigFileError(f"config file {p}: option names are written without dashes, got {key!r}")
    return data


def _is_bool_option(action: argparse.Action | None) -> bool:
    """An ``HfArgumentParser`` bool field: ``--flag`` alone means true, ``--flag false`` false."""
    return action is not None and action.nargs == "?" and action.const is True


def options_to_argv(options: dict[str, Any], actions: dict[str, argparse.Action] | None = None) -> list[str]:
    """``{"name": value}`` as command-line options: ``true`` a bare flag, ``false`` / ``null`` left out
    (``--name false`` for a typed bool option, so a true default can be turned off), a list several
    values, a mapping its JSON text. ``actions`` maps ``--name`` to the parser's action, when known."""
    actions = actions or {}
    argv: list[str] = []
    for key, value in options.items():
        flag = f"--{key}"
        if value is True:
            argv.append(flag)
        elif value is False and _is_bool_option(actions.get(flag)):
            argv += [flag, "false"]
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)) and isinstance(actions.get(flag), argparse._AppendAction):
            argv += [x for v in value for x in (flag, str(v))]  # a repeated option
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


def checked_config_argv(parser: argparse.ArgumentParser, options: dict[str, Any], path: str | Path) -> list[str]:
    """``options`` read from the config file ``path``, checked against ``parser`` (unknown key with a
    did-you-mean, type, range, choice: a :class:`ConfigFileError` naming the file and the key), as
    command-line options. A run folder's ``run_config.json`` gives its options (``args``, else its
    top level) and drops its records."""
    if any(k in options for k in _RUN_RECORD_KEYS):
        options = options["args"] if isinstance(options.get("args"), dict) else options
        known = {s[2:] for a in parser._actions for s in a.option_strings if s.startswith("--")}
        options = {k: v for k, v in options.items() if k in known}
    problems = check_options(parser, options, where="\0")
    if problems:
        raise ConfigFileError(f"config file {path}: " + "; ".join(p.replace("\0.", "", 1) for p in problems))
    return options_to_argv(options, {s: a for a in parser._actions for s in a.option_strings})


def _add_field(container, field: dataclasses.Field) -> None:
    """``HfArgumentParser``'s field -> argparse option, plus the ``nargs`` / ``parse`` metadata."""
    meta = dict(field.metadata)
    nargs, parse = meta.pop("nargs", None), meta.pop("parse", None)
    if nargs is not None or parse is not None:
        field = copy.copy(field)
        field.metadata = meta  # type: ignore[misc]
    before = len(container._actions)
    HfArgumentParser._parse_dataclass_field(container, field)
    aliases = meta.get("aliases", [])
    for added in container._actions[before:]:  # drop transformers' dashed spellings: one spelling, underscores
        for s in [s for s in added.option_strings if "-" in s[2:] and s not in aliases]:
            added.option_strings.remove(s)
            container._option_string_actions.pop(s, None)
    action = next(a for a in reversed(container._actions) if f"--{field.name}" in a.option_strings)
    if nargs is not None:
        action.nargs = nargs
    elif isinstance(action, argparse._AppendAction):  # a repeated option: one value each time
        action.nargs = None
    if parse is not None:
        action.type = parse


def add_dataclass_arguments(parser: argparse.ArgumentParser, dtype: type, title: str | None = None, group=None):
    """Add the fields of dataclass ``dtype`` to ``parser`` as an option group (``group``, or a new one
    titled ``title``, else the class's ``_argument_group_name``); a :class:`TypedArgumentParser` also
    builds ``dtype`` from the parsed options. Returns the group (a parser may add its own options to it)."""
    if group is None:
        group = parser.add_argument_group(title or getattr(dtype, "_argument_group_name", dtype.__name__))
    hints = get_type_hints(dtype)
    for field in dataclasses.fields(dtype):
        if field.init:
            field.type = hints[field.name]
            _add_field(group, field)
    if isinstance(parser, TypedArgumentParser) and dtype not in parser.dataclass_types:
        parser.dataclass_types.append(dtype)
    return group


def hidden_aliases(parser: argparse.ArgumentParser, aliases: dict[str, str]) -> argparse.ArgumentParser:
    """Accept each ``{"--old-spelling": "--new_name"}`` as the new option, left out of ``--help`` (old
    dashed spellings of options that now use underscores). Returns ``parser``."""
    for old, new in aliases.items():
        # the old string leads to the new option's own action (so a required option counts as given)
        # without joining its option_strings (so --help, usage and errors show the new spelling only)
        parser._option_string_actions[old] = parser._option_string_actions[new]
    return parser


class TypedArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` over option dataclasses, returning one flat namespace, reading config files.

    ``defaults`` overrides dataclass defaults for this command (the per-command recipe of a
    shared group); other options may still be added with ``add_argument`` (they stay untyped)."""

    def __init__(
        self,
        dataclass_types: Iterable[type] = (),
        *,
        defaults: dict[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__([], **kwargs)
        for dtype in dataclass_types:
            add_dataclass_arguments(self, dtype)
        if defaults:
            self.set_defaults(**defaults)
        suggest_close_options(self)

    def _add_dataclass_arguments(self, dtype):  # HfArgumentParser's hook: same grouping, our field rules
        add_dataclass_arguments(self, dtype)

    # ------------------------------------------------------------------------------ config files
    def config_file_argv(self, path: str | Path) -> list[str]:
        """The options in the file at ``path``, checked against this parser (errors name the file and key)."""
        return checked_config_argv(self, read_config_file(path), path)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if args and is_config_path(args[0]):
            try:
                args = self.config_file_argv(args[0]) + args[1:]
            except ConfigFileError as e:
                self.error(str(e))
        return super().parse_known_args(args, namespace)

    # --------------------------------------------------------------------------- typed results
    def to_dataclasses(self, namespace: argparse.Namespace) -> tuple[Any, ...]:
        """The option dataclasses of this parser filled from ``namespace`` (their checks run)."""
        out = []
        for dtype in self.dataclass_types:
            names = [f.name for f in dataclasses.fields(dtype) if f.init]
            out.append(dtype(**{n: getattr(namespace, n) for n in names if hasattr(namespace, n)}))
        return tuple(out)

    def to_dict(self, namespace: argparse.Namespace) -> dict[str, dict[str, Any]]:
        """``{dataclass name: {option: value}}``: the typed, grouped view of ``namespace``."""
        return {type(d).__name__: dataclasses.asdict(d) for d in self.to_dataclasses(namespace)}

    def parse_args(self, args: Sequence[str] | None = None, namespace=None) -> argparse.Namespace:
        ns = super().parse_args(args, namespace)
        try:
            self.to_dataclasses(ns)
        except (TypeError, ValueError) as e:
            self.error(str(e))
        return ns
