//! `tessera._native`: the Python face of Tessera's client SDK.
//!
//! A thin wrapper over [`tessera_client::blocking`]: every licensing
//! decision (validity, fail-over, deadlines, signature checks) is the Rust
//! SDK's. This module only converts arguments and results, releases the
//! GIL around every call that may wait, and maps [`ClientError`] to one
//! Python exception class per variant.
//!
//! Locks: a `Mutex` of this module is only ever held for a moment with the
//! GIL held, never across a call that waits on the SDK's runtime: the
//! runtime's threads take the GIL to run `on_change` callbacks, so waiting
//! on them while holding a lock another GIL holder wants could deadlock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;
use tessera_client::blocking::{BlockingClient, BlockingSeat, BlockingTemporary, Watching};
use tessera_client::{
    ClientConfig, ClientError, ClientTls, ErrorCode, SeatState, TemporaryState, TemporaryToken,
    Trust, VendorPublicKey,
};

create_exception!(
    tessera,
    TesseraError,
    PyException,
    "Any error of the Tessera SDK.\n\n`code` is the stable snake_case name of the SDK error (`no_seats_available`, `rejected`, ...); `server_code` the license server's error code (`unknown_feature`, ...) when a server gave one, else None. The message is the SDK's."
);
create_exception!(
    tessera,
    NoSeatsAvailable,
    TesseraError,
    "Every seat is taken on every server that answered. Retry later."
);
create_exception!(
    tessera,
    LicenseNotServed,
    TesseraError,
    "The feature's license codes exist but none can be served (expired, bound to another host, ...); the message says which."
);
create_exception!(
    tessera,
    NoQuorum,
    TesseraError,
    "The servers that answered may not issue seats now (no majority of their pool, or a grace period). Retry in a few seconds."
);
create_exception!(
    tessera,
    NoServerReachable,
    TesseraError,
    "No server gave a usable answer: each was unreachable, timed out or failed."
);
create_exception!(
    tessera,
    Rejected,
    TesseraError,
    "A server refused the request for a reason that retrying will not change; `server_code` says which (`unknown_feature`, `version_not_licensed`, ...)."
);
create_exception!(
    tessera,
    LicenseWithdrawn,
    Rejected,
    "A rejection with server code `license_withdrawn`: the temporary license was withdrawn."
);
create_exception!(
    tessera,
    UnknownGrant,
    TesseraError,
    "No server holds this grant: it was checked in already or has expired."
);
create_exception!(
    tessera,
    SeatLost,
    TesseraError,
    "The seat or temporary license was lost or is not there (no cached license, an expired one)."
);
create_exception!(
    tessera,
    UntrustedAnswer,
    TesseraError,
    "Servers answered, but no answer showed a seat this program's vendor keys can trust."
);
create_exception!(
    tessera,
    ClockSetBack,
    TesseraError,
    "This machine's clock reads earlier than the latest time this program trusted."
);
create_exception!(
    tessera,
    DeadlineExceeded,
    TesseraError,
    "The call's deadline passed before any server gave a final answer."
);
create_exception!(
    tessera,
    InvalidConfig,
    TesseraError,
    "The client's settings cannot work; the message names the one to fix."
);

