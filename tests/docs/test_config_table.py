"""README's config-key table and the pydantic schema in mlgate.config say the same thing, key for key."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mlgate.config import PipelineConfig
from tests.conftest import REPO

README = REPO / "README.md"


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation holds (``Feature``, ``list[Threshold]``, ``X | None``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _is_list(annotation: object) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(typing.get_origin(a) is list for a in typing.get_args(annotation))


def _default_cell(field: FieldInfo) -> str:
    """How the table shows a field's default: ``required``, ``none``, ``all defaults`` or the value."""
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, BaseModel):
        return "all defaults"
    if isinstance(default, str):
        return f"`{default}`"
    return f"`{json.dumps(default)}`"


def schema_keys(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> dict[str, str]:
    """Every key a config file may hold, dotted (``data.features[].name``), with its default cell."""
    keys: dict[str, str] = {}
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        keys[key] = _default_cell(field)
        for sub in _models_in(field.annotation):
            keys.update(schema_keys(sub, key + ("[]." if _is_list(field.annotation) else ".")))
    return keys


def readme_keys() -> dict[str, str]:
    """The rows of README's config table (the one whose header is ``| key | default | what |``)."""
    lines = README.read_text().splitlines()
    start = lines.index("| key | default | what |")
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`", cells[0])
        assert match, f"README config table: the key cell {cells[0]!r} is not one `key`"
        assert match.group(1) not in rows, f"README config table: {match.group(1)} is listed twice"
        assert cells[2], f"README config table: {match.group(1)} says nothing in its 'what' cell"
        rows[match.group(1)] = cells[1]
    return rows


def test_schema_walk_sees_nested_and_list_models():
    keys = schema_keys()
    assert keys["data.features[].name"] == "required"
    assert keys["estimator.class"] == "required"  # the alias, as written in the file
    assert keys["split"] == "all defaults"


def test_every_schema_key_is_in_readme_and_nothing_else():
    schema, readme = schema_keys(), readme_keys()
    missing = [f"| `{k}` | {d} | ... |" for k, d in schema.items() if k not in readme]
    stale = sorted(set(readme) - set(schema))
    assert not missing, "README's config table lacks these rows:\n" + "\n".join(missing)
    assert not stale, f"README's config table lists keys the schema does not have: {stale}"


def test_readme_defaults_match_the_schema():
    schema, readme = schema_keys(), readme_keys()
    wrong = {k: (readme[k], schema[k]) for k in schema if k in readme and readme[k] != schema[k]}
    assert not wrong, "README's config table: (README's default, the schema's) differ: " + repr(wrong)


def test_readme_table_follows_the_schema_order_within_each_section():
    """Rows of one section stay together after their parent, so a reader finds a key where it belongs."""
    readme = list(readme_keys())
    for i, key in enumerate(readme):
        parent = key.rsplit(".", 1)[0].removesuffix("[]") if "." in key else None
        if parent is not None:
            assert parent in readme[:i], f"README config table: {key} comes before its section {parent}"
