//! Tessera's client SDK for C and C++: a small, stable C ABI over the Rust
//! SDK's blocking face ([`tessera_client::blocking`]). The header,
//! `include/tessera.h`, is generated from this file by cbindgen.
//!
//! The layer adds no licensing logic: validity from the send time,
//! fail-over order, deadlines and signature checks are the Rust SDK's.
//! What it adds is the boundary's discipline:
//!
//! - every pointer argument is checked for NULL and every string for UTF-8;
//!   a bad argument is `TESSERA_STATUS_INVALID_ARGUMENT`, never a crash;
//! - no panic crosses the boundary: one is caught and reported as
//!   `TESSERA_STATUS_INTERNAL`;
//! - every call that can fail returns a [`TesseraStatus`] and leaves the
//!   error's message (and the server's error code, if any) for
//!   `tessera_last_error_message` on the calling thread;
//! - what the library allocates, the library frees (`tessera_*_free`).
//!
//! Clients are thread-safe: share one between threads. A seat or a
//! temporary license may be read from any thread, but freed (or checked
//! in, or returned) once, by one thread, when no other uses it.

#![allow(clippy::missing_safety_doc)] // Each function's contract is in its doc, for the header.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_client::blocking::{BlockingClient, BlockingSeat, BlockingTemporary, Watching};
use tessera_client::{
    ClientConfig, ClientError, ClientTls, SeatState, TemporaryState, Trust, VendorPublicKey,
};
use tessera_proto::ErrorCode;

/// What a call came to: `TESSERA_STATUS_OK`, or why it failed. The values
/// are stable; new ones may be added at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TesseraStatus {
    Ok = 0,
    /// A NULL pointer, a string that is not UTF-8, an unknown setting.
    InvalidArgument = 1,
    /// The settings cannot work; the message names the one to fix.
    InvalidConfig = 2,
    /// Every seat is taken on every server that answered. Retry later.
    NoSeatsAvailable = 3,
    /// The feature's license codes exist but none can be served.
    LicenseNotServed = 4,
    /// The servers cannot reach a majority of their pool now. Retry.
    NoQuorum = 5,
    /// No server gave a usable answer. Check the servers' addresses.
    NoServerReachable = 6,
    /// A server refused for a reason retrying will not change; the
    /// server's code says which (`tessera_last_error_server_code`).
    Rejected = 7,
    /// No server holds this grant any more.
    UnknownGrant = 8,
    /// The seat was lost: no server renewed it before it expired.
    SeatLost = 9,
    /// No server gave an answer this program's vendor keys vouch for.
    UntrustedAnswer = 10,
    /// This machine's clock was set back.
    ClockSetBack = 11,
    /// The deadline passed before a final answer. Retry, or allow longer.
    DeadlineExceeded = 12,
    /// A temporary license was withdrawn: a newer device holds the ticket,
    /// or it was returned or expired at the pool. Tell the user and close.
    LicenseWithdrawn = 13,
    /// A bug in the library, caught at the boundary; please report it.
    Internal = 14,
}

/// A seat's state, as `tessera_seat_state` and a seat callback give it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TesseraSeatState {
    /// A server holds the seat and renews it.
    Held = 1,
    /// No server renewed it before it expired: stop using the feature.
    Lost = 2,
}

/// A temporary license's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TesseraTemporaryState {
    /// Valid until its expiry, extended in the background.
    Valid = 1,
    /// Withdrawn: valid until its expiry but never extended again.
    Withdrawn = 2,
}

/// Called on a library thread when a seat's state changes: `detail` is the
/// holding server's id (held) or the reason (lost), valid during the call
/// only. Keep it short; never call the library's blocking functions, nor
/// free the seat, from it. Once the seat is freed it is never called again.
pub type TesseraSeatCallback = Option<
    unsafe extern "C" fn(state: TesseraSeatState, detail: *const c_char, user_data: *mut c_void),
>;

/// Called on a library thread when a temporary license changes: `detail`
/// is the new expiry (Unix ms, as text) or the withdrawal's reason.
pub type TesseraTemporaryCallback = Option<
    unsafe extern "C" fn(
        state: TesseraTemporaryState,
        detail: *const c_char,
        user_data: *mut c_void,
    ),
>;

/// Settings of a client, made by `tessera_config_new`.
pub struct TesseraConfig {
    config: ClientConfig,
    vendor_keys: Vec<VendorPublicKey>,
}

/// A client of a pool. Thread-safe.
pub struct TesseraClient {
    client: BlockingClient,
}

