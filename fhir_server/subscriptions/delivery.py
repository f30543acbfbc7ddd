"""Sending one notification to a rest-hook endpoint: to the address its host resolves to
just now, if public (addresses.py), no redirect followed (a 3xx is a failure), a timeout per
subscription, the subscription's own headers, and an HMAC-SHA256 of the body in
`X-Hub-Signature-256` (`sha256=<hex>`) under the subscription's own signing secret, else
under the server's signing key when it has one."""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import urlsplit

import httpx2 as httpx

from .addresses import Refused, resolve
from .criteria import Plan

log = logging.getLogger("fhir_server.subscriptions")
SIGNATURE = "X-Hub-Signature-256"
FHIR_JSON = "application/fhir+json"


class Sender:
    """One HTTP client for every notification, made at the first send (its TLS context costs
    some 20 ms of CPU, which a process that never notifies need not pay); `signing_key` signs
    bodies when set."""

    def __init__(self, signing_key: bytes | None = None, loopback_http: bool = False) -> None:
        self.signing_key = signing_key
        self.loopback_http = loopback_http
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, plan: Plan, body: bytes | None, *, method: str = "POST",
                   url: str | None = None) -> int:
        """The receiver's status code, or 0 when it did not answer (refused, timed out)."""
        headers = dict(plan.headers)
        if body is not None:
            headers["Content-Type"] = plan.mime_type or FHIR_JSON
            key = plan.secret.encode() if plan.secret else self.signing_key
            if key is not None:
                digest = hmac.new(key, body, hashlib.sha256).hexdigest()
                headers[SIGNATURE] = f"sha256={digest}"
        target = urlsplit(url or plan.endpoint)
        try:
            address = await resolve(target, self.loopback_http)
        except Refused as refused:
            log.warning("notification not sent", extra={"subscription": plan.id, "problem": str(refused)})
            return 0
        # Connect to the address checked, not to a fresh resolution of the name (DNS
        # rebinding); the name stays in Host and, for TLS, in SNI and the certificate check.
        headers["Host"] = target.netloc
        host = f"[{address}]" if address.version == 6 else str(address)
        extensions = {"sni_hostname": target.hostname} if target.scheme == "https" else {}
        try:
            response = await self.client.request(
                method, target._replace(netloc=host + (f":{target.port}" if target.port else "")).geturl(),
                content=body, headers=headers, timeout=plan.timeout, extensions=extensions)
        except (httpx.HTTPError, UnicodeError, ValueError) as exc:  # ValueError: a header h11 refuses
            # The endpoint and the error class only: never the headers (they may hold tokens).
            log.warning("notification not delivered", extra={
                "subscription": plan.id, "problem": type(exc).__name__})
            return 0
        return response.status_code


def delivered(status: int) -> bool:
    return 200 <= status < 300
