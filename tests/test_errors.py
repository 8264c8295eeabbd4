"""The error edge (host/routes/errors.py) and the one msgspec error parser (host/contract/errors.py)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)

from host.contract.errors import parse_msgspec_error
from host.routes.errors import error_response, from_http_exception


class Inner(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    size: int = 0


class Outer(msgspec.Struct, forbid_unknown_fields=True):
    items: list[Inner]
    label: str = ""


def problem(data: Any) -> tuple[str, str, str | None]:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(data, Outer)
    return parse_msgspec_error(info.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"items": [{"name": "a", "size": "big"}]}, ("Expected `int`, got `str`", "items[0].size", None)),
        ({"items": [{"size": 1}]}, ("Object missing required field `name`", "items[0].name", "missing")),
        ({}, ("Object missing required field `items`", "items", "missing")),
        ({"items": [], "lable": "x"}, ("Object contains unknown field `lable`", "lable", "unknown")),
        (
            {"items": [{"name": "a", "colour": 1}]},
            ("Object contains unknown field `colour`", "items[0].colour", "unknown"),
        ),
        ([], ("Expected `object`, got `array`", "", None)),
    ],
)
def test_parse_msgspec_error(data: Any, expected: tuple[str, str, str | None]) -> None:
    assert tuple(problem(data)) == expected


def test_parse_msgspec_decode_error_has_no_path() -> None:
    with pytest.raises(msgspec.DecodeError) as info:
        msgspec.json.decode(b"{not json", type=Outer)
    message, path, field = parse_msgspec_error(info.value)
    assert message.startswith("JSON is malformed") and (path, field) == ("", None)


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code"),
    [
        (NotAuthorizedException(), 401, "authentication_error", "http_401"),
        (PermissionDeniedException(), 403, "permission_error", "http_403"),
        (ValidationException("Validation failed for POST /x"), 400, "invalid_request_error", "invalid_value"),
        (HTTPException(status_code=418, detail="teapot"), 418, "invalid_request_error", "http_418"),
        (HTTPException(status_code=502, detail="bad gateway"), 502, "server_error", "http_502"),
    ],
)
def test_litestar_http_errors_become_plughost_errors(exc: HTTPException, status: int, type_: str, code: str) -> None:
    response = error_response(from_http_exception(exc))
    assert response.status_code == status
    body = msgspec.to_builtins(response.content)
    assert body["error"]["type"] == type_ and body["error"]["code"] == code
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_http_error_headers_are_kept() -> None:
    response = error_response(from_http_exception(TooManyRequestsException(headers={"Retry-After": "7"})))
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert msgspec.to_builtins(response.content)["error"]["type"] == "rate_limit_error"


def test_a_litestar_500_keeps_a_generic_message() -> None:
    response = error_response(from_http_exception(InternalServerException(detail="db password is hunter2")))
    body = msgspec.to_builtins(response.content)
    assert response.status_code == 500
    assert body["error"] == {
        "message": "Internal server error",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