/// Seats checked out: heartbeated in the background until checked in.
pub struct TesseraSeat {
    // Dropped first: no callback during the seat's check-in.
    callback: Mutex<Option<Subscription>>,
    seat: BlockingSeat,
}

/// A temporary license of this device, extended in the background.
pub struct TesseraTemporary {
    callback: Mutex<Option<Subscription>>,
    license: BlockingTemporary,
}

/// A caller's callback in use. Dropped, it waits for a call in progress
/// and lets no other start: once a seat or license is freed, its callback
/// is never called again, so the caller may free its `user_data`.
struct Subscription {
    live: Arc<Mutex<bool>>,
    _watching: Watching,
}

impl Subscription {
    /// Runs `make(live)`: the watcher calls the callback only while `live`.
    fn new(make: impl FnOnce(Arc<Mutex<bool>>) -> Watching) -> Subscription {
        let live = Arc::new(Mutex::new(true));
        Subscription {
            _watching: make(live.clone()),
            live,
        }
    }

    /// Calls `call` unless stopped, holding the lock that stopping takes.
    fn call_if_live(live: &Mutex<bool>, call: impl FnOnce()) {
        let live = live.lock().unwrap_or_else(|p| p.into_inner());
        if *live {
            call();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

/// A callback of the C caller: a state, a detail, its own pointer back.
type CallerCallback<C> = Option<unsafe extern "C" fn(C, *const c_char, *mut c_void)>;

/// Subscribes the caller's `callback` (with `user_data`) to what `watch`
/// watches, each change told as a state and a detail (`tell`).
fn subscription<S: 'static, C: 'static>(
    callback: CallerCallback<C>,
    user_data: *mut c_void,
    tell: fn(S) -> (C, String),
    watch: impl FnOnce(Box<dyn Fn(S) + Send>) -> Watching,
) -> Option<Subscription> {
    let callback = callback?;
    let user_data = UserData(user_data);
    Some(Subscription::new(|live| {
        watch(Box::new(move |change| {
            let user_data = &user_data;
            let (state, detail) = tell(change);
            let detail = c_string(&detail);
            Subscription::call_if_live(&live, || {
                // SAFETY: the caller's callback, with its own pointer back.
                unsafe { callback(state, detail.as_ptr(), user_data.0) }
            });
        }))
    }))
}

fn seat_change(state: SeatState) -> (TesseraSeatState, String) {
    match state {
        SeatState::Held { server_id, .. } => (TesseraSeatState::Held, server_id),
        SeatState::Lost { reason } => (TesseraSeatState::Lost, reason),
    }
}

fn temporary_change(state: TemporaryState) -> (TesseraTemporaryState, String) {
    match state {
        TemporaryState::Valid { expires_unix_ms } => {
            (TesseraTemporaryState::Valid, expires_unix_ms.to_string())
        }
        TemporaryState::Withdrawn { reason } => (TesseraTemporaryState::Withdrawn, reason),
    }
}

/// Replaces the subscription in `slot`.
fn subscribe(slot: &Mutex<Option<Subscription>>, subscription: Option<Subscription>) {
    let old = std::mem::replace(
        &mut *slot.lock().unwrap_or_else(|p| p.into_inner()),
        subscription,
    );
    drop(old);
}

/// The last error on this thread.
struct LastError {
    status: TesseraStatus,
    message: CString,
    server_code: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = RefCell::new(LastError {
        status: TesseraStatus::Ok,
        message: CString::default(),
        server_code: CString::default(),
    });
}

/// Why a call failed, before it is left for `tessera_last_error_*`.
struct Failure {
    status: TesseraStatus,
    message: String,
    server_code: Option<ErrorCode>,
}

impl Failure {
    fn argument(message: impl Into<String>) -> Failure {
        Failure {
            status: TesseraStatus::InvalidArgument,
            message: message.into(),
            server_code: None,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let status = match &error {
            ClientError::NoSeatsAvailable { .. } => TesseraStatus::NoSeatsAvailable,
            ClientError::LicenseNotServed { .. } => TesseraStatus::LicenseNotServed,
            ClientError::NoQuorum { .. } => TesseraStatus::NoQuorum,
            ClientError::NoServerReachable { .. } => TesseraStatus::NoServerReachable,
            ClientError::Rejected {
                code: ErrorCode::LicenseWithdrawn,
                ..
            } => TesseraStatus::LicenseWithdrawn,
            ClientError::Rejected { .. } => TesseraStatus::Rejected,
            ClientError::UnknownGrant => TesseraStatus::UnknownGrant,
            ClientError::SeatLost { .. } => TesseraStatus::SeatLost,
            ClientError::UntrustedAnswer { .. } => TesseraStatus::UntrustedAnswer,
            ClientError::ClockSetBack { .. } => TesseraStatus::ClockSetBack,
            ClientError::DeadlineExceeded { .. } => TesseraStatus::DeadlineExceeded,
            ClientError::InvalidConfig { .. } => TesseraStatus::InvalidConfig,
            _ => TesseraStatus::Internal,
        };
        Failure {
            status,
            server_code: error.code(),
            message: error.to_string(),
        }
    }
}

/// A C string of `text`, its NUL bytes (never in the SDK's messages) dropped.
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

fn set_last_error(failure: &Failure) {
    LAST_ERROR.with(|last| {
        *last.borrow_mut() = LastError {
            status: failure.status,
            message: c_string(&failure.message),
            server_code: c_string(failure.server_code.map_or("", |c| c.as_str())),
        };
    });
}

fn clear_last_error() {
    LAST_ERROR.with(|last| {
        let mut last = last.borrow_mut();
        last.status = TesseraStatus::Ok;
        last.message = CString::default();
        last.server_code = CString::default();
    });
}

/// Runs `work` at the boundary: no panic escapes, and its failure is left
/// for `tessera_last_error_*`. Answers the status.
fn call(work: impl FnOnce() -> Result<(), Failure>) -> TesseraStatus {
    let failure = match catch_unwind(AssertUnwindSafe(work)) {
        Ok(Ok(())) => {
            clear_last_error();
            return TesseraStatus::Ok;
        }
        Ok(Err(failure)) => failure,
        Err(_) => Failure {
            status: TesseraStatus::Internal,
            message: "the Tessera library failed (a bug; please report it)".into(),
            server_code: None,
        },
    };
    set_last_error(&failure);
    failure.status
}

/// Runs a getter at the boundary: `fallback` on a panic.
fn get<T>(fallback: T, work: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or(fallback)
}

/// The string `pointer` points to, named `what` in errors.
unsafe fn text_arg<'a>(what: &str, pointer: *const c_char) -> Result<&'a str, Failure> {
    if pointer.is_null() {
        return Err(Failure::argument(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string (the header's contract).
    unsafe { CStr::from_ptr(pointer) }
        .to_str()
        .map_err(|_| Failure::argument(format!("{what} is not UTF-8")))
}

/// The object `pointer` points to, named `what` in errors.
unsafe fn object_arg<'a, T>(what: &str, pointer: *const T) -> Result<&'a T, Failure> {
    // SAFETY: a non-NULL pointer is one this library gave and did not free.
    unsafe { pointer.as_ref() }.ok_or_else(|| Failure::argument(format!("{what} is NULL")))
}

/// Writes `value` to `out`, which must not be NULL.
unsafe fn put<T>(what: &str, out: *mut *mut T, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::argument(format!("{what} is NULL")));
    }
    // SAFETY: `out` points to writable storage for one pointer (the contract).
    unsafe { *out = Box::into_raw(Box::new(value)) };
    Ok(())
}

/// A string the caller frees with `tessera_string_free`.
fn owned_string(text: &str) -> *mut c_char {
    c_string(text).into_raw()
}

fn deadline(deadline_ms: u32) -> Option<Duration> {
    (deadline_ms > 0).then(|| Duration::from_millis(deadline_ms.into()))
}

/// A raw pointer handed back to a callback; the caller vouches for it.
struct UserData(*mut c_void);
// SAFETY: the library only hands it back to the caller's callback, whose
// contract says it may run on a library thread.
unsafe impl Send for UserData {}

// ---------------------------------------------------------------- settings

/// New settings for a client of the pool servers `servers`: `host:port`
/// entries separated by commas, in the order checkouts try them. User,
/// host and device are read from the system; the pool's CA from the file
/// that `TESSERA_CA_FILE` names unless `ca_file` is set. Add the vendor's
/// key(s) with `tessera_config_add_vendor_key`. NULL on a NULL or non-UTF-8
/// argument. Free with `tessera_config_free`.
#[no_mangle]
pub unsafe extern "C" fn tessera_config_new(servers: *const c_char) -> *mut TesseraConfig {
    let mut made = std::ptr::null_mut();
    call(|| {
        let servers = unsafe { text_arg("servers", servers) }?;
        let servers: Vec<String> = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        made = Box::into_raw(Box::new(TesseraConfig {
            config: ClientConfig::new(servers),
            vendor_keys: Vec::new(),
        }));
        Ok(())
    });
    made
}

/// Sets one setting by name:
/// - `user`, `host`, `client_id`, `device`: as the servers and `tessera
///   status` see this program;
/// - `ca_file`: the pool's CA (PEM), read now;
/// - `tls`: `plain` for unencrypted HTTP (loopback tests only);
/// - `trust`: `any_server` to accept any server's answer (tools and tests
///   only; a program trusts its vendor's keys);
/// - `request_timeout_ms`, `connect_timeout_ms`: limits of one request;
/// - `cache_dir`: where temporary licenses and the clock mark are kept.
#[no_mangle]
pub unsafe extern "C" fn tessera_config_set(
    config: *mut TesseraConfig,
    name: *const c_char,
    value: *const c_char,
) -> TesseraStatus {
    call(|| {
        // SAFETY: a pointer from `tessera_config_new`, not yet freed.
        let config =
            unsafe { config.as_mut() }.ok_or_else(|| Failure::argument("config is NULL"))?;
        let name = unsafe { text_arg("name", name) }?;
        let value = unsafe { text_arg("value", value) }?;
        let millis = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    Failure::argument(format!("{name} must be a whole number of ms above 0"))
                })
        };
        let settings = &mut config.config;
        match name {
            "user" => settings.user = value.to_string(),
            "host" => settings.host = value.to_string(),
            "client_id" => settings.client_id = value.to_string(),
            "device" => settings.device = value.to_string(),
            "ca_file" => {
                let pem = std::fs::read(value).map_err(|err| Failure {
                    status: TesseraStatus::InvalidConfig,
                    message: format!("cannot read the pool CA {value}: {err}"),
                    server_code: None,
                })?;
                settings.tls = ClientTls::PoolCa(pem);
            }
            "tls" if value == "plain" => settings.tls = ClientTls::Plain,
            "trust" if value == "any_server" => config.vendor_keys.clear(),
            "request_timeout_ms" => settings.request_timeout = millis()?,
            "connect_timeout_ms" => settings.connect_timeout = millis()?,
            "cache_dir" => {
                let dir = std::path::Path::new(value);
                settings.temporary_dir = Some(dir.join("temporary"));
                settings.clock_file = Some(dir.join("clock"));
            }
            "tls" | "trust" => {
                return Err(Failure::argument(format!(
                    "{name} = `{value}` is not a setting: tls takes `plain`, trust `any_server`"
                )))
            }
            _ => {
                return Err(Failure::argument(format!(
                    "unknown setting `{name}`; the settings are user, host, client_id, device, \
                     ca_file, tls, trust, request_timeout_ms, connect_timeout_ms, cache_dir"
                )))
            }
        }
        if name == "trust" {
            settings.trust = Trust::AnyServer;
        }
        Ok(())
    })
}

/// Adds a vendor public key the program trusts, as `tessera vendor keygen`
/// prints it: the vendor's name and the key (base64). Build it into the
/// program; never read it from a file its user can edit.
#[no_mangle]
pub unsafe extern "C" fn tessera_config_add_vendor_key(
    config: *mut TesseraConfig,
    vendor: *const c_char,
    public_key: *const c_char,
) -> TesseraStatus {
    call(|| {
        // SAFETY: a pointer from `tessera_config_new`, not yet freed.
        let config =
            unsafe { config.as_mut() }.ok_or_else(|| Failure::argument("config is NULL"))?;
        let vendor = unsafe { text_arg("vendor", vendor) }?;
        let public_key = unsafe { text_arg("public_key", public_key) }?;
        let key = VendorPublicKey::from_base64(vendor, public_key).map_err(|err| Failure {
            status: TesseraStatus::InvalidConfig,
            message: format!("the public key of vendor `{vendor}`: {err}"),
            server_code: None,
        })?;
        config.vendor_keys.push(key);
        config.config.trust = Trust::Vendor(config.vendor_keys.clone());
        Ok(())
    })
}

/// Frees settings. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn tessera_config_free(config: *mut TesseraConfig) {
    if !config.is_null() {
        // SAFETY: a pointer from `tessera_config_new`, freed once.
        drop(unsafe { Box::from_raw(config) });
    }
}

// ----------------------------------------------------------------- client

/// A client of the pool these settings name, checked at once (no vendor
/// key, no servers, a bad address: `TESSERA_STATUS_INVALID_CONFIG`).
/// The settings may be freed afterwards. NULL on failure (see
/// `tessera_last_error_message`). Free with `tessera_client_free`.
#[no_mangle]
pub unsafe extern "C" fn tessera_client_new(config: *const TesseraConfig) -> *mut TesseraClient {
    let mut made = std::ptr::null_mut();
    call(|| {
        let config = unsafe { object_arg("config", config) }?;
        let client = BlockingClient::new(config.config.clone())?;
        made = Box::into_raw(Box::new(TesseraClient { client }));
        Ok(())
    });
    made
}

/// Frees a client. Seats and licenses it gave keep working. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn tessera_client_free(client: *mut TesseraClient) {
    if !client.is_null() {
        // SAFETY: a pointer from `tessera_client_new`, freed once.
        drop(unsafe { Box::from_raw(client) });
    }
}

// ------------------------------------------------------------------ seats

/// Checks out `count` seats of `feature` for this program's `version`,
/// trying the servers in order; gives up after `deadline_ms` (0: no
/// deadline beyond each request's timeout). On success `*seat` is set;
/// the seat is heartbeated in the background until `tessera_checkin` or
/// `tessera_seat_free`.
#[no_mangle]
pub unsafe extern "C" fn tessera_checkout(
    client: *const TesseraClient,
    feature: *const c_char,
    version: *const c_char,
    count: u32,
    deadline_ms: u32,
    seat: *mut *mut TesseraSeat,
) -> TesseraStatus {
    unsafe {
        checkout_with(
            client,
            (feature, version),
            seat,
            |client, feature, version| {
                client.checkout(feature, version, count, deadline(deadline_ms))
            },
        )
    }
}

/// Checks the arguments of a checkout, makes it with `checkout`, and puts
/// the seat in `*seat`.
unsafe fn checkout_with(
    client: *const TesseraClient,
    (feature, version): (*const c_char, *const c_char),
    seat: *mut *mut TesseraSeat,
    checkout: impl FnOnce(&BlockingClient, &str, &str) -> Result<BlockingSeat, ClientError>,
) -> TesseraStatus {
    call(|| {
        let client = unsafe { object_arg("client", client) }?;
        let feature = unsafe { text_arg("feature", feature) }?;
        let version = unsafe { text_arg("version", version) }?;
        if seat.is_null() {
            return Err(Failure::argument("seat is NULL"));
        }
        let checked_out = checkout(&client.client, feature, version)?;
        unsafe {
            put(
                "seat",
                seat,
                TesseraSeat {
                    seat: checked_out,
                    callback: Mutex::new(None),
                },
            )
        }
    })
}

/// As `tessera_checkout`, but when no seat is free waits in the pool's
/// queue (first come, first served, pool-wide; the place survives the
/// death of a server) for up to `wait_ms`, then `TESSERA_STATUS_NO_SEATS_AVAILABLE`.
#[no_mangle]
pub unsafe extern "C" fn tessera_checkout_wait(
    client: *const TesseraClient,
    feature: *const c_char,
    version: *const c_char,
    count: u32,
    wait_ms: u32,
    seat: *mut *mut TesseraSeat,
) -> TesseraStatus {
    let wait = std::time::Duration::from_millis(u64::from(wait_ms));
    unsafe {
        checkout_with(
            client,
            (feature, version),
            seat,
            |client, feature, version| {
                client.checkout_waiting(feature, version, count, wait, |_, _| {})
            },
        )
    }
}

/// True while the seat is valid by this machine's clock. False for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_seat_is_valid(seat: *const TesseraSeat) -> bool {
    get(false, || {
        unsafe { seat.as_ref() }.is_some_and(|seat| seat.seat.is_valid())
    })
}

