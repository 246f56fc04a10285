"""sdk/cpu.py's spare_cpu: the one rule by which the host's callers and a program's SDK
decide to poll, read from a /proc/loadavg and a /proc/pressure/cpu of the test's own."""

from __future__ import annotations

import socket
import time
import types
from pathlib import Path

import pytest

from cliproxy_host.sdk import connection as sdk_connection
from cliproxy_host.sdk import cpu


class Machine:
    """Fake kernel files and a fake clock for spare_cpu."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loadavg = tmp_path / "loadavg"
        self.pressure = tmp_path / "pressure"
        self.now = 100.0
        monkeypatch.setattr(cpu, "_LOADAVG", str(self.loadavg))
        monkeypatch.setattr(cpu, "_PRESSURE", str(self.pressure))
        monkeypatch.setattr(cpu, "time", types.SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(cpu, "_last", cpu._Sample())

    def running(self, tasks: int) -> None:
        self.loadavg.write_text(f"0.50 0.40 0.30 {tasks}/250 1234\n")

    def stalled(self, total_us: int) -> None:
        self.pressure.write_text(
            f"some avg10=0.00 avg60=0.00 avg300=0.00 total={total_us}\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        )

    def later(self, seconds: float = 0.1) -> None:
        self.now += seconds


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    return Machine(tmp_path, monkeypatch)


def test_a_cpu_is_spare_while_no_more_tasks_run_than_cpus(machine: Machine) -> None:
    machine.running(cpu.CPUS)
    assert cpu.spare_cpu()
    machine.later()
    machine.running(cpu.CPUS + 2)
    assert not cpu.spare_cpu()  # no pressure file: the run queue alone decides


def test_with_more_tasks_than_cpus_the_cpu_pressure_decides(machine: Machine) -> None:
    machine.running(cpu.CPUS + 1)
    machine.stalled(1_000_000)
    assert not cpu.spare_cpu()  # a first look has nothing to compare the total with
    machine.later(0.1)
    machine.stalled(1_000_000 + 5_000)  # 5 ms waited in 100 ms: under 10%
    assert cpu.spare_cpu()
    machine.later(0.1)
    machine.stalled(1_005_000 + 50_000)  # 50 ms waited in 100 ms
    assert not cpu.spare_cpu()


def test_the_files_are_read_at_most_every_50_ms(machine: Machine) -> None:
    machine.running(1)
    assert cpu.spare_cpu()
    machine.running(cpu.CPUS + 5)
    machine.later(0.01)
    assert cpu.spare_cpu()  # the last look still holds
    machine.later(0.05)
    assert not cpu.spare_cpu()


def test_where_the_kernel_says_nothing_a_cpu_counts_as_spare(machine: Machine) -> None:
    assert cpu.spare_cpu()  # neither file exists
    machine.later()
    machine.loadavg.write_text("garbage\n")
    assert cpu.spare_cpu()


def test_the_sdk_polls_for_the_next_call_only_while_a_cpu_is_spare(machine: Machine) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = sdk_connection.Connection(ours)
        connection._spin_s = 0.3

        def poll_time() -> float:
            connection.answered_at = time.perf_counter()
            started = time.perf_counter()
            connection._spin()
            return time.perf_counter() - started

        machine.running(cpu.CPUS + 3)  # busy, and no pressure file to say otherwise
        assert poll_time() < 0.2
        machine.later()
        machine.running(1)
        assert poll_time() >= 0.25  # polled to the end: nothing came
