"""Caps on the JSON schemas a request asks the grammar to enforce (pure Python, no torch).

llguidance compiles a schema into an Earley grammar; some schemas make it explode. Measured with
llguidance 1.9.1 and the Qwen2.5 vocabulary on one core of a shared machine: an object with 10,000
optional properties took 73 s to compile and then failed at its second token ("Current row has
40007 items; max is 2000"), 500 optional properties already fail (1,000 took 0.5 s), 5,000 ``anyOf``
branches fail the same way. The caps here turn such schemas into a 400 naming the field and the limit before anything
is compiled; what passes them is then dry-run by :class:`chat_qwen_awq.grammar.Grammars`.

- ``max_schema_bytes``: the schema's compact JSON text (bounds the compile time);
- ``max_depth``: nesting of objects and arrays in the schema document;
- ``max_alternatives``: the largest choice at one point: an object's ``properties``, the
  branches of an ``anyOf``/``oneOf``/``allOf``, a list of ``type`` s (``enum`` values compile into
  a lexer, which takes tens of thousands: they count in the schema's bytes only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from host.sdk import InvalidRequest

if TYPE_CHECKING:
    from chat_qwen_awq.sizing import ChatOptions

_BRANCHES = ("anyOf", "oneOf", "allOf", "prefixItems")


@dataclass(frozen=True)
class SchemaLimits:
    """The caps (``ChatOptions.grammar_max_*``); ``option`` prefixes the option names in messages."""

    max_schema_bytes: int = 65536
    max_depth: int = 64
    max_alternatives: int = 256
    option: str = "options"

    @classmethod
    def of(cls, options: ChatOptions, model_id: str) -> SchemaLimits:
        """The caps ``models.<model_id>.options`` set."""
        return cls(
            max_schema_bytes=options.grammar_max_schema_bytes,
            max_depth=options.grammar_max_depth,
            max_alternatives=options.grammar_max_alternatives,
            option=f"models.{model_id}.options",
        )


def check_schema(schema: Any, limits: SchemaLimits, param: str) -> None:
    """Raise a 400 naming ``param`` and the limit when ``schema`` is over one of ``limits``."""
    size = len(msgspec.json.encode(schema))
    if size > limits.max_schema_bytes:
        raise InvalidRequest(
            f"The schema is {size} bytes of JSON; this server enforces schemas of at most "
            f"{limits.max_schema_bytes} bytes ({limits.option}.grammar_max_schema_bytes).",
            param=param,
        )
    # Iterative: a hostile document may nest deeper than Python recurses.
    stack: list[tuple[Any, int, str]] = [(schema, 1, param)]
    while stack:
        node, depth, where = stack.pop()
        if depth > limits.max_depth:
            raise InvalidRequest(
                f"The schema nests {depth} levels deep at {where}; this server enforces schemas nested at most "
                f"{limits.max_depth} levels ({limits.option}.grammar_max_depth).",
                param=param,
            )
        if isinstance(node, list):
            stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        _check_alternatives(node, limits, param, where)
        stack.extend((value, depth + 1, f"{where}.{key}") for key, value in node.items())


def _check_alternatives(node: dict[str, Any], limits: SchemaLimits, param: str, where: str) -> None:
    choices = [("properties", node.get("properties")), ("type", node.get("type"))]
    choices += [(key, node.get(key)) for key in _BRANCHES]
    for key, value in choices:
        count = len(value) if isinstance(value, (dict, list)) else 0
        if count > limits.max_alternatives:
            raise InvalidRequest(
                f"The schema's '{key}' at {where} lists {count} alternatives; this server enforces at most "
                f"{limits.max_alternatives} at one point ({limits.option}.grammar_max_alternatives).",
                param=param,
            )
