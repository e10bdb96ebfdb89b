"""Console sessions that close: sign-out ends a session on the server, removing a token ends the sessions it
opened, each session has its own CSRF token, and Redis holds neither a token nor a session's id. A real
`imagebuilder api` on a Redis database of its own, spoken to as a browser would."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from devstack.stack import API_TOKEN, start_api
from producer.console.sessions import SESSION_COOKIE

pytestmark = pytest.mark.integration
SESSIONS_DB = 29
SECOND_TOKEN = "second-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def console(stack):
    process, url = start_api(stack, "sessions", SESSIONS_DB,
                             IMAGEBUILDER_API_TOKENS=f"{API_TOKEN},{SECOND_TOKEN}")
    yield url
    process.stop()


@contextmanager
def sign_in(url: str, token: str = API_TOKEN) -> Iterator[httpx.Client]:
    """A cookie-keeping client signed in through the form, as a browser is."""
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get("/ui/login")
        answer = http.post("/ui/login", data={"token": token, "csrftoken": http.cookies["csrftoken"]})
        assert answer.status_code == 303, answer.text
        yield http


def form_token(http: httpx.Client, path: str = "/ui/specs") -> str:
    """The CSRF token the page's forms carry."""
    page = http.get(path).text
    return page.split('name="csrftoken" value="', 1)[1].split('"', 1)[0]


def test_signing_out_ends_the_session_so_its_cookie_replayed_opens_nothing(console):
    # Given a signed-in browser, and a copy of its session cookie
    with sign_in(console) as http:
        cookie = http.cookies[SESSION_COOKIE]
        assert http.get("/ui/specs").status_code == 200
        # When it signs out
        assert http.post("/ui/logout", data={"csrftoken": form_token(http)}).status_code == 303
    # Then the old cookie, replayed, gets the sign-in page and nothing else: not a page, not a live log
    with httpx.Client(base_url=console, cookies={SESSION_COOKIE: cookie}) as replay:
        page = replay.get("/ui/specs")
        assert (page.status_code, page.headers["location"]) == (303, "/ui/login?next=/ui/specs")
        assert replay.get("/builds/x/logs", params={"follow": "true"}).status_code == 401


def test_a_forged_or_unknown_session_cookie_opens_nothing(console):
    for cookie in ("", "x", secrets.token_urlsafe(32), "a" * 10_000):
        with httpx.Client(base_url=console, cookies={SESSION_COOKIE: cookie}) as http:
            assert http.get("/ui/ops").status_code == 303, cookie[:20]


def test_removing_a_token_ends_every_session_it_opened_and_no_other(stack, console):
    # Given two sessions, opened with two tokens
    with sign_in(console) as first, sign_in(console, SECOND_TOKEN) as second:
        cookies = (first.cookies[SESSION_COOKIE], second.cookies[SESSION_COOKIE])
    # When the API is started again without the second token (as a new replica would be, on the same Redis)
    process, url = start_api(stack, "sessions-fewer", SESSIONS_DB, IMAGEBUILDER_API_TOKENS=API_TOKEN)
    try:
        answers = [httpx.get(f"{url}/ui/specs", cookies={SESSION_COOKIE: cookie}).status_code for cookie in cookies]
    finally:
        process.stop()
    # Then the session of the removed token is over, and the other's goes on
    assert answers == [200, 303]


def test_a_csrf_token_works_only_in_the_session_it_was_issued_for(console):
    # Given two signed-in browsers, each with the token its own pages carry
    with sign_in(console) as alice, sign_in(console) as mallory:
        alices, mallorys = form_token(alice), form_token(mallory)
        assert alices != mallorys and alices == alice.cookies["csrftoken"]
        # When Mallory's token, as form field and cookie both, is sent in Alice's session
        planted = {SESSION_COOKIE: alice.cookies[SESSION_COOKIE], "csrftoken": mallory.cookies["csrftoken"]}
        with httpx.Client(base_url=console, cookies=planted) as forger:
            forged = forger.post("/ui/logout", data={"csrftoken": mallorys})
            # And when it hides in another cookie that unquotes to `;csrftoken=...`, after Alice's own
            smuggled = httpx.Client(base_url=console, headers={"cookie": (
                f"{SESSION_COOKIE}={alice.cookies[SESSION_COOKIE]}; csrftoken={alice.cookies['csrftoken']}; "
                f'x="\\073csrftoken={mallory.cookies["csrftoken"]}"')})
            with smuggled:
                hidden = smuggled.post("/ui/logout", data={"csrftoken": mallorys})
        # Then both are refused, and Alice is still signed in; her own token works
        assert (forged.status_code, hidden.status_code) == (403, 403) and alice.get("/ui/specs").status_code == 200
        assert alice.post("/ui/logout", data={"csrftoken": alices}).status_code == 303


def test_a_session_in_redis_holds_no_token_and_no_session_id_and_expires(stack, console):
    # Given a signed-in session
    with sign_in(console) as http:
        cookie = http.cookies[SESSION_COOKIE]
    conn = redis.Redis(port=stack.redis.port, db=SESSIONS_DB)
    # Then Redis holds it for the session's life, under a key that is not the id, with neither id nor token in it
    keys = conn.keys("imagebuilder:session:*")
    everything = b"".join(k + (conn.get(k) or b"") for k in keys)
    assert keys and cookie.encode() not in everything and API_TOKEN.encode() not in everything
    assert all(0 < conn.ttl(k) <= 43200 for k in keys)
