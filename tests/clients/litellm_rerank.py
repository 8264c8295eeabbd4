"""Rerank through litellm's ``cohere`` (v1 and v2) and ``hosted_vllm`` providers; run by
``tests/test_clients_litellm.py`` with the interpreter of ``.venv-litellm`` (see scripts/bootstrap).

Usage: ``python litellm_rerank.py BASE_URL MODEL``; prints one JSON object: per provider, the
``(index, relevance_score, document text)`` of every result.
"""

import json
import sys

import litellm

base, model = sys.argv[1], sys.argv[2]
query = "What is the capital of China?"
documents = ["The capital of China is Beijing.", "Gravity pulls objects together.", "北京是中国的首都。"]
calls = {
    "cohere_v1": {"model": f"cohere/{model}", "api_base": f"{base}/v1/rerank"},
    "cohere_v2": {"model": f"cohere/{model}", "api_base": base},
    "hosted_vllm": {"model": f"hosted_vllm/{model}", "api_base": base},
}
out = {}
for name, how in calls.items():
    response = litellm.rerank(query=query, documents=documents, top_n=2, api_key="none", **how)
    out[name] = [
        [r["index"], r["relevance_score"], (r.get("document") or {}).get("text")] for r in response.results or []
    ]
print(json.dumps(out))
