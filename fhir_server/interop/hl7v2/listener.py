"""The MLLP listener: TCP connections carrying frames <VT> message <FS><CR> (HL7 v2 MLLP
release 2), each answered with one acknowledgment frame, in order, on its connection.

Framing is checked here: bytes before a frame's <VT> are dropped (a sender's truncated
frame, line noise), a frame without <VT> or larger than the limit is answered with an AR
and skipped, and the connection goes on. Nothing a peer sends stops the listener."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from .ack import acknowledgment
from .problems import Code, Problem
from .receiver import Receiver

log = logging.getLogger("fhir_server.hl7v2")
_END = END_BLOCK + CARRIAGE_RETURN
_READ = 65536


@dataclass(frozen=True, slots=True)
class Broken:
    """A frame that cannot be read, and why."""

    reason: str


class Frames:
    """The frames of one connection, read as they arrive (split across packets or several
    in one), each at most `limit` bytes."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self.reader = reader
        self.limit = limit
        self.buffer = bytearray()
        self.dropping = False  # inside a frame over the limit: discard until its end

    async def next(self) -> bytes | Broken | None:
        """The next message, a Broken frame, or None at the end of the connection."""
        while True:
            end = self.buffer.find(_END)
            if end >= 0:
                frame = bytes(self.buffer[:end])
                del self.buffer[:end + len(_END)]
                if self.dropping:
                    self.dropping = False
                    return Broken(f"The message is larger than {self.limit} bytes.")
                start = frame.rfind(START_BLOCK)
                if start < 0:
                    return Broken("The frame has no start block <VT>.")
                if start > 0:
                    log.warning("hl7v2: bytes before a frame's start dropped", extra={"bytes": start})
                if end - start - 1 > self.limit:
                    return Broken(f"The message is larger than {self.limit} bytes.")
                return frame[start + 1:]
            if len(self.buffer) > self.limit + 1:
                self.dropping = True
                del self.buffer[:-1]  # the last byte may be the <FS> of <FS><CR>
            data = await self.reader.read(_READ)
            if not data:
                return None
            self.buffer += data


class Listener:
    """Serves MLLP on `host`:`port` for `receiver`."""

    def __init__(self, receiver: Receiver, host: str, port: int, max_message_bytes: int) -> None:
        self.receiver = receiver
        self.host = host
        self.port = port
        self.limit = max_message_bytes
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        # SO_REUSEPORT: each worker process of `serve --workers N` listens on the port, as HTTP does.
        self.server = await asyncio.start_server(self._connection, self.host, self.port,
                                                 reuse_port=True)
        log.info("hl7v2: MLLP listening", extra={"port": self.bound_port})

    @property
    def bound_port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, let the connections end, close the inbox."""
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()
        self.receiver.inbox.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")
        peer = str(address[0]) if address else None
        frames = Frames(reader, self.limit)
        self._writers.add(writer)
        try:
            while (frame := await frames.next()) is not None:
                if isinstance(frame, Broken):
                    ack = acknowledgment(None, "AR", (Problem(Code.SEGMENT_SEQUENCE, frame.reason),))
                else:
                    ack = await self.receiver.receive(frame, peer)
                writer.write(START_BLOCK + ack + _END)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away; what it sent and got acknowledged is settled
        except Exception:  # noqa: BLE001 - one connection's fault must not stop the listener
            log.exception("hl7v2: a connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()
