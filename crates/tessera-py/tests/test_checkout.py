"""Checkout, check-in and denial against the real pool."""

import pytest

import tessera


def test_a_checkout_holds_every_seat_until_the_with_block_ends(pool, make_client, checkout_all):
    with checkout_all() as seat:
        assert seat.is_valid()
        assert seat.state == "held"
        assert seat.lost_reason is None
        assert (seat.feature, seat.count) == ("app", pool.seats)
        assert seat.grant_id
        assert seat.server_id in {"A", "B", "C"}
        assert "held" in repr(seat)
        with pytest.raises(tessera.NoSeatsAvailable):
            make_client().checkout("app", "1.0")
    assert seat.state == "checked_in"
    assert not seat.is_valid()
    # Every seat is free again: all of them can be checked out at once.
    checkout_all().checkin()


def test_a_full_pool_denies_with_no_seats_available(make_client, checkout_all):
    with checkout_all():
        with pytest.raises(tessera.NoSeatsAvailable) as denied:
            make_client().checkout("app", "1.0")
    error = denied.value
    assert isinstance(error, tessera.TesseraError)
    assert error.code == "no_seats_available"
    assert error.server_code == "no_seats_available"
    assert "`app`" in str(error)


def test_the_with_block_checks_in_on_an_exception(checkout_all):
    with pytest.raises(ZeroDivisionError):
        with checkout_all() as seat:
            assert seat.is_valid()
            1 / 0
    assert seat.state == "checked_in"
    checkout_all().checkin()


def test_checkin_frees_the_seats_and_a_second_checkin_is_a_clear_error(checkout_all):
    seat = checkout_all()
    server_id = seat.server_id
    seat.checkin()
    assert seat.state == "checked_in"
    assert seat.server_id == server_id
    with pytest.raises(RuntimeError, match="already checked in"):
        seat.checkin()
    with pytest.raises(RuntimeError, match="already checked in"):
        seat.on_change(lambda state, detail: None)
    with seat:  # leaving the block does nothing more
        pass
    checkout_all().checkin()


def test_on_change_needs_a_callable(make_client, eventually):
    client = make_client()
    with eventually(lambda: client.checkout("app", "1.0")) as seat:
        with pytest.raises(TypeError):
            seat.on_change("not callable")


def test_a_waiting_checkout_gets_the_seats_once_they_are_checked_in(pool, make_client, checkout_all):
    import threading

    holder = checkout_all()
    got = {}

    def wait_for_seats():
        try:
            got["seat"] = make_client().checkout("app", "1.0", count=pool.seats, wait=30.0)
        except tessera.TesseraError as error:  # reported below
            got["error"] = error

    waiter = threading.Thread(target=wait_for_seats)
    waiter.start()
    # Not free yet: the waiter waits in the pool's queue, and a checkout
    # that does not wait may not jump it.
    waiter.join(timeout=1.5)
    assert waiter.is_alive(), got
    with pytest.raises(tessera.NoSeatsAvailable):
        make_client().checkout("app", "1.0")
    holder.checkin()
    waiter.join(timeout=30.0)
    assert "seat" in got, got
    with got["seat"] as seat:
        assert seat.is_valid() and seat.count == pool.seats


def test_a_waiting_checkout_gives_up_after_its_wait(make_client, checkout_all):
    with checkout_all():
        with pytest.raises(tessera.NoSeatsAvailable) as denied:
            make_client().checkout("app", "1.0", wait=1.0)
    assert "in the queue" in str(denied.value)


def test_an_idle_program_loses_its_seat_after_the_pools_idle_timeout(pool, make_client, eventually):
    import time

    client = make_client()
    seat = eventually(lambda: client.checkout("app", "1.0"))
    with pytest.raises(ValueError):
        seat.set_idle(True, for_s=-1.0)
    # Idle, but not for the pool's minute: the heartbeats keep the seat.
    seat.set_idle(True, for_s=30.0)
    time.sleep(pool.lease_s)
    assert seat.state == "held", seat.lost_reason
    # The system says nobody has touched it for over a minute.
    seat.set_idle(True, for_s=61.0)
    deadline = time.monotonic() + 4 * pool.lease_s
    while seat.state == "held" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seat.state == "lost"
    assert "idle_timeout" in seat.lost_reason
    # Its seat was freed at once: another program gets it.
    with eventually(lambda: make_client().checkout("app", "1.0")) as other:
        assert other.is_valid()
    seat.checkin()
