"""A small threaded TCP proxy on loopback that tests can cut, slow down and resume.

Tests "the broker is unreachable" without destroying the broker's data (docs/measurements.md,
"Dev broker"). The idea is the one of Shopify's toxiproxy, reduced to what our tests need:

- ``cut()``: close every open connection and close new ones as soon as they are accepted
  (the client sees a reset/EOF, like a broker behind a dead network path);
- ``slow(delay)``: forward each chunk only after ``delay`` seconds (a slow network);
- ``resume()``: forward normally again.

Kafka clients connect to the *advertised* broker address from metadata, so the broker must
advertise the proxy's address: :class:`ProxiedBroker` starts a Tansu broker that does.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from devtools.broker import DevBroker, free_port

logger = logging.getLogger(__name__)

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``."""

    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.delay = 0.0
        self.connections_accepted = 0
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed.set()
        self._close_all()
        if self._listener is not None:
            self._listener.close()

    # ---- faults ------------------------------------------------------------------------------
    def cut(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`resume`."""
        self._cut.set()
        self._close_all()

    def slow(self, delay: float) -> None:
        """Delay every forwarded chunk by ``delay`` seconds (both directions)."""
        self.delay = delay

    def resume(self) -> None:
        self.delay = 0.0
        self._cut.clear()

    # ---- plumbing ----------------------------------------------------------------------------
    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.connections_accepted += 1
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data or self._cut.is_set():
                    break
                if self.delay:
                    time.sleep(self.delay)
                if self._cut.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ProxiedBroker(DevBroker):
    """A Tansu broker reachable only through a :class:`TcpProxy` (it advertises the proxy)."""

    def __init__(
        self,
        topics: Iterable[str] | None = None,
        partitions: int = 1,
        log_path: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.broker_port = free_port()
        self.proxy = TcpProxy(self.broker_port)
        super().__init__(
            port=self.broker_port,
            topics=topics,
            partitions=partitions,
            log_path=log_path,
            advertised_port=self.proxy.port,
            data_dir=data_dir,
        )

    @property
    def direct_bootstrap(self) -> str:
        """Only for bootstrapping; metadata still sends clients to the proxy."""
        return f"127.0.0.1:{self.broker_port}"

    def start(self, timeout: float = 30.0) -> ProxiedBroker:
        self.proxy.start()
        super().start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.proxy.stop()  # close client connections first: Tansu waits for them on SIGTERM
        super().stop(timeout)

    def restart_behind_proxy(self, down_seconds: float = 0.0) -> None:
        """Stop the broker process and start it again on the same port; the proxy stays up, so
        clients see a broker that went away and came back (with ``data_dir``, its data too)."""
        DevBroker.stop(self)
        time.sleep(down_seconds)
        DevBroker.start(self)

    def __enter__(self) -> ProxiedBroker:
        return self.start()
