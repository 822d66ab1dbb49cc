//! Temporary licenses (seed 004), the program's side: activate one for this
//! device, keep its signed token in the user's cache, run on it with no
//! network until it expires, extend it in the background once its
//! `extend_after_unix_ms` has passed, and return it on close when its
//! terms say so.
//!
//! A token counts only on the device it names ([`ClientConfig::device`]),
//! before its expiry by this machine's clock (never set back past the
//! clock mark), and, with [`Trust::Vendor`], only if it is signed by the
//! server that issued it over codes the vendor's keys signed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tessera_core::answer::{check_backing, codes_sha256, Backing, ServerPublicKey};
use tessera_core::{LicenseCode, Version};
use tessera_proto::{
    ActivateRequest, CheckinResponse, ErrorCode, TemporaryRequest, TemporaryToken,
};
use tokio::sync::watch;

use crate::client::Client;
use crate::config::ClientConfig;
use crate::error::{pool_error, ClientError, Disposition, Failure};
use crate::http;
use crate::trust::Trust;

/// What the program should know about its temporary license.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemporaryState {
    /// Valid until this time (Unix ms), by this machine's clock.
    Valid { expires_unix_ms: i64 },
    /// A newer device holds the ticket, or the license was returned or
    /// expired at the pool: it is not extended. The program should say so
    /// and close; the token stays valid until it expires.
    Withdrawn { reason: String },
}

/// A temporary license of this device. Extends itself in the background;
/// dropped, it is returned when its terms say so.
pub struct TemporaryLicense {
    client: Client,
    token: Arc<Mutex<TemporaryToken>>,
    events: watch::Receiver<TemporaryState>,
    /// Shared with the background extension: a manual extension publishes too.
    publish: Arc<watch::Sender<TemporaryState>>,
    stop: watch::Sender<bool>,
    returned: bool,
}

impl Client {
    /// Activates a temporary license of `feature` for this user on this
    /// device (`days`: an offline borrow within the vendor's limit), keeps
    /// its token in the cache, and starts extending it in the background.
    pub async fn activate(
        &self,
        feature: &str,
        version: &str,
        days: Option<u32>,
    ) -> Result<TemporaryLicense, ClientError> {
        self.checker().check_clock()?;
        let config = self.config();
        let request = ActivateRequest {
            client_id: config.client_id.clone(),
            user: config.user.clone(),
            host: config.host.clone(),
            feature: feature.to_string(),
            version: version.to_string(),
            device: config.device.clone(),
            days,
            answer_within_ms: Some(crate::guard::wait_ms(config.request_timeout)),
        };
        let mut failures = Vec::new();
        for address in &config.servers {
            let answer: Result<TemporaryToken, Failure> =
                http::post_json(self, address, "/temporary/activate", &request).await;
            match answer {
                Ok(token) => {
                    check_token(self, &token, Some(version))
                        .map_err(|message| ClientError::UntrustedAnswer { message })?;
                    save(config, &token);
                    return Ok(TemporaryLicense::start(self.clone(), token));
                }
                Err(failure) if failure.disposition() == Disposition::Definitive => {
                    return Err(refusal(feature, failure));
                }
                Err(failure) => failures.push(failure),
            }
        }
        Err(pool_error(feature, failures))
    }

    /// The temporary license of `feature` kept in this user's cache, with
    /// no network: only if its token checks on this device and has not
    /// expired. It extends itself once a server answers again.
    pub fn cached_temporary(
        &self,
        feature: &str,
        version: &str,
    ) -> Result<TemporaryLicense, ClientError> {
        let config = self.config();
        let path = cache_file(config, feature).ok_or_else(|| ClientError::InvalidConfig {
            message: "no temporary license cache: set ClientConfig::temporary_dir".into(),
        })?;
        let text = std::fs::read(&path).map_err(|err| ClientError::SeatLost {
            message: format!(
                "no temporary license of `{feature}` in {}: {err}",
                path.display()
            ),
        })?;
        let token: TemporaryToken =
            serde_json::from_slice(&text).map_err(|err| ClientError::SeatLost {
                message: format!("{} is not a temporary license: {err}", path.display()),
            })?;
        check_token(self, &token, Some(version))
            .map_err(|message| ClientError::SeatLost { message })?;
        Ok(TemporaryLicense::start(self.clone(), token))
    }
}

