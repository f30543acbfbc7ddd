"""Where notifications may go: never into the server's own networks (SSRF).

An endpoint's host must be a name or an IP address written the usual way (dotted IPv4,
bracketed IPv6): numeric shorthands (`127.1`, `0x7f000001`, `2130706433`) are refused, as they
are mostly used to slip past checks. Every address the host stands for must be public: no
loopback, private, shared, link-local, unspecified, multicast or reserved address, IPv4-mapped
IPv6 ones included. The host is resolved when the Subscription is written and again before
each notification, which is sent to the address just checked (so a name re-pointed between
check and connection, DNS rebinding, reaches nothing else). The one exception, for
development: plain HTTP to `localhost` or a loopback address with the loopback setting.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOCALHOST = "localhost"


class Refused(Exception):
    """The endpoint's host is, or stands for, an address notifications may not go to."""


class Unresolved(Refused):
    """The endpoint's host name does not resolve (now)."""


def literal(host: str) -> IPAddress | None:
    """The address `host` is written as, or None for a name; Refused for a numeric shorthand."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        socket.inet_aton(host)  # accepts what browsers and libc take for IPv4: 127.1, 0x7f.1, ...
    except OSError:
        return None
    raise Refused(f"'{host}' is an IP address in a shorthand form; write it as a dotted address.")


def internal(address: IPAddress) -> bool:
    """Whether `address` belongs to no public network."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None and internal(embedded):
            return True
    return not address.is_global or address.is_multicast or address.is_reserved


def loopback_allowed(url: SplitResult, loopback_http: bool) -> bool:
    """Development: plain HTTP to localhost or a loopback address, when the setting allows it."""
    host = (url.hostname or "").lower()
    if not (loopback_http and url.scheme == "http"):
        return False
    if host == LOCALHOST:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback


def check_host(url: SplitResult, loopback_http: bool) -> None:
    """Refused for a host that is no acceptable name or public address, as written."""
    host = (url.hostname or "").lower()
    if loopback_allowed(url, loopback_http):
        return
    if host.rstrip(".") == LOCALHOST or host.rstrip(".").endswith("." + LOCALHOST):
        raise Refused(f"'{host}' names this machine.")
    address = literal(host)
    if address is not None and internal(address):
        raise Refused(f"{address} is not a public address.")


async def resolve(url: SplitResult, loopback_http: bool) -> IPAddress:
    """The address to connect to for `url`, after checking every address its host stands for;
    Refused if one is not public or the name does not resolve."""
    check_host(url, loopback_http)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolved(f"'{host}' does not resolve.") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    if not addresses:
        raise Unresolved(f"'{host}' does not resolve.")
    if not loopback_allowed(url, loopback_http):
        for address in addresses:
            if internal(address):
                raise Refused(f"'{host}' resolves to {address}, which is not a public address.")
    return min(addresses, key=lambda address: address.version)  # IPv4 first, as most clients
