"""Tessera's client SDK: check out seats of a licensed feature from a pool of
Tessera license servers. The seats are heartbeated in the background and
fail over between the servers; every licensing decision is the Rust SDK's
(``tessera._native`` wraps ``tessera_client::blocking``).

    import tessera

    client = tessera.Client(["10.0.0.1:7001", "10.0.0.2:7001"],
                            vendor_keys={"acme": "BASE64-PUBLIC-KEY"},
                            ca_file="/etc/tessera/ca.pem")
    with client.checkout("cad", "2.1") as seat:
        ...  # the program's work, checking seat.is_valid() where it matters
"""

from tessera._native import (
    Client,
    ClockSetBack,
    DeadlineExceeded,
    InvalidConfig,
    LicenseNotServed,
    LicenseWithdrawn,
    NoQuorum,
    NoSeatsAvailable,
    NoServerReachable,
    Rejected,
    Seat,
    SeatLost,
    TemporaryLicense,
    TesseraError,
    UnknownGrant,
    UntrustedAnswer,
)

__all__ = [
    "Client",
    "ClockSetBack",
    "DeadlineExceeded",
    "InvalidConfig",
    "LicenseNotServed",
    "LicenseWithdrawn",
    "NoQuorum",
    "NoSeatsAvailable",
    "NoServerReachable",
    "Rejected",
    "Seat",
    "SeatLost",
    "TemporaryLicense",
    "TesseraError",
    "UnknownGrant",
    "UntrustedAnswer",
]
