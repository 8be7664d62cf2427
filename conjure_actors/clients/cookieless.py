"""An ``httpx.AsyncClient`` without a cookie jar, for ComfyUI and RunComfy.

Neither speaks cookies: ComfyUI's API and RunComfy's (a bearer token) set none and read
none. httpx still runs every response through its jar (``Cookies.extract_cookies``: a
``urllib`` request and an ``email`` message built per response, ~28 µs of a ~1 ms loopback
request), so a client of theirs that never stores a cookie spends that on nothing.
:class:`CookielessClient` is an ``httpx.AsyncClient`` whose ``cookies`` is an empty jar
that keeps nothing: no ``Cookie`` header is ever sent, no ``Set-Cookie`` is ever kept (so a
server cannot pin a session on us either). Everything else (timeouts, the environment's
proxies, hooks, transports, limits) is httpx's own.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["CookielessClient"]


class _NoCookies(httpx.Cookies):
    """A jar that stays empty: responses are not read for ``Set-Cookie``, and nothing put
    into it (``set``, ``update``) is kept."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        return None

    def update(self, cookies: Any = None) -> None:  # type: ignore[override]
        return None


class CookielessClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` with no cookie jar (see the module docstring)."""

    _no_cookies: _NoCookies

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("cookies"):
            raise ValueError("a CookielessClient keeps no cookies")
        super().__init__(**kwargs)
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise ValueError("a CookielessClient keeps no cookies")