/// Tells the pool whether the program is idle (no user input, nothing
/// running): `idle` true, idle for `idle_for_ms` already (the time since
/// the last key press, as the system tells it; 0 from now on); false, in
/// use again. Where the pool's policy gives the feature an
/// `idle_timeout_s`, a program idle that long loses its seat (state LOST,
/// reason code `idle_timeout`) and checks out again when used again. Does
/// nothing for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_seat_set_idle(
    seat: *const TesseraSeat,
    idle: bool,
    idle_for_ms: u64,
) {
    get((), || {
        if let Some(seat) = unsafe { seat.as_ref() } {
            if idle {
                seat.seat
                    .set_idle_for(std::time::Duration::from_millis(idle_for_ms));
            } else {
                seat.seat.set_idle(false);
            }
        }
    })
}

/// The seats held. 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_seat_count(seat: *const TesseraSeat) -> u32 {
    get(0, || {
        unsafe { seat.as_ref() }.map_or(0, |seat| seat.seat.count())
    })
}

/// Held or lost. Lost for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_seat_state(seat: *const TesseraSeat) -> TesseraSeatState {
    get(TesseraSeatState::Lost, || {
        match unsafe { seat.as_ref() }.map(|seat| seat.seat.state()) {
            Some(SeatState::Held { .. }) => TesseraSeatState::Held,
            _ => TesseraSeatState::Lost,
        }
    })
}

