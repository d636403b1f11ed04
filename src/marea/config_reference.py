"""`marea config reference`: the configuration reference (docs/configuration.md), generated from the models.

Why generated: a key documented by hand drifts from the code, and a key added without a word goes unnoticed.
Here every section and key comes from the pydantic models that validate marea.toml and cluster.toml, so a new
section (or key) appears in the reference by itself, with its type, its limits and its default; its meaning is
the field's `description`, or else the `#:` comment lines right above the field in the model's source (the
convention of config.py), or the section class's docstring. A test keeps docs/configuration.md equal to this
output and fails on a key with no meaning.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

HEADER = """\
# Configuration reference

Every key of `marea.toml` (the engine, the offload server, the simulator) and of `cluster.toml` (the cluster
maker: a marea.toml plus `[master]`), with its type, its limits, its default and what it means.

This file is generated from the pydantic models of `src/marea/config.py` and `src/marea/cluster/config.py`:
do not edit it by hand; change the models and run `make docs` (or `marea config reference >
docs/configuration.md`). A test fails when the two differ.

General rules: an unknown key is an error (a typo never falls back to a default silently); relative paths are
relative to the directory of the file; secrets (`secret`) never appear in a log line or an error message.
`marea config check FILE` validates a file and names the first wrong key.
"""


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    meaning: str


@dataclass(frozen=True)
class Section:
    header: str  # `[policy]`, `[[flavours]]`, `[cloud.openstack]`
    intro: str
    keys: tuple[Key, ...]


def _comment_docs(model: type[BaseModel]) -> dict[str, str]:
    """The `#:` comment lines right above each field in the class source (empty when there is no source)."""
    try:
        lines = inspect.getsource(model).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = re.match(r"^\s+(\w+)\s*:", line)
        if m and m.group(1) in model.model_fields and pending:
            docs[m.group(1)] = " ".join(pending)
        pending = []
    return docs


def _meaning(name: str, field: FieldInfo, comments: dict[str, str]) -> str:
    return (field.description or comments.get(name, "")).strip()


def _model_of(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """(model, is_list) when the annotation is a section (a model) or an array of sections."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (None,)
        if inspect.isclass(item) and issubclass(item, BaseModel):
            return item, True
    return None


_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", SecretStr: "secret"}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_type_name(a) for a in rest)
        return text + (" (optional)" if len(rest) < len(args) else "")
    if origin is list:
        return f"list of {_type_name(args[0])}s" if args else "list"
    if origin is dict:
        return f"table of {_type_name(args[1])}s" if len(args) == 2 else "table"
    if hasattr(annotation, "__metadata__"):  # Annotated inside a container: the base type is enough here
        return _type_name(get_args(annotation)[0])
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits(field: FieldInfo) -> str:
    parts: list[str] = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >=")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(dict.fromkeys(parts))


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump() for v in value]
    text = json.dumps(value) if not isinstance(value, float) else f"{value:g}"
    if isinstance(value, bool):
        text = "true" if value else "false"
    return f"`{text}`"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    return _value(field.default)


def sections(model: type[BaseModel], path: str = "", array: bool = False, default: str = "") -> Iterator[Section]:
    """The sections of `model` in the order of its fields: its own keys first, then its sub-sections. An array
    of tables (`[[flavours]]`) says what it holds when the file has none (`default`)."""
    comments = _comment_docs(model)
    keys: list[Key] = []
    subs: list[tuple[str, type[BaseModel], bool, str]] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        sub = _model_of(field.annotation)
        if sub is not None:
            subs.append((name, *sub, _default(field) if sub[1] else ""))
            continue
        kind = _type_name(field.annotation)
        limits = _limits(field)
        keys.append(
            Key(name, kind + (f" ({limits})" if limits else ""), _default(field), _meaning(name, field, comments))
        )
    if path:
        doc = inspect.getdoc(model) or ""
        intro = doc if doc and doc != inspect.getdoc(BaseModel) and not doc.startswith("!!!") else ""
        header = f"[[{path}]]" if array else f"[{path}]"
        intro = " ".join(intro.split("\n\n")[0].split())
        if array and default:
            intro = (intro + " " if intro else "") + f"An array of tables; when the file has none: {default}."
        yield Section(header, intro, tuple(keys))
    elif keys:
        yield Section("(top level)", "", tuple(keys))
    for name, sub_model, is_list, sub_default in subs:
        yield from sections(sub_model, f"{path}.{name}" if path else name, is_list, sub_default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(parts: list[tuple[str, type[BaseModel]]]) -> str:
    """The Markdown reference of the files `parts` names: (title, root model)."""
    out = [HEADER]
    for title, root in parts:
        out.append(f"\n## {title}\n")
        for section in sections(root):
            out.append(f"\n### `{section.header}`\n")
            if section.intro:
                out.append(f"\n{section.intro}\n")
            if section.keys:
                out.append("\n| key | type | default | meaning |\n|---|---|---|---|\n")
                for k in section.keys:
                    out.append(f"| `{k.name}` | {_cell(k.type)} | {_cell(k.default)} | {_cell(k.meaning)} |\n")
    return "".join(out)


def missing_meanings(parts: list[tuple[str, type[BaseModel]]]) -> list[str]:
    """Every key with no meaning, as `section.key`: the reference must explain each one."""
    return [
        f"{section.header} {key.name}"
        for _title, root in parts
        for section in sections(root)
        for key in section.keys
        if not key.meaning
    ]


def reference_parts() -> list[tuple[str, type[BaseModel]]]:
    from marea.cluster.config import MasterSection
    from marea.config import MareaConfig

    return [("marea.toml", MareaConfig), ("cluster.toml: the `[master]` section", _MasterFile(MasterSection))]


def _MasterFile(master: type[BaseModel]) -> type[BaseModel]:
    """A model with one field, `master`, so that the cluster file's own section is shown as `[master]`."""
    from pydantic import create_model

    return create_model("ClusterFileMaster", master=(master, ...))


def reference() -> str:
    return render(reference_parts())