/// A `Mutex` of this module: its values are replaced whole, so a poisoned
/// one is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Python exception of an SDK error, with `code` and `server_code` set.
fn client_error(py: Python<'_>, error: ClientError) -> PyErr {
    let message = error.to_string();
    let server_code = error.code().map(|code| code.as_str());
    let (err, code) = match &error {
        ClientError::NoSeatsAvailable { .. } => {
            (NoSeatsAvailable::new_err(message), "no_seats_available")
        }
        ClientError::LicenseNotServed { .. } => {
            (LicenseNotServed::new_err(message), "license_not_served")
        }
        ClientError::NoQuorum { .. } => (NoQuorum::new_err(message), "no_quorum"),
        ClientError::NoServerReachable { .. } => {
            (NoServerReachable::new_err(message), "no_server_reachable")
        }
        ClientError::Rejected {
            code: ErrorCode::LicenseWithdrawn,
            ..
        } => (LicenseWithdrawn::new_err(message), "rejected"),
        ClientError::Rejected { .. } => (Rejected::new_err(message), "rejected"),
        ClientError::UnknownGrant => (UnknownGrant::new_err(message), "unknown_grant"),
        ClientError::SeatLost { .. } => (SeatLost::new_err(message), "seat_lost"),
        ClientError::UntrustedAnswer { .. } => {
            (UntrustedAnswer::new_err(message), "untrusted_answer")
        }
        ClientError::ClockSetBack { .. } => (ClockSetBack::new_err(message), "clock_set_back"),
        ClientError::DeadlineExceeded { .. } => {
            (DeadlineExceeded::new_err(message), "deadline_exceeded")
        }
        ClientError::InvalidConfig { .. } => (InvalidConfig::new_err(message), "invalid_config"),
        // A variant newer than this module.
        _ => (TesseraError::new_err(message), "unknown"),
    };
    let value = err.value(py);
    if let Err(failed) = value
        .setattr("code", code)
        .and_then(|()| value.setattr("server_code", server_code))
    {
        return failed;
    }
    err
}

/// `InvalidConfig` for a setting this module checks itself.
fn invalid_config(py: Python<'_>, message: impl Into<String>) -> PyErr {
    client_error(
        py,
        ClientError::InvalidConfig {
            message: message.into(),
        },
    )
}

/// True on a thread of a tokio runtime: the SDK's own, where `on_change`
/// callbacks run, or another extension's.
fn on_runtime_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Blocking calls block on the SDK's runtime: refused on a runtime's thread
/// (an `on_change` callback), where tokio would panic.
fn refuse_in_callback() -> PyResult<()> {
    if on_runtime_thread() {
        return Err(PyRuntimeError::new_err(
            "a blocking Tessera call cannot be made from an on_change callback (or any thread \
             of an async runtime): the callback runs on the SDK's own thread, which the call \
             would stall; hand the work to another thread",
        ));
    }
    Ok(())
}

/// Seconds (a Python float) as a duration, `what` naming the argument.
fn seconds(what: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{what} must be a number of seconds, at least 0 (got {value})"))
}

fn deadline_of(deadline: Option<f64>) -> PyResult<Option<Duration>> {
    deadline
        .map(|value| seconds("deadline", value).map_err(PyValueError::new_err))
        .transpose()
}

