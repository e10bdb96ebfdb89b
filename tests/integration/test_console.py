"""The web console, driven in headless Chromium the way a person uses it, against the real `imagebuilder api`,
Redis, worker, engine and registries. Screenshots of the main screens go to build/screenshots/."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import docker
import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from core.phases import BuildPhase
from core.spec import parse_spec
from core.tagging import compute_tag
from devstack.baseimage import BUSYBOX_IMAGE, push
from tests.integration.conftest import API_TOKEN, AUTH, PULL_PASSWORD, PULL_USER
from tests.integration.test_delivery import slow_spec

pytestmark = pytest.mark.integration
SCREENSHOTS = Path(__file__).parents[2] / "build" / "screenshots"
BUILD_WAIT_MS = 240_000
HOSTILE_LINES = ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>")


@pytest.fixture
def console(api) -> str:
    return str(api.base_url).rstrip("/")


@pytest.fixture
def page(browser, console) -> Page:
    """A fresh browser context (no cookies) at desktop width; every dialog that opens is recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=console)
    opened = context.new_page()
    opened.dialogs = []
    opened.on("dialog", lambda dialog: _record(opened, dialog))
    yield opened
    context.close()


def _record(page: Page, dialog: Dialog) -> None:
    page.dialogs.append(dialog.message)
    dialog.accept()  # the console only asks to confirm; the escaping test checks no alert ever opened


