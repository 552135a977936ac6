"""WanProxy against a real TCP echo server on 127.0.0.1.

The outbox sender's WAN-outage behaviour is only as good as these faults are real: each test pins
what a client sees through the proxy in one mode, and that switching modes acts on connections
already open (a keep-alive pool must not survive a cut by accident).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from edge.sim.wan_proxy import WanProxy

# What a client may see when its connection is reset: ECONNRESET from a read or a write, or
# (if the RST races the read) an early end of stream.
RESET_ERRORS = (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)


class EchoServer:
    """A TCP echo server that records how many bytes and connections reached it."""

    def __init__(self) -> None:
        self.bytes_received = 0
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._echo, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                self.bytes_received += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[WanProxy]:
    async with WanProxy("127.0.0.1", echo.port) as wan:
        yield wan


@contextlib.asynccontextmanager
async def connect(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, timeout: float = 2
) -> bytes:
    async with asyncio.timeout(timeout):
        writer.write(data)
        await writer.drain()
        return await reader.readexactly(len(data))


async def test_pass_forwards_bytes_both_ways_and_counts_them(
    proxy: WanProxy, echo: EchoServer
) -> None:
    """In "pass" the proxy is transparent; the counters are what benchmarks report."""
    async with connect(proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"hello") == b"hello"
        assert await roundtrip(reader, writer, b"again") == b"again"
    stats = proxy.stats
    assert stats.connections_accepted == 1
    assert stats.bytes_to_target == 10
    assert stats.bytes_to_client == 10
    assert echo.bytes_received == 10


async def test_a_stream_larger_than_every_buffer_arrives_whole_and_in_order(
    echo: EchoServer,
) -> None:
    """Bounded buffers must push back on the sender (TCP flow control), never drop or reorder."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with (
        WanProxy("127.0.0.1", echo.port, chunk_size=4096, queue_chunks=2) as wan,
        connect(wan.port) as (reader, writer),
    ):
        assert await roundtrip(reader, writer, payload, timeout=10) == payload
        assert wan.stats.bytes_to_target == len(payload)


async def test_refuse_makes_new_connections_fail_fast_with_econnrefused(
    proxy: WanProxy,
) -> None:
    """A hub whose cloud is down must get a connect error at once, not a hang."""
    proxy.mode = "refuse"
    async with asyncio.timeout(1):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_refuse_resets_open_connections_and_pass_reopens_the_same_port(
    proxy: WanProxy,
) -> None:
    """A pooled keep-alive connection must not outlive the far end going away, and the hub,
    still configured with the proxy's port, must reach the cloud again when it comes back."""
    port = proxy.port
    async with connect(port) as (reader, writer):
        assert await roundtrip(reader, writer, b"before") == b"before"
        proxy.mode = "refuse"
        with pytest.raises(RESET_ERRORS):
            await roundtrip(reader, writer, b"during")
    proxy.mode = "pass"
    assert proxy.port == port
    async with connect(port) as (reader, writer):
        assert await roundtrip(reader, writer, b"after") == b"after"


async def test_blackhole_freezes_an_open_connection_and_pass_resumes_it(
    proxy: WanProxy, echo: EchoServer
) -> None:
    """A WAN cut: the write succeeds, the answer never comes, the far end never hears it.
    When the link returns before the client gives up, the same connection carries on."""
    async with connect(proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"up") == b"up"
        proxy.mode = "blackhole"
        writer.write(b"ping")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await reader.readexactly(4)
        assert echo.bytes_received == 2
        proxy.mode = "pass"
        async with asyncio.timeout(2):
            assert await reader.readexactly(4) == b"ping"


async def test_blackhole_accepts_new_connections_but_nothing_reaches_the_far_end(
    proxy: WanProxy, echo: EchoServer
) -> None:
    """During a cut a new connection looks open (the hub cannot tell) yet gets no answer."""
    proxy.mode = "blackhole"
    async with connect(proxy.port) as (reader, writer):
        writer.write(b"hello?")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await reader.readexactly(6)
        assert echo.connections == 0
        proxy.mode = "pass"
        async with asyncio.timeout(2):
            assert await reader.readexactly(6) == b"hello?"


