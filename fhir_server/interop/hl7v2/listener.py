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
from .message import Message, read
from .problems import Code, Problem, Refused
from .receiver import Receiver

log = logging.getLogger("fhir_server.hl7v2")
_END = END_BLOCK + CARRIAGE_RETURN
_READ = 65536
WINDOW = 32  # frames of one connection read and not yet acknowledged; the next read waits
STOP_TIMEOUT = 30.0  # seconds a stop waits for the messages already read
# Seconds a frame may take from its first byte to its end: a peer trickling bytes (or never
# ending a frame) is disconnected rather than holding a buffer and a socket. An idle
# connection between frames is left open, as MLLP senders keep theirs.
FRAME_TIMEOUT = 60.0
_FAULT = Problem(Code.INTERNAL_ERROR, "Internal error; send the message again later.")


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
        self.deadline: float | None = None  # when the frame begun in the buffer must be complete

    async def next(self) -> bytes | Broken | None:
        """The next message, a Broken frame, or None at the end of the connection."""
        while True:
            end = self.buffer.find(_END)
            if end >= 0:
                frame = bytes(self.buffer[:end])
                del self.buffer[:end + len(_END)]
                self.deadline = None
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
            if len(self.buffer) > self.limit + 2:  # <VT>, the message, an <FS> awaiting its <CR>
                self.dropping = True
                del self.buffer[:-1]  # the last byte may be the <FS> of <FS><CR>
            try:
                data = await self._read()
            except TimeoutError:
                log.warning("hl7v2: a frame not completed in time; connection closed",
                            extra={"seconds": FRAME_TIMEOUT})
                return None
            if not data:
                return None
            self.buffer += data

    async def _read(self) -> bytes:
        if not self.buffer and not self.dropping:
            return await self.reader.read(_READ)
        loop = asyncio.get_running_loop()
        if self.deadline is None:
            self.deadline = loop.time() + FRAME_TIMEOUT
        return await asyncio.wait_for(self.reader.read(_READ), max(self.deadline - loop.time(), 0))


class Listener:
    """Serves MLLP on `host`:`port` for `receiver`."""

    def __init__(self, receiver: Receiver, host: str, port: int, max_message_bytes: int, *,
                 max_connections: int) -> None:
        self.receiver = receiver
        self.host = host
        self.port = port
        self.limit = max_message_bytes
        # Each connection may hold WINDOW frames of `limit` bytes: their number bounds memory.
        self.max_connections = max_connections
        self.server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

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
            for writer in list(self._connections):
                writer.close()  # stop reading; the messages read are still processed
            if self._connections:
                await asyncio.wait(self._connections.values(), timeout=STOP_TIMEOUT)
            await self.server.wait_closed()
        self.receiver.inbox.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read frames, process them in order, write their ACKs in the order the frames came.

        A sender that waits for each ACK gets one message processed at a time. One that
        sends ahead (up to WINDOW frames) has the frames that arrived while the earlier
        ones were processed taken together (receiver.receive_all: one transaction when
        they can share it)."""
        address = writer.get_extra_info("peername")
        peer = str(address[0]) if address else None
        if len(self._connections) >= self.max_connections:
            log.warning("hl7v2: too many MLLP connections; one refused",
                        extra={"peer": peer, "max_connections": self.max_connections})
            writer.close()  # nothing read from it: the sender sees the close and retries later
            return
        pending: asyncio.Queue[asyncio.Future[bytes] | None] = asyncio.Queue(WINDOW)
        replies = asyncio.ensure_future(self._reply(pending, writer))
        order = _InOrder(self.receiver, peer)
        frames = Frames(reader, self.limit)
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            while (frame := await frames.next()) is not None and not replies.done():
                if isinstance(frame, Broken):
                    answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                    answer.set_result(acknowledgment(None, "AR", (Problem(Code.SEGMENT_SEQUENCE, frame.reason),)))
                else:
                    answer = order.add(frame, read(frame))
                await pending.put(answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away; what it sent and got acknowledged is settled
        except Exception:  # noqa: BLE001 - one connection's fault must not stop the listener
            log.exception("hl7v2: a connection failed")
        finally:
            await pending.put(None)
            await asyncio.wait([replies])  # the messages read are processed to the end
            self._connections.pop(writer, None)
            writer.close()

    async def _reply(self, pending: asyncio.Queue[asyncio.Future[bytes] | None],
                     writer: asyncio.StreamWriter) -> None:
        """Write each ACK once its message is done, in order; after a write fails, only wait."""
        broken = False
        while (answer := await pending.get()) is not None:
            ack = await answer
            if broken:
                continue
            try:
                writer.write(START_BLOCK + ack + _END)
                await writer.drain()
            except Exception:  # noqa: BLE001 - the peer is gone; the messages still run to the end
                broken = True


class _InOrder:
    """Processes the messages of one connection in the order they came: those that arrive
    while earlier ones are processed wait, and are then taken all at once."""

    def __init__(self, receiver: Receiver, peer: str | None) -> None:
        self.receiver = receiver
        self.peer = peer
        self.waiting: list[tuple[bytes, Message | Refused, asyncio.Future[bytes]]] = []
        self.running: asyncio.Task[None] | None = None

    def add(self, raw: bytes, message: Message | Refused) -> asyncio.Future[bytes]:
        """The future ACK of a message."""
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting.append((raw, message, answer))
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(self._drain())
        return answer

    async def _drain(self) -> None:
        while self.waiting:
            taken, self.waiting = self.waiting, []
            try:
                acks = await self.receiver.receive_all([(raw, message) for raw, message, _ in taken],
                                                       self.peer)
            except Exception:  # noqa: BLE001 - receive_all answers every message; a bug must not hang the sender
                log.exception("hl7v2: messages could not be answered")
                acks = [acknowledgment(m.header if isinstance(m, Message) else None, "AE", (_FAULT,))
                        for _, m, _ in taken]
            for (_, _, answer), ack in zip(taken, acks, strict=True):
                answer.set_result(ack)
