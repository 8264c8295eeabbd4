"""Issue 12, finding 10: LangChain's ``OpenAIEmbeddings`` with its defaults gets the right vectors.

By default it tokenises every text with tiktoken's ``cl100k_base`` and sends the token ids; the
server decodes them with ``cl100k_base`` (``token_ids: cl100k``, the default) and embeds the
text, so the vectors equal those of the same texts sent as strings. ``token_ids: reject`` is a
400 that says what to set; ``token_ids: model`` takes the ids as the model's own.

tiktoken downloads ``cl100k_base`` on first use; offline, the test gives it the identical file
that ``bpe-openai`` bundles (tiktoken checks its SHA-256).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embed_qwen3.testing import MODEL, TINY

pytestmark = pytest.mark.slow

TEXTS = ["hello world", "The Great Wall of China is long.", "长城在哪里？", "Explain gravity\nin two lines."]
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    folder = tmp_path_factory.mktemp("tiktoken")
    data = gzip.decompress((importlib.resources.files("bpe_openai") / "data" / "cl100k_base.tiktoken.gz").read_bytes())
    (folder / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(folder))
        yield


def _server(mode: str | None) -> Iterator[str]:
    import embed_qwen3
    from host.app import create_app
    from host.testing.pytest_plugin import CPU_ONLY, make_config
    from host.testing.server import serve_in_thread

    options = {"token_ids": mode} if mode else {}
    config = make_config({"models": {MODEL: {"weights": TINY, "options": options}}})
    with serve_in_thread(create_app(config, plugins=[embed_qwen3], budgets=CPU_ONLY)) as url:
        yield url


@pytest.fixture(scope="module")
def default_url(tiny_path: Path) -> Iterator[str]:
    yield from _server(None)


def _as_strings(url: str, texts: list[str]) -> np.ndarray:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="dummy", max_retries=0)
    response = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    return np.asarray([d.embedding for d in response.data])


def test_cl100k_is_what_langchain_sends() -> None:
    from host.toolkit.openai_tokens import decode_cl100k

    assert decode_cl100k([[15339, 1917]]) == ["hello world"]


def test_langchain_defaults_get_the_vectors_of_the_texts(default_url: str, tiktoken_cache: None) -> None:
    from langchain_openai import OpenAIEmbeddings

    client = OpenAIEmbeddings(base_url=f"{default_url}/v1", model=MODEL, api_key="dummy", max_retries=0)
    assert client.check_embedding_ctx_length  # the default: texts go out as cl100k token ids
    got = np.asarray(client.embed_documents(TEXTS))
    query = np.asarray(client.embed_query(TEXTS[1]))
    expected = _as_strings(default_url, TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(query, expected[1], atol=1e-5)


def test_reject_mode_says_what_to_set(tiny_path: Path, tiktoken_cache: None) -> None:
    import openai
    from langchain_openai import OpenAIEmbeddings

    for url in _server("reject"):
        client = OpenAIEmbeddings(base_url=f"{url}/v1", model=MODEL, api_key="dummy", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.embed_documents(TEXTS)
        assert "check_embedding_ctx_length=False" in caught.value.body["message"]
        plain = OpenAIEmbeddings(
            base_url=f"{url}/v1", model=MODEL, api_key="dummy", max_retries=0, check_embedding_ctx_length=False
        )
        np.testing.assert_allclose(np.asarray(plain.embed_documents(TEXTS)), _as_strings(url, TEXTS), atol=1e-5)


def test_model_mode_takes_the_models_own_ids(tiny_path: Path) -> None:
    import httpx
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_path))
    ids = tok(TEXTS[1], add_special_tokens=False)["input_ids"]
    for url in _server("model"):
        response = httpx.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": [ids]}, timeout=60)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], _as_strings(url, TEXTS[1:2])[0], atol=1e-5)
