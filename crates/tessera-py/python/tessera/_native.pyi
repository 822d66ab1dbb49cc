"""Type hints of ``tessera._native``, the compiled module (src/lib.rs)."""

import os
from types import TracebackType
from typing import Callable, Dict, List, Literal, Optional, Type, Union, final

_Path = Union[str, "os.PathLike[str]"]

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

class TesseraError(Exception):
    """Any error of the Tessera SDK; the message is the SDK's."""

    code: Optional[str]
    """The SDK error's stable snake_case name: ``no_seats_available``,
    ``license_not_served``, ``no_quorum``, ``no_server_reachable``,
    ``rejected``, ``unknown_grant``, ``seat_lost``, ``untrusted_answer``,
    ``clock_set_back``, ``deadline_exceeded`` or ``invalid_config``."""
    server_code: Optional[str]
    """The license server's error code (``unknown_feature``,
    ``no_seats_available``, ...) when a server gave one, else None."""

class NoSeatsAvailable(TesseraError):
    """Every seat is taken on every server that answered. Retry later."""

class LicenseNotServed(TesseraError):
    """The feature's license codes exist but none can be served."""

class NoQuorum(TesseraError):
    """The servers that answered may not issue seats now. Retry in a few seconds."""

class NoServerReachable(TesseraError):
    """No server gave a usable answer."""

class Rejected(TesseraError):
    """A server refused for a reason retrying will not change; see ``server_code``."""

class LicenseWithdrawn(Rejected):
    """A rejection with server code ``license_withdrawn``."""

class UnknownGrant(TesseraError):
    """No server holds this grant: checked in already or expired."""

class SeatLost(TesseraError):
    """The seat or temporary license was lost, or is not there."""

class UntrustedAnswer(TesseraError):
    """No answer showed a seat this program's vendor keys can trust."""

class ClockSetBack(TesseraError):
    """This machine's clock was set back."""

class DeadlineExceeded(TesseraError):
    """The call's deadline passed before a final answer."""

class InvalidConfig(TesseraError):
    """The client's settings cannot work; the message names the one to fix."""

@final
class Client:
    """A client of a Tessera license pool; its calls block (never holding the GIL)."""

    def __new__(
        cls,
        servers: List[str],
        *,
        vendor_keys: Optional[Dict[str, str]] = None,
        trust_any_server: bool = False,
        ca_file: Optional[_Path] = None,
        ca_pem: Optional[bytes] = None,
        plain: bool = False,
        user: Optional[str] = None,
        host: Optional[str] = None,
        client_id: Optional[str] = None,
        request_timeout: Optional[float] = None,
        device: Optional[str] = None,
        cache_dir: Optional[_Path] = None,
    ) -> "Client": ...
    def checkout(
        self,
        feature: str,
        version: str,
        count: int = 1,
        *,
        deadline: Optional[float] = None,
        wait: Optional[float] = None,
    ) -> "Seat":
        """Checks out ``count`` seats; heartbeated until checked in.
        ``wait``: seconds to wait in the pool's queue when none is free."""
    def activate(
        self,
        feature: str,
        version: str,
        *,
        days: Optional[int] = None,
        deadline: Optional[float] = None,
    ) -> "TemporaryLicense":
        """Activates a temporary license of this device."""
    def cached_temporary(self, feature: str, version: str) -> "TemporaryLicense":
        """The temporary license kept in this user's cache, with no network."""
    @property
    def servers(self) -> List[str]: ...
    @property
    def client_id(self) -> str: ...
    @property
    def device(self) -> str: ...

@final
class Seat:
    """Seats checked out by ``Client.checkout``; a context manager that checks them in."""

    def is_valid(self) -> bool: ...
    def set_idle(self, idle: bool, for_s: float = 0.0) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def feature(self) -> str: ...
    @property
    def grant_id(self) -> str: ...
    @property
    def server_id(self) -> str: ...
    @property
    def state(self) -> Literal["held", "lost", "checked_in"]: ...
    @property
    def lost_reason(self) -> Optional[str]: ...
    def checkin(self) -> None:
        """Checks the seats in, waiting for the answer; a second call raises RuntimeError."""
    def on_change(self, callback: Callable[[str, str], object]) -> None:
        """Calls ``callback(state, detail)`` from the SDK's thread at every change."""
    def __enter__(self) -> "Seat": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc_value: Optional[BaseException] = None,
        traceback: Optional[TracebackType] = None,
    ) -> bool: ...

@final
class TemporaryLicense:
    """A temporary license of this device; a context manager that closes it."""

    def is_valid(self) -> bool: ...
    @property
    def license_id(self) -> str: ...
    @property
    def feature(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def ticket(self) -> str: ...
    @property
    def expires_unix_ms(self) -> int: ...
    @property
    def issued_unix_ms(self) -> int: ...
    @property
    def extend_after_unix_ms(self) -> int: ...
    @property
    def return_on_close(self) -> bool: ...
    @property
    def state(self) -> Literal["valid", "withdrawn", "returned", "closed"]: ...
    @property
    def withdrawn_reason(self) -> Optional[str]: ...
    def extend(self) -> None:
        """Extends it now, for another period."""
    def return_license(self) -> int:
        """Returns it to the pool now; answers the seats returned."""
    def __enter__(self) -> "TemporaryLicense": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc_value: Optional[BaseException] = None,
        traceback: Optional[TracebackType] = None,
    ) -> bool: ...
