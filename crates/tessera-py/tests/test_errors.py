"""Every SDK error reaches Python as its own exception class, with the SDK's
code, the server's code and the SDK's message."""

import socket
import threading
import time

import pytest

import tessera

CODES = {
    tessera.NoSeatsAvailable: "no_seats_available",
    tessera.LicenseNotServed: "license_not_served",
    tessera.NoQuorum: "no_quorum",
    tessera.NoServerReachable: "no_server_reachable",
    tessera.Rejected: "rejected",
    tessera.LicenseWithdrawn: "rejected",
    tessera.UnknownGrant: "unknown_grant",
    tessera.SeatLost: "seat_lost",
    tessera.UntrustedAnswer: "untrusted_answer",
    tessera.ClockSetBack: "clock_set_back",
    tessera.DeadlineExceeded: "deadline_exceeded",
    tessera.InvalidConfig: "invalid_config",
}


def test_every_error_class_is_a_tessera_error_with_its_code():
    assert issubclass(tessera.TesseraError, Exception)
    for error, code in CODES.items():
        assert issubclass(error, tessera.TesseraError), error
        assert error.code == code, error
        assert error.__module__ == "tessera", error
    assert issubclass(tessera.LicenseWithdrawn, tessera.Rejected)
    assert tessera.LicenseWithdrawn.server_code == "license_withdrawn"
    assert tessera.TesseraError.code is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unknown_feature_is_rejected(make_client):
    with pytest.raises(tessera.Rejected) as rejected:
        make_client().checkout("no-such-feature", "1.0")
    assert rejected.value.code == "rejected"
    assert rejected.value.server_code == "unknown_feature"
    assert not isinstance(rejected.value, tessera.LicenseWithdrawn)


def test_a_version_outside_the_license_is_refused_with_the_servers_code(make_client):
    with pytest.raises(tessera.Rejected) as rejected:
        make_client().checkout("app", "1000000.0")
    assert rejected.value.server_code == "version_not_licensed"


def test_settings_that_cannot_work_raise_invalid_config(pool, make_client, tmp_path, monkeypatch):
    cases = [
        dict(servers=[]),
        dict(vendor_keys=None),
        dict(vendor_keys={}),
        dict(vendor_keys={pool.vendor: "not base64!"}),
        dict(trust_any_server=True),  # and vendor_keys
        dict(plain=True),  # and ca_file
        dict(ca_file=str(tmp_path / "missing.pem")),
        dict(request_timeout=0),
        dict(request_timeout=-1),
        dict(user=""),
        dict(servers=["http://127.0.0.1:1/"]),
    ]
    for settings in cases:
        with pytest.raises(tessera.InvalidConfig) as invalid:
            make_client(**settings)
        assert invalid.value.code == "invalid_config", settings
        assert invalid.value.server_code is None, settings
        assert str(invalid.value).startswith("invalid client configuration"), settings
    # No CA given and none in the environment.
    monkeypatch.delenv("TESSERA_CA_FILE", raising=False)
    with pytest.raises(tessera.InvalidConfig, match="TESSERA_CA_FILE"):
        make_client(ca_file=None)


def test_the_pool_ca_may_come_from_the_environment_or_as_pem(
    pool, make_client, eventually, monkeypatch
):
    monkeypatch.setenv("TESSERA_CA_FILE", pool.ca_file)
    from_environment = make_client(ca_file=None)
    eventually(lambda: from_environment.checkout("app", "1.0")).checkin()
    with open(pool.ca_file, "rb") as pem:
        as_pem = make_client(ca_file=None, ca_pem=pem.read())
    eventually(lambda: as_pem.checkout("app", "1.0")).checkin()


def test_another_vendors_key_makes_the_answers_untrusted(pool, make_client, eventually):
    client = make_client(vendor_keys={pool.vendor: pool.other_vendor_key})
    # (A refusal, signed by its server, is believed: only a grant needs the
    # vendor's codes behind it. So this waits for a seat to be free.)
    with pytest.raises(tessera.UntrustedAnswer) as untrusted:
        eventually(lambda: client.checkout("app", "1.0"))
    assert untrusted.value.code == "untrusted_answer"
    assert untrusted.value.server_code is None


def test_no_server_listening_is_no_server_reachable(make_client):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(tessera.NoServerReachable) as unreachable:
        make_client(servers=[address]).checkout("app", "1.0")
    assert unreachable.value.code == "no_server_reachable"
    assert address in str(unreachable.value)


def test_a_server_that_never_answers_runs_into_the_deadline(make_client):
    # Accepts connections (the kernel does) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        client = make_client(servers=[address], request_timeout=10)
        started = time.monotonic()
        with pytest.raises(tessera.DeadlineExceeded) as late:
            client.checkout("app", "1.0", deadline=0.3)
        assert time.monotonic() - started < 5
    assert late.value.code == "deadline_exceeded"
    assert late.value.server_code is None
    assert "300 ms" in str(late.value)


def test_a_negative_deadline_is_a_value_error(make_client):
    with pytest.raises(ValueError):
        make_client().checkout("app", "1.0", deadline=-1)


def test_a_tiny_deadline_against_the_pool_is_deadline_exceeded(make_client):
    with pytest.raises(tessera.DeadlineExceeded):
        make_client().checkout("app", "1.0", deadline=0.000001)


def test_a_blocking_call_releases_the_gil(make_client):
    # A pure-Python loop needs the GIL: it advances only if the waiting
    # checkout let go of it.
    counted = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counted[0] += 1

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = make_client(servers=["127.0.0.1:%d" % silent.getsockname()[1]])
        counter = threading.Thread(target=count)
        counter.start()
        try:
            time.sleep(0.05)
            before = counted[0]
            with pytest.raises(tessera.DeadlineExceeded):
                client.checkout("app", "1.0", deadline=0.5)
            during = counted[0] - before
        finally:
            stop.set()
            counter.join(5)
    assert during > 1000, during