/// A client of a Tessera license pool. Its calls block the calling thread
/// (never holding the GIL); one runtime shared by the process runs the
/// requests and every seat's heartbeats in the background. Share one
/// client between threads.
///
/// Client(servers, *, vendor_keys=None, trust_any_server=False,
///        ca_file=None, ca_pem=None, plain=False, user=None, host=None,
///        client_id=None, request_timeout=None, device=None, cache_dir=None)
///
/// servers: the pool's servers as "host:port", in the order checkouts try
///     them.
/// vendor_keys: vendor name -> base64 public key (`tessera vendor keygen`
///     prints it), built into the program: only answers backed by codes
///     those keys signed count.
/// trust_any_server: trust any server the TLS settings accept instead (for
///     tools and tests only; not with vendor_keys).
/// ca_file / ca_pem: the pool CA (`ca.pem` of `tessera pool init`) as a file
///     or as PEM bytes; plain: plain HTTP, for loopback demos only. None of
///     the three: the file named by the TESSERA_CA_FILE environment
///     variable.
/// user, host, client_id, device: how this process names itself (defaults
///     from the environment, a fresh client id per client).
/// request_timeout: seconds one request to one server may take (2 by
///     default).
/// cache_dir: where the clock mark (`clock`) and temporary licenses
///     (`temporary/`) are kept, instead of ~/.cache/tessera.
///
/// Settings that cannot work raise InvalidConfig.
#[pyclass(module = "tessera", name = "Client", frozen)]
struct Client {
    inner: BlockingClient,
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (
        servers, *, vendor_keys=None, trust_any_server=false, ca_file=None, ca_pem=None,
        plain=false, user=None, host=None, client_id=None, request_timeout=None, device=None,
        cache_dir=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        servers: Vec<String>,
        vendor_keys: Option<BTreeMap<String, String>>,
        trust_any_server: bool,
        ca_file: Option<PathBuf>,
        ca_pem: Option<Vec<u8>>,
        plain: bool,
        user: Option<String>,
        host: Option<String>,
        client_id: Option<String>,
        request_timeout: Option<f64>,
        device: Option<String>,
        cache_dir: Option<PathBuf>,
    ) -> PyResult<Client> {
        let mut config = ClientConfig::new(servers);
        config.trust = match (vendor_keys, trust_any_server) {
            (Some(_), true) => {
                return Err(invalid_config(
                    py,
                    "give vendor_keys or trust_any_server=True, not both",
                ))
            }
            (None, true) => Trust::AnyServer,
            (keys, false) => {
                let mut vendor = Vec::new();
                for (name, key) in keys.unwrap_or_default() {
                    vendor.push(
                        VendorPublicKey::from_base64(&name, &key)
                            .map_err(|err| invalid_config(py, format!("vendor_keys: {err}")))?,
                    );
                }
                Trust::Vendor(vendor)
            }
        };
        config.tls = match (ca_file, ca_pem, plain) {
            (None, None, false) => ClientTls::FromEnvironment,
            (Some(path), None, false) => {
                let pem = py.detach(|| std::fs::read(&path)).map_err(|err| {
                    invalid_config(
                        py,
                        format!("cannot read the pool CA file {}: {err}", path.display()),
                    )
                })?;
                ClientTls::PoolCa(pem)
            }
            (None, Some(pem), false) => ClientTls::PoolCa(pem),
            (None, None, true) => ClientTls::Plain,
            _ => {
                return Err(invalid_config(
                    py,
                    "give at most one of ca_file, ca_pem and plain=True",
                ))
            }
        };
        if let Some(user) = user {
            config.user = user;
        }
        if let Some(host) = host {
            config.host = host;
        }
        if let Some(client_id) = client_id {
            config.client_id = client_id;
        }
        if let Some(device) = device {
            config.device = device;
        }
        if let Some(timeout) = request_timeout {
            config.request_timeout = seconds("request_timeout", timeout)
                .map_err(|message| invalid_config(py, message))?;
        }
        if let Some(dir) = cache_dir {
            config.clock_file = Some(dir.join("clock"));
            config.temporary_dir = Some(dir.join("temporary"));
        }
        let inner = py
            .detach(|| BlockingClient::new(config))
            .map_err(|err| client_error(py, err))?;
        Ok(Client { inner })
    }

    /// checkout(feature, version, count=1, *, deadline=None, wait=None) -> Seat
    ///
    /// Checks out `count` seats of `feature` at `version`, trying the
    /// servers in order. The seats are heartbeated in the background until
    /// checked in (`Seat.checkin()`, the end of a `with` block, or the
    /// Seat's garbage collection). `deadline`: seconds to wait at most for
    /// a final answer (DeadlineExceeded after); None waits as long as the
    /// SDK's own bounded tries take. `wait`: when no seat is free, seconds
    /// to wait in the pool's queue (first come, first served, pool-wide;
    /// NoSeatsAvailable after); it replaces `deadline`. Raises a
    /// TesseraError subclass.
    #[pyo3(signature = (feature, version, count=1, *, deadline=None, wait=None))]
    fn checkout(
        &self,
        py: Python<'_>,
        feature: String,
        version: String,
        count: u32,
        deadline: Option<f64>,
        wait: Option<f64>,
    ) -> PyResult<Seat> {
        refuse_in_callback()?;
        let deadline = deadline_of(deadline)?;
        let wait = deadline_of(wait)?;
        let client = &self.inner;
        let seat = py
            .detach(|| match wait {
                Some(wait) => client.checkout_waiting(&feature, &version, count, wait, |_, _| {}),
                None => client.checkout(&feature, &version, count, deadline),
            })
            .map_err(|err| client_error(py, err))?;
        Ok(Seat::new(seat))
    }

