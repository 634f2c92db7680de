"""The ``run all`` supervisor's decisions: the plan from the policy, what a policy change starts and
retires, restart delays, the ports it checks, and that a child that cannot listen stops it."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from pathlib import Path

import pytest

from mailmoat_cli.supervisor import (
    ADDRESS_IN_USE,
    PR_SET_PDEATHSIG,
    Supervisor,
    address_in_use,
    changes,
    child_of_supervisor,
    listeners,
    plan,
    port_taken,
    restart_delay,
    stranded,
)
from mailmoat_platform import stages
from mailmoat_platform.colocated import pipeline_stages
from mailmoat_platform.settings import Settings
from mailmoat_policy import parse_policy

FILTERS = parse_policy("pipeline:\n  filters: [connection_filter, antispam]\n", "p.yaml")


def test_plan_follows_the_policy() -> None:
    assert plan(parse_policy("{}\n", "p.yaml"), 2, False) == [("ingress", 0), ("ingress", 1), ("routing", 0),
                                                             ("egress", 0), ("recorder", 0), ("console", 0)]
    assert plan(FILTERS, 0, True, "redis") == [("ingress", 0), ("connection_filter", 0), ("antispam", 0),
                                               ("routing", 0), ("egress", 0), ("devmailbox", 0)]


def test_a_new_stage_starts_a_dropped_one_retires_and_core_services_stay() -> None:
    running = [("ingress", 0), ("antivirus", 0), ("routing", 0), ("egress", 0), ("recorder", 0), ("console", 0)]
    todo = changes(plan(FILTERS, 1, False), running, retiring=[])
    assert todo.start == [("connection_filter", 0), ("antispam", 0)]
    assert todo.retire == [("antivirus", 0)]
    # a second ingress worker that is no longer planned is not a filter stage: left alone
    assert changes([("routing", 0)], [("ingress", 1), ("routing", 0)], []).retire == []
    # a retiring stage the policy lists again is kept
    again = changes(plan(FILTERS, 1, False), [*running, ("antispam", 0)], retiring=[("antispam", 0)])
    assert again.keep == [("antispam", 0)] and ("antispam", 0) not in again.retire


def test_restart_delay_grows_for_quick_failures_only() -> None:
    assert restart_delay(600, 1) == 0
    assert [restart_delay(0.5, n) for n in (1, 2, 3, 4, 5, 6, 9)] == [1, 2, 4, 8, 16, 30, 30]


def test_listeners_of_a_plan() -> None:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=2525,
                        metrics_ports={"ingress": 9110, "routing": 0, "egress": 9130, "devmailbox": 9190})
    keys = [("ingress", 0), ("ingress", 1), ("routing", 0), ("egress", 0), ("devmailbox", 0)]
    assert listeners(settings, keys, ("127.0.0.1", 2526)) == {
        ("0.0.0.0", 9110): "the metrics port of ingress[0]",
        ("0.0.0.0", 9111): "the metrics port of ingress[1]",
        ("127.0.0.1", 2525): "the SMTP port of ingress",
        ("0.0.0.0", 9130): "the metrics port of egress[0]",
        ("0.0.0.0", 9190): "the metrics port of devmailbox[0]",
        ("127.0.0.1", 2526): "the SMTP port of the development mailbox",
    }


def test_port_taken_sees_a_listener_not_a_closed_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        server.listen()
        assert port_taken("127.0.0.1", port)
        assert port_taken("0.0.0.0", port)
    assert not port_taken("127.0.0.1", port)


def test_address_in_use_errors() -> None:
    taken = OSError(errno.EADDRINUSE, "error while attempting to bind on address: address already in use")
    assert address_in_use(taken)
    assert address_in_use(ExceptionGroup("start", [ValueError("x"), taken]))
    assert not address_in_use(OSError(errno.EACCES, "permission denied"))
    assert not address_in_use(RuntimeError("boom"))
    assert ADDRESS_IN_USE == errno.EADDRINUSE


def test_not_under_a_supervisor_nothing_is_tied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILMOAT_SUPERVISOR_PID", raising=False)
    assert child_of_supervisor()


class Ended:
    """A child process that has exited with ``code``."""

    def __init__(self, code: int):
        self.returncode = code

    def poll(self) -> int:
        return self.returncode


def supervisor(tmp_path: Path) -> Supervisor:
    policy = tmp_path / "policy.yaml"
    policy.write_text("{}\n")
    return Supervisor(Settings(policy_path=str(policy)), False, ask_queues=lambda queues: {})


def test_a_child_that_cannot_listen_stops_the_supervisor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sup = supervisor(tmp_path)
    sup.children = {("ingress", 0): Ended(ADDRESS_IN_USE), ("routing", 0): Ended(1)}  # type: ignore[dict-item]
    sup.reap()
    assert sup.stopping and sup.status == ADDRESS_IN_USE
    assert ("ingress", 0) not in sup.due
    assert "ingress[0] cannot listen: its port is in use; stopping" in capsys.readouterr().err


def test_a_child_that_dies_is_restarted_with_a_delay(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    sup.children = {("routing", 0): Ended(1)}  # type: ignore[dict-item]
    sup.reap()
    assert not sup.stopping and ("routing", 0) in sup.due and sup.failures[("routing", 0)] == 1


def test_stranded_queues_are_those_with_messages_and_no_consumer() -> None:
    assert stranded({"mailmoat.antivirus": (3, 0), "mailmoat.routing": (9, 2), "mailmoat.antispam": (0, 0)}) == {
        "mailmoat.antivirus": 3}


def test_an_unconsumed_queue_is_reported_once_after_two_looks(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    looks = iter([{"mailmoat.antivirus": (3, 0)}, {"mailmoat.antivirus": (4, 0)}, {"mailmoat.antivirus": (5, 0)},
                  None, {"mailmoat.antivirus": (0, 1)}])
    sup = Supervisor(Settings(policy_path=str(supervisor(tmp_path).policy.path)), False,
                     ask_queues=lambda queues: next(looks))
    sup.watch_queues()
    assert capsys.readouterr().err == ""  # once may be a restart
    sup.watch_queues()
    sup.watch_queues()
    sup.watch_queues()  # the broker did not answer: nothing changes
    assert capsys.readouterr().err == "mailmoat: 4 message(s) wait in mailmoat.antivirus and nothing consumes it\n"
    sup.watch_queues()
    assert capsys.readouterr().err == "mailmoat: mailmoat.antivirus is consumed again\n"


def test_a_child_whose_supervisor_is_gone_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor died between starting a child and the child's tie to it: the child must not run
    unsupervised. The variable is consumed, so nothing the child starts inherits it. (The tie itself is
    tested on real processes: tests/integration/test_supervisor_process.py.)"""

    monkeypatch.setenv("MAILMOAT_SUPERVISOR_PID", str(os.getppid() + 100_000))
    try:
        assert not child_of_supervisor()
    finally:  # the check tied this test process to its parent: untie it
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)
    assert "MAILMOAT_SUPERVISOR_PID" not in os.environ


