"""Compact JSON schemas for tools/list.

Every byte of ``tools/list`` is sent into the agent's context with each session.
Pydantic's schemas are verbose (titles on every field, ``anyOf: [X, null]`` for
optionals, ``$defs`` indirection), so we publish an equivalent compact form. Results
are dumped with ``exclude_none``, so "optional" never means "null on the wire" and
dropping the null branch keeps the schema truthful.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DROP = {"title", "additionalProperties"}


def compact_schema(schema: dict[str, Any], *, keep_descriptions: bool = False) -> dict[str, Any]:
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
        any_of = node.get("anyOf")
        if isinstance(any_of, list):
            branches = [b for b in any_of if b != {"type": "null"}]
            if len(branches) == 1:
                merged = {k: v for k, v in node.items() if k != "anyOf"}
                merged.update(branches[0])
                return walk(merged)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key == "$defs" or (key == "description" and not keep_descriptions):
                continue
            if key == "default" and value in (None, [], False):
                continue
            if key == "properties":
                out[key] = {name: walk(sub) for name, sub in value.items()}
            else:
                out[key] = walk(value)
        return out

    result: dict[str, Any] = walk(schema)
    return result


def output_schema(model: type[BaseModel], fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The model's schema, optionally trimmed to the ``fields`` an agent acts on.

    Trimming stays truthful: the listed properties keep their exact types, the rest are
    still returned and allowed (no ``additionalProperties: false``), and nested objects
    of the trimmed-away fields are not spelled out.
    """
    schema = compact_schema(model.model_json_schema())
    if fields is not None:
        props = schema["properties"]
        schema["properties"] = {name: props[name] for name in fields}
        schema["required"] = [r for r in schema.get("required", []) if r in fields]
    return schema