/// The id of the server that last granted or renewed the seat; free it
/// with `tessera_string_free`. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_seat_server_id(seat: *const TesseraSeat) -> *mut c_char {
    get(std::ptr::null_mut(), || {
        unsafe { seat.as_ref() }.map_or(std::ptr::null_mut(), |seat| {
            owned_string(&seat.seat.server_id())
        })
    })
}

/// Calls `callback` (on a library thread) at every change of the seat's
/// state, until the seat is checked in or freed; replaces an earlier
/// callback. A NULL callback stops the calls.
#[no_mangle]
pub unsafe extern "C" fn tessera_seat_on_change(
    seat: *const TesseraSeat,
    callback: TesseraSeatCallback,
    user_data: *mut c_void,
) -> TesseraStatus {
    call(|| {
        let seat = unsafe { object_arg("seat", seat) }?;
        let subscription = subscription(callback, user_data, seat_change, |call| {
            seat.seat.on_change(call)
        });
        subscribe(&seat.callback, subscription);
        Ok(())
    })
}

/// Checks the seat in, waiting for the server's answer, and frees it
/// (whatever the answer). A seat no server holds any more counts as
/// checked in.
#[no_mangle]
pub unsafe extern "C" fn tessera_checkin(seat: *mut TesseraSeat) -> TesseraStatus {
    call(|| {
        if seat.is_null() {
            return Err(Failure::argument("seat is NULL"));
        }
        // SAFETY: a pointer from `tessera_checkout`, freed once.
        let seat = unsafe { Box::from_raw(seat) };
        subscribe(&seat.callback, None);
        seat.seat.checkin()?;
        Ok(())
    })
}

