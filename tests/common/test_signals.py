"""StopSignals: the first terminating signal interrupts like Ctrl-C, later ones never do."""

from __future__ import annotations

import signal

import pytest

from common.signals import StopSignals, Terminated, stop_reason


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_raise_like_ctrl_c(signum: signal.Signals) -> None:
    with StopSignals("test"), pytest.raises(KeyboardInterrupt) as caught:
        signal.raise_signal(signum)
    assert isinstance(caught.value, Terminated) and caught.value.signum == signum
    assert stop_reason(caught.value) == signum.name


def test_sigint_is_a_plain_ctrl_c() -> None:
    with StopSignals("test"), pytest.raises(KeyboardInterrupt) as caught:
        signal.raise_signal(signal.SIGINT)
    assert not isinstance(caught.value, Terminated)
    assert stop_reason(caught.value) == "Ctrl-C"


def test_a_second_signal_does_not_interrupt_the_cleanup() -> None:
    with StopSignals("test"):
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGTERM)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.raise_signal(signum)  # logged only: the cleanup goes on


def test_no_signal_interrupts_once_stopping() -> None:
    with StopSignals("test") as signals:
        signals.stopping()
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGINT)


def test_previous_handlers_come_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopSignals("test"):
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before
