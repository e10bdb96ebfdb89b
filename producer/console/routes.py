"""The console's routes under /ui/: pages over the API's own BuildClient. Every change is a POSTed form, checked
against CSRF by asgi-csrf before it gets here, answered by a redirect (post/redirect/get) or by the form again
with its problems beside their fields. The edge has already sent anyone without a session to sign in."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from config.settings import Settings
from core.errors import ImageBuilderError, InvalidSpec, NeverMatches
from core.phases import BuildPhase
from core.result import BuildResult
from core.sbom import SBOM_MEDIA_TYPE
from core.schedule import Policy, Schedule
from core.spec import ImageSpec
from core.stores.throttle import Door, Throttle
from core.tagging import resolve_target
from producer.client import BuildClient
from producer.console import present
from producer.console.forms import (
    GENERAL,
    MAX_TEXT_CHARS,
    ScheduleFields,
    SpecFields,
    SpecForm,
    imported,
)
from producer.console.sessions import CSRF_COOKIE, SESSION_COOKIE, Sessions
from producer.edge import SESSION_SCOPE, UNKNOWN_CLIENT
from producer.specfile import load_spec_text

HERE = Path(__file__).parent
SPECS_PER_PAGE = 50
BUILDS_SHOWN = 100
UPCOMING_RUNS = 3
MAX_OFFSET = 1_000_000
MAX_FILTER_CHARS = 128
CHART_W, CHART_H = 720, 160
HOME = "/ui/specs"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class Pages:
    """Renders the templates (autoescaped) with what every page needs, and the console's security headers."""

    def __init__(self, settings: Settings):
        self._templates = Jinja2Templates(directory=HERE / "templates")
        self._templates.env.filters.update(age=present.age, took=present.took, in_zone=present.in_zone,
                                           span=present.span, timing=present.timing, plain=present.without_ansi)
        self._templates.env.globals.update(reached=present.reached, PROGRESS=present.PROGRESS)
        self._settings = settings

    def render(self, request: Request, template: str, status: int = 200, /, **context) -> HTMLResponse:
        context = {"csrftoken": request.scope.get("csrftoken", str)(), "now": datetime.now(timezone.utc), **context}
        response = self._templates.TemplateResponse(request, template, context, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def error(self, request: Request, status: int, detail: str) -> HTMLResponse:
        return self.render(request, "error.html", status, status_code=status, detail=detail)

    def target(self, spec: ImageSpec) -> str | None:
        """Where the spec's image goes, or None where it could not be pushed (shown as a problem on save)."""
        try:
            return str(resolve_target(spec, self._settings))
        except ImageBuilderError:
            return None


def see(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def mount_console(api: FastAPI, client: BuildClient, settings: Settings, sessions: Sessions,
                  throttle: Throttle) -> Pages:
    """Serve the console under /ui/ (and redirect / to it); the Pages, for the app's error answers."""
    pages = Pages(settings)
    api.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")
    router = APIRouter(include_in_schema=False)
    _entry_routes(router, pages, sessions, throttle)
    _spec_routes(router, pages, client)
    _schedule_routes(router, pages, client)
    _build_routes(router, pages, client)
    _sbom_routes(router, client)
    _operations_routes(router, pages, client)
    api.include_router(router)
    return pages


def _entry_routes(router: APIRouter, pages: Pages, sessions: Sessions, throttle: Throttle) -> None:
    @router.get("/")
    @router.get("/ui/")
    def home() -> RedirectResponse:
        return RedirectResponse(HOME, status_code=307)

    @router.get("/ui/login")
    def login_page(request: Request, next: Annotated[str, Query(max_length=2048)] = HOME) -> HTMLResponse:
        return pages.render(request, "login.html", next=_local(next))

    @router.post("/ui/login")
    async def login(request: Request, token: Annotated[str, Form(max_length=4096)] = "",
                    next: Annotated[str, Form(max_length=2048)] = HOME) -> Response:
        address = request.client.host if request.client else UNKNOWN_CLIENT
        if (wait_s := await throttle.wait_s(Door.SIGN_IN, address)) is not None:
            return _throttled_sign_in(request, pages, next, wait_s)
        session_id = await sessions.sign_in(token)
        if session_id is None:
            if (wait_s := await throttle.failed(Door.SIGN_IN, address)) is not None:
                return _throttled_sign_in(request, pages, next, wait_s)
            return pages.render(request, "login.html", 401, next=_local(next), failed=True)
        return _signed_in(request, sessions, session_id, next)

    @router.post("/ui/logout")
    async def logout(request: Request) -> RedirectResponse:
        await sessions.sign_out(request.scope.get(SESSION_SCOPE, ""))
        response = see("/ui/login")
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response


def _signed_in(request: Request, sessions: Sessions, session_id: str, next: str) -> RedirectResponse:
    """On to the page asked for, with the session's cookie and the session's own CSRF token (its forms carry it;
    the check uses it whatever the cookie says)."""
    secure = request.url.scheme == "https"
    response = see(_local(next))
    response.set_cookie(SESSION_COOKIE, session_id, max_age=sessions.max_age_s, path="/", httponly=True,
                        samesite="strict", secure=secure)
    response.set_cookie(CSRF_COOKIE, sessions.csrf_token(session_id), path="/", samesite="strict", secure=secure)
    return response


def _throttled_sign_in(request: Request, pages: Pages, next: str, wait_s: int) -> HTMLResponse:
    response = pages.render(request, "login.html", 429, next=_local(next), wait_s=wait_s)
    response.headers["retry-after"] = str(wait_s)
    return response


def _local(location: str) -> str:
    """Where to go after signing in: a console page of this site only, never another site."""
    parts = urlsplit(location)
    safe = not parts.scheme and not parts.netloc and location.startswith("/ui/") and "\\" not in location
    return location if safe else HOME


def _spec_routes(router: APIRouter, pages: Pages, client: BuildClient) -> None:
    @router.get("/ui/specs")
    def specs(request: Request, name: Annotated[str, Query(max_length=MAX_FILTER_CHARS)] = "",
              offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> HTMLResponse:
        page = client.specs.page(offset=offset, limit=SPECS_PER_PAGE, contains=name.strip())
        return pages.render(request, "specs.html", page=page, name=name, targets={
            item.spec.name: pages.target(item.spec) for item in page.items})

    @router.get("/ui/specs/new")
    def new_spec(request: Request) -> HTMLResponse:
        return pages.render(request, "spec_form.html", form=SpecForm(), editing=False)

    @router.get("/ui/specs/{name}/edit")
    def edit_spec(request: Request, name: str) -> HTMLResponse:
        return pages.render(request, "spec_form.html", form=SpecForm.of(client.specs.get(name).written),
                            editing=True)

    @router.post("/ui/specs/new")
    @router.post("/ui/specs/{spec_name}/edit")
    def save_spec(request: Request, fields: Annotated[SpecFields, Form()], spec_name: str | None = None) -> Response:
        return _save_spec(request, pages, client, fields, spec_name)

    @router.get("/ui/specs/{name}")
    def spec_page(request: Request, name: str) -> HTMLResponse:
        return _spec_page(request, pages, client, name)

    @router.post("/ui/specs/{name}/build")
    def rebuild_spec(name: str) -> RedirectResponse:
        return see(f"/ui/builds/{client.specs.build(name, force=True).id}")

    @router.post("/ui/specs/{name}/delete")
    def delete_spec(name: str) -> RedirectResponse:
        client.specs.delete(name)
        return see(HOME)


def _save_spec(request: Request, pages: Pages, client: BuildClient, fields: SpecFields,
               fixed_name: str | None) -> Response:
    """Import fills the form, preview shows it checked with its target, save stores and builds it."""
    form = imported(fields.paste) if fields.action == "import" else fields.form()
    if fixed_name is not None:
        form.name = fixed_name  # an edit keeps its name: another name would be another spec
    spec = form.parsed()
    editing = fixed_name is not None
    if spec is None or fields.action != "save":
        return pages.render(request, "spec_form.html", 422 if form.problems else 200, form=form, editing=editing,
                            target=pages.target(spec) if spec else None)
    try:
        _, build = client.specs.apply(spec)
    except InvalidSpec as e:
        form.problems.setdefault(GENERAL, []).append(str(e))
        return pages.render(request, "spec_form.html", 422, form=form, editing=editing)
    return see(f"/ui/builds/{build.id}" if build else f"/ui/specs/{spec.name}")


def _spec_page(request: Request, pages: Pages, client: BuildClient, name: str, status: int = 200,
               schedule_form: ScheduleFields | None = None, problem: str | None = None) -> HTMLResponse:
    stored = client.specs.detail(name)
    schedule = client.schedules.find(name)
    return pages.render(request, "spec.html", status, stored=stored, history=client.specs.history(name),
                        target=pages.target(stored.spec), schedule=schedule, upcoming=_upcoming(schedule),
                        schedule_form=schedule_form or ScheduleFields.of(schedule), problem=problem,
                        policies=[p.value for p in Policy])


def _upcoming(schedule: Schedule | None) -> list[datetime]:
    if schedule is None:
        return []
    try:
        return schedule.upcoming(UPCOMING_RUNS, datetime.now(timezone.utc))
    except NeverMatches:
        return []


def _schedule_routes(router: APIRouter, pages: Pages, client: BuildClient) -> None:
    @router.post("/ui/specs/{name}/schedule")
    def save_schedule(request: Request, name: str, fields: Annotated[ScheduleFields, Form()]) -> Response:
        try:
            client.schedules.set(name, **fields.timing())
        except InvalidSpec as e:
            return _spec_page(request, pages, client, name, 422, schedule_form=fields, problem=str(e))
        return see(f"/ui/specs/{name}#schedule")

    @router.post("/ui/specs/{name}/schedule/{change}")
    def change_schedule(name: str, change: Literal["enable", "disable", "remove"]) -> RedirectResponse:
        {"enable": client.schedules.enable, "disable": client.schedules.disable,
         "remove": client.schedules.remove}[change](name)
        return see(f"/ui/specs/{name}#schedule")


def _build_routes(router: APIRouter, pages: Pages, client: BuildClient) -> None:
    @router.get("/ui/builds")
    def builds(request: Request, phase: Annotated[BuildPhase | None, Query()] = None) -> HTMLResponse:
        return pages.render(request, "builds.html", builds=client.builds.recent(BUILDS_SHOWN, phase), phase=phase,
                            phases=[p.value for p in BuildPhase])

    @router.post("/ui/builds")
    def submit(request: Request, text: Annotated[str, Form(max_length=MAX_TEXT_CHARS)] = "") -> Response:
        try:
            result = client.submit(load_spec_text(text, "the spec"))
        except InvalidSpec as e:
            return pages.render(request, "builds.html", 422, builds=client.builds.recent(BUILDS_SHOWN), phase=None,
                                phases=[p.value for p in BuildPhase], text=text, problem=str(e))
        return see(f"/ui/builds/{result.id}")

    @router.get("/ui/builds/{build_id}")
    def build(request: Request, build_id: str, packages: Annotated[str, Query(max_length=100)] = "",
              platform: Annotated[str | None, Query(max_length=32)] = None) -> HTMLResponse:
        listing = client.builds.listing(build_id)
        return pages.render(request, "build.html", build=listing, lines=client.logs(build_id), packages=packages,
                            platform=platform, table=_package_table(client, listing.result, packages, platform))

    @router.get("/ui/builds/{build_id}/progress")
    def progress(request: Request, build_id: str) -> HTMLResponse:
        return pages.render(request, "_progress.html", build=client.builds.listing(build_id))

    @router.get("/ui/builds/{build_id}/log")
    def download(build_id: str) -> PlainTextResponse:
        text = "".join(f"{present.without_ansi(line)}\n" for line in client.logs(build_id))  # 404 for an unknown id
        disposition = f'attachment; filename="build-{build_id}.log"'
        return PlainTextResponse(text, headers={"content-disposition": disposition, **SECURITY_HEADERS})

    @router.post("/ui/builds/{build_id}/cancel")
    def cancel(build_id: str) -> RedirectResponse:
        return see(f"/ui/builds/{client.cancel(build_id).id}")

    @router.post("/ui/builds/{build_id}/rebuild")
    def rebuild(build_id: str) -> RedirectResponse:
        return see(f"/ui/builds/{client.builds.rebuild(build_id).id}")


def _sbom_routes(router: APIRouter, client: BuildClient) -> None:
    @router.get("/ui/builds/{build_id}/sbom")
    def download_sbom(build_id: str, platform: Annotated[str | None, Query(max_length=32)] = None) -> Response:
        disposition = f'attachment; filename="build-{build_id}{"-" + platform.replace("/", "-") if platform else ""}' \
                      '.cdx.json"'
        return Response(client.sboms.of_build(build_id, platform), media_type=SBOM_MEDIA_TYPE,
                        headers={"content-disposition": disposition, **SECURITY_HEADERS})


def _package_table(client: BuildClient, result: BuildResult, contains: str,
                   platform: str | None) -> present.PackageTable | None:
    """The packages of a succeeded build's SBOM (read from the registry), or why they cannot be shown."""
    if not result.succeeded:
        return None
    try:
        return present.package_table(client.sboms.of_build(result.id, platform), contains)
    except ImageBuilderError as e:
        return present.PackageTable([], 0, problem=e.message)


def _operations_routes(router: APIRouter, pages: Pages, client: BuildClient) -> None:
    @router.get("/ui/ops")
    def operations(request: Request) -> HTMLResponse:
        ops = client.service.overview()
        return pages.render(request, "ops.html", ops=ops, bars=present.chart_bars(ops.hours, CHART_W, CHART_H),
                            chart_w=CHART_W, chart_h=CHART_H)