/// Frees a seat, checking it in without waiting. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn tessera_seat_free(seat: *mut TesseraSeat) {
    if !seat.is_null() {
        get((), || {
            // SAFETY: a pointer from `tessera_checkout`, freed once.
            drop(unsafe { Box::from_raw(seat) });
        });
    }
}

// ------------------------------------------------------ temporary licenses

/// Activates a temporary license of `feature` for this user on this device
/// (`days` > 0: an offline borrow of that many days, within the vendor's
/// limit; 0: the license's period), kept in the cache for offline restarts
/// and extended in the background. Free with `tessera_temporary_free` (which
/// returns it when its terms say so) or `tessera_temporary_return`.
#[no_mangle]
pub unsafe extern "C" fn tessera_activate(
    client: *const TesseraClient,
    feature: *const c_char,
    version: *const c_char,
    days: u32,
    deadline_ms: u32,
    license: *mut *mut TesseraTemporary,
) -> TesseraStatus {
    call(|| {
        let client = unsafe { object_arg("client", client) }?;
        let feature = unsafe { text_arg("feature", feature) }?;
        let version = unsafe { text_arg("version", version) }?;
        if license.is_null() {
            return Err(Failure::argument("license is NULL"));
        }
        let days = (days > 0).then_some(days);
        let activated = client
            .client
            .activate(feature, version, days, deadline(deadline_ms))?;
        unsafe { put("license", license, temporary(activated)) }
    })
}

