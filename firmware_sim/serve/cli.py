"""`gridsight sim serve PROTOCOL`: one simulated gateway's meters over a real protocol, until Ctrl-C.

    gridsight sim serve modbus --port 5020 --meters 3            # SDM630 map, unit ids 1..3
    gridsight sim serve dsmr                                     # prints the pty device to read
    gridsight sim serve sml --classes commercial                 # three-phase eHZ on a pty
    gridsight sim serve iec62056_21                              # mode C readouts on a pty
    gridsight sim serve mbus --meters 2                          # M-Bus addresses 1, 2 on a pty
    gridsight sim serve dlms                                     # HAN port DataNotifications on a pty
    gridsight sim serve mqtt --mqtt-url mqtt://127.0.0.1:1883
    gridsight sim serve csv --out feed.csv --hours 24            # writes and exits
"""

from __future__ import annotations

import argparse
import signal
import threading
import time

from gridsight.cli import CLIError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve simulated meters over Modbus TCP, DSMR P1, SML, IEC 62056-21, "
                                     "M-Bus, DLMS/COSEM push, MQTT or CSV")
    p.add_argument("protocol", choices=["modbus", "dsmr", "sml", "iec62056_21", "mbus", "dlms", "mqtt", "csv"])
    p.add_argument("--classes", default="", help="meter classes to draw from, comma-separated "
                                                 "(e.g. commercial for three-phase meters; default: any)")
    p.add_argument("--seed", type=int, default=1, help="fleet seed (same seed, same data)")
    p.add_argument("--gateway", type=int, default=0, help="gateway index in the seeded fleet")
    p.add_argument("--meters", type=int, default=3, help="meters to serve")
    p.add_argument("--step-s", type=int, default=60, help="seconds between readings")
    p.add_argument("--start", help="simulated start (ISO-8601 UTC; default now)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--port", type=int, default=5020, help="modbus: TCP port")
    p.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883", help="mqtt: broker")
    p.add_argument("--out", help="csv: file to write")
    p.add_argument("--hours", type=float, default=24.0, help="csv: hours of readings from --start")
    p.add_argument("--fault-every", type=int, default=0, help="modbus: DEVICE_FAILURE every N requests")
    p.add_argument("--nan-every", type=int, default=0, help="modbus: NaN energy every N answers")
    p.add_argument("--bad-crc-every", type=int, default=0, help="dsmr: wrong CRC every N telegrams")
    p.add_argument("--garbage-every", type=int, default=0, help="dsmr: line noise every N telegrams")
    p.add_argument("--malformed-every", type=int, default=0, help="mqtt/csv: broken payload or line every N")
    p.set_defaults(func=cmd_serve)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass


def cmd_serve(ns: argparse.Namespace) -> int:
    from edge_agent.clock import SimulatedClock
    from firmware_sim.anomalies import parse_time
    from firmware_sim.fleet_model import Fleet

    try:
        start = parse_time(ns.start) if ns.start else time.time()
        classes = [c.strip() for c in ns.classes.split(",") if c.strip()] or None
        meters = Fleet(ns.seed, ns.gateway + 1, ns.meters, step_s=ns.step_s, anomaly_rate=0.0,
                       fault_rate=0.0, classes=classes).gateway_meters(ns.gateway)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    clock = SimulatedClock(start, ns.speed)
    if ns.protocol == "csv":
        from firmware_sim.serve.csv_feed import write_csv_feed
        if not ns.out:
            raise CLIError("csv needs --out FILE")
        good, bad = write_csv_feed(meters, start, start + ns.hours * 3600, ns.out, malformed_every=ns.malformed_every)
        print(f"wrote {good} readings and {bad} malformed lines to {ns.out}")
        return 0
    if ns.protocol == "modbus":
        from firmware_sim.serve.modbus import ModbusMeterServer
        try:
            server = ModbusMeterServer(meters, clock, port=ns.port, fault_every=ns.fault_every,
                                       nan_every=ns.nan_every).start()
        except RuntimeError as exc:
            raise CLIError(str(exc)) from None
        units = ", ".join(f"unit {i + 1} = {m.meter_id}" for i, m in enumerate(meters))
        print(f"Modbus TCP (SDM630 map) on 127.0.0.1:{ns.port}: {units}", flush=True)
        try:
            _wait_for_signal()
        finally:
            server.stop()
        return 0
    if ns.protocol == "dsmr":
        from firmware_sim.serve.dsmr import DsmrP1Port
        port = DsmrP1Port(meters[0], clock, period_s=10.0, bad_crc_every=ns.bad_crc_every,
                          garbage_every=ns.garbage_every).start()
        print(f"DSMR P1 telegrams of {meters[0].meter_id} on {port.device}", flush=True)
        try:
            _wait_for_signal()
        finally:
            port.stop()
        return 0
    if ns.protocol in ("sml", "iec62056_21", "mbus", "dlms"):
        port = _pty_meters(ns.protocol, meters, clock)
        print(f"{ns.protocol} meters {', '.join(m.meter_id for m in meters)} on {port.device}", flush=True)
        try:
            _wait_for_signal()
        finally:
            port.stop()
        return 0
    from firmware_sim.fleet_cli import mqtt_port_from_url
    from firmware_sim.serve.mqtt_meter import MqttMeter
    host = ns.mqtt_url.split("://", 1)[-1].split(":", 1)[0]
    meter = MqttMeter(meters, clock, host=host, port=mqtt_port_from_url(ns.mqtt_url) or 1883, period_s=ns.step_s,
                      malformed_every=ns.malformed_every)
    try:
        meter.start()
    except OSError as exc:
        raise CLIError(f"cannot reach the broker at {ns.mqtt_url}: {exc}") from None
    print(f"MQTT meters {', '.join(m.meter_id for m in meters)} on {ns.mqtt_url} topics meters/+/reading", flush=True)
    try:
        _wait_for_signal()
    finally:
        meter.stop()
    return 0


def _pty_meters(protocol: str, meters: list, clock):
    """A started pty serving ``meters`` (the first one, for the single-meter protocols)."""
    from firmware_sim.serve import meter_values
    from firmware_sim.serve.pty_port import PtyPushPort, PtyResponder

    first = meters[0]
    if protocol == "sml":
        from firmware_sim.serve.sml import sml_file
        server_id = bytes.fromhex("0a01") + first.meter_id.encode()[:8]
        return PtyPushPort(lambda n, now: (lambda v: sml_file(server_id, v, n) if v else b"")(meter_values(first, now)),
                           clock, period_s=2.0).start()
    if protocol == "dlms":
        from firmware_sim.serve.dlms import data_notification, push_frame
        return PtyPushPort(lambda n, now: (lambda v: push_frame(data_notification(first.meter_id, v, n)) if v else b"")(
            meter_values(first, now)), clock, period_s=2.5).start()
    if protocol == "iec62056_21":
        from firmware_sim.serve.iec62056_21 import ModeCMeter
        return PtyResponder(ModeCMeter(first.meter_id, lambda: meter_values(first, clock.now()))).start()
    from firmware_sim.serve.mbus import MbusBus
    units = {i + 1: (10_000_000 + i, "electricity", (lambda m: lambda: meter_values(m, clock.now()))(m))
             for i, m in enumerate(meters)}
    return PtyResponder(MbusBus(units)).start()