impl TemporaryLicense {
    fn start(client: Client, token: TemporaryToken) -> TemporaryLicense {
        let (events_sender, events) = watch::channel(TemporaryState::Valid {
            expires_unix_ms: token.expires_unix_ms,
        });
        let (stop, stop_receiver) = watch::channel(false);
        let token = Arc::new(Mutex::new(token));
        let publish = Arc::new(events_sender);
        tokio::spawn(keep_extending(
            client.clone(),
            token.clone(),
            publish.clone(),
            stop_receiver,
        ));
        TemporaryLicense {
            client,
            token,
            events,
            publish,
            stop,
            returned: false,
        }
    }

    /// The token as the pool last signed it.
    pub fn token(&self) -> TemporaryToken {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The license's state now.
    pub fn state(&self) -> TemporaryState {
        self.events.borrow().clone()
    }

    /// Follows the license's state.
    pub fn subscribe(&self) -> watch::Receiver<TemporaryState> {
        self.events.clone()
    }

    /// True while the token has not expired by this machine's clock.
    pub fn is_valid(&self) -> bool {
        let expires = self.token().expires_unix_ms;
        self.client
            .checker()
            .check_clock()
            .is_ok_and(|now| now < expires)
    }

    /// Extends the license now, for another period (it extends itself once
    /// `extend_after_unix_ms` has passed).
    pub async fn extend(&self) -> Result<(), ClientError> {
        let token = self.token();
        match extend(&self.client, &token).await {
            Ok(extended) => {
                self.publish.send_replace(TemporaryState::Valid {
                    expires_unix_ms: extended.expires_unix_ms,
                });
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = extended;
                Ok(())
            }
            Err(error) => {
                if error.code() == Some(ErrorCode::LicenseWithdrawn) {
                    self.publish.send_replace(TemporaryState::Withdrawn {
                        reason: error.to_string(),
                    });
                }
                Err(error)
            }
        }
    }

    /// Returns the license: its seat is the pool's again at once.
    pub async fn return_license(mut self) -> Result<u32, ClientError> {
        self.returned = true;
        self.stop.send_replace(true);
        give_back(&self.client, &self.token()).await
    }
}

impl Drop for TemporaryLicense {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        let token = self.token();
        if self.returned || !token.return_on_close {
            return;
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(error) = give_back(&client, &token).await {
                tracing::warn!(%error, "could not return a temporary license; it expires by itself");
            }
        });
    }
}

/// Extends in the background once due; retries on no answer as often as
/// it reads the wall clock again ([`crate::WallClock::recheck`], a minute).
async fn keep_extending(
    client: Client,
    token: Arc<Mutex<TemporaryToken>>,
    events: Arc<watch::Sender<TemporaryState>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let current = token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = client.checker().check_clock().unwrap_or(i64::MAX);
        let recheck_ms = client.config().wall_clock.recheck().as_millis() as i64;
        let wait_ms = (current.extend_after_unix_ms - now).clamp(0, recheck_ms) as u64;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => {}
        }
        let now = client.checker().check_clock().unwrap_or(i64::MAX);
        if now < current.extend_after_unix_ms {
            continue;
        }
        match extend(&client, &current).await {
            Ok(extended) => {
                events.send_replace(TemporaryState::Valid {
                    expires_unix_ms: extended.expires_unix_ms,
                });
                *token.lock().unwrap_or_else(|p| p.into_inner()) = extended;
            }
            Err(error) if error.code() == Some(ErrorCode::LicenseWithdrawn) => {
                events.send_replace(TemporaryState::Withdrawn {
                    reason: error.to_string(),
                });
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "temporary license not extended; retrying");
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(client.config().wall_clock.recheck()) => {}
                }
            }
        }
    }
}

fn temporary_request(token: &TemporaryToken) -> TemporaryRequest {
    TemporaryRequest {
        feature: token.feature.clone(),
        license_id: token.license_id.clone(),
        device: token.device.clone(),
        proof: token.proof.clone(),
    }
}

async fn extend(client: &Client, token: &TemporaryToken) -> Result<TemporaryToken, ClientError> {
    let request = temporary_request(token);
    let mut failures = Vec::new();
    for address in &client.config().servers {
        let answer: Result<TemporaryToken, Failure> =
            http::post_json(client, address, "/temporary/extend", &request).await;
        match answer {
            Ok(extended) => {
                check_token(client, &extended, None)
                    .map_err(|message| ClientError::UntrustedAnswer { message })?;
                save(client.config(), &extended);
                return Ok(extended);
            }
            Err(failure) if failure.disposition() == Disposition::Definitive => {
                return Err(refusal(&token.feature, failure));
            }
            Err(failure) => failures.push(failure),
        }
    }
    Err(pool_error(&token.feature, failures))
}