def sign_in(page: Page, path: str = "/ui/specs") -> None:
    page.goto(path)
    page.get_by_label("API token").fill(API_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def fill_spec_form(page: Page, name: str, base: str, *, apt: str = "", pip: str = "", pull_secret: str = "") -> None:
    """Sign in, open the new spec form and type into it, field by field."""
    sign_in(page, "/ui/specs/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Base image").fill(base)
    page.get_by_label("Image pull secret").fill(pull_secret)
    page.get_by_label("APT").fill(apt)
    page.get_by_label("pip").fill(pip)


def follow_live_log_to_success(page: Page) -> None:
    """On an open build page: log lines are added as the build runs (the page reloads only once it has ended),
    and it reaches Succeeded."""
    page.evaluate("window.sameDocument = true")
    expect(page.locator("#log span").first).to_be_visible(timeout=BUILD_WAIT_MS)
    seen = page.locator("#log span").count()
    page.wait_for_function("n => window.sameDocument && document.querySelectorAll('#log span').length > n",
                           arg=seen, timeout=BUILD_WAIT_MS)
    expect(page.locator("#phase")).to_have_text("Succeeded", timeout=BUILD_WAIT_MS)
    expect(page.locator("#log")).to_contain_text("Successfully built")


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def test_signing_in_takes_a_token_by_keyboard_and_signing_out_leads_back_to_sign_in(page):
    # Given a person who opens a console page without a session
    page.goto("/ui/builds")
    # Then they are sent to sign in, and a wrong token is refused without being shown back
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/builds$"))
    shot(page, "sign-in")
    page.get_by_label("API token").fill("not-the-token")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("That is not a valid API token.")
    assert "not-the-token" not in page.content()
    # When they type the right token and press Enter (keyboard only)
    page.get_by_label("API token").focus()
    page.keyboard.type(API_TOKEN)
    page.keyboard.press("Enter")
    # Then they land on the page they asked for, and the token is neither in the URL nor in the page
    expect(page).to_have_url(re.compile(r"/ui/builds$"))
    assert API_TOKEN not in page.url and API_TOKEN not in page.content()
    # When they sign out, every page leads to sign-in again
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    for path in ("/ui/specs", "/ui/ops", "/ui/specs/new"):
        page.goto(path)
        expect(page).to_have_url(re.compile(r"/ui/login\?next="))


def test_a_spec_created_through_the_form_builds_to_succeeded_with_its_log_arriving_live(page, stack, unique):
    # Given a signed-in person who filled in the new spec form
    fill_spec_form(page, unique, stack.debian_base, apt="tree\nfile", pull_secret="private")
    # When they check it, the target image and tag are shown before anything is saved
    page.get_by_role("button", name="Check and show the target").click()
    expect(page.locator("#target")).to_contain_text(f"/{unique}:")
    shot(page, "spec-form")
    # And when they save it, they are taken to its build
    page.get_by_role("button", name="Save and build").click()
    expect(page).to_have_url(re.compile(r"/ui/builds/[0-9a-f-]{36}$"))
    # Then log lines are added to the open page as the build runs, and it reaches Succeeded
    follow_live_log_to_success(page)
    expect(page.locator(".stage.final")).to_have_text("Succeeded")
    shot(page, "build-succeeded")
    # And, seen again, the page lists the image's packages from its SBOM, by name, with the SBOM to download
    page.reload()
    page.get_by_label("Name contains").fill("tree")
    page.get_by_role("button", name="Filter").click()
    tree = page.locator("table.packages tr", has=page.locator("th", has_text=re.compile(r"^tree$")))
    expect(tree).to_contain_text("yes")
    shot(page, "build-packages")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the SBOM (CycloneDX)").click()
    assert json.loads(Path(download.value.path()).read_text())["bomFormat"] == "CycloneDX"
    # And the specs list shows it with its last build and a pull command by digest
    page.goto(f"/ui/specs?name={unique}")
    row = page.get_by_role("row").filter(has_text=unique)
    expect(row.locator(".phase")).to_have_text("Succeeded")
    expect(row.locator("button.copy")).to_have_attribute("data-copy", re.compile(rf"^docker pull .*/{unique}@sha256:"))


def test_a_bad_package_shows_its_error_beside_its_field_and_keeps_what_was_typed(page, stack, unique):
    # Given a signed-in person filling the form with one bad APT item among good ones
    fill_spec_form(page, unique, stack.debian_base, apt="curl\nb@d pkg\njq", pip="requests==2.32.3")
    # When they save it
    page.get_by_role("button", name="Save and build").click()
    # Then the APT field is marked, its error names the item, and nothing else is flagged or lost
    apt = page.get_by_label("APT")
    expect(apt).to_have_attribute("aria-invalid", "true")
    problem = page.locator("#apt-problem-1")
    expect(problem).to_contain_text('packages.apt[1]: "b@d pkg" is not allowed')
    expect(apt).to_have_value("curl\nb@d pkg\njq")
    expect(page.get_by_label("pip")).to_have_value("requests==2.32.3")
    expect(page.get_by_label("Name", exact=True)).not_to_have_attribute("aria-invalid", "true")
    shot(page, "spec-form-error")
    # And no spec was stored
    page.goto(f"/ui/specs?name={unique}")
    expect(page.get_by_text("No specs match")).to_be_visible()


def test_ticked_platforms_stay_ticked_and_make_the_target_cover_them(page, stack, unique):
    # Given a signed-in person filling the form and ticking arm64, then amd64
    fill_spec_form(page, unique, stack.debian_base)
    page.get_by_label("linux/arm64", exact=True).check()
    page.get_by_label("linux/amd64", exact=True).check()
    # When they ask for the target
    page.get_by_role("button", name="Check and show the target").click()
    # Then both stay ticked, no other is, and the target's tag is the one that covers both platforms
    expect(page.get_by_label("linux/arm64", exact=True)).to_be_checked()
    expect(page.get_by_label("linux/amd64", exact=True)).to_be_checked()
    expect(page.get_by_label("linux/arm/v7", exact=True)).not_to_be_checked()
    spec = parse_spec({"name": unique, "baseImage": stack.debian_base, "platforms": ["linux/amd64", "linux/arm64"]})
    expect(page.locator("#target")).to_have_text(re.compile(f"/{unique}:{compute_tag(spec)}$"))


def test_a_running_build_is_cancelled_from_its_page(page, stack, client, unique):
    # Given a long build that is running
    build_id = client.submit(slow_spec(stack, unique, heavy=True), force=True).id
    sign_in(page, f"/ui/builds/{build_id}")
    expect(page.locator("#log")).to_contain_text("Running in", timeout=BUILD_WAIT_MS)
    # And the operations page, in another tab, shows it running on its worker
    ops = page.context.new_page()
    ops.goto("/ui/ops")
    expect(ops.get_by_role("row").filter(has=ops.get_by_role("link", name=build_id[:8]))).to_contain_text("main@")
    ops.close()
    # When the person presses Cancel and confirms
    page.get_by_role("button", name="Cancel").click()
    # Then they were asked first, and the build ends Cancelled
    assert page.dialogs == ["Cancel this build?"]
    expect(page.locator("#phase")).to_have_text("Cancelled", timeout=60_000)
    assert client.wait(build_id, timeout_s=60).phase is BuildPhase.CANCELLED
    shot(page, "build-cancelled")


def test_a_schedule_is_edited_on_the_spec_page(page, stack, client, unique):
    # Given a stored spec without a schedule
    client.specs.apply(slow_spec(stack, unique))
    sign_in(page, f"/ui/specs/{unique}")
    # When the person sets a cron in a time zone
    page.get_by_label("By cron").check()
    page.get_by_label("Cron expression").fill("0 3 * * *")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Policy").select_option("always")
    page.get_by_role("button", name="Save the schedule").click()
    # Then the page shows it with its next three runs, at 03:00 Berlin time
    expect(page.get_by_text("cron 0 3 * * * (Europe/Berlin), always")).to_be_visible()
    runs = page.locator("ol.runs li")
    expect(runs).to_have_count(3)
    expect(runs.first).to_contain_text("03:00 CE")
    shot(page, "spec-schedule")
    # When they switch to an interval, then disable it
    page.get_by_label("Every N seconds").check()
    page.get_by_label("Every (seconds)").fill("3600")
    page.get_by_role("button", name="Save the schedule").click()
    expect(page.get_by_text("every 1 h, always")).to_be_visible()
    page.get_by_role("button", name="Disable").click()
    # Then the stored schedule is the interval, disabled, saying why
    expect(page.locator(".reason")).to_contain_text("disabled by hand")
    schedule = client.schedules.get(unique)
    assert (schedule.every_s, schedule.cron, schedule.enabled) == (3600, None, False)
    # And a cron that never fires is refused beside the form, the stored schedule unchanged
    page.get_by_label("By cron").check()
    page.get_by_label("Cron expression").fill("0 0 30 2 *")
    page.get_by_role("button", name="Save the schedule").click()
    expect(page.locator("#schedule-problem")).to_contain_text("never matches")
    assert client.schedules.get(unique).every_s == 3600


def hostile_base(stack, unique: str) -> str:
    """A base image in the private registry whose ONBUILD step prints HTML and then fails."""
    engine = docker.from_env()
    reference = f"{stack.private_registry.host}/base/hostile-{unique}:1"
    echoes = " && ".join(f"echo '{line}'" for line in HOSTILE_LINES)
    colour = r"printf '\033[1;31mcoloured\033[0m\n'"
    dockerfile = f"FROM {BUSYBOX_IMAGE}\nONBUILD RUN {echoes} && {colour} && exit 3\n"
    engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=reference, rm=True)
    push(engine, reference, PULL_USER, PULL_PASSWORD)
    engine.images.remove(reference)
    return reference


