"""The console behind a TLS-terminating proxy: Debian's nginx, with a throw-away certificate, in front of the real
`imagebuilder api` (trusting 127.0.0.1's X-Forwarded-* headers), driven in headless Chromium; and an API trusting
no proxy, which ignores such headers sent by hand."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect

from devstack.services import Nginx
from producer.console.sessions import SESSION_COOKIE
from tests.integration.conftest import API_TOKEN, CHROMIUM, CHROMIUM_ARGS, start_api
from tests.integration.test_console import follow_live_log_to_success
from tests.integration.test_delivery import slow_spec
from tests.integration.tls_certs import ServerTls, make_server_tls

pytestmark = pytest.mark.integration
HEADER_BACKGROUND = "rgb(23, 35, 58)"  # console.css's `.top { background: #17233a }`
FORGED_CLIENT = "203.0.113.7"  # TEST-NET-3: an address no request here really comes from
# Every URL a console page names: links, assets, forms, and what its script fetches (the live log, the progress)
URLS_ON_PAGE = """[...document.querySelectorAll('[href], [src], [action], [data-follow], [data-src]')].map(e =>
    e.getAttribute('href') ?? e.getAttribute('src') ?? e.getAttribute('action') ?? e.dataset.follow ?? e.dataset.src)"""


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory) -> ServerTls:
    return make_server_tls(tmp_path_factory.mktemp("proxy-tls"))


@pytest.fixture(scope="module")
def proxied_api(stack, worker) -> Iterator[str]:
    """`imagebuilder api` trusting the proxy on loopback; its plain-http URL."""
    process, url = start_api(stack, "behind-proxy", IMAGEBUILDER_TRUSTED_PROXIES="127.0.0.1")
    yield url
    process.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, proxied_api, server_tls) -> Iterator[Nginx]:
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), proxied_api, server_tls.cert, server_tls.key).start()
    yield nginx
    nginx.stop()


@pytest.fixture(scope="module")
def trusting_browser(playwright, server_tls) -> Iterator[Browser]:
    """A Chromium of its own that trusts the proxy's throw-away key, so the console is a page on a valid https
    connection, as behind a real certificate. The session's browser could only be told to ignore certificate errors
    (ignore_https_errors), and Chromium then counts the page as broken https, which would hide the very verdict
    checked here: that nothing on it is insecure. Chromium takes a private CA only from an NSS database (certutil,
    not installed here), and pinning one key trusts nothing else."""
    pin = f"--ignore-certificate-errors-spki-list={server_tls.spki_sha256()}"
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, pin])
    yield launched
    launched.close()


@dataclass
class Watched:
    """What a page did wrong while open: console errors, requests that failed (mixed content is blocked), and
    Chromium's verdict on how secure the page looks, as its address bar would show it."""

    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    security: list[str] = field(default_factory=list)

    def verdicts_on_the_console(self) -> set[str]:
        """Chromium's verdicts from the first secure one on (before it, the blank page the browser opened with)."""
        return set(self.security[self.security.index("secure"):]) if "secure" in self.security else set()


@pytest.fixture
def watched(trusting_browser, proxy) -> Iterator[tuple[Page, Watched]]:
    context = trusting_browser.new_context(viewport={"width": 1280, "height": 900}, base_url=proxy.url)
    page, seen = context.new_page(), Watched()
    page.on("console", lambda message: _console(seen, message))
    page.on("requestfailed", lambda request: _failed(seen, request))
    cdp = context.new_cdp_session(page)
    cdp.on("Security.visibleSecurityStateChanged",
           lambda event: seen.security.append(event["visibleSecurityState"]["securityState"]))
    cdp.send("Security.enable")
    yield page, seen
    context.close()


def _console(seen: Watched, message: ConsoleMessage) -> None:
    if message.type == "error" or "Mixed Content" in message.text:
        seen.errors.append(message.text)


def _failed(seen: Watched, request: Request) -> None:
    # The live log's stream is closed by the page itself once the build ends, and a reload cancels what was pending
    if request.failure != "net::ERR_ABORTED":
        seen.failed.append(f"{request.url}: {request.failure}")


def test_the_console_signs_in_and_follows_a_live_log_through_a_tls_proxy(watched, proxy, client, stack, unique):
    page, seen = watched
    # Given nginx terminating TLS in front of the API, and a person who opens the console through it
    page.goto("/ui/")
    # Then they are sent to sign in, still on the proxy's https address
    expect(page).to_have_url(re.compile(rf"^{re.escape(proxy.url)}/ui/login\?next="))
    # When they sign in with an API token
    page.get_by_label("API token").fill(API_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    # Then they land on the specs page, styled by the console's stylesheet
    expect(page).to_have_url(f"{proxy.url}/ui/specs")
    expect(page.locator("header.top")).to_have_css("background-color", HEADER_BACKGROUND)
    # And the session cookie is for https only, out of scripts' reach, and never sent from another site
    (session,) = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert (session["secure"], session["httpOnly"], session["sameSite"]) == (True, True, "Strict")
    # When a build is submitted through the API and they open its page while it runs
    build_id = client.submit(slow_spec(stack, unique), force=True).id
    page.goto(f"/ui/builds/{build_id}")
    # Then log lines arrive in the open page through the proxy, and the page shows the build's end
    follow_live_log_to_success(page)
    # And every URL the page names is a path on this site (or data), whatever Host the proxy passed on
    assert [url for url in page.evaluate(URLS_ON_PAGE) if not re.match(r"^(/(?!/)|#|data:)", url)] == []
    # And nothing was logged as an error, no request failed, and Chromium judged every page secure
    assert (seen.errors, seen.failed) == ([], [])
    assert seen.verdicts_on_the_console() == {"secure"}
    assert f'"GET /builds/{build_id}/logs?follow=true HTTP/1.1" 200' in (proxy.workdir / "access.log").read_text()


def test_forwarded_headers_are_believed_only_from_a_trusted_proxy(api, proxied_api, stack):
    # Given X-Forwarded-Proto: https and a forged X-Forwarded-For, sent by hand from 127.0.0.1 straight to an API
    # When someone signs in with them at an API trusting no proxy (IMAGEBUILDER_TRUSTED_PROXIES unset)
    flags = session_cookie_flags(str(api.base_url))
    # Then the session cookie is not marked Secure, and the API's access log names the real client, not the forged
    assert flags == {"httponly"}
    assert FORGED_CLIENT not in (stack.workdir / "api-main.log").read_text()
    # And at the API trusting 127.0.0.1, the same headers are believed: it is Secure, and the forged client logged
    assert session_cookie_flags(proxied_api) == {"secure", "httponly"}
    assert FORGED_CLIENT in (stack.workdir / "api-behind-proxy.log").read_text()


def session_cookie_flags(url: str) -> set[str]:
    """Sign in at `url` with the forged forwarded headers; the session cookie's flags (secure, httponly)."""
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": FORGED_CLIENT}
    with httpx.Client(base_url=url, headers=forged, timeout=30) as http:
        form = http.get("/ui/login").text
        csrf = re.search(r'name="csrftoken" value="([^"]+)"', form)[1]
        answer = http.post("/ui/login", data={"csrftoken": csrf, "token": API_TOKEN, "next": "/ui/specs"})
    assert answer.status_code == 303, answer.text
    cookies = SimpleCookie()
    for header in answer.headers.get_list("set-cookie"):
        cookies.load(header)
    session = cookies[SESSION_COOKIE]
    return {flag for flag in ("secure", "httponly") if session[flag]}