def test_the_colocated_topology_runs_every_filter_stage_and_routing_in_one_pipeline_process() -> None:
    assert plan(FILTERS, 2, False, "postgresql", "colocated") == [
        ("ingress", 0), ("ingress", 1), ("pipeline", 0), ("egress", 0), ("recorder", 0), ("console", 0)]
    # the policy's filters do not change the plan: the pipeline runs every filter stage of the registry
    assert plan(parse_policy("{}\n", "p.yaml"), 1, False, "redis", "colocated") == [
        ("ingress", 0), ("pipeline", 0), ("egress", 0)]
    assert pipeline_stages() == [*(s.name for s in stages.filters()), "routing"]
    # its ports are those of the stages it runs
    settings = Settings(metrics_ports={"connection_filter": 9140, "antivirus": 9150, "routing": 9120})
    assert set(listeners(settings, [("pipeline", 0)], None)) >= {
        ("0.0.0.0", 9140), ("0.0.0.0", 9150), ("0.0.0.0", 9120)}
    # a change of the policy's filters retires nothing in this topology
    assert changes(plan(FILTERS, 1, False, "redis", "colocated"),
                   [("ingress", 0), ("pipeline", 0), ("egress", 0)], []).retire == []


def test_the_topology_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().topology == "stages"
    monkeypatch.setenv("MAILMOAT_TOPOLOGY", "colocated")
    assert Settings.from_env().topology == "colocated"
    monkeypatch.setenv("MAILMOAT_TOPOLOGY", "one-process")
    with pytest.raises(ValueError, match="MAILMOAT_TOPOLOGY='one-process'"):
        Settings.from_env()
