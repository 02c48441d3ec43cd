"""A remote I/O module for the tests: a pymodbus TCP server on 127.0.0.1 (64 coils, 64 holding
registers, any unit id) that appends every write request to a JSON-lines file, flushed at once.

    python tests/modbus_io_server.py PORT WRITES.jsonl
"""
from __future__ import annotations

import asyncio
import json
import sys
import time


def main(port: int, path: str) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimData, SimDevice
    from pymodbus.simulator.simutils import DataType

    out = open(path, "a", buffering=1, encoding="utf-8")

    async def action(function_code, _start, address, count, _registers, values):
        if values is not None:  # a write
            out.write(json.dumps({"t": time.time(), "fc": function_code, "address": address,
                                  "values": [int(v) for v in values][:count]}) + "\n")
            out.flush()
        return None

    device = SimDevice(id=0, action=action, simdata=(
        [SimData(0, count=64, values=False, datatype=DataType.BITS)],  # coils
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],  # discrete inputs
        [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)],  # holding registers
        [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],  # input registers
    ))

    async def serve() -> None:
        await ModbusTcpServer(device, address=("127.0.0.1", port)).serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
