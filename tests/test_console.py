"""The console's pages and forms in-process (fast layer); the browser tests are test_console_browser.py."""
from __future__ import annotations

from typing import Literal, Optional

import pytest
from pydantic import BaseModel, Field

from app.console.forms import kind_forms, param_fields
from impress.contract import DetectParams, EvaluateParams, PurifyOverrides
from impress.scenarios import MimicryParams


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
                                         ("evaluate", EvaluateParams), ("mimicry", MimicryParams)])
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
        kinds: list[Literal["x", "y"]] = ["y"]

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
    assert (fields["kinds"].widget, fields["kinds"].value, fields["kinds"].suggestions) == ("list", "y", ("x", "y"))


def test_every_job_route_gets_a_form_with_its_uploads(fast_api):
    forms = {form.kind: form for form in kind_forms(fast_api[0].app.openapi())}
    assert list(forms) == ["purify", "protect", "detect", "evaluate", "mimicry"]
    assert [(f.name, f.required) for f in forms["protect"].files] == [("images", True), ("target", False)]
    # images or image_url fields: neither is required on its own
    assert [(f.name, f.required) for f in forms["purify"].files] == [("images", False)]
    assert [f.name for f in forms["evaluate"].files] == ["clean", "protected", "purified", "mask"]
    assert forms["evaluate"].files[0].required and forms["evaluate"].summary
    protections = next(f for f in forms["evaluate"].params if f.name == "protections")
    assert protections.widget == "list" and "photoguard-8" in protections.suggestions
    edit = next(f for f in forms["evaluate"].params if f.name == "edit")
    assert edit.widget == "text" and "inpaint" in edit.description     # a nested model, sent as text