async def test_reset_kills_open_connections_with_econnreset(proxy: WanProxy) -> None:
    """Switching to "reset" must break connections already open, mid-stream."""
    async with connect(proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"one") == b"one"
        proxy.mode = "reset"
        with pytest.raises(RESET_ERRORS):
            await roundtrip(reader, writer, b"two")
    assert proxy.stats.connections_reset == 1


async def test_reset_cuts_a_new_connection_after_its_request_without_forwarding_it(
    proxy: WanProxy, echo: EchoServer
) -> None:
    """The client sends its request and then sees ECONNRESET; the far end saw nothing."""
    proxy.mode = "reset"
    async with connect(proxy.port) as (reader, writer):
        with pytest.raises(RESET_ERRORS):
            await roundtrip(reader, writer, b"request")
    assert echo.bytes_received == 0
    proxy.mode = "pass"
    async with connect(proxy.port) as (reader, writer):
        assert await roundtrip(reader, writer, b"ok") == b"ok"


async def test_latency_is_added_to_each_direction(proxy: WanProxy) -> None:
    """A round trip through a WAN with one-way delay d takes at least 2d."""
    one_way = 0.05
    proxy.latency_s = one_way
    loop = asyncio.get_running_loop()
    async with connect(proxy.port) as (reader, writer):
        started = loop.time()
        assert await roundtrip(reader, writer, b"slow") == b"slow"
        assert loop.time() - started >= 2 * one_way


def test_latency_and_mode_refuse_nonsense() -> None:
    """A typo in a demo script must fail loudly, not run a WAN that does something else."""
    wan = WanProxy("127.0.0.1", 9)
    with pytest.raises(ValueError, match="unknown WAN mode"):
        wan.mode = "down"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="latency_s"):
        wan.latency_s = -1.0
    with pytest.raises(ValueError, match="latency_s"):
        wan.latency_s = float("nan")


async def test_connections_beyond_the_limit_are_reset(echo: EchoServer) -> None:
    """The proxy holds a bounded number of links; the excess fails fast instead of piling up."""
    async with (
        WanProxy("127.0.0.1", echo.port, max_connections=2) as wan,
        connect(wan.port) as (r1, w1),
        connect(wan.port) as (r2, w2),
    ):
        assert await roundtrip(r1, w1, b"1") == b"1"
        assert await roundtrip(r2, w2, b"2") == b"2"
        async with connect(wan.port) as (r3, w3):
            with pytest.raises(RESET_ERRORS):
                await roundtrip(r3, w3, b"3")
        assert wan.stats.connections_over_limit == 1
        assert await roundtrip(r1, w1, b"still") == b"still"


async def test_a_dead_target_resets_the_client_instead_of_hanging() -> None:
    """If nothing listens behind the proxy, the client must see its connection fail."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # bound but not listening: connects are refused
        async with WanProxy("127.0.0.1", dead_port) as wan, connect(wan.port) as (reader, writer):
            with pytest.raises(RESET_ERRORS):
                await roundtrip(reader, writer, b"anyone?")
            assert wan.stats.upstream_connect_failures == 1


async def test_aclose_ends_every_link_and_task(echo: EchoServer) -> None:
    """Closing the proxy must not leave tasks or sockets behind (tests run many proxies)."""
    wan = WanProxy("127.0.0.1", echo.port)
    await wan.start()
    port = wan.port
    async with connect(port) as (reader, writer):
        assert await roundtrip(reader, writer, b"x") == b"x"
        await wan.aclose()
        with pytest.raises(RESET_ERRORS):
            await roundtrip(reader, writer, b"y")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("wan-")]
    assert wan.stats.connections_active == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_proxy_runs_once() -> None:
    """Not re-entrant, like aiomqtt's client: a second start is a bug in the caller."""
    async with WanProxy("127.0.0.1", 9) as wan:
        with pytest.raises(RuntimeError):
            await wan.start()
