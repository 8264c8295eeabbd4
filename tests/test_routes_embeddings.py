"""``POST /v1/embeddings`` against the fake backend: shapes, input forms, encodings, validation."""

from __future__ import annotations

import base64
import math
from typing import Any

import httpx
import numpy as np
import pytest
from litestar.testing import TestClient

from host.contract.config import ServerConfig
from host.testing.fakes import FakePlugin
from host.testing.http import EMBED, assert_error

USER = [{"role": "user", "content": "hi there"}]


# -- embeddings ------------------------------------------------------------------------------------------


def embed(client: TestClient, input: Any, **body: Any) -> httpx.Response:
    return client.post(EMBED, json={"model": "fake-embed", "input": input, **body})


def test_embeddings_shape(client: TestClient) -> None:
    body = embed(client, "文本向量化测试").json()
    assert body["object"] == "list"
    assert body["model"] == "fake-embed"
    [item] = body["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == 8
    assert math.isclose(sum(v * v for v in item["embedding"]), 1.0, rel_tol=1e-6)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]


@pytest.mark.parametrize(
    ("value", "count"),
    [
        ("one text", 1),
        (["a", "b", "c"], 3),
        ([1, 2, 3], 1),
        ([[1, 2], [3], [4, 5, 6]], 3),
    ],
)
def test_embeddings_input_forms(client: TestClient, plugin: FakePlugin, value: Any, count: int) -> None:
    data = embed(client, value).json()["data"]
    assert [d["index"] for d in data] == list(range(count))
    request = plugin.calls.of("embed")[0]
    assert len(request.texts if request.texts is not None else request.token_ids) == count
    if isinstance(value, list) and isinstance(value[0], int):
        assert request.token_ids == (tuple(value),)
    elif isinstance(value, list) and isinstance(value[0], list):
        assert request.token_ids == tuple(tuple(v) for v in value)
    else:
        assert request.texts == ((value,) if isinstance(value, str) else tuple(value))


def test_embeddings_keep_input_order(client: TestClient) -> None:
    single = {t: embed(client, t).json()["data"][0]["embedding"] for t in ("x", "y", "z")}
    batch = embed(client, ["z", "x", "y"]).json()["data"]
    assert [d["embedding"] for d in batch] == [single["z"], single["x"], single["y"]]


def test_embeddings_base64_equals_float(client: TestClient) -> None:
    floats = embed(client, ["a", "b"], encoding_format="float").json()["data"]
    encoded = embed(client, ["a", "b"], encoding_format="base64").json()["data"]
    for f, e in zip(floats, encoded, strict=True):
        assert isinstance(e["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(e["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(f["embedding"], dtype=np.float32))


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (["text", 1], "input"),
        ([[1, 2], "text"], "input"),
        ([[1], 2], "input"),
        ([], "input"),
        ("", "input"),
        ([[]], "input"),
        (["a", ""], "input"),
        ({"text": "a"}, "input"),
        (None, "input"),
        ([[1, "a"]], "input[0][1]"),
        ([1.5], "input[0]"),
    ],
)
def test_embeddings_bad_input_names_the_field(client: TestClient, value: Any, param: str) -> None:
    assert_error(embed(client, value), 400, param=param)


def test_embeddings_too_many_inputs(client: TestClient, limits: ServerConfig) -> None:
    assert embed(client, ["t"] * limits.max_embedding_inputs).status_code == 200
    error = assert_error(embed(client, ["t"] * (limits.max_embedding_inputs + 1)), 400, param="input")
    assert f"limit is {limits.max_embedding_inputs}" in error["message"]
    assert_error(embed(client, [[1]] * (limits.max_embedding_inputs + 1)), 400, param="input")


@pytest.mark.parametrize(
    ("field", "value"), [("encoding_format", "hex"), ("dimensions", 0), ("dimensions", "8"), ("input_type", "banana")]
)
def test_embeddings_bad_options_name_the_field(client: TestClient, field: str, value: Any) -> None:
    assert_error(embed(client, "a", **{field: value}), 400, param=field)


def test_embeddings_dimensions(client: TestClient) -> None:
    vector = embed(client, "a", dimensions=4).json()["data"][0]["embedding"]
    assert len(vector) == 4
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-6)
    assert_error(embed(client, "a", dimensions=9), 400, param="dimensions")  # beyond the model: the backend says so


def test_embeddings_query_type_and_alias(client: TestClient, plugin: FakePlugin) -> None:
    r = client.post(EMBED, json={"model": "text-embedding-3-small", "input": "q", "input_type": "search_query"})
    assert r.json()["model"] == "fake-embed"
    assert plugin.calls.of("embed")[0].input_type == "query"
