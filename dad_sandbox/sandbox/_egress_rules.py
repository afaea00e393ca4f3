"""Egress allow/deny rules: parse ``host[:port]`` patterns and match host names against them.

Pure code, shared by policy validation (readable errors at load time) and the egress proxy (the
decision on each connection). Why names and never addresses: the decision is made on the host name
the client asked for, and the host resolves it; an address in a rule or a request would let a run
aim at anything behind a number (the host's loopback, a cloud metadata endpoint), so both are refused.

Rule shapes:

* ``index.example.org``      that host, on ports 80 and 443 (the web ports);
* ``index.example.org:8443`` that host, on that port only;
* ``*.example.com``          any name ending in ``.example.com`` (not ``example.com`` itself);
* ``*.example.com:*``        the same, on any port.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

#: Ports a rule without a port allows.
WEB_PORTS = frozenset({80, 443})
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_NAME = 253


def is_ip_literal(host: str) -> bool:
    """True for anything the resolver would read as an address (also ``127.1``, ``0x7f000001``)."""
    text = host.strip("[]")
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    if ":" in text:
        return True
    try:
        socket.inet_aton(text)  # accepts the short and hex forms getaddrinfo would also accept
        return True
    except OSError:
        return False


def normalize_host(host: str) -> str | None:
    """The lower-case host name without a trailing dot, or None if it is not a valid DNS name."""
    name = host.strip().lower().removesuffix(".")
    if not name or len(name) > _MAX_NAME or is_ip_literal(name):
        return None
    labels = name.split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        return None
    return name


@dataclass(frozen=True, slots=True)
class HostRule:
    """One parsed rule: a name or ``*.`` suffix, and a port (None = web ports, 0 = any port)."""

    host: str
    wildcard: bool
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        """Whether a normalized host name and port fall under this rule."""
        if self.wildcard:
            if not host.endswith("." + self.host):
                return False
        elif host != self.host:
            return False
        if self.port is None:
            return port in WEB_PORTS
        return self.port == 0 or self.port == port

    def __str__(self) -> str:
        port = "" if self.port is None else ":*" if self.port == 0 else f":{self.port}"
        return f"{'*.' if self.wildcard else ''}{self.host}{port}"


def parse_rule(text: str) -> HostRule:
    """Parse one ``host[:port]`` rule.

    Raises:
        ValueError: the message says what is wrong and what shape is expected.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"egress rule {text!r} is empty; write a host name such as 'pypi.org' or '*.example.com:443'")
    raw = text.strip()
    if "/" in raw or "@" in raw or raw.startswith("["):
        raise ValueError(f"egress rule {text!r}: write a host name with an optional port, not a URL or an address")
    host, sep, port_text = raw.rpartition(":") if raw.count(":") == 1 else (raw, "", "")
    if not sep:
        host = raw
    port: int | None = None
    if sep:
        if port_text == "*":
            port = 0
        elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
            port = int(port_text)
        else:
            raise ValueError(f"egress rule {text!r}: the port must be 1-65535 or '*'")
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if "*" in name:
        raise ValueError(f"egress rule {text!r}: a wildcard is allowed only as a leading '*.' (e.g. '*.example.com')")
    if is_ip_literal(name.strip()):
        raise ValueError(
            f"egress rule {text!r} is an IP address; rules name hosts (the host resolves them), never addresses"
        )
    normalized = normalize_host(name)
    if normalized is None:
        raise ValueError(f"egress rule {text!r}: {name!r} is not a valid host name (letters, digits, '-' and '.')")
    if wildcard and "." not in normalized:
        raise ValueError(f"egress rule {text!r}: a wildcard needs a domain with a dot (e.g. '*.example.com'), not a TLD")
    return HostRule(normalized, wildcard, port)


def first_match(rules: tuple[HostRule, ...], host: str, port: int) -> HostRule | None:
    """The first rule matching ``host:port``, if any."""
    return next((rule for rule in rules if rule.matches(host, port)), None)