def test_html_in_build_output_and_errors_renders_as_text_and_opens_no_dialog(page, stack, unique):
    # Given a base image whose build step echoes a script tag and an image with an onerror handler
    base = hostile_base(stack, unique)
    # When a person submits an ad-hoc build of it from the builds page and watches it
    sign_in(page, "/ui/builds")
    page.get_by_label("A spec in YAML or JSON").fill(f"name: {unique}\nbaseImage: {base}\npullSecret: private\n")
    page.get_by_role("button", name="Build", exact=True).click()
    expect(page.locator("#phase")).to_have_text("Failed", timeout=BUILD_WAIT_MS)
    # Then the lines show as text in the log and in the error, and no dialog ever opened
    for line in HOSTILE_LINES:
        expect(page.locator("#log")).to_contain_text(line)
        expect(page.locator(".failure pre")).to_contain_text(line)
    assert page.locator("#log img, #log script, .failure img, .failure script").count() == 0
    assert page.dialogs == []
    # And the ANSI colour codes around a line are stripped, not shown raw
    expect(page.locator("#log span").filter(has_text=re.compile(r"^coloured$"))).to_have_count(1)
    assert "\x1b" not in page.locator("#log").inner_text() + page.locator(".failure").inner_text()
    shot(page, "build-failed-escaped")
    # And the builds list shows it as ad hoc
    page.goto("/ui/builds?phase=Failed")
    expect(page.get_by_role("row").filter(has_text=unique)).to_contain_text("ad hoc")
    assert page.dialogs == []


