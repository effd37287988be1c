"""Home Assistant MQTT discovery on a local broker: every meter a device, its values sensors.

Home Assistant's MQTT integration creates entities from retained config messages under its
discovery prefix (``homeassistant/<component>/<node>/<object>/config``). For each meter seen, this
publishes sensors for the values the meter actually gives (import and export energy, power,
voltage and current per phase, gas or water volume) and a ``problem`` binary sensor that turns
ON for an interval the model flags, with the reason, score and interval as attributes. States go
to ``gridsight/local/<gateway>/<meter>/state`` (JSON, at most every ``state_s`` seconds), the
anomaly to ``.../anomaly``; ``gridsight/local/<gateway>/availability`` is ``online`` while the
agent runs and ``offline`` (its last will) when it stops. Nothing here talks to the cloud
broker: it is a second, local MQTT connection, off unless ``[local] ha_mqtt_url`` is set.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

__all__ = ["HomeAssistantDiscovery", "SENSORS"]

log = logging.getLogger(__name__)

# field -> (name, unit, device_class, state_class)
SENSORS: dict[str, tuple[str, str, str, str]] = {
    "energy_kwh": ("Import energy", "kWh", "energy", "total_increasing"),
    "export_kwh": ("Export energy", "kWh", "energy", "total_increasing"),
    "power_w": ("Power", "W", "power", "measurement"),
    "voltage_v": ("Voltage", "V", "voltage", "measurement"),
    "current_a": ("Current", "A", "current", "measurement"),
    **{f"voltage_l{p}_v": (f"Voltage L{p}", "V", "voltage", "measurement") for p in (1, 2, 3)},
    **{f"current_l{p}_a": (f"Current L{p}", "A", "current", "measurement") for p in (1, 2, 3)},
    **{f"power_l{p}_w": (f"Power L{p}", "W", "power", "measurement") for p in (1, 2, 3)},
}
_VOLUME = {"gas": ("Gas", "m³", "gas"), "water": ("Water", "m³", "water")}
_SAFE = re.compile(r"[^a-zA-Z0-9_-]")


class HomeAssistantDiscovery:
    """Publishes discovery configs, meter states and anomaly states to a local broker."""

    name = "home_assistant"

    def __init__(
        self,
        gateway_id: str,
        url: str,
        *,
        prefix: str = "homeassistant",
        username: str = "",
        password_file: str = "",
        state_s: float = 10.0,
        client_factory: Any = None,
    ) -> None:
        from gridsight.mqtt import make_client, read_password

        self.gateway_id = gateway_id
        self.prefix = prefix.rstrip("/")
        self.node = _SAFE.sub("_", gateway_id)
        self.base = f"gridsight/local/{gateway_id}"
        self.state_s = state_s
        self._latest: dict[str, dict[str, Any]] = {}
        self._announced: dict[str, set[str]] = {}
        self._last_state: dict[str, float] = {}
        self._lock = threading.Lock()
        self.published = 0
        self.errors = 0
        password = read_password(None, password_file or None, env_name="GRIDSIGHT_HA_MQTT_PASSWORD")
        self.client, endpoint = make_client(
            url,
            client_id=f"gridsight-ha-{self.node}"[:64],
            username=username or None,
            password=password,
            protocol="3.1.1",
        )
        self.client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(1, 60)
        self.client.connect_async(endpoint.host, endpoint.port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("home assistant broker refused the connection: %s", reason_code)
            return
        self._publish(f"{self.base}/availability", "online", retain=True)
        with self._lock:
            self._announced.clear()  # a restarted broker may have lost retained configs: announce again
            meters = {m: dict(v) for m, v in self._latest.items()}
        for meter_id, values in meters.items():
            self._announce(meter_id, values)

    def _publish(self, topic: str, payload: str, retain: bool = False) -> None:
        import paho.mqtt.client as mqtt

        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # QoS 1 while offline: queued by paho
            self.published += 1
        else:
            self.errors += 1
            log.warning("home assistant: cannot publish %s (%s)", topic, mqtt.error_string(info.rc))

    def _device(self, meter_id: str) -> dict:
        return {
            "identifiers": [f"gridsight_{_SAFE.sub('_', meter_id)}"],
            "name": f"Meter {meter_id}",
            "manufacturer": "gridsight",
            "model": "smart meter via gridsight gateway",
            "via_device": f"gridsight_{self.node}",
        }

    def _config(self, component: str, meter_id: str, key: str, body: dict) -> None:
        obj = _SAFE.sub("_", f"{meter_id}_{key}")
        body = {
            "unique_id": f"gridsight_{self.node}_{obj}",
            "object_id": f"gridsight_{obj}",
            "availability_topic": f"{self.base}/availability",
            "device": self._device(meter_id),
            **body,
        }
        self._publish(f"{self.prefix}/{component}/{self.node}/{obj}/config", json.dumps(body), retain=True)

    def _announce(self, meter_id: str, values: dict[str, Any]) -> None:
        with self._lock:
            done = self._announced.setdefault(meter_id, set())
            new = [k for k in values if k not in done and (k in SENSORS or k == "volume_m3")]
            first = "anomaly" not in done and values.get("channel") is None
            done.update(new)
            if first:
                done.add("anomaly")
        state_topic = f"{self.base}/{meter_id}/state"
        for key in new:
            if key == "volume_m3":
                name, unit, device_class = _VOLUME.get(values.get("channel") or "gas", _VOLUME["gas"])
                state_class = "total_increasing"
            else:
                name, unit, device_class, state_class = SENSORS[key]
            self._config(
                "sensor",
                meter_id,
                key,
                {
                    "name": name,
                    "state_topic": state_topic,
                    "value_template": f"{{{{ value_json.{key} }}}}",
                    "unit_of_measurement": unit,
                    "device_class": device_class,
                    "state_class": state_class,
                },
            )
        if first:
            self._config(
                "binary_sensor",
                meter_id,
                "anomaly",
                {
                    "name": "Anomaly",
                    "device_class": "problem",
                    "state_topic": f"{self.base}/{meter_id}/anomaly",
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "json_attributes_topic": f"{self.base}/{meter_id}/anomaly_attributes",
                },
            )

    def observe(self, readings: list, scored: list) -> None:
        now = time.monotonic()
        touched = set()
        with self._lock:
            for r in readings:
                latest = self._latest.setdefault(r.meter_id, {})
                for key in (*SENSORS, "volume_m3", "channel"):
                    value = getattr(r, key)
                    if value is not None:
                        latest[key] = value
                touched.add(r.meter_id)
        for meter_id in sorted(touched):
            with self._lock:
                values = dict(self._latest[meter_id])
                due = now - self._last_state.get(meter_id, -1e9) >= self.state_s
                if due:
                    self._last_state[meter_id] = now
            self._announce(meter_id, values)
            if due:
                self._publish(
                    f"{self.base}/{meter_id}/state", json.dumps({k: v for k, v in values.items() if k != "channel"})
                )
        for s in scored:
            flagged = {f.meter_id: f for f in getattr(s, "flags", ())}
            for m in s.meters:
                self._announce(m.meter_id, {})
                flag = flagged.get(m.meter_id)
                self._publish(f"{self.base}/{m.meter_id}/anomaly", "ON" if m.anomalous else "OFF", retain=True)
                self._publish(
                    f"{self.base}/{m.meter_id}/anomaly_attributes",
                    json.dumps(
                        {
                            "reason": getattr(flag, "reason", None) if m.anomalous else None,
                            "score": m.score,
                            "interval_start": s.interval_start,
                            "interval_s": s.interval_s,
                            "model_version": s.model_version,
                        }
                    ),
                    retain=True,
                )

    def close(self) -> None:
        try:
            info = self.client.publish(f"{self.base}/availability", "offline", qos=1, retain=True)
            info.wait_for_publish(2)
        except Exception:
            pass
        self.client.disconnect()
        self.client.loop_stop()
