"""Optional integrations on the gateway itself, for owners who want their values without the cloud.

Both are off by default and cost nothing unless configured (``[local]`` in the agent config):

* :mod:`.home_assistant`: MQTT discovery to a local broker (``ha_mqtt_url``): one Home Assistant
  device per meter with its sensors, and an anomaly binary sensor whose attributes hold the reason;
* :mod:`.metrics`: Prometheus text on ``http://127.0.0.1:<metrics_port>/metrics`` (localhost only).

The agent hands each integration every poll's readings and every scored interval; an integration
that fails is logged and counted and never stops the pipeline.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

__all__ = ["LocalIntegration", "build_local_integrations"]


class LocalIntegration(Protocol):
    name: str

    def observe(self, readings: list, scored: list) -> None:
        """The readings taken and the intervals scored in one poll cycle."""

    def close(self) -> None:
        """Stop threads, disconnect."""


def build_local_integrations(settings: Any, status: Callable[[], dict]) -> list[LocalIntegration]:
    """The integrations ``settings.local`` switches on (none by default)."""
    local = settings.local
    out: list[LocalIntegration] = []
    if local.metrics_port:
        from edge_agent.local.metrics import MetricsEndpoint

        out.append(MetricsEndpoint(settings.gateway_id, status, port=local.metrics_port, host=local.metrics_host))
    if local.ha_mqtt_url:
        from edge_agent.local.home_assistant import HomeAssistantDiscovery

        out.append(
            HomeAssistantDiscovery(
                settings.gateway_id,
                local.ha_mqtt_url,
                prefix=local.ha_discovery_prefix,
                username=local.ha_username,
                password_file=local.ha_password_file,
            )
        )
    return out
