"""Property test for RateLimitMiddleware on a real Redis: hostile proxy
headers, peers and user ids through a Starlette app never end in a 500 (or
an exception out of the app); each request gets its page, a 404 or a 429."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from _asgi import http_scope, response_status
from redkit.ratelimit import RateLimiter, RateLimitMiddleware, RateLimitRule, by_user_or_ip

from .test_identity_properties import clients, hostile_text, hostile_values, odd_values

pytestmark = pytest.mark.timeout(120)


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


class PartialUser:
    """A user object like a Starlette BaseUser subclass that left out
    ``identity`` (BaseUser's raises NotImplementedError)."""

    def __init__(self, name: object) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def identity(self) -> str:
        raise NotImplementedError

    @property
    def display_name(self) -> object:
        return self.name


class SetUser:
    """The X-User-Json header (a JSON value, which may carry lone
    surrogates) becomes request.state.user_id; X-User-Object a user object."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        for name, value in scope["headers"]:
            if name == b"x-user-json":
                try:
                    scope.setdefault("state", {})["user_id"] = json.loads(value)
                except (ValueError, RecursionError):
                    scope.setdefault("state", {})["user_id"] = value.decode("latin-1")
            elif name == b"x-user-object":
                scope["user"] = PartialUser(value.decode("latin-1"))
        await self.app(scope, receive, send)


def make_app(limiter: RateLimiter, proxy_header: str):
    routes = [Route(p, ok, methods=["GET", "POST"]) for p in ("/auth/login", "/api/items")]
    return SetUser(
        Starlette(
            routes=routes,
            middleware=[
                Middleware(
                    RateLimitMiddleware,
                    limiter=limiter,
                    rules=[
                        RateLimitRule("/auth/*", "20/minute"),
                        RateLimitRule("/*", "20/minute", key=by_user_or_ip, name="user"),
                    ],
                    match="all",
                    trusted_proxies=["10.0.0.0/8", "127.0.0.1", "2001:db8:ffff::/48"],
                    proxy_header=proxy_header,
                )
            ],
        )
    )


user_json = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=40).map(json.dumps),
    st.integers().map(json.dumps),
    st.just('{"a": [1, {"b": null}]}'),
    st.just("[" * 2000 + "]" * 2000),  # json.loads refuses: the raw text is the id
).map(lambda text: text.encode("ascii"))

header_lists = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([b"x-forwarded-for", b"forwarded"]), hostile_values),
        st.tuples(st.just(b"x-user-json"), user_json),
        st.tuples(st.just(b"x-user-object"), hostile_values),
        st.tuples(st.sampled_from([b"x-forwarded-for", b"forwarded"]), odd_values),
        st.tuples(st.just(b"host"), hostile_text.map(lambda t: t.encode("latin-1", "replace"))),
    ),
    max_size=6,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.sampled_from(["x-forwarded-for", "forwarded"]),
    clients,
    header_lists,
    st.sampled_from(["/auth/login", "/api/items", "/missing"]),
)
async def test_hostile_requests_never_get_a_500(client, proxy_header, peer, headers, path):
    app = make_app(RateLimiter(client), proxy_header)
    scope = http_scope(path, method="POST", headers=headers, client=peer, server=("testserver", 80))
    assert await response_status(app, scope) in (200, 404, 429)
