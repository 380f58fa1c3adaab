"""The console's pages and forms in-process (fast layer); the browser tests are test_console_browser.py."""
from __future__ import annotations

import time
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, Field

from app.console.forms import KIND_FORMS, param_fields
from impress.contract import DetectParams, EvaluateParams, JobKind, PurifyOverrides
from tests.support import photo, png_bytes

PNG = ("a.png", png_bytes(photo()), "image/png")


@pytest.mark.parametrize("page, script", [("try", "try.js"), ("jobs", "jobs.js"), ("service", "service.js")])
def test_each_page_renders_with_its_script(fast_api, page, script):
    client = fast_api[0]
    r = client.get(f"/console/{page}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f"/console/static/{script}" in r.text and 'id="api-key"' in r.text
    assert client.get(f"/console/static/{script}").headers["content-type"].startswith("text/javascript")


def test_console_root_leads_to_try_and_stays_out_of_the_openapi_document(fast_api):
    client = fast_api[0]
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/try"
    assert not [path for path in client.get("/openapi.json").json()["paths"] if path.startswith("/console")]


@pytest.mark.parametrize("kind, model", [("purify", PurifyOverrides), ("detect", DetectParams),
                                         ("evaluate", EvaluateParams)])
def test_try_page_has_a_control_for_every_contract_parameter(fast_api, kind, model):
    html = fast_api[0].get("/console/try").text
    assert f'action="/v1/{kind}"' in html
    for name in model.model_fields:
        assert f'id="{kind}-{name}" name="{name}"' in html, name


def test_a_new_parameter_gets_its_control_from_the_schema():
    class Knobs(BaseModel):
        mode: Literal["a", "b"] = "b"
        steps: Optional[int] = Field(None, ge=1, le=9, description="how many")
        rate: float = Field(0.5, gt=0, lt=1)
        flag: Optional[bool] = None
        names: list[str] = []

    fields = {f.name: f for f in param_fields(Knobs)}
    assert (fields["mode"].widget, fields["mode"].choices, fields["mode"].value, fields["mode"].optional) == \
        ("select", ("a", "b"), "b", False)
    steps = fields["steps"]
    assert (steps.widget, steps.step, steps.minimum, steps.maximum, steps.value, steps.optional) == \
        ("number", "1", 1, 9, "", True)
    assert steps.bounds == "≥ 1, ≤ 9" and steps.description == "how many"
    assert (fields["rate"].step, fields["rate"].bounds, fields["rate"].value) == ("any", "> 0, < 1", "0.5")
    assert (fields["flag"].widget, fields["flag"].choices) == ("select", ("true", "false"))
    assert (fields["names"].widget, fields["names"].value) == ("list", "")


def test_evaluate_lists_suggest_the_engines_method_names():
    evaluate = next(form for form in KIND_FORMS if form.kind.value == "evaluate")
    protections = next(f for f in evaluate.params if f.name == "protections")
    assert protections.widget == "list" and "photoguard-8" in protections.suggestions
    assert [f.name for f in evaluate.files] == ["clean", "protected", "purified"]


def test_list_jobs_newest_first_within_the_limit(fast_api):
    client, store, _, _ = fast_api
    ids = []
    for _ in range(3):
        ids.append(client.post("/v1/purify", files=[("images", PNG)], data={"iters": "5"}).json()["id"])
        time.sleep(0.005)   # distinct creation times (milliseconds)
    listed = client.get("/v1/jobs", params={"limit": 2}).json()["jobs"]
    assert [job["id"] for job in listed] == ids[:0:-1]
    assert listed[0]["state"] == "queued" and listed[0]["kind"] == "purify"
    store.r.delete(store.keys.job(ids[2]))            # expired: its id is still in the index
    assert [job["id"] for job in client.get("/v1/jobs").json()["jobs"]] == [ids[1], ids[0]]
    r = client.get("/v1/jobs", params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "limit"


def test_the_jobs_index_forgets_ids_older_than_the_ttl(fast_store):
    old = fast_store.create(JobKind.detect, DetectParams(), [], vae="v", perceptual="dssim")
    fast_store.r.zadd(fast_store.keys.jobs(), {old.id: old.created_at - fast_store.ttl_s - 1})
    new = fast_store.create(JobKind.detect, DetectParams(), [], vae="v", perceptual="dssim")
    assert [i.decode() for i in fast_store.r.zrange(fast_store.keys.jobs(), 0, -1)] == [new.id]
