"""A TCP fault proxy that stands for the WAN between the hub and the cloud.

Theory of operation
-------------------
The hub is pointed at ``127.0.0.1:<proxy.port>`` instead of the cloud; every accepted connection
becomes a *link* that opens its own connection to the target and copies bytes both ways. The
proxy's :attr:`WanProxy.mode` is the state of the WAN and may be changed at any moment; a change
applies to new connections **and** to the links already open:

======================  =====================================  ==================================
mode                    new connection                         links already open
======================  =====================================  ==================================
``pass``                forwarded both ways                    resume forwarding
``blackhole``           accepted, then nothing moves           freeze: nothing moves either way
``reset``               accepted; RST when the client speaks   RST to both peers at once
``refuse``              ECONNREFUSED (the port stops           RST to both peers at once (the far
                        listening but stays bound to us)       end is gone)
======================  =====================================  ==================================

A WAN cut (``blackhole``) is modelled as TCP experiences it: the packets vanish, so the proxy
stops *reading and writing* and the bytes wait in the kernel buffers, as they would in the
sender's retransmission queue. Nothing is ever dropped from the middle of a stream, because a real
network cannot do that to TCP: either the bytes arrive in order or the connection dies. So the
client sees exactly what a cut gives it (its write succeeds, its read never completes), and if the
mode goes back to ``pass`` before the client gives up, the connection carries on, late. A client
that closed its socket during the cut may still have its request delivered once the link is back;
that is the real "lost answer" hazard that idempotency keys exist for.

``reset`` sets ``SO_LINGER {on, 0}`` before closing, which makes the kernel send RST instead of
FIN (socket(7), tcp(7)), so the peer's next read or write fails with ECONNRESET.

``refuse`` uses a Linux behaviour: ``shutdown(2)`` on a listening socket stops it listening
(pending connections in the backlog are reset) while it keeps its port, and a later ``listen(2)``
resumes on the same port. The listening socket is bound to an explicit port number (found with a
throw-away ``SO_REUSEPORT`` probe when ``listen_port=0``), because Linux gives an auto-assigned
port back when the socket stops listening. Where ``shutdown`` is refused, new connections are
accepted and reset instead.

``latency_s`` is a one-way delay added to every chunk in both directions. Each direction is a
delay line (a bounded queue of ``(deliver_at, chunk)``), so the delay does not cut throughput,
as propagation delay would not.

Bounds: ``max_connections`` links at once (the excess is accepted and reset at once), reads of at
most ``chunk_size`` bytes, at most ``queue_chunks`` chunks held per direction; a full queue stops
the reader, so TCP flow control pushes back on the sender.

Concurrency: one supervisor task owns an :class:`asyncio.TaskGroup` holding the accept loop and
one task per link; :meth:`WanProxy.aclose` cancels it, and every socket is closed in ``finally``.
A link's errors end that link only (with RST to both peers), never the proxy.

Calling contract: create, then ``async with proxy:`` (or :meth:`start` / :meth:`aclose`) inside a
running event loop; :attr:`mode` and :attr:`latency_s` may be set from any coroutine or callback
on that loop. Not re-entrant: a proxy runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import struct
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Final, Literal, TypeAlias, get_args

log = logging.getLogger(__name__)

WanMode: TypeAlias = Literal["pass", "refuse", "blackhole", "reset"]
WAN_MODES: Final[tuple[WanMode, ...]] = get_args(WanMode)

# struct linger {int l_onoff; int l_linger;} with l_onoff=1, l_linger=0: close() sends RST.
_LINGER_RST: Final = struct.pack("ii", 1, 0)
# accept() errors that concern one connection or a listener we shut down ourselves, not the proxy.
_TRANSIENT_ACCEPT_ERRNOS: Final = frozenset({errno.EINVAL, errno.ECONNABORTED, errno.EPROTO})
_EOF: Final = None


@dataclass(slots=True)
class ProxyStats:
    """Counters since start. ``bytes_*`` count bytes delivered to the far side."""

    connections_accepted: int = 0
    """Every connection accept() returned, including those reset at once."""
    connections_active: int = 0
    connections_over_limit: int = 0
    """Accepted beyond ``max_connections`` and reset at once."""
    connections_reset: int = 0
    """Links ended with RST: by ``reset``/``refuse`` mode, an over-limit, or a peer error."""
    upstream_connect_failures: int = 0
    bytes_to_target: int = 0
    bytes_to_client: int = 0


class WanProxy:
    """TCP proxy ``listen_host:port`` -> ``target_host:target_port`` with switchable WAN faults."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        *,
        max_connections: int = 256,
        chunk_size: int = 64 * 1024,
        queue_chunks: int = 16,
        connect_timeout_s: float = 5.0,
        backlog: int = 128,
    ) -> None:
        if max_connections < 1 or chunk_size < 1 or queue_chunks < 1 or backlog < 1:
            raise ValueError("max_connections, chunk_size, queue_chunks and backlog must be >= 1")
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._requested_port = listen_port
        self.max_connections = max_connections
        self.chunk_size = chunk_size
        self.queue_chunks = queue_chunks
        self.connect_timeout_s = connect_timeout_s
        self._backlog = backlog

        self._mode: WanMode = "pass"
        self._latency_s = 0.0
        self._stats = ProxyStats()
        self._flowing = asyncio.Event()  # set while mode == "pass"
        self._flowing.set()
        self._accepting = asyncio.Event()  # set while the listener listens
        self._listener: socket.socket | None = None
        self._links: set[_Link] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -- public face -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound listening port (valid after :meth:`start`)."""
        if self._listener is None:
            raise RuntimeError("WanProxy.port is known only after start()")
        return int(self._listener.getsockname()[1])

    @property
    def mode(self) -> WanMode:
        return self._mode

    @mode.setter
    def mode(self, mode: WanMode) -> None:
        if mode not in WAN_MODES:
            raise ValueError(f"unknown WAN mode {mode!r}; expected one of {WAN_MODES}")
        old, self._mode = self._mode, mode
        if old == mode:
            return
        log.debug("wan proxy :%s mode %s -> %s", self._port_or_none(), old, mode)
        if mode == "pass":
            self._flowing.set()
        else:
            self._flowing.clear()
        if mode in ("reset", "refuse"):
            for link in list(self._links):
                link.kill()
        if self._listener is not None:
            if mode == "refuse":
                self._stop_listening()
            elif old == "refuse":
                self._listen()

    @property
    def latency_s(self) -> float:
        """One-way delay added to each forwarded chunk, in both directions."""
        return self._latency_s

    @latency_s.setter
    def latency_s(self, value: float) -> None:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"latency_s must be a finite number >= 0, not {value!r}")
        self._latency_s = float(value)

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        return replace(self._stats, connections_active=len(self._links))

    async def start(self) -> None:
        """Bind and start accepting. Raises OSError if the port cannot be bound."""
        if self._started:
            raise RuntimeError("WanProxy is not re-entrant: it was already started")
        self._started = True
        self._listener = _bind_with_fixed_port(self.listen_host, self._requested_port)
        if self._mode != "refuse":
            self._listen()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"wan-proxy:{self.port}")

    async def aclose(self) -> None:
        """Reset every link, stop listening and wait for all tasks to end. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for link in list(self._links):
            link.kill()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._listener is not None:
            self._listener.close()

    async def __aenter__(self) -> WanProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- listener --------------------------------------------------------------------------

    def _port_or_none(self) -> int | None:
        return self.port if self._listener is not None else None

    def _listen(self) -> None:
        assert self._listener is not None
        self._listener.listen(self._backlog)
        self._accepting.set()

    def _stop_listening(self) -> None:
        assert self._listener is not None
        try:
            # Linux: a listening socket that is shut down stops listening (and resets its
            # backlog) but keeps its bound port, so listen() can resume it later.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            # Elsewhere: keep listening; _admit() resets what is accepted while refusing.
            log.debug("listener shutdown refused (%s); refusing by accept-and-reset", exc)
            return
        self._accepting.clear()

    async def _supervise(self) -> None:
        assert self._listener is not None
        listener = self._listener
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tasks:
            while True:
                await self._accepting.wait()
                try:
                    conn, _ = await loop.sock_accept(listener)
                except OSError as exc:
                    # EINVAL: the listener was shut down for "refuse" under a pending accept.
                    if exc.errno in _TRANSIENT_ACCEPT_ERRNOS:
                        continue
                    raise
                self._admit(conn, tasks)

    def _admit(self, conn: socket.socket, tasks: asyncio.TaskGroup) -> None:
        self._stats.connections_accepted += 1
        if self._closed or self._mode == "refuse":
            # Accepted in the instant before the listener stopped, or the listener cannot stop.
            self._stats.connections_reset += 1
            _reset_socket(conn)
            return
        if len(self._links) >= self.max_connections:
            self._stats.connections_over_limit += 1
            self._stats.connections_reset += 1
            _reset_socket(conn)
            return
        link = _Link(self, conn)
        self._links.add(link)
        link.task = tasks.create_task(link.run(), name=f"wan-link:{link.peer}")

    # -- used by links ---------------------------------------------------------------------

    def _link_done(self, link: _Link) -> None:
        self._links.discard(link)

    def _count_reset(self) -> None:
        self._stats.connections_reset += 1

    def _count_connect_failure(self) -> None:
        self._stats.upstream_connect_failures += 1

    def _count_bytes(self, to_target: bool, n: int) -> None:
        if to_target:
            self._stats.bytes_to_target += n
        else:
            self._stats.bytes_to_client += n


