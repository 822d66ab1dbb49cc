//! What makes an answer count: the vendor's keys built into the program
//! ([`Trust::Vendor`]), never a key a server or a config file names.
//!
//! With vendor keys, every checkout and heartbeat carries a fresh nonce, and
//! a grant counts only if the answering server signed it over that nonce
//! and everything the program asked (`tessera_core::answer`), and every
//! license code behind it checks against the vendor's keys: in date by
//! this machine's clock, for this feature, one covering this version, bound
//! to the answering server's host or to a VID whose chain to the vendor
//! checks. A refusal counts only if signed too; one that is not is treated
//! as no answer, and the next server is asked.
//!
//! The clock: the latest time this program trusted is kept in a small file
//! ([`ClientConfig::clock_file`]); a clock that reads earlier than that by
//! more than the tolerance was set back, and no grant is accepted until it
//! is right again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tessera_core::answer::{
    check_backing, codes_sha256, AnswerFields, Backing, Chain, ServerPublicKey, CLOCK_TOLERANCE_MS,
    OUTCOME_GRANTED,
};
use tessera_core::master::{vid_of_binding, MasterLicense, VidCertificate};
use tessera_core::{LicenseCode, VendorPublicKey, Version};
use tessera_proto::{CheckoutRequest, Grant, SignedAnswer};
use tessera_transport::Channel;

use crate::config::ClientConfig;
use crate::error::{ClientError, Failure, FailureKind};

/// Whose word makes a seat valid for this program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The vendor's public keys, built into the program by its vendor:
    /// a grant counts only if it proves a code one of them signed. An empty
    /// list is refused when the client is made.
    Vendor(Vec<VendorPublicKey>),
    /// Any answer from a server the TLS settings accept. For tools that are
    /// not the vendor's program (`tessera checkout`), a production server
    /// asking its masters (it checks its certificate itself) and tests;
    /// never for a program whose licensing matters.
    AnyServer,
}

impl Default for Trust {
    fn default() -> Trust {
        Trust::Vendor(Vec::new())
    }
}

/// Least time between two writes of the clock file: the mark only has to
/// keep a set-back clock from gaining more than this.
const CLOCK_WRITE_INTERVAL_MS: i64 = 60_000;

/// Most sets of license codes a program keeps once checked (each
/// feature's latest set is kept whatever the count).
const HELD_CODE_SETS_MAX: usize = 64;

/// Checks answers as [`Trust`] says, and keeps the clock's mark and the
/// license codes that checked.
#[derive(Debug)]
pub(crate) struct Checker {
    vendor_keys: Option<Vec<VendorPublicKey>>,
    clock: ClockMark,
    held: Mutex<HeldCodes>,
    server_keys: ServerKeys,
    chains: CheckedChains,
}

/// Server answer keys as answers name them (base64), parsed. Parsing one
/// decompresses its curve point, which costs a few microseconds on every
/// answer; a pool has at most 11 servers, each with one answer key.
#[derive(Debug, Default)]
struct ServerKeys(Mutex<HashMap<String, ServerPublicKey>>);

/// Server keys kept parsed, at most: past it they are parsed afresh.
const SERVER_KEYS_MAX: usize = 64;

