"""The seat of a killed leader fails over without the program noticing.
Runs first (conftest.py says why)."""

import os
import signal
import threading
import time

import pytest


@pytest.mark.kills_leader
def test_a_seat_stays_valid_while_the_sdk_fails_over_from_a_killed_leader(pool, make_client):
    client = make_client()
    seat = client.checkout("app", "1.0")
    assert seat.server_id == pool.leader_id, "the leader, asked first, should hold the seat"
    changes = []
    refused = []
    changed = threading.Event()

    def on_change(state, detail):
        changes.append((state, detail))
        # A blocking call here would stall the SDK's thread: refused.
        try:
            client.checkout("app", "1.0")
        except RuntimeError as refusal:
            refused.append(str(refusal))
        changed.set()

    seat.on_change(on_change)
    os.kill(pool.leader_pid, signal.SIGKILL)
    killed = time.monotonic()
    # Valid all along, for three leases.
    until = killed + 3 * pool.lease_s
    while time.monotonic() < until:
        assert seat.is_valid(), "invalid %.1f s after the kill: %s %s" % (
            time.monotonic() - killed,
            seat.state,
            seat.lost_reason,
        )
        assert seat.state == "held"
        time.sleep(0.05)
    assert seat.server_id != pool.leader_id
    assert changed.wait(5), "on_change was never called"
    assert ("held", seat.server_id) in changes, changes
    assert all(state == "held" for state, _ in changes), changes
    assert refused and "on_change callback" in refused[0], refused
    seat.checkin()
