"""Where a service's /metrics, /healthz and /readyz listen: loopback by default, any interface when
MAILMOAT_METRICS_HOST says so (as the container image does)."""

from __future__ import annotations

import pytest

from mailmoat_platform.runtime import Runtime
from mailmoat_platform.settings import Settings

pytestmark = pytest.mark.integration


def test_settings_read_the_bind_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILMOAT_METRICS_HOST", raising=False)
    assert Settings.from_env().metrics_host == "127.0.0.1"
    monkeypatch.setenv("MAILMOAT_METRICS_HOST", "0.0.0.0")
    assert Settings.from_env().metrics_host == "0.0.0.0"


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_http_listens_on_the_configured_address(host: str, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, metrics_host=host, metrics_ports={"routing": 0})
    runtime = Runtime("routing", settings)
    await runtime.start(bus=False)
    try:
        assert runtime._http is not None
        assert {s.getsockname()[0] for s in runtime._http.sockets} == {host}
    finally:
        await runtime.shutdown(grace=1)
