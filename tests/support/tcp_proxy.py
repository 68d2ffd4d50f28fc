"""Moved to :mod:`loop.faults.tcp_proxy` (the fault suite's benchmark uses it too)."""

from loop.faults.tcp_proxy import ProxiedBroker, TcpProxy

__all__ = ["ProxiedBroker", "TcpProxy"]
