"""The pipeline config's schema: every key the runner reads, with its type; the ``*.args``
sections are checked against the argument parser of the module they are passed to.

:func:`config_problems` lists every problem at once (unknown keys with "did you mean"
suggestions, wrong types, out-of-range numbers, unknown or invalid stage options), so a typo in
``--set`` fails before the first stage instead of hours into a ``paper`` run. A new config key
is added here, next to the code that reads it.
"""

from __future__ import annotations

from typing import Any, Callable

from ..validation import NUMERIC_RANGES, Range, check_options, did_you_mean

# Leaf types. A dict is a nested section; a string names a stage parser whose options the
# section holds (checked by genssl_hf.validation.check_options).
INT, FLOAT, STR, BOOL, LIST, ANY = "int", "float", "str", "bool", "list", "any"
PARSER_ARGS = "parser:"  # prefix: "parser:mae" etc.

SCHEMA: dict[str, Any] = {
    "name": STR,
    "description": STR,
    "seed": INT,
    "image_size": INT,
    "output_dir": STR,
    "launcher": LIST,
    # stages after reference_stats run this many at a time (runner.run_stage_graph); their
    # subprocesses get stage_threads threads each (default 1 when stage_workers > 1)
    "stage_workers": INT,
    "stage_threads": INT,
    "adain_statistic": STR,
    "variants": LIST,
    "real_data": {
        "source": STR,
        "path": STR,
        "validation_fraction": FLOAT,
        "test_fraction": FLOAT,
        "sizes": {"train": INT, "validation": INT, "test": INT},
        "phantom": "phantom",  # PhantomConfig fields
    },
    "prompts": {"set": STR, "custom": LIST, "name": STR},
    "generator": {
        "source": STR,
        "path": STR,
        "dataset": STR,
        "resolution": INT,
        "autoencoder_args": PARSER_ARGS + "autoencoder",
        "ldm_args": PARSER_ARGS + "ldm",
    },
    "generation": {
        "num_images": INT,
        "num_inference_steps": INT,
        # a preset of generation.schedulers.GENERATION_PRESETS (pipeline.config.check_generation_sampler)
        "sampler": STR,
        "guidance_scale": FLOAT,
        "dtype": STR,
        "batch_size": INT,
        "image_size": INT,
        "shard_size": ANY,
        "num_processes": INT,  # > 1: accelerate launch through `launcher` (launch.generation_launcher)
    },
    "pretrain": {"args": PARSER_ARGS + "mae"},
    # Contrastive / Siamese / pretext variants: user-named entries, checked by validate_ssl_variants.
    "ssl_pretrain": {"args": PARSER_ARGS + "ssl"},
    "ssl_variants": ANY,
    "vlp": {"num_pairs": INT, "pairs": STR, "args": PARSER_ARGS + "vlp"},
    "finetune": {
        "random_init_preset": STR,
        "args": PARSER_ARGS + "finetune",
        "label_fractions": LIST,
        "seeds": LIST,
        "seed_fractions": LIST,
    },
    "evaluation": {"args": PARSER_ARGS + "evaluation"},
    "hub": {"dry_run": BOOL, "namespace": STR, "real_data": LIST},
}


def _parsers() -> dict[str, Callable[[], Any]]:
    from ..evaluation.report import build_parser as evaluation
    from ..training.finetune import build_parser as finetune
    from ..training.generator import autoencoder_parser, ldm_parser
    from ..training.mae import build_parser as mae
    from ..training.ssl.pretrain import build_parser as ssl
    from ..training.vlp import build_parser as vlp

    return {
        "mae": mae,
        "finetune": finetune,
        "evaluation": evaluation,
        "autoencoder": autoencoder_parser,
        "ldm": ldm_parser,
        "ssl": ssl,
        "vlp": vlp,
    }


def _type_problem(value: Any, kind: str, where: str) -> str | None:
    if value is None:  # JSON null: the setting's default
        return None
    ok = {
        INT: isinstance(value, int) and not isinstance(value, bool),
        FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
        STR: isinstance(value, str),
        BOOL: isinstance(value, bool),
        LIST: isinstance(value, list),
        ANY: True,
    }[kind]
    if not ok:
        article = {INT: "an integer", FLOAT: "a number", STR: "a string", BOOL: "true or false", LIST: "a list"}[kind]
        return f"{where} must be {article}, got {value!r}"
    name = where.rsplit(".", 1)[-1]
    if kind in (INT, FLOAT) and name in NUMERIC_RANGES:
        problem = Range(NUMERIC_RANGES[name]).problem(float(value))
        if problem:
            return f"{where} {problem}"
    return None


def _phantom_problems(section: Any, where: str) -> list[str]:
    import dataclasses

    from ..data.phantom import PhantomConfig

    if not isinstance(section, dict):
        return [f"{where} must be a section (a JSON object), got {section!r}"]
    fields = {f.name for f in dataclasses.fields(PhantomConfig)}
    return [f"{where}.{k}: unknown phantom setting{did_you_mean(k, fields)}" for k in section if k not in fields]


def schema_node(path: list[str]) -> tuple[Any, str | None]:
    """The schema entry at ``path`` (``["pretrain", "args", "lr"]``), or ``(None, problem)`` naming
    the first unknown part with suggestions. Parts below a parser's ``args`` are options."""
    node: Any = SCHEMA
    for i, part in enumerate(path):
        if isinstance(node, str):  # below a leaf: parser options and phantom fields are checked later
            return node, None
        if part not in node:
            where = ".".join(path[: i + 1])
            return None, f"{where}: unknown config key{did_you_mean(part, node)}"
        node = node[part]
    return node, None


def config_problems(config: Any) -> list[str]:
    """Every schema problem of a pipeline config (empty list: valid)."""
    if not isinstance(config, dict):
        return [f"the pipeline config must be a JSON object, got {type(config).__name__}"]
    problems: list[str] = []
    parsers: dict[str, Callable[[], Any]] | None = None

    def walk(section: dict, schema: dict, prefix: str) -> None:
        nonlocal parsers
        for key, value in section.items():
            where = f"{prefix}{key}"
            if key not in schema:
                problems.append(f"{where}: unknown config key{did_you_mean(str(key), schema)}")
                continue
            kind = schema[key]
            if isinstance(kind, dict):
                if not isinstance(value, dict):
                    problems.append(f"{where} must be a section (a JSON object), got {value!r}")
                else:
                    walk(value, kind, where + ".")
            elif kind == "phantom":
                problems.extend(_phantom_problems(value, where))
            elif kind.startswith(PARSER_ARGS):
                if not isinstance(value, dict):
                    problems.append(f"{where} must be a section of options, got {value!r}")
                    continue
                parsers = parsers or _parsers()
                name = kind[len(PARSER_ARGS) :]
                problems.extend(check_options(parsers[name](), value, where, what=f"the {name} stage"))
            else:
                problem = _type_problem(value, kind, where)
                if problem:
                    problems.append(problem)

    walk(config, SCHEMA, "")
    return problems