/// The temporary license of `feature` kept in this user's cache, with no
/// network: only if its token checks on this device and has not expired.
#[no_mangle]
pub unsafe extern "C" fn tessera_cached_temporary(
    client: *const TesseraClient,
    feature: *const c_char,
    version: *const c_char,
    license: *mut *mut TesseraTemporary,
) -> TesseraStatus {
    call(|| {
        let client = unsafe { object_arg("client", client) }?;
        let feature = unsafe { text_arg("feature", feature) }?;
        let version = unsafe { text_arg("version", version) }?;
        if license.is_null() {
            return Err(Failure::argument("license is NULL"));
        }
        let cached = client.client.cached_temporary(feature, version)?;
        unsafe { put("license", license, temporary(cached)) }
    })
}

fn temporary(license: BlockingTemporary) -> TesseraTemporary {
    TesseraTemporary {
        license,
        callback: Mutex::new(None),
    }
}

/// True while the license's token has not expired by this machine's clock.
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_is_valid(license: *const TesseraTemporary) -> bool {
    get(false, || {
        unsafe { license.as_ref() }.is_some_and(|l| l.license.is_valid())
    })
}

/// When the license's current token expires (Unix ms). 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_expires_unix_ms(
    license: *const TesseraTemporary,
) -> i64 {
    get(0, || {
        unsafe { license.as_ref() }.map_or(0, |l| l.license.token().expires_unix_ms)
    })
}