    /// activate(feature, version, *, days=None, deadline=None) -> TemporaryLicense
    ///
    /// Activates a temporary license of `feature` for this user on this
    /// device (`days`: an offline borrow, within the vendor's limit),
    /// keeps its signed token in the cache and extends it in the background
    /// while it is open. Raises a TesseraError subclass.
    #[pyo3(signature = (feature, version, *, days=None, deadline=None))]
    fn activate(
        &self,
        py: Python<'_>,
        feature: String,
        version: String,
        days: Option<u32>,
        deadline: Option<f64>,
    ) -> PyResult<TemporaryLicense> {
        refuse_in_callback()?;
        let deadline = deadline_of(deadline)?;
        let client = &self.inner;
        let license = py
            .detach(|| client.activate(&feature, &version, days, deadline))
            .map_err(|err| client_error(py, err))?;
        Ok(TemporaryLicense::new(license))
    }

    /// cached_temporary(feature, version) -> TemporaryLicense
    ///
    /// The temporary license of `feature` kept in this user's cache, with
    /// no network: only if its token checks on this device and has not
    /// expired (SeatLost otherwise). It extends itself once a server
    /// answers again.
    fn cached_temporary(
        &self,
        py: Python<'_>,
        feature: String,
        version: String,
    ) -> PyResult<TemporaryLicense> {
        refuse_in_callback()?;
        let client = &self.inner;
        let license = py
            .detach(|| client.cached_temporary(&feature, &version))
            .map_err(|err| client_error(py, err))?;
        Ok(TemporaryLicense::new(license))
    }

    /// The servers this client asks, "host:port", in order.
    #[getter]
    fn servers(&self) -> Vec<String> {
        self.inner.client().config().servers.clone()
    }

    /// The id this client names itself with to the servers.
    #[getter]
    fn client_id(&self) -> String {
        self.inner.client().config().client_id.clone()
    }

    /// This device, as temporary licenses name it.
    #[getter]
    fn device(&self) -> String {
        self.inner.client().config().device.clone()
    }

    /// The servers and the client id.
    fn __repr__(&self) -> String {
        format!(
            "<tessera.Client servers={:?} client_id={:?}>",
            self.inner.client().config().servers,
            self.inner.client().config().client_id
        )
    }
}

/// Seats checked out by `Client.checkout`: heartbeated in the background,
/// failing over between the pool's servers, until checked in.
///
/// A context manager: `with client.checkout("cad", "2.1") as seat:` checks
/// the seats in when the block ends, also on an exception. Check
/// `is_valid()` where it matters; `state` is "held" or "lost" (and
/// "checked_in" once checked in).
#[pyclass(module = "tessera", name = "Seat", frozen)]
struct Seat {
    /// `None` once checked in.
    seat: Mutex<Option<BlockingSeat>>,
    /// The `on_change` callbacks, called until the seat is checked in.
    watching: Mutex<Vec<Watching>>,
    feature: String,
    count: u32,
    grant_id: String,
    /// The server that last held the seat, for after the check-in.
    last_server_id: Mutex<String>,
}

impl Seat {
    fn new(seat: BlockingSeat) -> Seat {
        Seat {
            feature: seat.feature().to_string(),
            count: seat.count(),
            grant_id: seat.grant_id(),
            last_server_id: Mutex::new(seat.server_id()),
            seat: Mutex::new(Some(seat)),
            watching: Mutex::new(Vec::new()),
        }
    }

    /// `f` of the seat, or `checked_in` once it is checked in.
    fn with_seat<T>(&self, f: impl FnOnce(&BlockingSeat) -> T, checked_in: T) -> T {
        lock(&self.seat).as_ref().map_or(checked_in, f)
    }

