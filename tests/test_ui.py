"""The dashboard's HTTP side, without a browser: what ``/ui`` serves and with which headers, who may
read what, ``GET /ui/api/overview``, the live history, and the routes behind the page's actions.
(The page itself runs in Chromium in ``tests/test_ui_browser.py``.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from litestar.testing import TestClient

from host.app import create_app
from host.contract.spec import GiB, Placement, PlacementKind, Task
from host.metrics import Metrics
from host.scheduling.policy import Budgets
from host.scheduling.status import ModelState, ModelStatus
from host.testing.fakes import FakePlugin, fake_spec
from host.testing.http import assert_error
from host.testing.pytest_plugin import CPU_ONLY, TEST_CLIENT_HOST, make_config
from host.ui import History

STATIC = resources.files("host.ui").joinpath("static")
SAME_ORIGIN = f"http://{TEST_CLIENT_HOST}"
KEY = {"authorization": "Bearer k"}


@contextmanager
def client(
    server: dict[str, Any] | None = None, specs: list[Any] | None = None, budgets: Budgets = CPU_ONLY
) -> Iterator[TestClient]:
    config = make_config({"server": server or {}, "scheduler": {"min_residency_s": 0}})
    with TestClient(create_app(config, plugins=[FakePlugin(specs)], budgets=budgets)) as c:
        yield c


def test_the_page_and_its_files_come_from_this_server_under_a_strict_policy() -> None:
    with client() as c:
        page = c.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        for rule in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
            assert rule in policy
        assert "unsafe" not in policy
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        # No inline script, style or event handler: all of it lives in the files the policy allows.
        html = page.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "<style" not in html
        assert not re.search(r"\s(style|on[a-z]+)=", html)
        # Every file the page names is this server's, and is served.
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs and all(r.startswith("/") and not r.startswith("//") for r in refs)
        for ref in (r for r in refs if r.startswith("/ui/assets/")):
            asset = c.get(ref)
            assert asset.status_code == 200, ref
            assert asset.headers["content-security-policy"] == policy
        etag = c.get("/ui/assets/app.js").headers["etag"]
        assert c.get("/ui/assets/app.js", headers={"if-none-match": etag}).status_code == 304
        # The landing page links to the dashboard, under the same headers.
        landing = c.get("/")
        assert 'href="/ui"' in landing.text and landing.headers["x-frame-options"] == "DENY"
        assert_error(c.get("/ui/assets/missing.js"), 404)


def test_the_scripts_import_only_each_other_and_name_no_other_origin() -> None:
    scripts = {f.name: f.read_text(encoding="utf-8") for f in STATIC.iterdir() if f.name.endswith(".js")}
    for name, source in scripts.items():
        assert "http://" not in source.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in source, name
        for imported in re.findall(r'from "\./([^"]+)"', source):
            assert imported in scripts, (name, imported)
        assert "innerHTML" not in source and "eval(" not in source, name  # text only ever goes in as text
    for name in ("index.html", "landing.html", "style.css"):
        text = STATIC.joinpath(name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "@import" not in text, name


def test_a_keyed_server_serves_the_page_but_no_data_without_the_key() -> None:
    with client({"api_keys": ["k"]}) as c:
        page = c.get("/ui")
        assert page.status_code == 200 and '<meta name="plughost-auth" content="key">' in page.text
        assert c.get("/ui/assets/app.js").status_code == 200 and c.get("/").status_code == 200
        for path in ("/ui/api/overview", "/v1/models", "/ui/assets/../v1/models", "/ui/assets/a/b", "/ui/assets/.x"):
            assert_error(c.get(path), 401, code="invalid_api_key")
        assert c.get("/ui/api/overview", headers=KEY).status_code == 200
        # The page's actions: same-origin POSTs with the key pass, another site's are refused.
        assert c.post("/v1/models/fake-embed/pin", headers={**KEY, "origin": SAME_ORIGIN}).status_code == 200
        refused = c.post("/v1/models/fake-embed/unpin", headers={**KEY, "origin": "http://evil.example"})
        assert_error(refused, 403, code="forbidden", param="Origin")
    with client() as c:
        assert '<meta name="plughost-auth" content="none">' in c.get("/ui").text


def test_ui_false_turns_the_dashboard_off() -> None:
    with client({"ui": False}) as c:
        for path in ("/ui", "/ui/assets/app.js", "/ui/api/overview"):
            assert c.get(path).status_code == 404
        root = c.get("/")
        assert root.json()["info"]["title"] == "plughost"  # the OpenAPI document, as without the dashboard
        assert "content-security-policy" not in root.headers


def test_overview_has_each_device_budget_with_what_models_hold() -> None:
    gpu = (Placement(kind=PlacementKind.GPU, gpu_bytes=2 * GiB),)
    specs = [fake_spec("chat", Task.CHAT, placements=gpu), fake_spec("embed", Task.EMBEDDING)]
    with client(specs=specs, budgets=Budgets(gpus=(8 * GiB,), host=16 * GiB)) as c:
        before = c.get("/ui/api/overview").json()
        assert [(d["name"], d["kind"], d["budget_bytes"], d["used_bytes"]) for d in before["devices"]] == [
            ("cuda:0", "gpu", 8 * GiB, 0),
            ("cpu", "host", 16 * GiB, 0),
        ]
        assert before["features"] == {"pin": True} and before["demo"] == [] and before["ready"]
        assert c.post("/v1/models/chat/load").status_code == 200
        assert c.post("/v1/models/embed/load").status_code == 200
        after = {d["name"]: d["used_bytes"] for d in c.get("/ui/api/overview").json()["devices"]}
        assert after == {"cuda:0": 2 * GiB, "cpu": 1 * GiB}


def _status(queued: int, in_flight: int) -> ModelStatus:
    return ModelStatus(
        id="m",
        task=Task.CHAT,
        plugin="p",
        state=ModelState.RESIDENT,
        placement=None,
        device=None,
        gpu_bytes=0,
        host_bytes=0,
        in_flight=in_flight,
        queued=queued,
        last_used=None,
        pinned=False,
        error=None,
    )


def test_history_turns_the_counters_into_rates_of_model_work() -> None:
    metrics = Metrics()
    now = [1000.0]
    history = History(metrics, lambda: [_status(3, 1), _status(1, 2)], clock=lambda: now[0], interval_s=2)
    assert history.sample() is None  # the first sample only sets the baseline
    for _ in range(4):
        metrics.request("POST", "/v1/embeddings", 200, 0.1)
    metrics.request("POST", "/v1/chat/completions", 500, 0.1)  # failed work is work too
    metrics.request("POST", "/v1/models/{model_path:path}", 200, 0.1)  # management: not counted
    metrics.request("POST", "/ui/anything", 200, 0.1)
    metrics.request("GET", "/v1/models", 200, 0.1)
    metrics.request("POST", "unmatched", 404, 0.1)
    metrics.tokens("m", prompt=100, generated=20)
    metrics.first_token("m", 0.2)
    metrics.first_token("m", 0.4)
    now[0] += 2
    point = history.sample()
    assert point is not None
    assert (point.requests_per_s, point.prompt_tokens_per_s, point.generated_tokens_per_s) == (2.5, 50, 10)
    assert abs((point.ttft_s or 0) - 0.3) < 1e-9 and (point.queued, point.in_flight) == (4, 3)
    now[0] += 2
    quiet = history.sample()
    assert quiet is not None and quiet.requests_per_s == 0 and quiet.ttft_s is None
    assert [p.t for p in history.points] == [1002.0, 1004.0]


def test_pin_unpin_and_unload_with_a_wait_over_http() -> None:
    with client(specs=[fake_spec("e", Task.EMBEDDING)]) as c:
        assert c.post("/v1/models/e/pin").json()["status"]["pinned"] is True
        assert c.get("/v1/models/e").json()["status"]["pinned"] is True
        assert c.post("/v1/models/e/unpin").json()["status"]["pinned"] is False
        assert c.post("/v1/models/e/load").json()["status"]["state"] == "resident"
        assert c.post("/v1/models/e/unload?wait_s=5").json()["status"]["state"] == "available"
        assert_error(c.post("/v1/models/e/unload?wait_s=601"), 400, code="invalid_value", param="wait_s")
        assert_error(c.post("/v1/models/e/unload?wait_s=nan"), 400, code="invalid_value", param="wait_s")
        assert_error(c.post("/v1/models/e/unload?wait_s=soon"), 400)
        assert "/pin" in assert_error(c.post("/v1/models/e/explode"), 404)["message"]
        status = c.get("/v1/models/e").json()["status"]
        assert {"keep_alive_s", "expires_in_s", "error_request_id"} <= set(status)


def test_a_failed_load_shows_the_request_id_of_the_request_that_started_it() -> None:
    with client(specs=[fake_spec("bad", Task.EMBEDDING, fail_loads=[1])]) as c:
        failed = c.post("/v1/embeddings", json={"model": "bad", "input": "x"}, headers={"x-request-id": "rid-42"})
        assert_error(failed, 503, code="model_load_failed")
        status = c.get("/v1/models/bad").json()["status"]
        assert status["state"] == "failed" and status["error"] and status["error_request_id"] == "rid-42"