impl ServerKeys {
    /// The key `base64` names, or why it names none (never kept).
    fn parse(&self, base64: &str) -> Result<ServerPublicKey, String> {
        if let Some(key) = self.lock().get(base64) {
            return Ok(*key);
        }
        let key = ServerPublicKey::from_base64(base64).map_err(|err| err.to_string())?;
        let mut keys = self.lock();
        if keys.len() >= SERVER_KEYS_MAX {
            keys.clear();
        }
        keys.insert(base64.to_string(), key);
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServerPublicKey>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// VID chains (master licenses and a certificate) whose signatures
/// checked, parsed, by their exact text: a production server bound to a VID
/// sends its chain with every answer, and verifying it costs several
/// Ed25519 signatures. Only a chain behind a grant that checked in full,
/// against this program's vendor keys (which never change for a
/// [`Checker`]), is kept; its dates and what it names are still checked on
/// every answer (`Chain::signatures_checked`).
#[derive(Debug, Default)]
struct CheckedChains(Mutex<HashMap<String, Arc<ParsedChain>>>);

/// Chains kept checked, at most: a pool has at most 11 servers, each with
/// one certificate at a time. Past it they are checked afresh.
const CHECKED_CHAINS_MAX: usize = 32;

#[derive(Debug)]
struct ParsedChain {
    licenses: Vec<MasterLicense>,
    certificate: VidCertificate,
}

/// An answer's chain, parsed, and whether its signatures checked before.
struct AnswerChainOf {
    text: String,
    parsed: Arc<ParsedChain>,
    checked: bool,
}

impl CheckedChains {
    /// `chain` parsed, kept parsed and checked if it was seen checked.
    fn parse(&self, chain: &tessera_proto::AnswerChain) -> Result<AnswerChainOf, String> {
        let text = serde_json::to_string(chain)
            .map_err(|err| format!("the answer's chain cannot be read: {err}"))?;
        if let Some(parsed) = self.lock().get(&text) {
            return Ok(AnswerChainOf {
                parsed: parsed.clone(),
                text,
                checked: true,
            });
        }
        let licenses = chain
            .master_licenses
            .iter()
            .map(MasterLicense::from_text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("a master license in the chain is malformed: {err}"))?;
        let certificate = chain
            .certificate
            .to_core()
            .map_err(|err| format!("the chain's certificate is malformed: {err}"))?;
        Ok(AnswerChainOf {
            text,
            parsed: Arc::new(ParsedChain {
                licenses,
                certificate,
            }),
            checked: false,
        })
    }

    /// Keeps `chain`, whose signatures were just verified.
    fn keep(&self, chain: AnswerChainOf) {
        let mut chains = self.lock();
        if chains.len() >= CHECKED_CHAINS_MAX {
            chains.clear();
        }
        chains.insert(chain.text, chain.parsed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ParsedChain>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The license codes of grants that checked, by their SHA-256: a request
/// names a feature's latest ones (`codes_held`), and a server that serves
/// exactly those leaves them out of its answer. Their vendor signatures
/// were verified when they came, so an answer that leaves them out is
/// checked without verifying them again (`Backing::codes_checked`). Kept by
/// hash, not only by feature, so that an answer to a request that named an
/// older set still finds it after a newer one arrived on another request.
#[derive(Debug, Default)]
struct HeldCodes {
    latest: HashMap<String, String>,
    by_sha256: HashMap<String, Arc<[LicenseCode]>>,
}

impl HeldCodes {
    fn keep(&mut self, feature: &str, sha256: String, codes: Arc<[LicenseCode]>) {
        self.by_sha256.entry(sha256.clone()).or_insert(codes);
        self.latest.insert(feature.to_string(), sha256);
        if self.by_sha256.len() > HELD_CODE_SETS_MAX {
            let latest = &self.latest;
            self.by_sha256
                .retain(|sha256, _| latest.values().any(|kept| kept == sha256));
        }
    }
}

impl Checker {
    pub(crate) fn new(config: &ClientConfig) -> Checker {
        let vendor_keys = match &config.trust {
            Trust::Vendor(keys) => Some(keys.clone()),
            Trust::AnyServer => None,
        };
        Checker {
            clock: ClockMark::load(config.clock_file.as_deref(), config.wall_clock.clone()),
            vendor_keys,
            held: Mutex::default(),
            server_keys: ServerKeys::default(),
            chains: CheckedChains::default(),
        }
    }

    /// What a request for `feature` names in `codes_held`: the SHA-256 of
    /// the codes of its latest grant that checked, when answers are checked.
    pub(crate) fn codes_held(&self, feature: &str) -> Option<String> {
        self.vendor_keys.as_ref()?;
        self.held().latest.get(feature).cloned()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldCodes> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh nonce for a request, when answers are checked.
    pub(crate) fn nonce(&self) -> Option<String> {
        self.vendor_keys.as_ref().map(|_| {
            let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
            format!("{}{}", a.simple(), b.simple())
        })
    }

    /// This machine's time, unless its clock was set back.
    pub(crate) fn check_clock(&self) -> Result<i64, ClientError> {
        match self.vendor_keys {
            Some(_) => self.clock.now(),
            None => Ok(self.clock.wall.now_unix_ms()),
        }
    }

    /// One server's answer to `request`, as this program may act on it: a
    /// grant that does not check, or a refusal that is not signed, becomes
    /// [`FailureKind::Untrusted`].
    pub(crate) fn screen(
        &self,
        address: &str,
        request: &CheckoutRequest,
        answer: Result<Grant, Failure>,
        channel: Option<&Channel>,
    ) -> Result<Grant, Failure> {
        match answer {
            Ok(grant) => self
                .check(request, &grant, channel)
                .map(|()| grant)
                .map_err(|text| Failure {
                    address: address.to_string(),
                    kind: FailureKind::Untrusted(text),
                    signed: None,
                    queue: None,
                }),
            Err(failure) => Err(self.screen_refusal(request, failure, channel)),
        }
    }

    /// Whether this program may count `grant`, the answer to `request` that
    /// came on `channel` (a framed `tessera/3` connection's).
    pub(crate) fn check(
        &self,
        request: &CheckoutRequest,
        grant: &Grant,
        channel: Option<&Channel>,
    ) -> Result<(), String> {
        let Some(vendor_keys) = &self.vendor_keys else {
            return Ok(());
        };
        let now = self.clock.now().map_err(|err| err.to_string())?;
        let codes = self.answer_codes(request, grant)?;
        let chain = match grant.answer.as_ref().and_then(|a| a.chain.as_ref()) {
            Some(chain) => Some(self.chains.parse(chain)?),
            None => None,
        };
        check_grant(
            vendor_keys,
            &self.server_keys,
            request,
            grant,
            (&codes, chain.as_ref()),
            now,
            channel,
        )?;
        // The chain's signatures were verified only if a code is bound to
        // a VID (`check_backing`).
        let vid_bound = || {
            codes
                .codes
                .iter()
                .any(|code| vid_of_binding(&code.fields().hostid.to_string()).is_some())
        };
        if let Some(chain) = chain.filter(|chain| !chain.checked && vid_bound()) {
            self.chains.keep(chain);
        }
        if codes.sent {
            self.held()
                .keep(&request.feature, codes.sha256, codes.codes);
        }
        self.clock.advance(now);
        Ok(())
    }

    /// The license codes behind `grant`: those its answer carries, or, where
    /// it carries none and `request` named codes this program holds
    /// (`codes_held`), those.
    fn answer_codes(&self, request: &CheckoutRequest, grant: &Grant) -> Result<Codes, String> {
        let sent = grant
            .answer
            .as_ref()
            .map_or(&[][..], |answer| &answer.codes[..]);
        match (sent.is_empty(), &request.codes_held) {
            (true, Some(sha256)) => match self.held().by_sha256.get(sha256) {
                Some(codes) => Ok(Codes {
                    codes: codes.clone(),
                    sha256: sha256.clone(),
                    sent: false,
                }),
                None => Err(format!(
                    "a grant without its license codes, for codes this program does not hold \
                     (SHA-256 {sha256})"
                )),
            },
            _ => {
                let codes = sent
                    .iter()
                    .map(LicenseCode::from_text)
                    .collect::<Result<Arc<[_]>, _>>()
                    .map_err(|err| format!("a license code in the answer is malformed: {err}"))?;
                let sha256 = codes_sha256(codes.iter());
                Ok(Codes {
                    codes,
                    sha256,
                    sent: true,
                })
            }
        }
    }

    /// A refusal this program acts on only if it is signed over `request`
    /// (or came on a `channel` so bound).
    pub(crate) fn screen_refusal(
        &self,
        request: &CheckoutRequest,
        failure: Failure,
        channel: Option<&Channel>,
    ) -> Failure {
        let (Some(_), FailureKind::Refused { code, message }) = (&self.vendor_keys, &failure.kind)
        else {
            return failure;
        };
        let signed = failure.signed.as_deref();
        match check_denial(&self.server_keys, request, code.as_str(), signed, channel) {
            Ok(()) => failure,
            Err(why) => Failure {
                kind: FailureKind::Untrusted(format!(
                    "refused ({code}: {message}) with {why}, so this program does not act on it"
                )),
                signed: None,
                queue: None,
                address: failure.address,
            },
        }
    }
}

/// The license codes behind a grant, parsed, and their SHA-256.
struct Codes {
    codes: Arc<[LicenseCode]>,
    sha256: String,
    /// Carried by the answer (kept once the grant checks), not held
    /// already: the server left out the ones the request named.
    sent: bool,
}

fn nonce_of(request: &CheckoutRequest) -> &str {
    request.nonce.as_deref().unwrap_or_default()
}

fn asked_fields(request: &CheckoutRequest, answer: &SignedAnswer, outcome: &str) -> AnswerFields {
    AnswerFields {
        outcome: outcome.to_string(),
        pool_id: answer.pool_id.to_string(),
        server_id: answer.server_id.to_string(),
        hostid: answer.hostid.to_string(),
        server_unix_ms: answer.server_unix_ms,
        nonce: nonce_of(request).to_string(),
        client_id: request.client_id.to_string(),
        feature: request.feature.to_string(),
        version: request.version.to_string(),
        count: request.count,
        ..AnswerFields::default()
    }
}

/// A grant this program may count: signed over its request by the server
/// that holds it, backed by the vendor's `codes` (and, for codes bound to a
/// VID, the `chain`).
fn check_grant(
    vendor_keys: &[VendorPublicKey],
    server_keys: &ServerKeys,
    request: &CheckoutRequest,
    grant: &Grant,
    (codes, chain): (&Codes, Option<&AnswerChainOf>),
    now_unix_ms: i64,
    channel: Option<&Channel>,
) -> Result<(), String> {
    let Some(answer) = &grant.answer else {
        return Err(
            "a grant without a signed answer: a Tessera server signs every grant to a \
                    program that sends a nonce, so this is not a Tessera server, or an old one"
                .into(),
        );
    };
    if *answer.server_id != *grant.server_id {
        return Err(format!(
            "a grant held by server {} signed as server {}",
            grant.server_id, answer.server_id
        ));
    }
    let key = server_keys.parse(&answer.server_key)?;
    let fields = granted_fields(request, grant, answer, &codes.sha256);
    authenticate(&key, fields, answer, channel)?;
    let version = Version::parse(&request.version).map_err(|err| format!("version: {err}"))?;
    check_backing(
        vendor_keys,
        Backing {
            codes: &codes.codes,
            // Held codes were kept only from an answer whose check verified
            // them against these very vendor keys.
            codes_checked: !codes.sent,
            feature: &request.feature,
            version: &version,
            server_id: &grant.server_id,
            hostid: &answer.hostid,
            server_key: &key,
            chain: chain.map(|chain| Chain {
                master_licenses: &chain.parsed.licenses,
                certificate: &chain.parsed.certificate,
                signatures_checked: chain.checked,
            }),
            now_unix_ms,
        },
    )
    .map_err(|err| err.to_string())
}

/// What a grant's signature covers, from the program's own request, the
/// answer, and the SHA-256 of the license codes behind it.
fn granted_fields(
    request: &CheckoutRequest,
    grant: &Grant,
    answer: &SignedAnswer,
    codes_sha256: &str,
) -> AnswerFields {
    AnswerFields {
        grant_id: grant.grant_id.to_string(),
        lease_ms: grant.lease_ms,
        heartbeat_interval_ms: grant.heartbeat_interval_ms,
        codes_sha256: codes_sha256.to_string(),
        ..asked_fields(request, answer, OUTCOME_GRANTED)
    }
}

/// A refusal this program may act on: signed over its request.
fn check_denial(
    server_keys: &ServerKeys,
    request: &CheckoutRequest,
    code: &str,
    answer: Option<&SignedAnswer>,
    channel: Option<&Channel>,
) -> Result<(), String> {
    let Some(answer) = answer else {
        return Err("no signature".into());
    };
    let key = server_keys.parse(&answer.server_key)?;
    authenticate(&key, asked_fields(request, answer, code), answer, channel)
        .map_err(|err| format!("a signature that does not check: {err}"))
}

/// Whether `answer` (whose signed fields are `fields`) comes from the
/// holder of `key`. Signed, its signature must check; on a `tessera/3`
/// `channel` it covers the channel's value too, and then binds the
/// connection to `key`. Unsigned, it must have come on a channel already
/// bound to `key`: only the server at the other end of this TLS connection
/// can have sent it, and that server proved itself the holder of `key`
/// over this very channel (a relay that ends TLS on either side holds
/// another channel value, so the signature it passes on does not check).
fn authenticate(
    key: &ServerPublicKey,
    mut fields: AnswerFields,
    answer: &SignedAnswer,
    channel: Option<&Channel>,
) -> Result<(), String> {
    if answer.signature.is_empty() {
        return match channel.map(Channel::bound_key) {
            Some(Some(bound)) if bound == answer.server_key.as_str() => Ok(()),
            Some(Some(_)) => Err(
                "an unsigned answer naming another server key than the one this connection \
                 is bound to"
                    .into(),
            ),
            Some(None) => Err(
                "an unsigned answer on a connection that no signed answer has bound to a \
                 server key"
                    .into(),
            ),
            None => Err("an unsigned answer".into()),
        };
    }
    if let Some(channel) = channel {
        fields.channel = channel.value().to_string();
    }
    verify_signature(key, &fields, answer)?;
    if let Some(channel) = channel {
        channel.bind(&answer.server_key);
    }
    Ok(())
}

/// Checks the answer's signature over `fields`: its own, or its batch's
/// by the place the answer names in it.
fn verify_signature(
    key: &ServerPublicKey,
    fields: &AnswerFields,
    answer: &SignedAnswer,
) -> Result<(), String> {
    match &answer.batch {
        None => key.verify(fields, &answer.signature),
        Some(batch) => {
            let place = batch
                .to_core()
                .map_err(|err| format!("the answer's batch is malformed: {err}"))?;
            key.verify_in_batch(fields, &answer.signature, &place)
        }
    }
    .map_err(|err| err.to_string())
}

#[cfg(test)]
fn unix_now_ms() -> i64 {
    crate::config::WallClock::default().now_unix_ms()
}

/// The latest time this program trusted, kept in a file.
#[derive(Debug)]
struct ClockMark {
    path: Option<PathBuf>,
    state: Mutex<MarkState>,
    wall: crate::config::WallClock,
}

#[derive(Debug)]
struct MarkState {
    mark_ms: i64,
    written_ms: i64,
}

impl ClockMark {
    fn load(path: Option<&Path>, wall: crate::config::WallClock) -> ClockMark {
        let mark_ms = path
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse::<i64>().ok())
            .unwrap_or(0);
        ClockMark {
            path: path.map(Path::to_path_buf),
            state: Mutex::new(MarkState {
                mark_ms,
                written_ms: mark_ms,
            }),
            wall,
        }
    }

    fn now(&self) -> Result<i64, ClientError> {
        let now = self.wall.now_unix_ms();
        let mark_ms = self.lock().mark_ms;
        if now.saturating_add(CLOCK_TOLERANCE_MS) < mark_ms {
            let behind_s = (mark_ms - now) / 1_000;
            return Err(ClientError::ClockSetBack {
                message: format!(
                    "this machine's clock reads {behind_s} s earlier than the latest time this \
                     program trusted (kept in {}); set the clock right",
                    self.path
                        .as_deref()
                        .map_or("memory".into(), |p| p.display().to_string())
                ),
            });
        }
        Ok(now)
    }

    /// Raises the mark to `now`; writes it at most once a minute.
    fn advance(&self, now: i64) {
        let write = {
            let mut state = self.lock();
            state.mark_ms = state.mark_ms.max(now);
            let due = now - state.written_ms >= CLOCK_WRITE_INTERVAL_MS;
            if due {
                state.written_ms = now;
            }
            due
        };
        if let (true, Some(path)) = (write, &self.path) {
            if let Err(err) = write_mark(path, now) {
                tracing::debug!(path = %path.display(), %err, "could not keep the clock mark");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MarkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_mark(path: &Path, now: i64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}", std::process::id()));
    std::fs::write(&temporary, now.to_string())?;
    std::fs::rename(&temporary, path)
}

/// Where the clock mark is kept by default: the user's cache folder.
pub(crate) fn default_clock_file() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("tessera").join("clock"))
}

#[cfg(test)]
pub(crate) mod tests {
    use tessera_core::answer::ServerSecretKey;
    use tessera_core::{CivilDate, Expiry, HostBinding, Policy, VendorSecretKey};
    use tessera_proto::{ErrorCode, Proof};

    use super::*;

    fn vendor() -> VendorSecretKey {
        VendorSecretKey::from_seed("acme", [7; 32]).unwrap()
    }

    fn code(key: &VendorSecretKey, id: &str) -> LicenseCode {
        code_with(key, id, None)
    }

    /// 10 seats of `cad`, versions 1.0 to 2.99, any host, these temporary terms.
    pub(crate) fn code_with(
        key: &VendorSecretKey,
        id: &str,
        temporary: Option<tessera_core::temporary::TemporaryPolicy>,
    ) -> LicenseCode {
        key.sign(tessera_core::license::UnsignedCode {
            id: id.into(),
            vendor: String::new(),
            feature: "cad".into(),
            version_min: Version::parse("1.0").unwrap(),
            version_max: Version::parse("2.99").unwrap(),
            seats: 10,
            issued: CivilDate::parse("2026-01-01").unwrap(),
            expiry: Expiry::Permanent,
            hostid: HostBinding::Any,
            policy: Policy::DEFAULT,
            temporary,
        })
        .unwrap()
    }

    fn request() -> CheckoutRequest {
        CheckoutRequest {
            client_id: "ws12-1".into(),
            user: "alice".into(),
            host: "ws12".into(),
            display: None,
            feature: "cad".into(),
            version: "2.0".into(),
            count: 1,
            answer_within_ms: None,
            nonce: Some("6f1c0d2a9b8e4f3aa1b2c3d4e5f60718".into()),
            codes_held: None,
            server_key: None,
            queue: None,
        }
    }

    /// A grant as a Tessera server signs it, over `request` and `codes`.
    fn signed_grant(request: &CheckoutRequest, codes: &[LicenseCode]) -> Grant {
        let key = ServerSecretKey::from_seed([5; 32]);
        let mut grant = Grant {
            grant_id: "g-1".into(),
            feature: "cad".into(),
            count: 1,
            server_id: "A".into(),
            lease_ms: 60_000,
            heartbeat_interval_ms: 15_000,
            servers: Vec::new().into(),
            converted: false,
            proof: Proof("p".into()),
            holding: None,
            certificate: None,
            answer: None,
        };
        let mut answer = SignedAnswer {
            server_key: key.public().to_base64().into(),
            pool_id: "acme-eng".into(),
            server_id: "A".into(),
            hostid: "mid-0011223344556677".into(),
            server_unix_ms: unix_now_ms(),
            signature: String::new(),
            codes: codes.iter().map(LicenseCode::to_text).collect(),
            chain: None,
            batch: None,
        };
        let fields = AnswerFields {
            grant_id: grant.grant_id.to_string(),
            lease_ms: grant.lease_ms,
            heartbeat_interval_ms: grant.heartbeat_interval_ms,
            codes_sha256: codes_sha256(codes),
            ..asked_fields(request, &answer, OUTCOME_GRANTED)
        };
        answer.signature = key.sign(&fields);
        grant.answer = Some(answer);
        grant
    }

    /// `grant` signed again as answer `index` of a batch of `size`, the
    /// other answers to other requests.
    fn in_batch(request: &CheckoutRequest, mut grant: Grant, index: usize, size: usize) -> Grant {
        let key = ServerSecretKey::from_seed([5; 32]);
        let key_id = key.public().key_id();
        let fields = fields_of(request, &grant);
        let answer = grant.answer.as_mut().unwrap();
        let leaves: Vec<_> = (0..size)
            .map(|i| match i == index {
                true => fields.leaf_hash(&key_id),
                false => AnswerFields {
                    nonce: format!("the-nonce-of-another-program-{i:03}"),
                    ..fields.clone()
                }
                .leaf_hash(&key_id),
            })
            .collect();
        let (signature, places) = key.sign_batch(&leaves);
        answer.signature = signature;
        answer.batch = Some(tessera_proto::AnswerBatch::from_core(&places[index]));
        grant
    }

    /// `grant` signed again over the TLS channel `channel`, as a `tessera/3`
    /// connection's first answer.
    fn over_channel(request: &CheckoutRequest, mut grant: Grant, channel: &Channel) -> Grant {
        let key = ServerSecretKey::from_seed([5; 32]);
        let fields = fields_of(request, &grant);
        let fields = AnswerFields {
            channel: channel.value().to_string(),
            ..fields
        };
        grant.answer.as_mut().unwrap().signature = key.sign(&fields);
        grant
    }

    /// What `grant`'s signature covers, with the codes its answer carries.
    fn fields_of(request: &CheckoutRequest, grant: &Grant) -> AnswerFields {
        let answer = grant.answer.as_ref().unwrap();
        let codes: Vec<_> = answer
            .codes
            .iter()
            .map(|text| LicenseCode::from_text(text).unwrap())
            .collect();
        granted_fields(request, grant, answer, &codes_sha256(&codes))
    }

    /// `grant` with its codes left out of the answer, as a server leaves
    /// out the codes a request names in `codes_held`.
    fn without_codes(mut grant: Grant) -> Grant {
        grant.answer.as_mut().unwrap().codes = Arc::default();
        grant
    }

    #[test]
    fn codes_that_checked_are_named_and_an_answer_that_leaves_them_out_counts() {
        let dir = tempfile::tempdir().unwrap();
        let checker = checker(dir.path());
        let codes = [code(&vendor(), "cad-1")];
        assert_eq!(checker.codes_held("cad"), None, "nothing held yet");

        // A grant whose codes check: its codes are held, and named.
        let first = signed_grant(&request(), &codes);
        assert_eq!(checker.check(&request(), &first, None), Ok(()));
        let held = checker.codes_held("cad").expect("the codes are held");
        assert_eq!(held, codes_sha256(&codes));
        assert_eq!(checker.codes_held("other"), None);

        // A request naming them: an answer without them counts, signed
        // alone or, on a bound channel, unsigned.
        let naming = CheckoutRequest {
            codes_held: Some(held.clone()),
            ..request()
        };
        let signed = without_codes(signed_grant(&naming, &codes));
        assert_eq!(checker.check(&naming, &signed, None), Ok(()));
        let ours = Channel::new(&[1; tessera_core::answer::CHANNEL_BYTES]);
        let binding = over_channel(&naming, signed_grant(&naming, &codes), &ours);
        assert_eq!(checker.check(&naming, &binding, Some(&ours)), Ok(()));
        assert_eq!(
            checker.check(&naming, &unsigned(signed.clone()), Some(&ours)),
            Ok(())
        );

        // Without codes, to a request that named none, or named codes this
        // program does not hold: refused.
        // (the signature covers the codes, and none came)
        let refused = checker.check(&request(), &signed, None).unwrap_err();
        assert!(refused.contains("does not check"), "{refused}");
        let unknown = CheckoutRequest {
            codes_held: Some("0".repeat(64)),
            ..request()
        };
        let refused = checker
            .check(
                &unknown,
                &without_codes(signed_grant(&unknown, &codes)),
                None,
            )
            .unwrap_err();
        assert!(refused.contains("does not hold"), "{refused}");
        // Signed over other codes (a server serving more seats than the held
        // codes say): the signature does not check with the held ones.
        let more = [codes[0].clone(), code(&vendor(), "cad-2")];
        let other = without_codes(signed_grant(&naming, &more));
        let refused = checker.check(&naming, &other, None).unwrap_err();
        assert!(refused.contains("changed in transit"), "{refused}");
        // The held codes are checked again: for a version they do not cover,
        // refused.
        let newer = CheckoutRequest {
            version: "3.0".into(),
            ..naming.clone()
        };
        let refused = checker
            .check(&newer, &without_codes(signed_grant(&newer, &codes)), None)
            .unwrap_err();
        assert!(refused.contains("3.0"), "{refused}");

        // New codes in an answer replace the held ones.
        let second = signed_grant(&naming, &more);
        assert_eq!(checker.check(&naming, &second, None), Ok(()));
        assert_eq!(checker.codes_held("cad"), Some(codes_sha256(&more)));
        // The older set is still found by an answer to a request that named it.
        assert_eq!(checker.check(&naming, &signed, None), Ok(()));
        // Held codes are not verified again; only codes whose vendor
        // signatures checked are ever held. Codes signed by a key this
        // program does not know are refused, and neither held nor named.
        let stranger = VendorSecretKey::from_seed("acme", [9; 32]).unwrap();
        let forged = [code(&stranger, "cad-9")];
        let refused = checker
            .check(&naming, &signed_grant(&naming, &forged), None)
            .unwrap_err();
        assert!(refused.contains("cad-9"), "{refused}");
        assert_eq!(checker.codes_held("cad"), Some(codes_sha256(&more)));
        let naming_forged = CheckoutRequest {
            codes_held: Some(codes_sha256(&forged)),
            ..request()
        };
        let refused = checker
            .check(
                &naming_forged,
                &without_codes(signed_grant(&naming_forged, &forged)),
                None,
            )
            .unwrap_err();
        assert!(refused.contains("does not hold"), "{refused}");

        // A program that checks nothing names nothing.
        let any = Checker::new(&{
            let mut config = ClientConfig::new(["127.0.0.1:7001"]);
            config.trust = Trust::AnyServer;
            config
        });
        assert_eq!(any.check(&request(), &first, None), Ok(()));
        assert_eq!(any.codes_held("cad"), None);
    }

    /// A grant of a production server bound to VID `acme-vid-1`, with its
    /// chain: a master license signed by `license_vendor` and the
    /// certificate of its master naming the answer key, issued at
    /// `issued_unix_ms` for an hour.
    fn vid_grant(license_vendor: &VendorSecretKey, issued_unix_ms: i64) -> Grant {
        use tessera_core::master::{CertificateFields, MasterLicenseFields, MasterSecretKey};
        let bound = vendor()
            .sign(tessera_core::license::UnsignedCode {
                hostid: HostBinding::parse("vid:acme-vid-1").unwrap(),
                ..code(&vendor(), "cad-vid").fields().clone()
            })
            .unwrap();
        let master = MasterSecretKey::from_seed([9; 32]);
        let license = MasterLicense::sign(
            license_vendor,
            MasterLicenseFields {
                id: "master-1".into(),
                vendor: String::new(),
                vid: "acme-vid-1".into(),
                servers: 3,
                master_hostid: "mid-0011223344556677".into(),
                master_key: master.public(),
                issued: CivilDate::parse("2026-01-01").unwrap(),
                expiry: Expiry::Permanent,
                certificate_lifetime_s: 3_600,
                masters: 1,
            },
        )
        .unwrap();
        let certificate = master
            .certify(CertificateFields {
                vid: "acme-vid-1".into(),
                master_license: "master-1".into(),
                server_id: "A".into(),
                instance: "A.1f2e3d4c".into(),
                serial: 1,
                issued_unix_ms,
                lifetime_ms: 3_600_000,
                server_key: Some(ServerSecretKey::from_seed([5; 32]).public().to_base64()),
            })
            .unwrap();
        let mut grant = signed_grant(&request(), &[bound]);
        grant.answer.as_mut().unwrap().chain = Some(tessera_proto::AnswerChain {
            master_licenses: vec![license.to_text()],
            certificate: tessera_proto::VidCertificate::from_core(&certificate),
        });
        grant
    }

    /// A VID chain that checked is kept, and not verified again on later
    /// answers; one that did not check is never kept; a kept chain is still
    /// refused once its certificate lapses.
    #[test]
    fn a_vid_chain_that_checked_is_kept_and_its_dates_still_checked() {
        let dir = tempfile::tempdir().unwrap();
        let checker = checker(dir.path());
        let kept = |checker: &Checker| checker.chains.lock().len();

        let stranger = VendorSecretKey::from_seed("acme", [8; 32]).unwrap();
        let forged = vid_grant(&stranger, unix_now_ms());
        for _ in 0..2 {
            let refused = checker.check(&request(), &forged, None).unwrap_err();
            assert!(
                refused.contains("a master license does not check"),
                "{refused}"
            );
            assert_eq!(kept(&checker), 0, "a chain that did not check is not kept");
        }

        let good = vid_grant(&vendor(), unix_now_ms());
        assert_eq!(checker.check(&request(), &good, None), Ok(()));
        assert_eq!(kept(&checker), 1);
        assert_eq!(checker.check(&request(), &good, None), Ok(()));
        assert_eq!(kept(&checker), 1, "the same chain, kept once");

        // The kept chain's certificate, issued long ago: refused, kept or not.
        let long_ago = unix_now_ms() - 3_600_000 - CLOCK_TOLERANCE_MS - 60_000;
        let lapsed = vid_grant(&vendor(), long_ago);
        let refused = checker.check(&request(), &lapsed, None).unwrap_err();
        assert!(refused.contains("lapsed"), "{refused}");
        let text =
            serde_json::to_string(lapsed.answer.as_ref().unwrap().chain.as_ref().unwrap()).unwrap();
        let parsed = checker
            .chains
            .parse(lapsed.answer.as_ref().unwrap().chain.as_ref().unwrap());
        checker.chains.keep(parsed.unwrap());
        assert!(checker.chains.lock().contains_key(&text));
        let refused = checker.check(&request(), &lapsed, None).unwrap_err();
        assert!(
            refused.contains("lapsed"),
            "a kept chain's dates: {refused}"
        );

        // Bounded: past the most kept, the chains are checked afresh.
        for serial in 0..CHECKED_CHAINS_MAX as i64 {
            let other = vid_grant(&vendor(), unix_now_ms() - serial);
            assert_eq!(checker.check(&request(), &other, None), Ok(()));
        }
        assert!(kept(&checker) <= CHECKED_CHAINS_MAX);
    }

    /// Answer keys are parsed once and kept by their text, at most
    /// [`SERVER_KEYS_MAX`]; a text that names no key is refused each time
    /// and never kept.
    #[test]
    fn server_keys_are_parsed_once_and_kept_bounded() {
        let keys = ServerKeys::default();
        let key = ServerSecretKey::from_seed([5; 32]).public();
        assert_eq!(keys.parse(&key.to_base64()), Ok(key));
        assert_eq!(keys.parse(&key.to_base64()), Ok(key));
        assert_eq!(keys.lock().len(), 1);
        for text in ["", "not base64!", &"A".repeat(43)] {
            assert!(keys.parse(text).is_err(), "{text}");
        }
        assert_eq!(keys.lock().len(), 1, "nothing kept for bad keys");
        for seed in 0..=SERVER_KEYS_MAX as u8 {
            let other = ServerSecretKey::from_seed([seed; 32]).public();
            assert_eq!(keys.parse(&other.to_base64()), Ok(other));
            assert!(keys.lock().len() <= SERVER_KEYS_MAX);
        }
    }

    #[test]
    fn held_codes_are_bounded_but_each_features_latest_stays() {
        let codes: Arc<[LicenseCode]> = Arc::from(vec![code(&vendor(), "cad-1")]);
        let mut held = HeldCodes::default();
        for i in 0..200 {
            held.keep("cad", format!("{i:064}"), codes.clone());
        }
        assert!(
            held.by_sha256.len() <= HELD_CODE_SETS_MAX + 1,
            "{}",
            held.by_sha256.len()
        );
        assert!(held.by_sha256.contains_key(&format!("{:064}", 199)));
        let mut held = HeldCodes::default();
        for i in 0..100 {
            held.keep(&format!("feature-{i}"), format!("{i:064}"), codes.clone());
        }
        assert_eq!(held.by_sha256.len(), 100, "every feature's latest set");
    }

    /// `grant` without its signature, as later answers on a bound channel.
    fn unsigned(mut grant: Grant) -> Grant {
        grant.answer.as_mut().unwrap().signature = String::new();
        grant
    }

    #[test]
    fn an_unsigned_grant_counts_only_on_the_channel_a_signed_one_bound() {
        let dir = tempfile::tempdir().unwrap();
        let checker = checker(dir.path());
        let genuine = signed_grant(&request(), &[code(&vendor(), "cad-1")]);
        let ours = Channel::new(&[1; tessera_core::answer::CHANNEL_BYTES]);
        let relays = Channel::new(&[2; tessera_core::answer::CHANNEL_BYTES]);

        // Unsigned before any binding, or with no channel at all: refused.
        let bare = unsigned(genuine.clone());
        let refused = checker.check(&request(), &bare, Some(&ours)).unwrap_err();
        assert!(refused.contains("no signed answer has bound"), "{refused}");
        assert!(checker.check(&request(), &bare, None).is_err());
        // Signed without the channel, or over another: refused, not bound.
        let refused = checker
            .check(&request(), &genuine, Some(&ours))
            .unwrap_err();
        assert!(refused.contains("does not check"), "{refused}");
        let relayed = over_channel(&request(), genuine.clone(), &relays);
        assert!(checker.check(&request(), &relayed, Some(&ours)).is_err());
        assert_eq!(ours.bound_key(), None);

        // Signed over this channel: counts, and binds it.
        let first = over_channel(&request(), genuine.clone(), &ours);
        assert_eq!(checker.check(&request(), &first, Some(&ours)), Ok(()));
        let key = genuine.answer.as_ref().unwrap().server_key.clone();
        assert_eq!(ours.bound_key(), Some(key.to_string()));
        assert_eq!(checker.check(&request(), &bare, Some(&ours)), Ok(()));
        // Not on another channel, not naming another key, and the codes
        // are still checked.
        assert!(checker.check(&request(), &bare, Some(&relays)).is_err());
        let mut other_key = bare.clone();
        other_key.answer.as_mut().unwrap().server_key = ServerSecretKey::from_seed([6; 32])
            .public()
            .to_base64()
            .into();
        let refused = checker
            .check(&request(), &other_key, Some(&ours))
            .unwrap_err();
        assert!(refused.contains("another server key"), "{refused}");
        let mut other_vendor = bare.clone();
        other_vendor.answer.as_mut().unwrap().codes = vec![code(
            &VendorSecretKey::from_seed("acme", [8; 32]).unwrap(),
            "cad-1",
        )
        .to_text()]
        .into();
        assert!(checker
            .check(&request(), &other_vendor, Some(&ours))
            .is_err());
    }

    #[test]
    fn a_grant_signed_in_a_batch_counts_and_a_forged_place_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let checker = checker(dir.path());
        let genuine = signed_grant(&request(), &[code(&vendor(), "cad-1")]);
        for (index, size) in [(0, 1), (1, 2), (4, 5), (31, 32)] {
            let grant = in_batch(&request(), genuine.clone(), index, size);
            assert_eq!(
                checker.check(&request(), &grant, None),
                Ok(()),
                "{index} of {size}"
            );
        }
        let batched = in_batch(&request(), genuine.clone(), 2, 7);
        type Forgery = fn(&mut tessera_proto::AnswerBatch);
        let forged: [(Forgery, &str); 5] = [
            (|b| b.index = 3, "changed in transit"),
            (|b| b.size = 8, "changed in transit"),
            (|b| b.path.pop().map(drop).unwrap_or(()), "cannot lead"),
            (|b| b.path[0] = "not a hash".into(), "not 32 bytes"),
            (|b| b.path = vec![b.path[0].clone(); 9], "at most 8"),
        ];
        for (forge, expected) in forged {
            let mut grant = batched.clone();
            forge(grant.answer.as_mut().unwrap().batch.as_mut().unwrap());
            let refused = checker.check(&request(), &grant, None).unwrap_err();
            assert!(refused.contains(expected), "{expected}: {refused}");
        }
        // The batch's signature without its place, or a longer lease in it.
        let mut unplaced = batched.clone();
        unplaced.answer.as_mut().unwrap().batch = None;
        assert!(checker.check(&request(), &unplaced, None).is_err());
        let mut longer = batched;
        longer.lease_ms *= 100;
        let refused = checker.check(&request(), &longer, None).unwrap_err();
        assert!(refused.contains("changed in transit"), "{refused}");
        // Another program's answer in the same batch is not this one's.
        let mut other_request = request();
        other_request.nonce = Some("the-nonce-of-another-program-003".into());
        let theirs = in_batch(&other_request, genuine, 3, 7);
        let refused = checker.check(&request(), &theirs, None).unwrap_err();
        assert!(refused.contains("a replay"), "{refused}");
    }

    fn checker(dir: &Path) -> Checker {
        let mut config = ClientConfig::new(["127.0.0.1:7001"]);
        config.trust = Trust::Vendor(vec![vendor().public()]);
        config.clock_file = Some(dir.join("clock"));
        Checker::new(&config)
    }

    #[test]
    fn a_grant_signed_for_this_request_and_backed_by_the_vendors_code_counts() {
        let dir = tempfile::tempdir().unwrap();
        let checker = checker(dir.path());
        let grant = signed_grant(&request(), &[code(&vendor(), "cad-1")]);
        assert_eq!(checker.check(&request(), &grant, None), Ok(()));
        // The trusted time is kept for the next run.
        assert!(std::fs::read_to_string(dir.path().join("clock")).is_ok());
    }

    #[test]
    fn unsigned_replayed_tampered_or_foreign_grants_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let checker = checker(dir.path());
        let genuine = code(&vendor(), "cad-1");
        let mut unsigned = signed_grant(&request(), std::slice::from_ref(&genuine));
        unsigned.answer = None;
        let mut other_request = request();
        other_request.nonce = Some("an-earlier-request-of-this-program".into());
        let replayed = signed_grant(&other_request, std::slice::from_ref(&genuine));
        let mut longer = signed_grant(&request(), std::slice::from_ref(&genuine));
        longer.lease_ms *= 100;
        let customer = VendorSecretKey::from_seed("acme", [9; 32]).unwrap();
        let foreign = signed_grant(&request(), &[genuine, code(&customer, "cad-more")]);
        for (grant, expected) in [
            (unsigned, "without a signed answer"),
            (replayed, "a replay"),
            (longer, "changed in transit"),
            (
                foreign,
                "cad-more, which no vendor key built into this program signed",
            ),
        ] {
            let refused = checker.check(&request(), &grant, None).unwrap_err();
            assert!(refused.contains(expected), "{expected}: {refused}");
        }
    }

    #[test]
    fn an_unsigned_refusal_is_not_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let checker = checker(dir.path());
        let refusal = Failure::refused("a:1", ErrorCode::UnknownFeature, "no such feature");
        let screened = checker.screen_refusal(&request(), refusal.clone(), None);
        assert!(
            matches!(&screened.kind, FailureKind::Untrusted(text) if text.contains("no signature")),
            "{screened:?}"
        );
        assert_eq!(
            screened.disposition(),
            crate::error::Disposition::TryNext,
            "an unsigned refusal does not stop the program asking the other servers"
        );
        let any = Checker::new(&{
            let mut config = ClientConfig::new(["127.0.0.1:7001"]);
            config.trust = Trust::AnyServer;
            config
        });
        assert_eq!(
            any.screen_refusal(&request(), refusal.clone(), None),
            refusal
        );
    }

    #[test]
    fn a_clock_behind_the_kept_time_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let day_ahead = unix_now_ms() + 86_400_000;
        std::fs::write(dir.path().join("clock"), day_ahead.to_string()).unwrap();
        let checker = checker(dir.path());
        let error = checker.check_clock().unwrap_err();
        assert!(
            matches!(&error, ClientError::ClockSetBack { message } if message.contains("set the clock right")),
            "{error}"
        );
        let grant = signed_grant(&request(), &[code(&vendor(), "cad-1")]);
        assert!(checker.check(&request(), &grant, None).is_err());
        // Within the tolerance (a clock corrected by NTP), nothing is refused.
        let close = unix_now_ms() + CLOCK_TOLERANCE_MS / 2;
        std::fs::write(dir.path().join("clock"), close.to_string()).unwrap();
        assert!(super::Checker::new(&{
            let mut config = ClientConfig::new(["127.0.0.1:7001"]);
            config.trust = Trust::Vendor(vec![vendor().public()]);
            config.clock_file = Some(dir.path().join("clock"));
            config
        })
        .check_clock()
        .is_ok());
    }
}
