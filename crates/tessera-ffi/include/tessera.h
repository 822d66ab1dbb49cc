#ifndef TESSERA_H
#define TESSERA_H

/* Generated from crates/tessera-ffi/src by cbindgen: do not edit. `TESSERA_BLESS=1 cargo test -p tessera-ffi --test header` writes it again. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// What a call came to: `TESSERA_STATUS_OK`, or why it failed. The values
// are stable; new ones may be added at the end.
typedef enum TesseraStatus {
  TESSERA_STATUS_OK = 0,
  // A NULL pointer, a string that is not UTF-8, an unknown setting.
  TESSERA_STATUS_INVALID_ARGUMENT = 1,
  // The settings cannot work; the message names the one to fix.
  TESSERA_STATUS_INVALID_CONFIG = 2,
  // Every seat is taken on every server that answered. Retry later.
  TESSERA_STATUS_NO_SEATS_AVAILABLE = 3,
  // The feature's license codes exist but none can be served.
  TESSERA_STATUS_LICENSE_NOT_SERVED = 4,
  // The servers cannot reach a majority of their pool now. Retry.
  TESSERA_STATUS_NO_QUORUM = 5,
  // No server gave a usable answer. Check the servers' addresses.
  TESSERA_STATUS_NO_SERVER_REACHABLE = 6,
  // A server refused for a reason retrying will not change; the
  // server's code says which (`tessera_last_error_server_code`).
  TESSERA_STATUS_REJECTED = 7,
  // No server holds this grant any more.
  TESSERA_STATUS_UNKNOWN_GRANT = 8,
  // The seat was lost: no server renewed it before it expired.
  TESSERA_STATUS_SEAT_LOST = 9,
  // No server gave an answer this program's vendor keys vouch for.
  TESSERA_STATUS_UNTRUSTED_ANSWER = 10,
  // This machine's clock was set back.
  TESSERA_STATUS_CLOCK_SET_BACK = 11,
  // The deadline passed before a final answer. Retry, or allow longer.
  TESSERA_STATUS_DEADLINE_EXCEEDED = 12,
  // A temporary license was withdrawn: a newer device holds the ticket,
  // or it was returned or expired at the pool. Tell the user and close.
  TESSERA_STATUS_LICENSE_WITHDRAWN = 13,
  // A bug in the library, caught at the boundary; please report it.
  TESSERA_STATUS_INTERNAL = 14,
} TesseraStatus;

// A seat's state, as `tessera_seat_state` and a seat callback give it.
typedef enum TesseraSeatState {
  // A server holds the seat and renews it.
  TESSERA_SEAT_STATE_HELD = 1,
  // No server renewed it before it expired: stop using the feature.
  TESSERA_SEAT_STATE_LOST = 2,
} TesseraSeatState;

// A temporary license's state.
typedef enum TesseraTemporaryState {
  // Valid until its expiry, extended in the background.
  TESSERA_TEMPORARY_STATE_VALID = 1,
  // Withdrawn: valid until its expiry but never extended again.
  TESSERA_TEMPORARY_STATE_WITHDRAWN = 2,
} TesseraTemporaryState;

// A client of a pool. Thread-safe.
typedef struct TesseraClient TesseraClient;

// Settings of a client, made by `tessera_config_new`.
typedef struct TesseraConfig TesseraConfig;

// Seats checked out: heartbeated in the background until checked in.
typedef struct TesseraSeat TesseraSeat;

// A temporary license of this device, extended in the background.
typedef struct TesseraTemporary TesseraTemporary;

// Called on a library thread when a seat's state changes: `detail` is the
// holding server's id (held) or the reason (lost), valid during the call
// only. Keep it short; never call the library's blocking functions, nor
// free the seat, from it. Once the seat is freed it is never called again.
typedef void (*TesseraSeatCallback)(enum TesseraSeatState state, const char *detail, void *user_data);

// Called on a library thread when a temporary license changes: `detail`
// is the new expiry (Unix ms, as text) or the withdrawal's reason.
typedef void (*TesseraTemporaryCallback)(enum TesseraTemporaryState state,
                                         const char *detail,
                                         void *user_data);

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// New settings for a client of the pool servers `servers`: `host:port`
// entries separated by commas, in the order checkouts try them. User,
// host and device are read from the system; the pool's CA from the file
// that `TESSERA_CA_FILE` names unless `ca_file` is set. Add the vendor's
// key(s) with `tessera_config_add_vendor_key`. NULL on a NULL or non-UTF-8
// argument. Free with `tessera_config_free`.
struct TesseraConfig *tessera_config_new(const char *servers);

// Sets one setting by name:
// - `user`, `host`, `client_id`, `device`: as the servers and `tessera
//   status` see this program;
// - `ca_file`: the pool's CA (PEM), read now;
// - `tls`: `plain` for unencrypted HTTP (loopback tests only);
// - `trust`: `any_server` to accept any server's answer (tools and tests
//   only; a program trusts its vendor's keys);
// - `request_timeout_ms`, `connect_timeout_ms`: limits of one request;
// - `cache_dir`: where temporary licenses and the clock mark are kept.
enum TesseraStatus tessera_config_set(struct TesseraConfig *config,
                                      const char *name,
                                      const char *value);

// Adds a vendor public key the program trusts, as `tessera vendor keygen`
// prints it: the vendor's name and the key (base64). Build it into the
// program; never read it from a file its user can edit.
enum TesseraStatus tessera_config_add_vendor_key(struct TesseraConfig *config,
                                                 const char *vendor,
                                                 const char *public_key);

// Frees settings. NULL is ignored.
void tessera_config_free(struct TesseraConfig *config);

// A client of the pool these settings name, checked at once (no vendor
// key, no servers, a bad address: `TESSERA_STATUS_INVALID_CONFIG`).
// The settings may be freed afterwards. NULL on failure (see
// `tessera_last_error_message`). Free with `tessera_client_free`.
struct TesseraClient *tessera_client_new(const struct TesseraConfig *config);

// Frees a client. Seats and licenses it gave keep working. NULL is ignored.
void tessera_client_free(struct TesseraClient *client);

// Checks out `count` seats of `feature` for this program's `version`,
// trying the servers in order; gives up after `deadline_ms` (0: no
// deadline beyond each request's timeout). On success `*seat` is set;
// the seat is heartbeated in the background until `tessera_checkin` or
// `tessera_seat_free`.
enum TesseraStatus tessera_checkout(const struct TesseraClient *client,
                                    const char *feature,
                                    const char *version,
                                    uint32_t count,
                                    uint32_t deadline_ms,
                                    struct TesseraSeat **seat);

// As `tessera_checkout`, but when no seat is free waits in the pool's
// queue (first come, first served, pool-wide; the place survives the
// death of a server) for up to `wait_ms`, then `TESSERA_STATUS_NO_SEATS_AVAILABLE`.
enum TesseraStatus tessera_checkout_wait(const struct TesseraClient *client,
                                         const char *feature,
                                         const char *version,
                                         uint32_t count,
                                         uint32_t wait_ms,
                                         struct TesseraSeat **seat);

// True while the seat is valid by this machine's clock. False for NULL.
bool tessera_seat_is_valid(const struct TesseraSeat *seat);

// Tells the pool whether the program is idle (no user input, nothing
// running): `idle` true, idle for `idle_for_ms` already (the time since
// the last key press, as the system tells it; 0 from now on); false, in
// use again. Where the pool's policy gives the feature an
// `idle_timeout_s`, a program idle that long loses its seat (state LOST,
// reason code `idle_timeout`) and checks out again when used again. Does
// nothing for NULL.
void tessera_seat_set_idle(const struct TesseraSeat *seat, bool idle, uint64_t idle_for_ms);

// The seats held. 0 for NULL.
uint32_t tessera_seat_count(const struct TesseraSeat *seat);

// Held or lost. Lost for NULL.
enum TesseraSeatState tessera_seat_state(const struct TesseraSeat *seat);

// The id of the server that last granted or renewed the seat; free it
// with `tessera_string_free`. NULL for NULL.
char *tessera_seat_server_id(const struct TesseraSeat *seat);

// Calls `callback` (on a library thread) at every change of the seat's
// state, until the seat is checked in or freed; replaces an earlier
// callback. A NULL callback stops the calls.
enum TesseraStatus tessera_seat_on_change(const struct TesseraSeat *seat,
                                          TesseraSeatCallback callback,
                                          void *user_data);

// Checks the seat in, waiting for the server's answer, and frees it
// (whatever the answer). A seat no server holds any more counts as
// checked in.
enum TesseraStatus tessera_checkin(struct TesseraSeat *seat);

// Frees a seat, checking it in without waiting. NULL is ignored.
void tessera_seat_free(struct TesseraSeat *seat);

// Activates a temporary license of `feature` for this user on this device
// (`days` > 0: an offline borrow of that many days, within the vendor's
// limit; 0: the license's period), kept in the cache for offline restarts
// and extended in the background. Free with `tessera_temporary_free` (which
// returns it when its terms say so) or `tessera_temporary_return`.
enum TesseraStatus tessera_activate(const struct TesseraClient *client,
                                    const char *feature,
                                    const char *version,
                                    uint32_t days,
                                    uint32_t deadline_ms,
                                    struct TesseraTemporary **license);

// The temporary license of `feature` kept in this user's cache, with no
// network: only if its token checks on this device and has not expired.
enum TesseraStatus tessera_cached_temporary(const struct TesseraClient *client,
                                            const char *feature,
                                            const char *version,
                                            struct TesseraTemporary **license);

// True while the license's token has not expired by this machine's clock.
bool tessera_temporary_is_valid(const struct TesseraTemporary *license);

// When the license's current token expires (Unix ms). 0 for NULL.
int64_t tessera_temporary_expires_unix_ms(const struct TesseraTemporary *license);

// Valid or withdrawn. Withdrawn for NULL.
enum TesseraTemporaryState tessera_temporary_state(const struct TesseraTemporary *license);

// The license's id; free it with `tessera_string_free`. NULL for NULL.
char *tessera_temporary_license_id(const struct TesseraTemporary *license);

// Calls `callback` (on a library thread) at every extension or withdrawal
// until the license is returned or freed; replaces an earlier callback.
enum TesseraStatus tessera_temporary_on_change(const struct TesseraTemporary *license,
                                               TesseraTemporaryCallback callback,
                                               void *user_data);

// Extends the license now, for another period (it extends itself when due).
enum TesseraStatus tessera_temporary_extend(const struct TesseraTemporary *license);

// Returns the license to the pool now, waiting for the answer, and frees it.
enum TesseraStatus tessera_temporary_return(struct TesseraTemporary *license);

// Frees a license: the program closes it, and it is returned (without
// waiting) when its terms say so; otherwise it stays out until it expires
// and a restart finds it with `tessera_cached_temporary`. NULL is ignored.
void tessera_temporary_free(struct TesseraTemporary *license);

// The status of the last failed call on this thread (`TESSERA_STATUS_OK`
// after a call that succeeded).
enum TesseraStatus tessera_last_error_status(void);

// The message of the last failed call on this thread, for people; "" if
// the last call succeeded. Valid until the next call on this thread.
const char *tessera_last_error_message(void);

// The server's error code behind the last failure on this thread
// (`no_seats_available`, `version_not_licensed`, … as PROTOCOL.md lists
// them), or "" when no server gave one. Valid until the next call on this
// thread.
const char *tessera_last_error_server_code(void);

// A status's name (`"no_seats_available"`, …): static, never freed.
const char *tessera_status_name(enum TesseraStatus status);

// Frees a string the library gave. NULL is ignored.
void tessera_string_free(char *text);

// The library's version, e.g. "0.1.0": static, never freed.
const char *tessera_version(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* TESSERA_H */
