"""Outgoing requests to user-given URLs (webhooks, URL imports) must not reach the service's own network.

A URL that names, or resolves to, a loopback, private, link-local (cloud metadata at 169.254.169.254),
multicast, reserved or unspecified address would let any API caller make the server talk to machines
only it can reach (server-side request forgery, OWASP API7:2023). Such URLs are refused unless the
operator allows them (`STYLEGAN_ALLOW_PRIVATE_URLS`, for tests and single-machine setups).

The check resolves the host and refuses if *any* address is not public, because the HTTP client may
connect to any of them. The request itself is then sent to the address that was checked (`pinned`),
not to the name, so a DNS answer that changes between the check and the connection (rebinding) cannot
turn an approved name into a private address: the Host header and, for https, the TLS server name
(certificate check included) stay the original host's.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

ALLOWED_SCHEMES = ("http", "https")


class UnsafeUrl(ValueError):
    """A URL the service refuses to fetch or POST to; the message says why."""


def _address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    for flag, name in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
    ):
        if flag:
            return name
    # Shared address space (100.64/10, carrier NAT) and the like are neither private nor global.
    return None if address.is_global else "non-global"


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"host {host!r} does not resolve: {exc}") from None
    # sockaddr[0] is the address text (IPv6 with an optional %scope); typeshed allows an int for AF_UNIX.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Pinned:
    """A request target bound to a checked address: send to `url` with `headers` and, for httpx,
    `extensions` (the TLS server name)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def _checked(url: str, allow_private: bool) -> tuple[urllib.parse.SplitResult, list[Address]]:
    """The URL's parts and its host's addresses, all public (none are resolved when `allow_private`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ALLOWED_SCHEMES:
        raise UnsafeUrl(f"scheme must be http or https, got {parts.scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("the URL has no host")
    if allow_private:
        return parts, []
    port = port if port is not None else (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    for address in addresses:
        problem = _address_problem(address)
        if problem is not None:
            raise UnsafeUrl(
                f"host {host!r} resolves to {problem} address {address}; private and loopback targets are "
                "refused unless STYLEGAN_ALLOW_PRIVATE_URLS is set"
            )
    return parts, addresses


def check_public_url(url: str, allow_private: bool) -> str:
    """Return `url` if it is an http(s) URL whose host resolves only to public addresses (or
    `allow_private` is set); raise UnsafeUrl naming the reason otherwise."""
    _checked(url, allow_private)
    return url


def pinned(url: str, allow_private: bool) -> Pinned:
    """Check `url` as check_public_url does and bind the request to the first checked address. With
    `allow_private` (the operator trusts every target) the URL is sent as it is."""
    parts, addresses = _checked(url, allow_private)
    if not addresses:
        return Pinned(url)
    host = parts.hostname
    assert host is not None
    address = addresses[0]
    literal = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    userinfo, _, host_header = parts.netloc.rpartition("@")  # the Host header keeps the URL's port
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    netloc = f"{userinfo}@{netloc}" if userinfo else netloc
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Pinned(parts._replace(netloc=netloc).geturl(), {"Host": host_header}, extensions)
