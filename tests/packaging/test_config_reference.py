"""docs/configuration.md is `marea config reference`, and the reference covers every key of the models."""

from __future__ import annotations

import inspect
from pathlib import Path

from pydantic import BaseModel, Field, create_model

from marea.cluster.config import MasterSection
from marea.config import MareaConfig, _Strict
from marea.config_reference import missing_meanings, reference_parts, render
from tests.conftest import run_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_is_the_generated_reference() -> None:
    res = run_cli("config", "reference")
    assert res.returncode == 0, res.stderr
    assert DOC.read_text() == res.stdout, "docs/configuration.md is out of step with the models: run `make docs`"


def test_every_key_has_a_meaning() -> None:
    assert missing_meanings(reference_parts()) == []


def _walk(model: type[BaseModel], path: str) -> list[tuple[str, str]]:
    """(section header, key) of every field, found independently of the generator."""
    found: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        ann = field.annotation
        item = getattr(ann, "__args__", (None,))[0] if getattr(ann, "__origin__", None) is list else None
        if inspect.isclass(ann) and issubclass(ann, BaseModel):
            found += _walk(ann, f"{path}.{name}" if path else name)
        elif inspect.isclass(item) and issubclass(item, BaseModel):
            found += [(f"[[{name}]]", key) for _h, key in _walk(item, "")]
        else:
            found.append((f"[{path}]", name))
    return found


def test_every_field_of_the_models_is_in_the_reference() -> None:
    text = DOC.read_text()
    pairs = _walk(MareaConfig, "") + [("[master]", name) for name in MasterSection.model_fields]
    assert len(pairs) > 100
    for header, key in pairs:
        section = text.split(f"### `{header}`\n", 1)
        assert len(section) == 2, f"no section {header}"
        body = section[1].split("\n### ", 1)[0]
        assert f"| `{key}` |" in body, f"{header} {key} is not in docs/configuration.md"


class _NewSection(_Strict):
    """A section added later (as `[web]` will be): it appears with no change to the generator."""

    #: where the new endpoint listens
    listen: str = "127.0.0.1:9180"
    refresh_s: float = Field(default=2.0, gt=0, description="how often the page refreshes")
    undocumented: int = 0


def test_a_new_section_appears_by_itself_and_an_undocumented_key_is_caught() -> None:
    model = create_model("WithNew", __base__=MareaConfig, web=(_NewSection, _NewSection()))
    text = render([("marea.toml", model)])
    section = text.split("### `[web]`\n", 1)[1].split("\n### ", 1)[0]
    assert "as `[web]` will be" in section
    assert '| `listen` | string | `"127.0.0.1:9180"` | where the new endpoint listens |' in section
    assert "| `refresh_s` | number (> 0) | `2` | how often the page refreshes |" in section
    assert missing_meanings([("marea.toml", model)]) == ["[web] undocumented"]