def test_the_pages_fit_a_phone_screen_and_ops_shows_the_service(browser, console, client, stack, unique):
    # Given a phone-sized window and a spec with a finished build
    client.wait(client.specs.apply(slow_spec(stack, unique))[1].id, timeout_s=BUILD_WAIT_MS / 1000)
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=console)
    page = context.new_page()
    sign_in(page, f"/ui/specs/{unique}")
    # Then no page is wider than the screen (wide tables scroll inside their own box)
    for path in (f"/ui/specs/{unique}", "/ui/specs", "/ui/builds", "/ui/ops", "/ui/specs/new"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    shot(page, "phone-spec-form")
    # And the operations page shows the worker, the queue and the last day's builds
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/ui/ops")
    expect(page.locator("#workers-count")).not_to_have_text("0")
    expect(page.locator("#chart-summary")).to_contain_text("succeeded")
    shot(page, "ops")
    page.goto("/ui/specs")
    shot(page, "specs")
    context.close()


# -- the console's edge, spoken to over plain HTTP --------------------------------------------------------------


@pytest.fixture
def signed_in(console) -> httpx.Client:
    """A cookie-keeping HTTP client that signed in through the form (with its CSRF token), and no bearer token."""
    with httpx.Client(base_url=console, timeout=30) as http:
        http.get("/ui/login")
        answer = http.post("/ui/login", data={"token": API_TOKEN, "csrftoken": http.cookies["csrftoken"]})
        assert answer.status_code == 303
        yield http


def test_console_pages_send_anyone_without_a_session_to_sign_in_before_reading_a_body(console):
    # Given no session, and a body far past the API's body limit
    huge = b"x" * (8 * 1024 * 1024)
    with httpx.Client(base_url=console, timeout=30) as http:
        # When it is posted to a console form, or a page is asked for
        posted = http.post("/ui/specs/new", content=huge, headers={"content-type": "application/x-www-form-urlencoded"})
        page = http.get("/ui/ops")
        # Then both are sent to sign in: the size of the body never mattered
        assert (posted.status_code, posted.headers["location"]) == (303, "/ui/login?next=/ui/specs/new")
        assert (page.status_code, page.headers["location"]) == (303, "/ui/login?next=/ui/ops")
        # And a bearer token is no console session
        assert http.get("/ui/specs", headers=AUTH).status_code == 303


def test_signing_in_sets_an_http_only_strict_cookie_holding_no_token(console):
    def sign_in(headers: dict[str, str]) -> httpx.Response:
        """Sign in through the form (with its CSRF cookie) from a browser of its own."""
        with httpx.Client(base_url=console, timeout=30) as http:
            http.get("/ui/login")
            form = {"token": API_TOKEN, "csrftoken": http.cookies["csrftoken"], "next": "//evil.example/"}
            return http.post("/ui/login", data=form, headers=headers)

    # When the token is posted over plain HTTP, then claiming HTTPS in a header no trusted proxy set
    plain, claimed = sign_in({}), sign_in({"x-forwarded-proto": "https"})
    # Then the cookie is HttpOnly, SameSite=Strict, lasts IMAGEBUILDER_UI_SESSION_S, holds no token, and is not
    # Secure: only a proxy named in IMAGEBUILDER_TRUSTED_PROXIES says a request came over HTTPS (see
    # test_behind_proxy.py); and sign-in never sends anyone to another site
    cookie = next(c for c in plain.headers.get_list("set-cookie") if c.startswith("imagebuilder_session="))
    assert re.search(r"HttpOnly", cookie) and re.search(r"SameSite=strict", cookie, re.I)
    assert "Max-Age=43200" in cookie and "Secure" not in cookie and API_TOKEN not in cookie
    assert "Secure" not in claimed.headers["set-cookie"]
    assert plain.headers["location"] == "/ui/specs"


def test_a_form_without_its_csrf_token_changes_nothing(signed_in, client, stack, unique):
    # Given a signed-in session and a stored spec
    client.specs.apply(slow_spec(stack, unique))
    # When a delete is posted without the form's CSRF token, or with another one
    missing = signed_in.post(f"/ui/specs/{unique}/delete", data={})
    forged = signed_in.post(f"/ui/specs/{unique}/delete", data={"csrftoken": "forged"})
    # Then both are refused and the spec is still there; with the token, it is deleted
    assert (missing.status_code, forged.status_code) == (403, 403)
    assert client.specs.get(unique)
    done = signed_in.post(f"/ui/specs/{unique}/delete", data={"csrftoken": signed_in.cookies["csrftoken"]})
    assert (done.status_code, done.headers["location"]) == (303, "/ui/specs")


def test_the_session_opens_the_live_log_and_no_other_api_route(signed_in, client, stack, unique):
    # Given a build and a signed-in console session (no bearer token)
    build_id = client.submit(slow_spec(stack, unique)).id
    # Then the live log of the build page takes the session
    with signed_in.stream("GET", f"/builds/{build_id}/logs", params={"follow": "true"}) as live:
        assert live.status_code == 200 and live.headers["content-type"].startswith("text/event-stream")
    # But the rest of the API does not: a cookie is not a bearer token
    assert signed_in.get(f"/builds/{build_id}").status_code == 401
    assert signed_in.post("/builds", json={"name": unique, "baseImage": "x"}).status_code == 401
    # And once it has ended, the whole log downloads as a file
    client.wait(build_id, timeout_s=BUILD_WAIT_MS / 1000)
    download = signed_in.get(f"/ui/builds/{build_id}/log")
    assert download.headers["content-disposition"] == f'attachment; filename="build-{build_id}.log"'
    assert download.text.splitlines() == list(client.logs(build_id))


def test_an_unreadable_form_is_refused_as_bad_input_not_an_error(signed_in):
    token = signed_in.cookies["csrftoken"]
    # When a form that is not UTF-8, or a multipart body without a boundary, is posted
    latin = signed_in.post("/ui/builds", content=b"csrftoken=" + token.encode() + b"&text=\xff\xfe",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    unbounded = signed_in.post("/ui/builds", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    # Then each is a 4xx
    assert latin.status_code in (400, 422) and unbounded.status_code == 400


def test_every_console_page_forbids_inline_script_and_framing(signed_in):
    for path in ("/ui/specs", "/ui/builds", "/ui/ops", "/ui/specs/new", "/ui/login"):
        policy = signed_in.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
