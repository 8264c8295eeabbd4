"""JSON-schema rewriting that both the host and backends use (pure Python)."""

from __future__ import annotations

from typing import Any

#: Keywords whose values are data, not schemas: never rewritten.
_DATA = ("enum", "const", "default", "examples")


def close_objects(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever an object lists its ``properties`` and
    says nothing about others (a new value; the caller's schema is not changed).

    What OpenAI's strict mode means, and what a constrained tool call needs: a weak model left free
    to invent keys may never close the object. Recursive: callers cap the nesting first.
    """
    if isinstance(schema, list):
        return [close_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DATA:
            out[key] = value
        elif key == "properties" and isinstance(value, dict):  # its keys are names, not schemas
            out[key] = {name: close_objects(sub) for name, sub in value.items()}
        else:  # each subtree once: walking "properties" twice was exponential in the nesting (issue 26)
            out[key] = close_objects(value)
    if isinstance(schema.get("properties"), dict):
        out.setdefault("additionalProperties", False)
    return out