    /// Takes the seat out to check it in.
    fn take(&self) -> PyResult<BlockingSeat> {
        let seat = lock(&self.seat).take().ok_or_else(|| {
            PyRuntimeError::new_err(format!(
                "the seat of `{}` (grant {}) was already checked in",
                self.feature, self.grant_id
            ))
        })?;
        *lock(&self.last_server_id) = seat.server_id();
        // Stops the callbacks; an aborted task never calls again.
        lock(&self.watching).clear();
        Ok(seat)
    }
}

/// A seat's state as `on_change` tells it: ("held", server id) or
/// ("lost", reason).
fn describe_seat(state: SeatState) -> (&'static str, String) {
    match state {
        SeatState::Held { server_id, .. } => ("held", server_id),
        SeatState::Lost { reason } => ("lost", reason),
    }
}

#[pymethods]
impl Seat {
    /// True while the seat may be used: held, and not past the validity of
    /// the request that last granted or renewed it, by this machine's
    /// clock. False once lost or checked in.
    fn is_valid(&self) -> bool {
        self.with_seat(BlockingSeat::is_valid, false)
    }

    /// Tells the pool whether the program is idle (no user input, nothing
    /// running): `set_idle(True)`, idle from now, or idle for `for_s`
    /// seconds already (the time since the last key press, as the system
    /// tells it); `set_idle(False)`, in use again. Where the pool's policy
    /// gives the feature an `idle_timeout_s`, a program idle that long loses
    /// its seat (`state` "lost", `lost_reason` naming `idle_timeout`) and
    /// checks out again when used again.
    #[pyo3(signature = (idle, for_s = 0.0))]
    fn set_idle(&self, idle: bool, for_s: f64) -> PyResult<()> {
        let already = std::time::Duration::try_from_secs_f64(for_s).map_err(|_| {
            PyValueError::new_err(format!(
                "for_s is {for_s}; it must be a number of seconds, 0 or more"
            ))
        })?;
        self.with_seat(
            |seat| {
                if idle {
                    seat.set_idle_for(already)
                } else {
                    seat.set_idle(false)
                }
            },
            (),
        );
        Ok(())
    }

    /// How many seats this checkout holds.
    #[getter]
    fn count(&self) -> u32 {
        self.count
    }

    /// The feature checked out.
    #[getter]
    fn feature(&self) -> String {
        self.feature.clone()
    }

    /// The grant's id: the same on every server the seat fails over to.
    #[getter]
    fn grant_id(&self) -> String {
        self.grant_id.clone()
    }

    /// The server that last granted or renewed the seat; changes when the
    /// SDK fails over to another server.
    #[getter]
    fn server_id(&self) -> String {
        match lock(&self.seat).as_ref() {
            Some(seat) => seat.server_id(),
            None => lock(&self.last_server_id).clone(),
        }
    }