async fn give_back(client: &Client, token: &TemporaryToken) -> Result<u32, ClientError> {
    let request = temporary_request(token);
    let mut failures = Vec::new();
    for address in &client.config().servers {
        let answer: Result<CheckinResponse, Failure> =
            http::post_json(client, address, "/temporary/return", &request).await;
        match answer {
            Ok(returned) => {
                forget(client.config(), token);
                return Ok(returned.released_seats);
            }
            Err(failure) if failure.disposition() == Disposition::Definitive => {
                forget(client.config(), token);
                return Err(refusal(&token.feature, failure));
            }
            Err(failure) => failures.push(failure),
        }
    }
    Err(pool_error(&token.feature, failures))
}

fn refusal(feature: &str, failure: Failure) -> ClientError {
    match failure.kind {
        crate::error::FailureKind::Refused { code, message } => {
            ClientError::from_server(feature, code, format!("{}: {message}", failure.address))
        }
        _ => pool_error(feature, vec![failure]),
    }
}

/// Whether `token` counts on this device now: its device, its expiry by
/// the clock mark, and (with vendor keys) its signature and codes.
fn check_token(
    client: &Client,
    token: &TemporaryToken,
    version: Option<&str>,
) -> Result<(), String> {
    let config = client.config();
    if token.device != config.device {
        return Err(format!(
            "the temporary license of `{}` is for device `{}`, not this one (`{}`): a token \
             copied from another device does not count",
            token.feature, token.device, config.device
        ));
    }
    let now = client
        .checker()
        .check_clock()
        .map_err(|err| err.to_string())?;
    if now >= token.expires_unix_ms {
        return Err(format!(
            "the temporary license of `{}` expired {} s ago",
            token.feature,
            (now - token.expires_unix_ms) / 1_000
        ));
    }
    let Trust::Vendor(vendor_keys) = &config.trust else {
        return Ok(());
    };
    let codes = token
        .codes
        .iter()
        .map(LicenseCode::from_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("a license code in the token is malformed: {err}"))?;
    let key = ServerPublicKey::from_base64(&token.server_key).map_err(|err| err.to_string())?;
    let fields = token.fields(codes_sha256(&codes));
    key.verify_text(&fields.canonical_form(&key.key_id()), &token.signature)
        .map_err(|err| format!("the temporary license's {err}"))?;
    // The token's codes must be the vendor's, as a grant's are; the
    // version is the program's, or any the codes cover on an extension.
    let version = match version {
        Some(version) => Version::parse(version).map_err(|err| format!("version: {err}"))?,
        None => codes
            .first()
            .map(|code| code.fields().version_min.clone())
            .ok_or("the token carries no license code")?,
    };
    check_backing(
        vendor_keys,
        Backing {
            codes: &codes,
            codes_checked: false,
            feature: &token.feature,
            version: &version,
            server_id: &token.server_id,
            hostid: &token.hostid,
            server_key: &key,
            chain: None,
            now_unix_ms: now,
        },
    )
    .map_err(|err| err.to_string())
}

/// This device's license of `feature`: `<feature>.<device>.json`.
fn cache_file(config: &ClientConfig, feature: &str) -> Option<PathBuf> {
    let safe = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = format!("{}.{}.json", safe(feature), safe(&config.device));
    config.temporary_dir.as_ref().map(|dir| dir.join(name))
}

fn save(config: &ClientConfig, token: &TemporaryToken) {
    let Some(path) = cache_file(config, &token.feature) else {
        return;
    };
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let json = serde_json::to_vec(token).map_err(std::io::Error::other)?;
            let mut temporary = path.as_os_str().to_owned();
            temporary.push(format!(".{}", std::process::id()));
            std::fs::write(&temporary, json)?;
            std::fs::rename(&temporary, &path)
        });
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "could not keep the temporary license");
    }
}