/// Valid or withdrawn. Withdrawn for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_state(
    license: *const TesseraTemporary,
) -> TesseraTemporaryState {
    get(TesseraTemporaryState::Withdrawn, || {
        match unsafe { license.as_ref() }.map(|l| l.license.state()) {
            Some(TemporaryState::Valid { .. }) => TesseraTemporaryState::Valid,
            _ => TesseraTemporaryState::Withdrawn,
        }
    })
}

/// The license's id; free it with `tessera_string_free`. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_license_id(
    license: *const TesseraTemporary,
) -> *mut c_char {
    get(std::ptr::null_mut(), || {
        unsafe { license.as_ref() }.map_or(std::ptr::null_mut(), |l| {
            owned_string(&l.license.token().license_id)
        })
    })
}

/// Calls `callback` (on a library thread) at every extension or withdrawal
/// until the license is returned or freed; replaces an earlier callback.
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_on_change(
    license: *const TesseraTemporary,
    callback: TesseraTemporaryCallback,
    user_data: *mut c_void,
) -> TesseraStatus {
    call(|| {
        let license = unsafe { object_arg("license", license) }?;
        let subscription = subscription(callback, user_data, temporary_change, |call| {
            license.license.on_change(call)
        });
        subscribe(&license.callback, subscription);
        Ok(())
    })
}

/// Extends the license now, for another period (it extends itself when due).
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_extend(
    license: *const TesseraTemporary,
) -> TesseraStatus {
    call(|| {
        let license = unsafe { object_arg("license", license) }?;
        license.license.extend()?;
        Ok(())
    })
}

/// Returns the license to the pool now, waiting for the answer, and frees it.
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_return(license: *mut TesseraTemporary) -> TesseraStatus {
    call(|| {
        if license.is_null() {
            return Err(Failure::argument("license is NULL"));
        }
        // SAFETY: a pointer from `tessera_activate` or
        // `tessera_cached_temporary`, freed once.
        let license = unsafe { Box::from_raw(license) };
        subscribe(&license.callback, None);
        license.license.return_license()?;
        Ok(())
    })
}

/// Frees a license: the program closes it, and it is returned (without
/// waiting) when its terms say so; otherwise it stays out until it expires
/// and a restart finds it with `tessera_cached_temporary`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn tessera_temporary_free(license: *mut TesseraTemporary) {
    if !license.is_null() {
        get((), || {
            // SAFETY: a pointer from this library, freed once.
            drop(unsafe { Box::from_raw(license) });
        });
    }
}

// ----------------------------------------------------------------- errors

/// The status of the last failed call on this thread (`TESSERA_STATUS_OK`
/// after a call that succeeded).
#[no_mangle]
pub extern "C" fn tessera_last_error_status() -> TesseraStatus {
    LAST_ERROR.with(|last| last.borrow().status)
}

/// The message of the last failed call on this thread, for people; "" if
/// the last call succeeded. Valid until the next call on this thread.
#[no_mangle]
pub extern "C" fn tessera_last_error_message() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().message.as_ptr())
}

/// The server's error code behind the last failure on this thread
/// (`no_seats_available`, `version_not_licensed`, … as PROTOCOL.md lists
/// them), or "" when no server gave one. Valid until the next call on this
/// thread.
#[no_mangle]
pub extern "C" fn tessera_last_error_server_code() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().server_code.as_ptr())
}

/// A status's name (`"no_seats_available"`, …): static, never freed.
#[no_mangle]
pub extern "C" fn tessera_status_name(status: TesseraStatus) -> *const c_char {
    let name: &'static CStr = match status {
        TesseraStatus::Ok => c"ok",
        TesseraStatus::InvalidArgument => c"invalid_argument",
        TesseraStatus::InvalidConfig => c"invalid_config",
        TesseraStatus::NoSeatsAvailable => c"no_seats_available",
        TesseraStatus::LicenseNotServed => c"license_not_served",
        TesseraStatus::NoQuorum => c"no_quorum",
        TesseraStatus::NoServerReachable => c"no_server_reachable",
        TesseraStatus::Rejected => c"rejected",
        TesseraStatus::UnknownGrant => c"unknown_grant",
        TesseraStatus::SeatLost => c"seat_lost",
        TesseraStatus::UntrustedAnswer => c"untrusted_answer",
        TesseraStatus::ClockSetBack => c"clock_set_back",
        TesseraStatus::DeadlineExceeded => c"deadline_exceeded",
        TesseraStatus::LicenseWithdrawn => c"license_withdrawn",
        TesseraStatus::Internal => c"internal",
    };
    name.as_ptr()
}

/// Frees a string the library gave. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn tessera_string_free(text: *mut c_char) {
    if !text.is_null() {
        // SAFETY: a string from `owned_string`, freed once.
        drop(unsafe { CString::from_raw(text) });
    }
}

