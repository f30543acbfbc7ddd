"""HL7 v2 over MLLP: ADT messages per second on one connection (each acknowledged AA, so
committed), the sender waiting for each ACK and keeping several unacknowledged, and ACK
latency at a steady 50 messages/s, against a `fhir-server mllp` process on a fresh SQLite data
directory.

Each message is an A01 admission of a new patient (Patient, visit Encounter and movement
Encounter: one transaction of three conditional writes, audited). The server's CPU time per
message (from /proc, user + system) is reported beside wall-clock figures: on a shared machine
it is the steadier measure.

    python -m bench.hl7v2 [--messages 1000] [--ahead 16] [--rate 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, percentile, write_results
from fhir_server.crypto import create_key_ring

TEMPLATE = (Path(__file__).resolve().parents[1] / "tests/interop/hl7v2/messages/adt_a01_admit.hl7"
            ).read_bytes().replace(b"\n", b"\r")
VT, FS_CR = b"\x0b", b"\x1c\r"
TICKS = os.sysconf("SC_CLK_TCK")


def admission(n: int, run: str) -> bytes:
    """A01 number n of this run: its own control id, IPP, visit and movement."""
    return (TEMPLATE.replace(b"|A01-0001|", f"|{run}-{n:06d}|".encode())
            .replace(b"100001^^^", f"{run}{n:06d}^^^".encode())
            .replace(b"270056912345647^", b"")  # one identity per patient: no shared INS
            .replace(b"V0001^^^", f"V{run}{n:06d}^^^".encode())
            .replace(b"MVT-0001^", f"M{run}{n:06d}^".encode()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start(data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    key_ring = data_dir / "keyring.json"  # the server refuses to start without one
    create_key_ring(key_ring)
    env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(data_dir), "FHIR_SERVER_MLLP_PORT": "0",
           "FHIR_SERVER_LOG_LEVEL": "warning", "FHIR_SERVER_KEY_RING": str(key_ring)}
    process = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "mllp"], env=env,
                               stderr=subprocess.PIPE)
    assert process.stderr is not None
    while line := process.stderr.readline().decode():
        if line.startswith("MLLP listening on"):
            return process, int(line.rsplit(":", 1)[1])
    raise SystemExit("the server did not start")


class Sender:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, raw: bytes) -> float:
        """Send one message; seconds until its ACK (which must be AA)."""
        started = time.perf_counter()
        self.writer.write(VT + raw + FS_CR)
        await self.writer.drain()
        ack = await self.reader.readuntil(FS_CR)
        elapsed = time.perf_counter() - started
        if b"MSA|AA|" not in ack:
            raise SystemExit(f"not accepted: {ack!r}")
        return elapsed


    async def window(self, messages: list[bytes], ahead: int) -> None:
        """Send `messages` keeping up to `ahead` unacknowledged; each must be AA."""
        async def acks() -> None:
            for _ in messages:
                if b"MSA|AA|" not in await self.reader.readuntil(FS_CR):
                    raise SystemExit("not accepted")
                room.release()

        room = asyncio.Semaphore(ahead)
        reading = asyncio.ensure_future(acks())
        for raw in messages:
            await room.acquire()
            self.writer.write(VT + raw + FS_CR)
            await self.writer.drain()
        await reading


async def throughput(port: int, pid: int, messages: int, ahead: int, run: str) -> dict[str, float]:
    """Messages/s on one connection: the sender waits for each ACK (`ahead` 1) or keeps up to
    `ahead` messages unacknowledged (the listener commits those it has read together)."""
    sender = Sender(*await asyncio.open_connection("127.0.0.1", port))
    for n in range(20):  # warm-up
        await sender.send(admission(n, f"W{run}"))
    batch = [admission(n, run) for n in range(messages)]
    cpu, started = cpu_seconds(pid), time.perf_counter()
    await sender.window(batch, ahead)
    wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    sender.writer.close()
    return {"messages": messages, "ahead": ahead, "seconds": round(wall, 2),
            "messages_per_s": round(messages / wall, 1),
            "server_cpu_ms_per_message": round(cpu * 1000 / messages, 2),
            "cpu_bound_messages_per_s": round(messages / cpu, 1) if cpu else float("inf")}


async def latency(port: int, rate: float, seconds: float) -> dict[str, float]:
    sender = Sender(*await asyncio.open_connection("127.0.0.1", port))
    count = int(rate * seconds)
    latencies, behind = [], 0
    started = time.perf_counter()
    for n in range(count):
        due = started + n / rate
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        else:
            behind += 1
        latencies.append(await sender.send(admission(n, "L")))
    sender.writer.close()
    ordered = sorted(ms * 1000 for ms in latencies)
    return {"messages": count, "rate": rate, "sent_late": behind,
            "p50_ms": round(percentile(ordered, 50), 1), "p95_ms": round(percentile(ordered, 95), 1),
            "p99_ms": round(percentile(ordered, 99), 1), "max_ms": round(ordered[-1], 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="throughput run (default 1000)")
    parser.add_argument("--ahead", type=int, default=16,
                        help="unacknowledged messages of the pipelined throughput run (default 16)")
    parser.add_argument("--rate", type=float, default=50.0, help="latency run's rate (default 50/s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency run's length (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hl7v2-") as data:
        process, port = start(Path(data))
        try:
            results = {"machine": machine(),
                       "throughput_waiting": await throughput(port, process.pid, args.messages, 1, "T"),
                       "throughput_pipelined": await throughput(port, process.pid, args.messages,
                                                                args.ahead, "P"),
                       "latency": await latency(port, args.rate, args.seconds)}
        finally:
            process.terminate()
            process.wait()
    for name in ("throughput_waiting", "throughput_pipelined", "latency"):
        print(name, results[name])
    print(f"results: {write_results('hl7v2', results)}")


if __name__ == "__main__":
    asyncio.run(main())