    /// "held" while a server holds the seat, "lost" once no server renewed
    /// it in time (the SDK stopped heartbeating; check out again), and
    /// "checked_in" after `checkin()`.
    #[getter]
    fn state(&self) -> &'static str {
        self.with_seat(
            |seat| match seat.state() {
                SeatState::Held { .. } => "held",
                SeatState::Lost { .. } => "lost",
            },
            "checked_in",
        )
    }

    /// Why the seat was lost, when `state` is "lost"; None otherwise.
    #[getter]
    fn lost_reason(&self) -> Option<String> {
        self.with_seat(
            |seat| match seat.state() {
                SeatState::Lost { reason } => Some(reason),
                SeatState::Held { .. } => None,
            },
            None,
        )
    }

    /// Stops heartbeating and checks the seats in, waiting for the
    /// server's answer. A second call raises RuntimeError. Raises a
    /// TesseraError subclass if no server took the check-in (the seats
    /// then lapse by themselves when their lease ends).
    fn checkin(&self, py: Python<'_>) -> PyResult<()> {
        refuse_in_callback()?;
        let seat = self.take()?;
        py.detach(move || seat.checkin())
            .map_err(|err| client_error(py, err))
    }

    /// on_change(callback)
    ///
    /// Calls `callback(state, detail)` at every change of the seat's state
    /// until it is checked in: ("held", server_id) after a fail-over to
    /// another server, ("lost", reason) when the seat is lost (renewals on
    /// the same server are not told). The callback
    /// runs on the SDK's own thread: keep it short, and make no blocking
    /// Tessera call in it (RuntimeError). An exception it raises is
    /// reported as unraisable and does not stop later calls.
    fn on_change(&self, callback: Bound<'_, PyAny>) -> PyResult<()> {
        if !callback.is_callable() {
            return Err(PyTypeError::new_err("on_change needs a callable"));
        }
        let callback = callback.unbind();
        let seat = lock(&self.seat);
        let Some(seat) = seat.as_ref() else {
            return Err(PyRuntimeError::new_err(format!(
                "the seat of `{}` (grant {}) was already checked in",
                self.feature, self.grant_id
            )));
        };
        // The SDK publishes every renewal (its state carries the validity);
        // the callback hears only of a new server or a loss.
        let last = Mutex::new(describe_seat(seat.state()));
        let watching = seat.on_change(move |state| {
            let (state, detail) = describe_seat(state);
            {
                let mut last = lock(&last);
                if (last.0, last.1.as_str()) == (state, detail.as_str()) {
                    return;
                }
                *last = (state, detail.clone());
            }
            // None: the interpreter is shutting down; nobody is listening.
            Python::try_attach(|py| {
                if let Err(err) = callback.call1(py, (state, detail)) {
                    err.write_unraisable(py, Some(callback.bind(py)));
                }
            });
        });
        lock(&self.watching).push(watching);
        Ok(())
    }

    /// The seat itself, for `with client.checkout(...) as seat:`.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Checks the seats in (waiting for the answer) unless already checked
    /// in. A check-in error is raised only if the block itself raised
    /// nothing; the block's exception is never hidden.
    #[pyo3(signature = (exc_type=None, exc_value=None, traceback=None))]
    #[allow(unused_variables)] // the exception's value and traceback
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        exc_value: Option<Bound<'_, PyAny>>,
        traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Ok(seat) = self.take() else {
            return Ok(false); // checked in already
        };
        if on_runtime_thread() {
            // Inside a callback: check in without waiting.
            drop(seat);
            return Ok(false);
        }
        let checked_in = py.detach(move || seat.checkin());
        match checked_in {
            Err(err) if exc_type.as_ref().is_none_or(|t| t.is_none()) => Err(client_error(py, err)),
            _ => Ok(false),
        }
    }

    /// The feature, count, state, holding server and grant.
    fn __repr__(&self) -> String {
        format!(
            "<tessera.Seat feature={:?} count={} state={:?} server_id={:?} grant_id={:?}>",
            self.feature,
            self.count,
            self.state(),
            self.server_id(),
            self.grant_id
        )
    }
}

/// A temporary license of this device (`Client.activate`,
/// `Client.cached_temporary`): a signed token that counts with no network
/// until it expires, extended in the background while it is open.
///
/// A context manager: the end of the `with` block closes it, returning it
/// to the pool (and waiting for that) when its terms say so
/// (`return_on_close`). `state` is "valid" or "withdrawn" while open,
/// then "returned" or "closed".
#[pyclass(module = "tessera", name = "TemporaryLicense", frozen)]
struct TemporaryLicense {
    /// `None` once returned or closed; shared with a running `extend`.
    license: Mutex<Option<Arc<BlockingTemporary>>>,
    /// The latest token seen, for after the license is closed.
    last_token: Mutex<TemporaryToken>,
    /// "returned" or "closed" once it is.
    closed_as: Mutex<&'static str>,
}

