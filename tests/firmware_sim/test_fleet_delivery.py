"""The fleet run stops an agent only once it has delivered what it owes the collector up to the
end of the run, not merely stored it in its outbox: a graceful stop seals the outbox but does not
empty it, and a gateway restarted late (a power cycle on a loaded machine) that took its meters'
whole log since the kill in one poll was stopped with those readings still queued (the end-to-end
test counted 54 to 654 readings a meter as missing when other tests ran beside it)."""

from __future__ import annotations

from firmware_sim.fleet_run import FleetRun
from firmware_sim.scenario import load_scenario

SCENARIO = """
[run]
start = "2026-03-02T00:00:00Z"
hours = 6
warmup_hours = 2

[fleet]
seed = 11
gateways = 1
meters_per_gateway = 2
mode = "process"
"""


def test_the_run_counts_an_agent_done_only_once_the_broker_has_acknowledged_what_it_owes_up_to_the_end(tmp_path):
    """Stored is not delivered: the meters' cursor passes the end as soon as the outbox holds the
    readings, and a graceful stop then would keep them in the outbox, unsent."""
    from edge_agent.clock import ManualClock
    from edge_agent.config import AgentSettings
    from edge_agent.runtime import Agent, NullTransport
    from firmware_sim.reader import SimulatedMeterReader, committed_cursor

    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    run = FleetRun(load_scenario(path), tmp_path / "run")
    start = run.scored_start
    data = run.outbox_path(0).parent
    reader = SimulatedMeterReader.from_config({"seed": 11, "gateway": 0, "meters": 2, "since": start,
                                               "state_path": str(run.cursor_path(0))})
    clock = ManualClock(start)
    agent = Agent(AgentSettings(gateway_id="gw-0000", data_dir=data, poll_s=60, raw_chunk_s=900, status_s=900),
                  readers=[reader], clock=clock, scorer=None, transport=NullTransport())

    def poll_until(t: float) -> None:
        while clock.now() < t:
            clock.advance(60)
            agent.tick()

    def broker_acknowledges_everything() -> None:
        agent.outbox.ack([m.seq for m in agent.outbox.pending(10**6, live_from_seq=0, backlog_limit=10**6)])

    until = start + 3660  # sealed at start + 4500, the next raw chunk period
    marks: dict[int, int] = {}
    poll_until(until + 120)
    assert committed_cursor(run.cursor_path(0)) >= until  # read and stored through the end
    assert not run.delivered_through(0, until, marks)  # ... but still queued in the outbox
    broker_acknowledges_everything()
    assert not run.delivered_through(0, until, marks)  # the last readings are not even in a raw chunk
    poll_until(start + 4500)
    assert not run.delivered_through(0, until, marks)  # sealed, waiting for the broker
    agent.tick()  # more messages, all about later readings
    broker_acknowledges_everything()
    poll_until(start + 4800)
    assert run.delivered_through(0, until, marks)  # what came after the end need not be delivered
    agent.shutdown()
