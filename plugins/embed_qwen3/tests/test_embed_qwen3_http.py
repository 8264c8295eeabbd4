"""``/v1/embeddings`` end to end: a real server, the official ``openai`` client, httpx, error envelopes."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from embed_qwen3.testing import DEFAULT_TASK, MODEL, PLUGIN_ROOT, TEXTS, TINY, Recipe, cosines

pytestmark = pytest.mark.slow


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)


def vectors_of(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    rows = [
        np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        if isinstance(d["embedding"], str)
        else np.asarray(d["embedding"], dtype=np.float32)
        for d in data
    ]
    return np.stack(rows)


def test_openai_client_with_default_settings(server_url: str, recipe: Recipe) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server_url}/v1", api_key="dummy", max_retries=0)
    response = client.embeddings.create(model=MODEL, input=TEXTS[:4])  # the SDK asks for base64
    got = np.asarray([d.embedding for d in response.data], dtype=np.float32)
    assert response.model == MODEL and len(response.data) == 4
    assert cosines(got, recipe.embed(TEXTS[:4])).min() >= 0.9999
    assert response.usage.prompt_tokens == sum(recipe.token_count(t) for t in TEXTS[:4])
    single = client.embeddings.create(model=MODEL, input="测试文本")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 64
    floats = client.embeddings.create(model=MODEL, input=TEXTS[:4], encoding_format="float")
    np.testing.assert_array_equal(np.asarray([d.embedding for d in floats.data], dtype=np.float32), got)


def test_base64_equals_float(server_url: str) -> None:
    as_float = post(server_url, {"model": MODEL, "input": TEXTS, "encoding_format": "float"})
    as_b64 = post(server_url, {"model": MODEL, "input": TEXTS, "encoding_format": "base64"})
    assert isinstance(as_b64.json()["data"][0]["embedding"], str)
    np.testing.assert_array_equal(vectors_of(as_b64), vectors_of(as_float))
    assert as_float.json()["usage"] == as_b64.json()["usage"]


def test_token_id_input(server_url: str, recipe: Recipe) -> None:
    ids = [recipe.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:3]]
    from_text = post(server_url, {"model": MODEL, "input": TEXTS[:3]})
    from_ids = post(server_url, {"model": MODEL, "input": ids})
    one = post(server_url, {"model": MODEL, "input": ids[0]})  # a single list of ids
    assert np.abs(vectors_of(from_ids) - vectors_of(from_text)).max() <= 1e-6
    assert np.abs(vectors_of(one)[0] - vectors_of(from_text)[0]).max() <= 1e-6
    assert (
        from_ids.json()["usage"]["prompt_tokens"]
        == from_text.json()["usage"]["prompt_tokens"]
        == sum(len(i) + 1 for i in ids)
    )


def test_queries_and_dimensions_over_http(server_url: str, recipe: Recipe) -> None:
    response = post(server_url, {"model": MODEL, "input": ["Explain gravity"], "input_type": "query", "dimensions": 32})
    expected = recipe.embed([f"Instruct: {DEFAULT_TASK}\nQuery:Explain gravity"])[:, :32]
    got = vectors_of(response)
    assert got.shape == (1, 32)
    assert cosines(got, expected).min() >= 0.9999


@pytest.mark.parametrize(
    "body, param, needle",
    [
        ({"input": [[1, 2], [3, 10**6]]}, "input", "outside the vocabulary"),
        ({"input": [1, -5]}, "input", "negative token id"),
        ({"input": "word " * 300}, "input", "at most 128 tokens"),
        ({"input": "x", "dimensions": 65}, "dimensions", "between 32 and 64"),
        ({"input": "x", "dimensions": 16}, "dimensions", "between 32 and 64"),
        ({"input": "x", "dimensions": 0}, "dimensions", ""),
        ({"input": ["fine", ""]}, "input", "input[1]"),
        ({"input": ""}, "input", "empty"),
        ({"input": []}, "input", "empty"),
        ({"input": ["text", [1, 2]]}, "input", "not a mix"),
        ({"input": "x", "input_type": "document", "instruction": "t"}, "instruction", "queries only"),
    ],
)
def test_bad_requests_are_400(server_url: str, body: dict[str, Any], param: str, needle: str) -> None:
    response = post(server_url, {"model": MODEL, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert needle in error["message"]
    assert post(server_url, {"model": MODEL, "input": "still serving"}).status_code == 200


def test_truncate_on_request(server_url: str) -> None:
    response = post(server_url, {"model": MODEL, "input": "word " * 300, "truncate": True})
    assert response.status_code == 200 and response.json()["usage"]["prompt_tokens"] == 128


def test_missing_weights_fail_the_load_naming_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from litestar.testing import TestClient

    import embed_qwen3
    from host.app import create_app
    from host.testing.pytest_plugin import CPU_ONLY, make_config

    # demo: false, else the demo profile would serve the stand-in for weights that are not on disk
    config = make_config({"demo": False, "models": {MODEL: {"weights": str(tmp_path / "missing")}}})
    with TestClient(create_app(config, plugins=[embed_qwen3], budgets=CPU_ONLY)) as client:
        # Litestar's logging set-up at start-up replaces the root handlers, caplog's among them.
        logging.getLogger("plughost").addHandler(caplog.handler)
        try:
            response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
        finally:
            logging.getLogger("plughost").removeHandler(caplog.handler)
    assert response.status_code == 503
    error = response.json()["error"]
    # The client learns that the load failed, not where the weights are (issue 12, finding 7);
    # the log names the key to fix.
    assert error["code"] == "model_load_failed" and str(tmp_path) not in response.text
    assert f"models.{MODEL}.weights" in caplog.text


def test_batch_metrics(server_url: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert post(server_url, {"model": MODEL, "input": TEXTS[:5]}).status_code == 200
    text = httpx.get(f"{server_url}/metrics", timeout=10).text
    got = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model") == MODEL and s.name.startswith("plughost_batch")
    }
    assert got["plughost_batches_total"] >= 1 and got["plughost_batch_rows_total"] >= 5
    assert got["plughost_batch_padded_tokens_total"] >= got["plughost_batch_tokens_total"] > 0


def test_discovered_from_a_plugin_folder(tmp_path: Path) -> None:
    from litestar.testing import TestClient

    from host.app import create_app
    from host.testing.pytest_plugin import CPU_ONLY, make_config

    (tmp_path / "embed_qwen3").symlink_to(PLUGIN_ROOT, target_is_directory=True)
    config = make_config({"plugins": {"paths": [str(tmp_path)]}, "models": {MODEL: {"weights": TINY}}})
    with TestClient(create_app(config, budgets=CPU_ONLY)) as client:
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models[MODEL]["owned_by"] == "embed_qwen3" and models[MODEL]["task"] == "embedding"
        response = client.post("/v1/embeddings", json={"model": MODEL.lower(), "input": "x"})
        assert response.status_code == 200 and response.json()["model"] == MODEL
        # tiny weights are not the published model: its hub id is no alias then
        assert (
            client.post("/v1/embeddings", json={"model": "Qwen/Qwen3-Embedding-0.6B", "input": "x"}).status_code == 404
        )