impl TemporaryLicense {
    fn new(license: BlockingTemporary) -> TemporaryLicense {
        TemporaryLicense {
            last_token: Mutex::new(license.token()),
            license: Mutex::new(Some(Arc::new(license))),
            closed_as: Mutex::new("closed"),
        }
    }

    fn open(&self) -> Option<Arc<BlockingTemporary>> {
        lock(&self.license).clone()
    }

    /// The current token (it changes at each extension).
    fn token(&self) -> TemporaryToken {
        match self.open() {
            Some(license) => {
                let token = license.token();
                *lock(&self.last_token) = token.clone();
                token
            }
            None => lock(&self.last_token).clone(),
        }
    }

    /// Takes the license out to return or close it; `as_` is the state it
    /// will show.
    fn take(&self, as_: &'static str) -> PyResult<Option<BlockingTemporary>> {
        let mut slot = lock(&self.license);
        let Some(shared) = slot.take() else {
            return Ok(None);
        };
        match Arc::try_unwrap(shared) {
            Ok(license) => {
                *lock(&self.last_token) = license.token();
                *lock(&self.closed_as) = as_;
                Ok(Some(license))
            }
            Err(shared) => {
                *slot = Some(shared);
                Err(PyRuntimeError::new_err(
                    "the temporary license is being extended by another thread; retry once \
                     extend() has returned",
                ))
            }
        }
    }

    fn already_closed(&self) -> PyErr {
        PyRuntimeError::new_err(format!(
            "the temporary license {} was already {}",
            lock(&self.last_token).license_id,
            lock(&self.closed_as)
        ))
    }
}

#[pymethods]
impl TemporaryLicense {
    /// True while its token has not expired by this machine's clock (never
    /// set back past the clock mark). False once returned or closed.
    fn is_valid(&self) -> bool {
        self.open().is_some_and(|license| license.is_valid())
    }

    /// The license's id at the pool.
    #[getter]
    fn license_id(&self) -> String {
        self.token().license_id
    }

    /// The feature licensed.
    #[getter]
    fn feature(&self) -> String {
        self.token().feature
    }

    /// The device the token counts on.
    #[getter]
    fn device(&self) -> String {
        self.token().device
    }

    /// The user's ticket the license counts against.
    #[getter]
    fn ticket(&self) -> String {
        self.token().ticket
    }

    /// When the token expires (Unix ms); it moves on at each extension.
    #[getter]
    fn expires_unix_ms(&self) -> i64 {
        self.token().expires_unix_ms
    }

    /// When the token was issued (Unix ms).
    #[getter]
    fn issued_unix_ms(&self) -> i64 {
        self.token().issued_unix_ms
    }

    /// When the SDK extends it in the background (Unix ms).
    #[getter]
    fn extend_after_unix_ms(&self) -> i64 {
        self.token().extend_after_unix_ms
    }

    /// Whether closing it returns it to the pool.
    #[getter]
    fn return_on_close(&self) -> bool {
        self.token().return_on_close
    }

