"""Every config key with its type, default and description, read from the schema's own
field docs (the string under each field of ``lab.config.schema``'s dataclasses, as Sphinx
reads attribute docstrings), so ``lab-train --help`` and the README's table never drift from
the code: ``scripts/config_docs.py`` writes the table, a test checks it."""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import textwrap
from functools import lru_cache

from lab.config import schema

SECTIONS = {
    "model": schema.ModelConfig,
    "data": schema.DataConfig,
    "optim": schema.OptimConfig,
    "train": schema.TrainConfig,
}
TABLE_START = "<!-- config-table: written by scripts/config_docs.py; do not edit -->"
TABLE_END = "<!-- config-table end -->"


@lru_cache(maxsize=1)
def _module_tree() -> ast.Module:
    return ast.parse(inspect.getsource(schema))


def field_docs(cls: type) -> dict[str, str]:
    """Field name → the string literal that follows its definition in ``cls``'s body."""
    for node in _module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            docs, body = {}, node.body
            for stmt, after in zip(body, body[1:]):
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    docs[stmt.target.id] = " ".join(after.value.value.split())
            return docs
    raise LookupError(f"no class {cls.__name__} in {schema.__name__}")


def _kind(f: dataclasses.Field) -> str:
    hint = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    choice = getattr(schema, hint.split(" ")[0], None)
    if isinstance(choice, type) and issubclass(choice, enum.Enum):
        return " | ".join(str(c.value) for c in choice)
    return hint


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def keys() -> list[tuple[str, str, str, str]]:
    """(dotted key, type or choices, default, description) for every config key, in the
    schema's order."""
    rows = []
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            rows.append((f"{section}.{f.name}", _kind(f), _default(f), docs.get(f.name, "")))
    return rows


def sizes() -> list[str]:
    """The model sizes of conf/model (gpu/ ones as ``gpu/NAME``), smallest first."""
    from omegaconf import OmegaConf

    from lab.config.counting import param_counts

    found = []
    for path in schema.CONF_DIR.joinpath("model").rglob("*.yaml"):
        fields = OmegaConf.to_container(OmegaConf.load(path))
        known = {f.name for f in dataclasses.fields(schema.ModelConfig)}
        cfg = schema.ModelConfig(**{k: v for k, v in fields.items() if k in known})
        name = path.relative_to(schema.CONF_DIR / "model").with_suffix("").as_posix()
        found.append((param_counts(cfg)["non_embedding"], name))
    return [name for _, name in sorted(found)]


def default_model() -> str:
    from omegaconf import OmegaConf

    for entry in OmegaConf.to_container(OmegaConf.load(schema.CONF_DIR / "config.yaml").defaults):
        if isinstance(entry, dict) and "model" in entry:
            return str(entry["model"])
    return "?"


def help_text() -> str:
    """``lab-train --help``: how to call it, then every key."""
    out = [
        "usage: lab-train [KEY=VALUE ...]          one run (Hydra overrides)",
        "       lab-train -m KEY=A,B ...            a multirun over the grid",
        "       lab-train --cfg job [KEY=VALUE ...]  print the composed config, run nothing",
        "       lab-train --hydra-help               Hydra's own flags",
        "",
        *textwrap.wrap(
            f"model=NAME picks a size of conf/model (default {default_model()}), smallest "
            f"first: {', '.join(sizes())}; its file sets the model.* keys below. "
            "lab-sweep NAME runs a sweep of sweeps/.",
            width=96,
        ),
        "",
        "keys (the schema's default in brackets):",
    ]
    for key, kind, default, doc in keys():
        out.append(f"  {key}: {kind} [{default}]")
        out.extend(
            textwrap.wrap(doc, width=92, initial_indent="      ", subsequent_indent="      ")
        )
    return "\n".join(out)


def markdown_table() -> str:
    """The README's table of keys, between its markers."""
    lines = [TABLE_START, "", "| key | type | default | what it does |", "|---|---|---|---|"]
    for key, kind, default, doc in keys():
        cells = [f"`{key}`", kind.replace("|", "\\|"), f"`{default}`", doc.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", TABLE_END])


def with_table(readme: str) -> str:
    """``readme`` with its table replaced by the current one. Raises ValueError when the
    markers are missing."""
    try:
        head, rest = readme.split(TABLE_START, 1)
        _, tail = rest.split(TABLE_END, 1)
    except ValueError:
        raise ValueError(f"the README has no {TABLE_START!r} ... {TABLE_END!r} markers") from None
    return head + markdown_table() + tail
