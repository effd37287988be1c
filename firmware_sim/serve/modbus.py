"""Simulated meters as a Modbus TCP server with the Eastron SDM630 input-register map.

Each meter is one unit id (1, 2, ...) behind one TCP port, like an RS485 bus behind a Modbus
gateway. Registers are IEEE-754 float32, big-endian word order (as the SDM630 sends them),
read with function 04 and refreshed from the simulated meter at the server clock's time on
every request. ``fault_every = N`` answers every Nth request with a DEVICE_FAILURE exception
and ``nan_every = M`` puts NaN in the energy register of every Mth answer, so readers meet
real failure modes.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
from functools import partial
from typing import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.clock import Clock
from firmware_sim.meter import SimulatedMeter
from firmware_sim.serve import meter_values

__all__ = ["SDM630_INPUT_REGISTERS", "ModbusMeterServer", "float_registers"]

# register address -> quantity (Eastron SDM630 Modbus protocol, input registers, float32)
SDM630_INPUT_REGISTERS: dict[str, int] = {
    "voltage_l1": 0x0000, "voltage_l2": 0x0002, "voltage_l3": 0x0004,
    "current_l1": 0x0006, "current_l2": 0x0008, "current_l3": 0x000A,
    "power_l1": 0x000C, "power_l2": 0x000E, "power_l3": 0x0010,
    "power_factor_l1": 0x001E, "power_factor_l2": 0x0020, "power_factor_l3": 0x0022,
    "total_power": 0x0034, "total_power_factor": 0x003E, "frequency": 0x0046,
    "import_kwh": 0x0048, "export_kwh": 0x004A, "total_kwh": 0x0156,
}
_BLOCK = 0x0160


def float_registers(value: float) -> tuple[int, int]:
    """Two 16-bit registers of a big-endian float32."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return hi, lo


class ModbusMeterServer:
    """Serve ``meters`` on 127.0.0.1:``port`` until :meth:`stop`; time comes from ``clock``."""

    def __init__(self, meters: Sequence[SimulatedMeter], clock: Clock, *, host: str = "127.0.0.1", port: int = 5020,
                 fault_every: int = 0, nan_every: int = 0) -> None:
        self.meters = list(meters)
        self.clock = clock
        self.host, self.port = host, port
        self.fault_every, self.nan_every = fault_every, nan_every
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def unit_of(self, meter_id: str) -> int:
        return 1 + [m.meter_id for m in self.meters].index(meter_id)

    def _values(self, meter: SimulatedMeter) -> dict[int, float]:
        v = meter_values(meter, self.clock.now())
        if v is None:
            return {}
        out = {addr: 0.0 for addr in SDM630_INPUT_REGISTERS.values()}
        r = SDM630_INPUT_REGISTERS
        phases = v.get("phases") or [(v["voltage_v"], v["current_a"], v["power_w"])]
        for i, (volt, amps, watts) in enumerate(phases):
            n = f"l{i + 1}"
            out[r[f"voltage_{n}"]] = volt
            out[r[f"current_{n}"]] = amps
            out[r[f"power_{n}"]] = watts
            out[r[f"power_factor_{n}"]] = v["power_factor"]
        out[r["export_kwh"]] = v.get("export_kwh", 0.0)
        out[r["total_power"]] = v["power_w"]
        out[r["total_power_factor"]] = v["power_factor"]
        out[r["frequency"]] = 50.0
        out[r["import_kwh"]] = v["energy_kwh"]
        out[r["total_kwh"]] = v["energy_kwh"]
        return out

    async def _refresh(self, meter: SimulatedMeter, function_code: int, start_address: int, address: int,
                       count: int, registers: list[int], set_values) -> ExcCodes | None:
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION      # a meter's measurements are read-only
        self.requests += 1
        if self.fault_every and self.requests % self.fault_every == 0:
            return ExcCodes.DEVICE_FAILURE
        values = self._values(meter)
        if self.nan_every and self.requests % self.nan_every == 0:
            values[SDM630_INPUT_REGISTERS["import_kwh"]] = math.nan
        for addr, value in values.items():
            registers[addr - start_address], registers[addr + 1 - start_address] = float_registers(value)
        return None

    def _devices(self) -> list[SimDevice]:
        devices = []
        for i, meter in enumerate(self.meters, start=1):
            block = [SimData(0, count=_BLOCK, values=0, datatype=DataType.REGISTERS)]
            devices.append(SimDevice(i, simdata=([SimData(0, count=1, values=False, datatype=DataType.BITS)],
                                                 [SimData(0, count=1, values=False, datatype=DataType.BITS)],
                                                 block, [SimData(0, count=_BLOCK, values=0,
                                                                 datatype=DataType.REGISTERS)]),
                                     action=partial(self._refresh, meter)))
        return devices

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        async def listen() -> None:
            self._server = ModbusTcpServer(self._devices(), address=(self.host, self.port))
            await self._server.serve_forever(background=True)

        try:
            loop.run_until_complete(listen())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._server.shutdown())
        loop.close()

    def start(self) -> "ModbusMeterServer":
        self._thread = threading.Thread(target=self._run, name="modbus-meter", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"Modbus server could not start on {self.host}:{self.port}: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> "ModbusMeterServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