def _bind_with_fixed_port(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket bound to ``host:port``; ``port=0`` picks a free port first.

    Binding to an explicit port matters: Linux releases an auto-assigned port when a listening
    socket is shut down, but keeps an explicitly bound one (see "refuse" in the module docstring).
    The probe and the real socket both set SO_REUSEPORT so the real one can take the probe's port
    while the probe still holds it: no window where another socket could grab it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe: socket.socket | None = None
    if port == 0 and hasattr(socket, "SO_REUSEPORT"):
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if probe is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    finally:
        if probe is not None:
            probe.close()
    return sock


def _reset_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


def _reset_transport(writer: asyncio.StreamWriter | None) -> None:
    """Close ``writer``'s socket with RST (SO_LINGER 0), dropping anything unsent."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


_Chunk: TypeAlias = tuple[float, bytes] | None


class _Link:
    """One client connection and its upstream connection.

    Lifecycle: run() -> [born in reset: wait for the first client bytes, then RST] -> wait
    until the WAN flows -> connect upstream (failure: RST the client) -> two delay lines until
    both sides have sent EOF (clean close) or one side fails (RST both). kill() ends it with RST
    from outside, from any state.
    """

    def __init__(self, proxy: WanProxy, conn: socket.socket) -> None:
        self._proxy = proxy
        self._conn: socket.socket | None = conn
        try:
            self.peer = "{}:{}".format(*conn.getpeername()[:2])
        except OSError:
            self.peer = "?"
        self.task: asyncio.Task[None] | None = None
        self._client: asyncio.StreamWriter | None = None
        self._upstream: asyncio.StreamWriter | None = None
        self._killed = False

    def kill(self) -> None:
        """RST both peers now and cancel the link's task (safe from any state, idempotent)."""
        if self._killed:
            return
        self._killed = True
        self._proxy._count_reset()
        if self._conn is not None:
            _reset_socket(self._conn)
            self._conn = None
        _reset_transport(self._client)
        _reset_transport(self._upstream)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def run(self) -> None:
        proxy = self._proxy
        try:
            await self._run()
        except* (OSError, EOFError) as group:
            # A peer reset or vanished: pass the failure on to the other peer as RST.
            log.debug("wan link %s failed: %r", self.peer, group.exceptions)
            self.kill()
        finally:
            proxy._link_done(self)
            if not self._killed:
                if self._conn is not None:
                    self._conn.close()
                for writer in (self._client, self._upstream):
                    if writer is not None:
                        writer.close()

    async def _run(self) -> None:
        proxy = self._proxy
        assert self._conn is not None
        limit = proxy.chunk_size
        client_reader, self._client = await asyncio.open_connection(sock=self._conn, limit=limit)
        self._conn = None  # now owned by the transport
        first = b""
        if proxy.mode == "reset":
            # Reset "mid-stream": let the client send its request, then cut.
            first = await client_reader.read(limit)
            if not first:
                return
            if proxy.mode == "reset":
                self.kill()
                return
        await proxy._flowing.wait()  # born in a WAN cut: nothing reaches the far end yet
        try:
            async with asyncio.timeout(proxy.connect_timeout_s):
                upstream_reader, self._upstream = await asyncio.open_connection(
                    proxy.target_host, proxy.target_port, limit=limit
                )
        except (OSError, TimeoutError):
            # The far end is down: the client must see the connection fail, not hang.
            proxy._count_connect_failure()
            self.kill()
            return
        async with asyncio.TaskGroup() as pipes:
            pipes.create_task(self._pipe(client_reader, self._upstream, True, first))
            pipes.create_task(self._pipe(upstream_reader, self._client, False, b""))

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        to_target: bool,
        first: bytes,
    ) -> None:
        """One direction: a reader filling a bounded delay line and a writer draining it."""
        line: asyncio.Queue[_Chunk] = asyncio.Queue(self._proxy.queue_chunks)
        loop = asyncio.get_running_loop()
        if first:
            line.put_nowait((loop.time() + self._proxy.latency_s, first))
        async with asyncio.TaskGroup() as halves:
            halves.create_task(self._fill(reader, line))
            halves.create_task(self._drain(line, writer, to_target))

    async def _fill(self, reader: asyncio.StreamReader, line: asyncio.Queue[_Chunk]) -> None:
        proxy = self._proxy
        loop = asyncio.get_running_loop()
        while True:
            await proxy._flowing.wait()  # WAN cut: stop reading, the bytes wait in the kernel
            data = await reader.read(proxy.chunk_size)
            if not data:
                await line.put(_EOF)
                return
            await line.put((loop.time() + proxy.latency_s, data))

    async def _drain(
        self, line: asyncio.Queue[_Chunk], writer: asyncio.StreamWriter, to_target: bool
    ) -> None:
        proxy = self._proxy
        loop = asyncio.get_running_loop()
        while True:
            item = await line.get()
            if item is _EOF:
                # Half-close: pass the FIN on; the other direction may still be talking.
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                return
            deliver_at, data = item
            delay = deliver_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await proxy._flowing.wait()  # WAN cut: hold what was in flight
            writer.write(data)
            await writer.drain()
            proxy._count_bytes(to_target, len(data))
