"""JWK Sets published at a URL (a backend client's or app's `jwks_uri`, a trusted provider's),
fetched when needed and cached as the publisher's `Cache-Control` allows (RFC 9111 §5.2.2):

- `no-store` or `no-cache`: fetched again at each use, so a key removed from the set stops
  working at once;
- `max-age=N`: kept N seconds, at most MAX_SECONDS;
- nothing said: kept DEFAULT_SECONDS.

A JWT naming a key (`kid`) the cached set lacks makes one fetch at once (the publisher may have
rotated its keys), and further unknown keys of that URL at most every UNKNOWN_KID_INTERVAL
seconds, so that made-up `kid`s cannot turn this server into a fetching machine.

Anyone can name a registered client in an assertion, so a publisher that hangs or fails must
not hold up the token endpoint: a fetch is given FETCH_TIMEOUT seconds in all, a failure is
remembered for FAILURE_SECONDS (assertions needing that set are refused at once meanwhile), and
at most one request fetches a URL at a time. Others needing the same URL use the set cached
before, if any; without one (a cold cache: several first sign-ins at once) up to MAX_WAITERS of
them wait for that fetch, no longer than it may take, and get its keys or its error. Further
ones are refused at once: each waiter holds one of the worker threads every endpoint shares.

Only https URLs are fetched (http to a loopback host too, for tests and local development),
and no redirect is followed: the registered URL is the one trusted.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from joserfc.jwk import KeySet

DEFAULT_SECONDS = 300
MAX_SECONDS = 3600
UNKNOWN_KID_INTERVAL = 10.0
FETCH_TIMEOUT = 2.0  # seconds, connecting and reading together
FAILURE_SECONDS = 30.0
MAX_WAITERS = 16  # requests waiting for one URL's fetch in flight
MAX_BYTES = 256 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


def cache_lifetime(cache_control: str | None) -> float:
    """How long a JWK Set fetched with this `Cache-Control` may be reused, in seconds."""
    if not cache_control:
        return DEFAULT_SECONDS
    directives = {part.strip().split("=")[0].lower() for part in cache_control.split(",")}
    if directives & {"no-store", "no-cache"}:
        return 0
    found = _MAX_AGE.search(cache_control)
    return min(int(found.group(1)), MAX_SECONDS) if found else DEFAULT_SECONDS


@dataclass(frozen=True, slots=True)
class _Cached:
    keys: dict[str, Any] | None  # None: the fetch failed
    fresh_until: float  # time.monotonic()


class _Flight:
    """One fetch of a URL under way, and its outcome for the requests waiting on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.keys: dict[str, Any] | None = None
        self.error = "The key set could not be fetched."
        self.error_type: type[Exception] = OSError  # ValueError: a bad URL or not a JWK Set
        self.waiters = 0

    def outcome(self) -> dict[str, Any]:
        """The fetched keys, once done, else the fetcher's error; each waiter raises an instance
        of its own (one raised in many threads would gather all their tracebacks)."""
        if not self.done.wait(FETCH_TIMEOUT + 1):
            raise TimeoutError("The key set took too long to arrive.")
        if self.keys is None:
            raise self.error_type(self.error)
        return self.keys