/// The library's version, e.g. "0.1.0": static, never freed.
#[no_mangle]
pub extern "C" fn tessera_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_message() -> String {
        // SAFETY: the library's own NUL-terminated string.
        unsafe { CStr::from_ptr(tessera_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn bad_arguments_are_refused_with_a_status_and_a_message() {
        unsafe {
            assert!(tessera_config_new(std::ptr::null()).is_null());
            assert_eq!(tessera_last_error_status(), TesseraStatus::InvalidArgument);
            assert_eq!(last_message(), "servers is NULL");
            let not_utf8 = [0xff_u8, 0];
            assert!(tessera_config_new(not_utf8.as_ptr().cast()).is_null());
            assert_eq!(last_message(), "servers is not UTF-8");

            let config = tessera_config_new(c"127.0.0.1:1".as_ptr());
            assert!(!config.is_null());
            assert_eq!(tessera_last_error_status(), TesseraStatus::Ok);
            let status = tessera_config_set(config, c"colour".as_ptr(), c"blue".as_ptr());
            assert_eq!(status, TesseraStatus::InvalidArgument);
            assert!(last_message().contains("unknown setting `colour`"));
            let status = tessera_config_set(config, c"tls".as_ptr(), c"none".as_ptr());
            assert_eq!(status, TesseraStatus::InvalidArgument);
            let status = tessera_config_set(config, c"request_timeout_ms".as_ptr(), c"0".as_ptr());
            assert_eq!(status, TesseraStatus::InvalidArgument);
            let status =
                tessera_config_add_vendor_key(config, c"acme".as_ptr(), c"not a key".as_ptr());
            assert_eq!(status, TesseraStatus::InvalidConfig);
            assert!(last_message().contains("vendor `acme`"));
            // No vendor key: a client is refused, naming what to set.
            assert!(tessera_client_new(config).is_null());
            assert_eq!(tessera_last_error_status(), TesseraStatus::InvalidConfig);
            assert!(
                last_message().contains("no vendor key"),
                "{}",
                last_message()
            );
            tessera_config_free(config);

            let mut seat = std::ptr::null_mut();
            let status = tessera_checkout(
                std::ptr::null(),
                c"cad".as_ptr(),
                c"1".as_ptr(),
                1,
                0,
                &mut seat,
            );
            assert_eq!(status, TesseraStatus::InvalidArgument);
            assert!(seat.is_null());
            assert!(!tessera_seat_is_valid(std::ptr::null()));
            assert_eq!(tessera_seat_count(std::ptr::null()), 0);
            assert_eq!(tessera_seat_state(std::ptr::null()), TesseraSeatState::Lost);
            assert!(tessera_seat_server_id(std::ptr::null()).is_null());
            assert_eq!(
                tessera_checkin(std::ptr::null_mut()),
                TesseraStatus::InvalidArgument
            );
            assert_eq!(
                tessera_temporary_return(std::ptr::null_mut()),
                TesseraStatus::InvalidArgument
            );
            tessera_seat_free(std::ptr::null_mut());
            tessera_temporary_free(std::ptr::null_mut());
            tessera_client_free(std::ptr::null_mut());
            tessera_string_free(std::ptr::null_mut());
        }
    }

    #[test]
    fn an_unreachable_pool_is_a_status_within_the_deadline() {
        unsafe {
            // A port nothing listens on (the kernel refuses at once).
            let config = tessera_config_new(c"127.0.0.1:9".as_ptr());
            tessera_config_set(config, c"tls".as_ptr(), c"plain".as_ptr());
            tessera_config_set(config, c"trust".as_ptr(), c"any_server".as_ptr());
            let client = tessera_client_new(config);
            tessera_config_free(config);
            assert!(!client.is_null(), "{}", last_message());
            let mut seat = std::ptr::null_mut();
            let status = tessera_checkout(
                client,
                c"cad".as_ptr(),
                c"1.0".as_ptr(),
                1,
                5_000,
                &mut seat,
            );
            assert_eq!(
                status,
                TesseraStatus::NoServerReachable,
                "{}",
                last_message()
            );
            assert!(seat.is_null());
            tessera_client_free(client);
        }
    }

    #[test]
    fn every_status_has_a_name() {
        for status in [
            TesseraStatus::Ok,
            TesseraStatus::LicenseWithdrawn,
            TesseraStatus::Internal,
        ] {
            // SAFETY: static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(tessera_status_name(status)) };
            assert!(!name.to_bytes().is_empty());
        }
        // SAFETY: as above.
        let version = unsafe { CStr::from_ptr(tessera_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
