"""Temporary licenses: activated, extended, returned, found in the cache."""

import time

import pytest

import tessera


def now_ms() -> int:
    return int(time.time() * 1000)


def test_activate_extend_and_return(make_client, eventually):
    client = make_client()
    license = eventually(lambda: client.activate("app", "1.0"))
    assert license.is_valid()
    assert license.state == "valid"
    assert license.withdrawn_reason is None
    assert license.feature == "app"
    assert license.device == client.device
    assert license.license_id and license.ticket
    assert license.return_on_close
    assert license.issued_unix_ms <= now_ms() + 60_000
    assert license.expires_unix_ms > now_ms()
    assert license.issued_unix_ms < license.extend_after_unix_ms < license.expires_unix_ms
    expires = license.expires_unix_ms
    license.extend()
    assert license.expires_unix_ms >= expires
    assert license.is_valid()
    assert license.return_license() == 1
    assert license.state == "returned"
    assert not license.is_valid()
    assert license.feature == "app"  # the last token, still readable
    with pytest.raises(RuntimeError, match="already returned"):
        license.return_license()
    with pytest.raises(RuntimeError, match="already returned"):
        license.extend()
    # Returned, it left the cache too.
    with pytest.raises(tessera.SeatLost) as lost:
        client.cached_temporary("app", "1.0")
    assert lost.value.code == "seat_lost"


def test_the_with_block_returns_it_and_frees_its_seat(
    pool, make_client, eventually, checkout_all
):
    client = make_client()
    with eventually(lambda: client.activate("app", "1.0")) as license:
        assert license.state == "valid"
        # The license holds one of the pool's seats.
        with pytest.raises(tessera.NoSeatsAvailable):
            make_client().checkout("app", "1.0", count=pool.seats)
    assert license.state == "returned"
    with pytest.raises(tessera.SeatLost):
        client.cached_temporary("app", "1.0")
    checkout_all().checkin()


def test_a_restarted_program_finds_its_license_in_the_cache(make_client, eventually, tmp_path):
    same = dict(user="py-restart", client_id=None, cache_dir=str(tmp_path / "restart"))
    first = make_client(**same)
    license = eventually(lambda: first.activate("app", "1.0"))
    # The program restarts: a new client, the same user, device and cache.
    again = make_client(**same).cached_temporary("app", "1.0")
    assert again.license_id == license.license_id
    assert again.is_valid()
    assert again.return_license() == 1