/// Removes the cached token if it is still this license's.
fn forget(config: &ClientConfig, token: &TemporaryToken) {
    let Some(path) = cache_file(config, &token.feature) else {
        return;
    };
    let cached = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<TemporaryToken>(&bytes).ok());
    if cached.is_some_and(|cached| cached.license_id == token.license_id) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use tessera_core::answer::ServerSecretKey;
    use tessera_core::temporary::TokenFields;
    use tessera_core::VendorSecretKey;
    use tessera_proto::Proof;

    use super::*;
    use crate::config::WallClock;

    const ISSUED: i64 = 1_796_083_200_000;
    const HOUR: i64 = 3_600_000;

    /// A token the pool would sign: 8 h from `ISSUED`, on `device`.
    fn token(device: &str) -> TemporaryToken {
        let vendor = VendorSecretKey::from_seed("acme", [7; 32]).unwrap();
        let code = crate::trust::tests::code_with(
            &vendor,
            "cad-1",
            Some(tessera_core::temporary::TemporaryPolicy::DEFAULT),
        );
        let fields = TokenFields {
            license_id: "t1".into(),
            pool_id: "acme-eng".into(),
            server_id: "A".into(),
            hostid: "mid-0011223344556677".into(),
            feature: "cad".into(),
            ticket: "alice".into(),
            device: device.into(),
            seats: 1,
            issued_unix_ms: ISSUED,
            expires_unix_ms: ISSUED + 8 * HOUR,
            extend_after_unix_ms: ISSUED + 4 * HOUR,
            return_on_close: true,
            codes_sha256: codes_sha256([&code]),
        };
        let key = ServerSecretKey::from_seed([5; 32]);
        TemporaryToken::signed(fields, &key, Proof("p".into()), vec![code.to_text()])
    }

    /// A program on `device` whose clock reads `now`, with the cache in `dir`.
    fn program(dir: &std::path::Path, device: &str, now: Arc<AtomicI64>) -> Client {
        let mut config = ClientConfig::new(["127.0.0.1:9"]);
        config.trust = Trust::Vendor(vec![VendorSecretKey::from_seed("acme", [7; 32])
            .unwrap()
            .public()]);
        config.device = device.into();
        config.tls = crate::ClientTls::Plain;
        config.clock_file = Some(dir.join("clock"));
        config.temporary_dir = Some(dir.join("temporary"));
        config.wall_clock = WallClock::new(move || now.load(Ordering::SeqCst));
        Client::new(config).unwrap()
    }

    /// Offline on its cached token: valid until its expiry by the clock and
    /// not a millisecond after; a token of another device, or a changed
    /// one, does not count; a clock set back past the kept time stops it.
    #[tokio::test]
    async fn a_cached_license_counts_offline_until_its_expiry_and_only_here() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicI64::new(ISSUED + HOUR));
        let client = program(dir.path(), "dev-here", now.clone());
        save(client.config(), &token("dev-here"));

        let license = client
            .cached_temporary("cad", "2.0")
            .expect("counts offline");
        assert!(license.is_valid());
        std::mem::forget(license);
        now.store(ISSUED + 8 * HOUR - 1, Ordering::SeqCst);
        assert!(client
            .cached_temporary("cad", "2.0")
            .map(std::mem::forget)
            .is_ok());
        now.store(ISSUED + 8 * HOUR, Ordering::SeqCst);
        let expired = client.cached_temporary("cad", "2.0").map(std::mem::forget);
        assert!(
            matches!(&expired, Err(ClientError::SeatLost { message }) if message.contains("expired 0 s ago")),
            "{expired:?}"
        );

        // Another device: the token names this one.
        let there = program(dir.path(), "dev-there", now.clone());
        save(there.config(), &token("dev-here"));
        let copied = there.cached_temporary("cad", "2.0").map(std::mem::forget);
        assert!(
            matches!(&copied, Err(ClientError::SeatLost { message }) if message.contains("copied from another device")),
            "{copied:?}"
        );
        // A token whose expiry was moved does not check.
        let mut moved = token("dev-here");
        moved.expires_unix_ms += 24 * HOUR;
        now.store(ISSUED + HOUR, Ordering::SeqCst);
        save(client.config(), &moved);
        let forged = client.cached_temporary("cad", "2.0").map(std::mem::forget);
        assert!(
            matches!(&forged, Err(ClientError::SeatLost { message }) if message.contains("signature")),
            "{forged:?}"
        );
    }

    #[tokio::test]
    async fn a_clock_set_back_past_the_kept_time_refuses_the_cached_license() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clock"), (ISSUED + 2 * HOUR).to_string()).unwrap();
        let now = Arc::new(AtomicI64::new(ISSUED + HOUR));
        let client = program(dir.path(), "dev-here", now);
        save(client.config(), &token("dev-here"));
        let refused = client.cached_temporary("cad", "2.0").map(std::mem::forget);
        assert!(
            matches!(&refused, Err(ClientError::SeatLost { message }) if message.contains("clock was set back")),
            "{refused:?}"
        );
    }
}
