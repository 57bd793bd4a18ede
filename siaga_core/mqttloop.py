"""paho-mqtt on asyncio: where to connect, and one client's socket driven by the running loop.

paho's own network thread would contend with the event loop for the GIL and hand every
message across threads. Its external-loop API avoids both: the loop watches the socket and
calls `loop_read` / `loop_write`, and paho says through its socket callbacks when a socket
opens or closes and when it has bytes to write. `LoopDriver` is that wiring, written once
for the service's subscriber (ingest.subscriber) and the simulators' publishers
(simulators.connection); each keeps its own reader, which is the hot path.

paho calls the socket callbacks from whichever thread it runs in: the loop's, except while
connecting, which blocks (name lookup, TCP and TLS handshakes) and so runs in a worker
thread. Every callback therefore hops into the loop's thread before touching the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

MISC_EVERY_S = 1.0  # paho's keepalive bookkeeping (PINGREQ, ping timeouts) wants about this
DISCONNECT_TIMEOUT_S = 2.0  # writing DISCONNECT to a live socket takes microseconds


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and as whom to connect."""

    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # kept out of logs
    tls: bool = False
    ca_file: str | None = None  # with tls: the CA to verify the broker by (else the system's)

    def log_in(self, client: mqtt.Client) -> None:
        """Gives `client` the credentials and, with `tls`, the TLS context to connect with."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            # paho picks PROTOCOL_TLS_CLIENT (hostname and certificate checked) by default.
            client.tls_set(ca_certs=self.ca_file)


class LoopDriver:
    """Puts one paho client's socket on the running loop.

    While a socket is open the loop calls `on_readable` when it is readable (unless reading
    is paused) and paho's `loop_write` while paho has bytes queued. `on_readable` is
    registered as given, with no call layer around it: it runs once per readable event.
    The owner still calls `loop_misc` about every `MISC_EVERY_S` and decides when to
    `reconnect`.
    """

    def __init__(self, client: mqtt.Client, on_readable: Callable[[], object]) -> None:
        self._client = client
        self._on_readable = on_readable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.paused = False  # the owner is not reading: the socket is left unwatched
        self.down = asyncio.Event()  # no socket is open
        self.down.set()

    def attach(self) -> None:
        """Binds to the running loop and takes over paho's socket callbacks."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        client = self._client
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "attach() first"
        return self._loop

    def in_loop(self, callback: Callable[..., object], *args: object) -> None:
        """Runs now in the loop's thread (where paho mostly calls back), else hops there."""
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    async def reconnect(self) -> None:
        """Opens a new connection (to the address of `connect_async`) and sends CONNECT.

        The name lookup and the TCP and TLS handshakes block: they run in a worker thread.
        Raises what paho raises: OSError (ssl.SSLError included) or ValueError.
        """
        await asyncio.to_thread(self._client.reconnect)

    async def disconnect(self, timeout_s: float = DISCONNECT_TIMEOUT_S) -> None:
        """Sends DISCONNECT and waits up to `timeout_s` for paho to close the socket; then
        closes it anyway."""
        if self._open_socket() is not None:
            self._client.disconnect()  # queued; the writer sends it and paho closes the socket
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.down.wait(), timeout_s)
        sock = self.release()
        if sock is not None:  # DISCONNECT never left (a broker that stopped reading)
            sock.close()

    def release(self) -> socket.socket | None:
        """Stops watching the open socket, if any, and returns it for the caller to close."""
        sock = self._open_socket()
        if sock is not None:
            self._forget(sock)
        return sock

    def _open_socket(self) -> socket.socket | None:
        sock = self._client.socket()
        # paho forgets a socket it closes; one closed after `release` it still holds.
        if sock is None or sock.fileno() < 0:
            return None
        assert isinstance(sock, socket.socket)  # plain TCP or TLS (a subclass): no websockets
        return sock

    def pause_reading(self) -> None:
        """Leaves the socket unread: TCP flow control then holds the broker back."""
        self.paused = True
        sock = self._client.socket()
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock)

    def resume_reading(self) -> None:
        self.paused = False
        sock = self._client.socket()
        if sock is not None and self._loop is not None:
            self._loop.add_reader(sock, self._on_readable)
            # Bytes may already wait in a read buffer (or TLS's), where epoll cannot see them.
            self._loop.call_soon(self._on_readable)

    # --- paho's socket callbacks (any thread) ----------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.in_loop(self._watch, sock)

    def _watch(self, sock: socket.socket) -> None:
        if self._client.socket() is not sock or self._loop is None:
            return  # closed again before this ran
        self.down.clear()
        if not self.paused:
            self._loop.add_reader(sock, self._on_readable)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.in_loop(self._forget, sock)

    def _forget(self, sock: socket.socket) -> None:
        loop = self._loop
        if loop is not None:
            # After a hop from another thread paho has closed the socket already: the
            # selector then finds it by identity if watched, and raises ValueError if not.
            with contextlib.suppress(ValueError):
                loop.remove_reader(sock)
            with contextlib.suppress(ValueError):
                loop.remove_writer(sock)
        self.down.set()

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.in_loop(self._watch_writable, sock)

    def _watch_writable(self, sock: socket.socket) -> None:
        if self._client.socket() is sock and self._loop is not None:
            self._loop.add_writer(sock, self._client.loop_write)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._loop is not None:
            self.in_loop(self._unwatch_writable, sock)

    def _unwatch_writable(self, sock: socket.socket) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError):  # closed by paho before this hop ran
            self._loop.remove_writer(sock)
