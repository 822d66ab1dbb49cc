"""The pool the tests run against, described by environment variables that
`tests/python.rs` (run by `cargo test -p tessera-py`) sets after starting
three real `tessera server` processes on loopback. Tests that need the pool
are skipped, with a message, when they are not set."""

import dataclasses
import os
import time
import uuid
from typing import List

import pytest

import tessera

POOL_VARIABLES = (
    "TESSERA_TEST_SERVERS",
    "TESSERA_TEST_CA_FILE",
    "TESSERA_TEST_VENDOR",
    "TESSERA_TEST_VENDOR_KEY",
    "TESSERA_TEST_OTHER_VENDOR_KEY",
    "TESSERA_TEST_LEADER_ID",
    "TESSERA_TEST_LEADER_PID",
    "TESSERA_TEST_SEATS",
    "TESSERA_TEST_LEASE_S",
)


@dataclasses.dataclass(frozen=True)
class PoolInfo:
    """A running pool: feature "app", version 1.0 licensed, `seats` seats."""

    servers: List[str]  # host:port, the leader first
    ca_file: str
    vendor: str
    vendor_key: str
    other_vendor_key: str  # a valid key of the same vendor name, not the pool's
    leader_id: str
    leader_pid: int
    seats: int
    lease_s: float


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kills_leader: kills the pool's leader; runs before every other test"
    )


def pytest_collection_modifyitems(config, items):
    # The test that kills the leader runs first, while the pool's seats are
    # still spread over its servers as it started (no borrowing ahead in
    # this pool): a leader killed while it held every spare seat would keep
    # them for the pool's safe wait W (about 7 s here), longer than the 4 s
    # lease, and the seat could not fail over. The tests after it run on the
    # two survivors, the dead server still first in `servers`. A stable
    # sort: the other tests keep their order.
    items.sort(key=lambda item: item.get_closest_marker("kills_leader") is None)


@pytest.fixture(scope="session")
def pool() -> PoolInfo:
    missing = [name for name in POOL_VARIABLES if not os.environ.get(name)]
    if missing:
        pytest.skip(
            "no Tessera pool to test against (unset: "
            + ", ".join(missing)
            + "); `cargo test -p tessera-py` starts one and runs these tests"
        )
    env = os.environ
    return PoolInfo(
        servers=env["TESSERA_TEST_SERVERS"].split(","),
        ca_file=env["TESSERA_TEST_CA_FILE"],
        vendor=env["TESSERA_TEST_VENDOR"],
        vendor_key=env["TESSERA_TEST_VENDOR_KEY"],
        other_vendor_key=env["TESSERA_TEST_OTHER_VENDOR_KEY"],
        leader_id=env["TESSERA_TEST_LEADER_ID"],
        leader_pid=int(env["TESSERA_TEST_LEADER_PID"]),
        seats=int(env["TESSERA_TEST_SEATS"]),
        lease_s=float(env["TESSERA_TEST_LEASE_S"]),
    )


@pytest.fixture
def make_client(pool, tmp_path):
    """make_client(**settings) -> a tessera.Client of the pool, trusting the
    pool's vendor key and CA, as a fresh user with its own cache; any
    setting (servers too) may be overridden."""

    def make(**settings) -> tessera.Client:
        name = "py-" + uuid.uuid4().hex[:8]
        options = dict(
            vendor_keys={pool.vendor: pool.vendor_key},
            ca_file=pool.ca_file,
            user=name,
            client_id=name,
            cache_dir=str(tmp_path / "cache"),
        )
        options.update(settings)
        servers = options.pop("servers", pool.servers)
        return tessera.Client(servers, **options)

    return make


#: Longest wait for seats just checked in or returned to be grantable again.
SEATS_BACK_WITHIN_S = 10.0


def retry_while_no_seats(call):
    """call(), retried while it raises NoSeatsAvailable, for at most
    SEATS_BACK_WITHIN_S. Seats checked in or returned a moment ago "cool"
    until the pool's leader has counted the check-in (a report interval or
    two), seats move between the servers through the leader, and those of
    the killed leader come back only after the pool's safe wait: until then
    the servers answer no_seats_available."""
    give_up = time.monotonic() + SEATS_BACK_WITHIN_S
    while True:
        try:
            return call()
        except tessera.NoSeatsAvailable:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)


@pytest.fixture
def checkout_all(pool, make_client):
    """checkout_all() -> a Seat holding every seat of "app", for a fresh
    client, once the pool can give them all (`retry_while_no_seats`)."""

    def checkout() -> tessera.Seat:
        client = make_client()
        return retry_while_no_seats(lambda: client.checkout("app", "1.0", count=pool.seats))

    return checkout


@pytest.fixture
def eventually():
    """eventually(call) -> call(), retried while the pool answers
    no_seats_available (`retry_while_no_seats`)."""
    return retry_while_no_seats