    /// "valid" while it is extended as its terms say, "withdrawn" once the
    /// pool withdrew it (the token still counts until it expires, but is
    /// not extended; the program should say so and close), then "returned"
    /// or "closed".
    #[getter]
    fn state(&self) -> &'static str {
        match self.open() {
            Some(license) => match license.state() {
                TemporaryState::Valid { .. } => "valid",
                TemporaryState::Withdrawn { .. } => "withdrawn",
            },
            None => *lock(&self.closed_as),
        }
    }

    /// Why it was withdrawn, when `state` is "withdrawn"; None otherwise.
    #[getter]
    fn withdrawn_reason(&self) -> Option<String> {
        match self.open()?.state() {
            TemporaryState::Withdrawn { reason } => Some(reason),
            TemporaryState::Valid { .. } => None,
        }
    }

    /// Extends it now, for another period (it also extends itself once
    /// `extend_after_unix_ms` has passed). Raises a TesseraError subclass
    /// (LicenseWithdrawn if the pool withdrew it).
    fn extend(&self, py: Python<'_>) -> PyResult<()> {
        refuse_in_callback()?;
        let Some(license) = self.open() else {
            return Err(self.already_closed());
        };
        py.detach(move || license.extend())
            .map_err(|err| client_error(py, err))
    }

    /// Returns it to the pool now, waiting for the answer; answers how
    /// many seats were returned. A second call raises RuntimeError.
    fn return_license(&self, py: Python<'_>) -> PyResult<u32> {
        refuse_in_callback()?;
        let Some(license) = self.take("returned")? else {
            return Err(self.already_closed());
        };
        py.detach(move || license.return_license())
            .map_err(|err| client_error(py, err))
    }

    /// The license itself, for `with client.activate(...) as license:`.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes it: returns it to the pool, waiting for the answer, when its
    /// terms say so (`return_on_close`); otherwise only stops extending it
    /// (its token stays cached: `Client.cached_temporary` opens it again).
    /// A return error is raised only if the block itself raised nothing.
    #[pyo3(signature = (exc_type=None, exc_value=None, traceback=None))]
    #[allow(unused_variables)] // the exception's value and traceback
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        exc_value: Option<Bound<'_, PyAny>>,
        traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let returns = self.token().return_on_close;
        let in_callback = on_runtime_thread();
        let Some(license) = self.take(if returns { "returned" } else { "closed" })? else {
            return Ok(false);
        };
        if !returns || in_callback {
            // Dropped, the SDK returns it without waiting if its terms say so.
            drop(license);
            return Ok(false);
        }
        match py.detach(move || license.return_license()) {
            Err(err) if exc_type.as_ref().is_none_or(|t| t.is_none()) => Err(client_error(py, err)),
            _ => Ok(false),
        }
    }

    /// The feature, license id, state and expiry.
    fn __repr__(&self) -> String {
        let token = self.token();
        format!(
            "<tessera.TemporaryLicense feature={:?} license_id={:?} state={:?} expires_unix_ms={}>",
            token.feature,
            token.license_id,
            self.state(),
            token.expires_unix_ms
        )
    }
}

/// Sets `name` on the class `class` (class-level defaults of `code` and
/// `server_code`).
fn set_class_attr(class: &Bound<'_, PyType>, name: &str, value: Option<&str>) -> PyResult<()> {
    class.setattr(name, value)
}

/// The native module of the `tessera` package.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<Seat>()?;
    m.add_class::<TemporaryLicense>()?;
    let base = py.get_type::<TesseraError>();
    set_class_attr(&base, "code", None)?;
    set_class_attr(&base, "server_code", None)?;
    m.add("TesseraError", base)?;
    let classes = [
        (py.get_type::<NoSeatsAvailable>(), "no_seats_available"),
        (py.get_type::<LicenseNotServed>(), "license_not_served"),
        (py.get_type::<NoQuorum>(), "no_quorum"),
        (py.get_type::<NoServerReachable>(), "no_server_reachable"),
        (py.get_type::<Rejected>(), "rejected"),
        (py.get_type::<LicenseWithdrawn>(), "rejected"),
        (py.get_type::<UnknownGrant>(), "unknown_grant"),
        (py.get_type::<SeatLost>(), "seat_lost"),
        (py.get_type::<UntrustedAnswer>(), "untrusted_answer"),
        (py.get_type::<ClockSetBack>(), "clock_set_back"),
        (py.get_type::<DeadlineExceeded>(), "deadline_exceeded"),
        (py.get_type::<InvalidConfig>(), "invalid_config"),
    ];
    for (class, code) in classes {
        set_class_attr(&class, "code", Some(code))?;
        m.add(class.name()?, class)?;
    }
    set_class_attr(
        &py.get_type::<LicenseWithdrawn>(),
        "server_code",
        Some(ErrorCode::LicenseWithdrawn.as_str()),
    )?;
    Ok(())
}
