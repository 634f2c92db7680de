"""The console's settings from the environment (``MAILMOAT_CONSOLE_*``)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: must be true or false")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleConfig:
    host: str = "127.0.0.1"
    port: int = 8025
    secure_cookies: bool = True
    """Cookies marked ``Secure`` (and named ``__Host-…``). Off only for plain HTTP on loopback (development):
    by default it is off when the console listens on a loopback address, on otherwise."""
    session_hours: float = 8.0
    """A session's absolute lifetime."""
    idle_minutes: float = 60.0
    """A session unused this long has expired."""
    trusted_proxies: tuple[IPNetwork, ...] = field(default_factory=tuple)
    """Peers whose ``X-Forwarded-For`` names the client (the Ingress controller); none by default."""
    signin_window: int = 900
    """Seconds a failed sign-in counts against its account and its client address."""
    signin_per_account: int = 5
    signin_per_ip: int = 20
    public_url: str = ""
    """The URL users reach the console at (printed at start); by default http://host:port/."""
    allowed_hosts: tuple[str, ...] = ("*",)
    """``Host`` header values answered (others: 400), against DNS rebinding of a console on loopback."""

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}/"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ConsoleConfig:
        env = dict(os.environ) if env is None else env
        host = env.get("MAILMOAT_CONSOLE_HOST", cls.host)
        secure = env.get("MAILMOAT_CONSOLE_SECURE_COOKIES", "auto")
        proxies = tuple(ipaddress.ip_network(p.strip(), strict=False)
                        for p in env.get("MAILMOAT_CONSOLE_TRUSTED_PROXIES", "").split(",") if p.strip())
        return cls(
            host=host,
            port=int(env.get("MAILMOAT_CONSOLE_PORT", str(cls.port))),
            secure_cookies=(not is_loopback(host)) if secure == "auto"
            else _flag(secure, "MAILMOAT_CONSOLE_SECURE_COOKIES"),
            session_hours=float(env.get("MAILMOAT_CONSOLE_SESSION_HOURS", str(cls.session_hours))),
            idle_minutes=float(env.get("MAILMOAT_CONSOLE_IDLE_MINUTES", str(cls.idle_minutes))),
            trusted_proxies=proxies,
            signin_window=int(env.get("MAILMOAT_CONSOLE_SIGNIN_WINDOW", str(cls.signin_window))),
            signin_per_account=int(env.get("MAILMOAT_CONSOLE_SIGNIN_PER_ACCOUNT", str(cls.signin_per_account))),
            signin_per_ip=int(env.get("MAILMOAT_CONSOLE_SIGNIN_PER_IP", str(cls.signin_per_ip))),
            public_url=env.get("MAILMOAT_CONSOLE_URL", ""),
            allowed_hosts=allowed_hosts(env.get("MAILMOAT_CONSOLE_ALLOWED_HOSTS", ""), host,
                                        env.get("MAILMOAT_CONSOLE_URL", "")),
        )


def allowed_hosts(listed: str, host: str, public_url: str) -> tuple[str, ...]:
    """The hosts given, else the public URL's host and, on loopback, 127.0.0.1 and localhost; else any."""
    given = tuple(h.strip().lower() for h in listed.split(",") if h.strip())
    if given:
        return given
    found: list[str] = []
    if public_url:
        found.append((urlsplit(public_url).hostname or "").lower())
    if is_loopback(host):
        found += ["127.0.0.1", "localhost"]
    return tuple(dict.fromkeys(h for h in found if h)) or ("*",)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str | None:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the nearest address of
    ``X-Forwarded-For`` that is not a trusted proxy itself (addresses further left are the client's claim)."""

    def parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(text.strip())
        except ValueError:
            return None

    address = parse(peer) if peer else None
    if address is None:
        return None
    if not forwarded_for:
        return str(address)
    hops = [h for h in forwarded_for.split(",") if h.strip()]
    while address is not None and any(address in net for net in trusted) and hops:
        address = parse(hops.pop())
    return None if address is None else str(address)
