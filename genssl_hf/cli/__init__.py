"""The ``genssl`` command: one front door with a subcommand for every job (``genssl --help``).

    genssl pretrain --method mae --model tiny --dataset DIR --output_dir runs/mae
    genssl pretrain recipe.yaml --max_steps 100       # options from a file, then the command line
    accelerate launch -m genssl_hf pretrain --method simclr ...
    genssl list methods

Every subcommand takes its options from a JSON or YAML file given as its first argument (keys are
option names without ``--``; ``true`` switches a flag on), then from the command line, which wins.
Commands with typed options (dataclasses parsed by ``HfArgumentParser``, see
:mod:`genssl_hf.typed_args`) check the file key by key. Trainers write the resolved options back
into their run folder (``run_config.json``, itself a config file that re-runs the run).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Sequence

from genssl_hf.cli.commands import COMMANDS
from genssl_hf.cli.config_file import config_file_argv, is_config_path

__all__ = ["main", "run_command"]


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items())
    return (
        "usage: genssl <command> [CONFIG.yaml|CONFIG.json] [options]\n\n"
        "GEN-SSL and its sibling methods in the Hugging Face ecosystem.\n\n"
        f"commands:\n{rows}\n\n"
        "`genssl <command> --help` lists a command's options; `genssl list` the registered methods,\n"
        "models, dataset schemes and pipeline presets."
    )


def run_command(name: str, argv: Sequence[str]) -> Any:
    """Run subcommand ``name`` with ``argv`` (a config file first, or after a sub-command word such as
    ``ldm``, is expanded into options)."""
    cmd = COMMANDS[name]
    argv = list(argv)
    at = 1 if argv and argv[0] in cmd.subcommands else 0  # the file follows a sub-command word
    if len(argv) > at and is_config_path(argv[at]) and not cmd.typed:
        path = argv[at]
        argv = argv[:at] + ([cmd.config_option, path] if cmd.config_option else config_file_argv(path)) + argv[at + 1 :]
    module, func = cmd.target.split(":")
    fn = getattr(importlib.import_module(module), func)
    if cmd.publish:
        from genssl_hf.hub.publish import publish_after_training  # --push_to_hub: publish once trained

        return fn(argv, publish=publish_after_training)
    return fn(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from genssl_hf.core import __version__

        print(f"genssl_hf {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean `genssl {close[0]}`?" if close else ""
        print(f"genssl: unknown command {name!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        result = run_command(name, argv[1:])
    except SystemExit as e:  # argparse (usage errors, --help): its message is printed; give its exit status
        if isinstance(e.code, int):
            return e.code
        raise
    except (FileNotFoundError, ValueError) as e:
        if not getattr(e, "genssl_config_file", False):
            raise
        print(f"genssl {name}: error: {e}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0