class RemoteKeySets:
    """The key sets of any number of URLs, each cached as its publisher says (thread-safe:
    tokens are verified in worker threads)."""

    def __init__(self) -> None:
        self._cache: dict[str, _Cached] = {}
        self._unknown_kid_fetch: dict[str, float] = {}
        # One fetch per URL at a time: concurrent misses share it, and a slow publisher holds
        # up only the requests that need its keys.
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()

    def get(self, url: str, kid: str | None = None) -> dict[str, Any]:
        """The JWK Set at `url`, fresh enough, and fetched again if it lacks `kid` (see the
        module's docstring). Raises OSError or ValueError when it cannot be fetched or read."""
        now = time.monotonic()
        cached = self._cache.get(url)
        if cached is not None and now < cached.fresh_until:
            if cached.keys is None:
                raise OSError("The key set could not be fetched a moment ago.")
            if kid is None or _has_kid(cached.keys, kid):
                return cached.keys
            if now - self._unknown_kid_fetch.get(url, -UNKNOWN_KID_INTERVAL) < UNKNOWN_KID_INTERVAL:
                return cached.keys  # the signature check will refuse the unknown key
            self._unknown_kid_fetch[url] = now
        with self._flights_lock:
            flight = self._flights.get(url)
            leading = flight is None
            if flight is None:
                flight = self._flights[url] = _Flight()
            elif cached is not None and cached.keys is not None:
                return cached.keys  # the set the publisher served last
            elif flight.waiters >= MAX_WAITERS:
                raise OSError("The key set is being fetched for too many requests.")
            else:
                flight.waiters += 1
        if not leading:
            return flight.outcome()
        try:
            flight.keys = self._fetch_once(url, cached)
            return flight.keys
        except (OSError, ValueError) as exc:
            flight.error = f"{flight.error} ({exc})"
            flight.error_type = ValueError if isinstance(exc, ValueError) else OSError
            raise flight.error_type(flight.error) from exc  # the words its waiters get
        finally:
            with self._flights_lock:
                del self._flights[url]
            flight.done.set()

    def _fetch_once(self, url: str, cached: _Cached | None) -> dict[str, Any]:
        """Fetch `url` and cache the outcome (leading its flight); `cached` is what the caller saw."""
        fetched = self._cache.get(url)
        if fetched not in (None, cached) and time.monotonic() < fetched.fresh_until:
            # Another request fetched it after this one looked.
            if fetched.keys is None:
                raise OSError("The key set could not be fetched a moment ago.")
            return fetched.keys
        try:
            keys, lifetime = _fetch(url)
        except (OSError, ValueError):
            if cached is not None and cached.keys is not None \
                    and time.monotonic() < cached.fresh_until:
                return cached.keys  # looking for a new key failed: the fresh set stays in use
            self._cache[url] = _Cached(None, time.monotonic() + FAILURE_SECONDS)
            raise
        self._cache[url] = _Cached(keys, time.monotonic() + lifetime)
        return keys

    def key_set(self, url: str, kid: str | None = None) -> KeySet:
        """`get`, imported for joserfc."""
        return KeySet.import_key_set(self.get(url, kid))  # type: ignore[arg-type]

    def forget(self) -> None:
        """Drop every cached set (the next use fetches)."""
        self._cache.clear()


def check_jwks_url(url: str) -> str:
    """`url` if keys may be fetched from it (see the module's docstring), else ValueError."""
    parts = urlsplit(url)
    if parts.hostname and (parts.scheme == "https"
                           or (parts.scheme == "http" and _loopback(parts.hostname))):
        return url
    raise ValueError(f"a JWKS URL must be https (http only to a loopback host): {url}")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None  # the 3xx is then an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirects)


def _has_kid(keys: dict[str, Any], kid: str) -> bool:
    return any(isinstance(k, dict) and k.get("kid") == kid for k in keys.get("keys", ()))


def _fetch(url: str) -> tuple[dict[str, Any], float]:
    deadline = time.monotonic() + FETCH_TIMEOUT
    with _OPENER.open(check_jwks_url(url), timeout=FETCH_TIMEOUT) as response:
        lifetime = cache_lifetime(response.headers.get("Cache-Control"))
        body = b""
        while len(body) <= MAX_BYTES and (chunk := response.read1(64 * 1024)):
            if time.monotonic() > deadline:  # a publisher trickling bytes
                raise TimeoutError("The key set took too long to arrive.")
            body += chunk
    if len(body) > MAX_BYTES:
        raise ValueError("JWK Set too large")
    keys = orjson.loads(body)
    if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
        raise ValueError("not a JWK Set")
    return keys, lifetime
