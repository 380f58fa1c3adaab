"""The console's pages (HTML, left out of the OpenAPI document). Everything they show comes from the
public API, called by the page's JavaScript with the key the user typed."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from impress.images import IMAGE_SUFFIXES, SUPPORTED_FORMATS

from ..deps import SettingsDep
from ..security_headers import CONSOLE_HEADERS
from .forms import kind_forms

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(env=Environment(loader=PackageLoader("app.console"), autoescape=select_autoescape()))


def page(request: Request, name: str, **context) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {"page": name.removesuffix(".html"), **context})
    response.headers.update(CONSOLE_HEADERS)
    return response


@router.get("")
def console_home() -> RedirectResponse:
    return RedirectResponse("/console/try")


@router.get("/try", response_class=HTMLResponse)
def try_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return page(request, "try.html", forms=kind_forms(request.app.openapi()), formats=SUPPORTED_FORMATS, accept=",".join(IMAGE_SUFFIXES),
                settings=settings)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return page(request, "jobs.html")


@router.get("/service", response_class=HTMLResponse)
def service_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return page(request, "service.html", settings=settings)
