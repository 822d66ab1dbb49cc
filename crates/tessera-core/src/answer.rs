//! Signed answers: what lets a program trust a seat because its vendor's
//! key says so, not because a server (or a config file) says so.
//!
//! Every server has an **answer key** (Ed25519, `answer.key` in its data
//! directory). It signs each grant, renewal and denial it answers a program,
//! over the canonical form of [`AnswerFields`]: the program's own nonce (so
//! an old answer replayed does not renew anything), the request (client,
//! feature, version, count), the grant (id, lease, heartbeat interval), who
//! answered (pool, server, its hostid, its clock) and a digest of the
//! license codes that make up the feature's hard limit on that server
//! ([`codes_sha256`]).
//!
//! The answer carries those codes, so the program checks them itself
//! ([`check_backing`]) against the vendor keys built into it: every code
//! signed by its vendor, for this feature, in date, one covering its version,
//! and bound to the host the server names, or to a VID whose certificate
//! chain (vendor key → master license → VID certificate naming this
//! server's answer key) checks offline. A key a customer adds to a server's
//! config makes the server serve a code; the program still refuses the
//! seat, because the pool's hard limit includes a code its vendor did not
//! sign.
//!
//! The canonical form is a header line and `name=value` lines, as for
//! license codes (`license.rs`); PROTOCOL.md, "Signed answers", has the
//! layout and a test vector.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::date::{CivilDate, Expiry};
use crate::license::{canonical, decode_32, decode_signature, key_id_hex, LicenseCode};
use crate::license::{LicenseError, VendorPublicKey};
use crate::master::{vid_of_binding, MasterLicense, VidCertificate};
use crate::merkle::{self, Hash};
use crate::version::Version;

/// Header of an answer's canonical form.
pub const ANSWER_HEADER: &str = "tessera-answer-v1";
/// Header of the message a batch's signature covers: the Merkle root over
/// the canonical forms of the answers in the batch ([`crate::merkle`]).
pub const BATCH_HEADER: &str = "tessera-answer-batch-v1";
/// Most answers one batch signature covers; a path is then at most
/// [`BATCH_PATH_MAX`] hashes.
pub const BATCH_SIZE_MAX: usize = 256;
/// Most hashes in an answer's path: a larger batch is not checked.
pub const BATCH_PATH_MAX: usize = 8;
/// What a grant's or renewal's `outcome` line says; a denial's names its error code.
pub const OUTCOME_GRANTED: &str = "granted";
/// Shortest and longest nonce a program may send: at least 128 bits in
/// base64url, at most a bounded field.
pub const NONCE_CHARS_MIN: usize = 22;
pub const NONCE_CHARS_MAX: usize = 128;
/// How far apart a program's clock and a server's (or a master's) may be
/// before dates disagree: a code that expired, or a certificate that lapsed,
/// less than this long ago by one clock is still in date by the other.
pub const CLOCK_TOLERANCE_MS: i64 = 10 * 60 * 1_000;

/// Why a key, a signature or an answer's backing does not check. Each
/// message names what to fix, or what the server did wrong.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("answer key: {0}")]
    BadKey(String),
    #[error("the answer's signature is malformed: {0}")]
    MalformedSignature(String),
    #[error(
        "the answer's signature does not check under the server's key {key_id}: it was changed \
         in transit, answers another request (a replay), or was made by something that is not \
         a Tessera server"
    )]
    BadSignature { key_id: String },
    #[error("the answer carries no license code for `{feature}`, so nothing shows the seat is the vendor's")]
    NoCodes { feature: String },
    #[error(
        "the pool serves license code {id}, which no vendor key built into this program signed \
         ({reason}); the seats it adds are not the vendor's, so this program accepts none of \
         the pool's seats of `{feature}`"
    )]
    NotTheVendors {
        id: String,
        feature: String,
        reason: String,
    },
    #[error("license code {id} is for feature `{code_feature}`, not `{feature}`")]
    OtherFeature {
        id: String,
        code_feature: String,
        feature: String,
    },
    #[error(
        "license code {id} expired at the end of {last_day}, and this machine's clock says \
         {today}: the server's clock is behind (set back?)"
    )]
    Expired {
        id: String,
        last_day: CivilDate,
        today: CivilDate,
    },
    #[error("license code {id} is issued {issued}, after today ({today}) on this machine")]
    NotYetValid {
        id: String,
        issued: CivilDate,
        today: CivilDate,
    },
    #[error("no license code the pool serves covers version {version} of `{feature}`")]
    VersionNotCovered { feature: String, version: String },
    #[error(
        "license code {id} is bound to hostid {bound}, and the server that answered says its \
         hostid is {hostid}"
    )]
    WrongHost {
        id: String,
        bound: String,
        hostid: String,
    },
    #[error(
        "license code {id} is bound to VID {vid}, and the answer carries no certificate chain \
         for it from a master server"
    )]
    NoChain { id: String, vid: String },
    #[error("license code {id} is bound to VID {vid}: {reason}")]
    BadChain {
        id: String,
        vid: String,
        reason: String,
    },
}

/// Where an answer sits in a signed batch: its leaf's index, the batch's
/// size, and the hashes from its leaf to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlace {
    pub index: u64,
    pub size: u64,
    pub path: Vec<Hash>,
}

impl BatchPlace {
    /// The path's hashes in base64, as they travel.
    pub fn path_base64(&self) -> Vec<String> {
        self.path.iter().map(|hash| BASE64.encode(hash)).collect()
    }

    /// A place as it travels; an error names what is malformed.
    /// The path's length is bounded where it is checked
    /// ([`ServerPublicKey::verify_in_batch`]).
    pub fn from_base64(index: u64, size: u64, path: &[String]) -> Result<BatchPlace, String> {
        let path = path
            .iter()
            .map(|text| {
                BASE64
                    .decode(text)
                    .ok()
                    .and_then(|bytes| Hash::try_from(bytes).ok())
                    .ok_or_else(|| format!("a batch path hash is not 32 bytes in base64: `{text}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BatchPlace { index, size, path })
    }
}

/// The message a batch's signature covers: the key, the batch's size and
/// the Merkle root over its answers' canonical forms.
pub fn batch_message(key_id: &str, size: u64, root: &Hash) -> String {
    canonical(
        BATCH_HEADER,
        &[
            ("key_id", key_id.to_string()),
            ("size", size.to_string()),
            ("root", hex::encode(root)),
        ],
    )
}

/// A server's answer key. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct ServerSecretKey(SigningKey);

impl fmt::Debug for ServerSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerSecretKey({})", self.public().key_id())
    }
}

impl ServerSecretKey {
    /// From 32 random bytes (the core has no randomness source).
    pub fn from_seed(seed: [u8; 32]) -> ServerSecretKey {
        ServerSecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn from_base64(text: &str) -> Result<ServerSecretKey, AnswerError> {
        decode_32(text)
            .map(ServerSecretKey::from_seed)
            .map_err(|err| AnswerError::BadKey(format!("secret key: {err}")))
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }

    pub fn public(&self) -> ServerPublicKey {
        ServerPublicKey(self.0.verifying_key())
    }

    /// Signs `fields`; the signature in base64, as it travels.
    pub fn sign(&self, fields: &AnswerFields) -> String {
        self.sign_text(&fields.canonical_form(&self.public().key_id()))
    }

    /// Signs a canonical form (an answer's, a temporary license's).
    pub fn sign_text(&self, canonical: &str) -> String {
        BASE64.encode(self.0.sign(canonical.as_bytes()).to_bytes())
    }

    /// Signs a batch of answers with one signature: over the Merkle root of
    /// `leaves` (each an answer's [`AnswerFields::leaf_hash`] under this
    /// key), with each answer's place in the batch, in order.
    ///
    /// # Panics
    /// On no leaves, or more than [`BATCH_SIZE_MAX`].
    pub fn sign_batch(&self, leaves: &[Hash]) -> (String, Vec<BatchPlace>) {
        assert!(
            leaves.len() <= BATCH_SIZE_MAX,
            "a batch of {} answers",
            leaves.len()
        );
        let (root, paths) = merkle::root_and_paths(leaves);
        let size = leaves.len() as u64;
        let signature = self.sign_text(&batch_message(&self.public().key_id(), size, &root));
        let places = paths
            .into_iter()
            .zip(0..)
            .map(|(path, index)| BatchPlace { index, size, path })
            .collect();
        (signature, places)
    }
}

/// A server's public answer key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerPublicKey(VerifyingKey);

impl ServerPublicKey {
    pub fn from_base64(text: &str) -> Result<ServerPublicKey, AnswerError> {
        let bytes =
            decode_32(text).map_err(|err| AnswerError::BadKey(format!("public key: {err}")))?;
        VerifyingKey::from_bytes(&bytes)
            .map(ServerPublicKey)
            .map_err(|err| AnswerError::BadKey(format!("not an Ed25519 point: {err}")))
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_bytes())
    }

    /// The first 8 bytes of SHA-256 of the key, in hex.
    pub fn key_id(&self) -> String {
        key_id_hex(&self.0)
    }

    /// Checks `signature` (base64) over `fields`.
    pub fn verify(&self, fields: &AnswerFields, signature: &str) -> Result<(), AnswerError> {
        self.verify_text(&fields.canonical_form(&self.key_id()), signature)
    }

    /// Checks `signature` (base64) over the batch that holds `fields` at
    /// `place` ([`ServerSecretKey::sign_batch`]).
    pub fn verify_in_batch(
        &self,
        fields: &AnswerFields,
        signature: &str,
        place: &BatchPlace,
    ) -> Result<(), AnswerError> {
        let key_id = self.key_id();
        if place.path.len() > BATCH_PATH_MAX {
            return Err(AnswerError::MalformedSignature(format!(
                "a batch path of {} hashes; a batch of at most {BATCH_SIZE_MAX} answers needs \
                 at most {BATCH_PATH_MAX}",
                place.path.len()
            )));
        }
        let leaf = fields.leaf_hash(&key_id);
        let root = merkle::root_from_path(leaf, place.index, place.size, &place.path).ok_or_else(
            || {
                AnswerError::MalformedSignature(format!(
                    "a path of {} hashes cannot lead from answer {} of a batch of {} to a root",
                    place.path.len(),
                    place.index,
                    place.size
                ))
            },
        )?;
        self.verify_text(&batch_message(&key_id, place.size, &root), signature)
    }

    /// Checks `signature` (base64) over a canonical form.
    pub fn verify_text(&self, canonical: &str, signature: &str) -> Result<(), AnswerError> {
        let signature: Signature =
            decode_signature(signature).map_err(AnswerError::MalformedSignature)?;
        self.0
            .verify(canonical.as_bytes(), &signature)
            .map_err(|_| AnswerError::BadSignature {
                key_id: self.key_id(),
            })
    }
}

/// Everything an answer's signature covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerFields {
    /// [`OUTCOME_GRANTED`], or the error code of a denial (`no_seats_available`).
    pub outcome: String,
    pub pool_id: String,
    pub server_id: String,
    /// The answering server's hostid, as `tessera hostid` reads it.
    pub hostid: String,
    /// The answering server's wall clock, Unix ms.
    pub server_unix_ms: i64,
    /// The program's nonce, fresh for every request.
    pub nonce: String,
    pub client_id: String,
    pub feature: String,
    pub version: String,
    pub count: u32,
    /// Empty on a denial.
    pub grant_id: String,
    pub lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// [`codes_sha256`] of the codes the answer carries; empty on a denial.
    pub codes_sha256: String,
    /// On a framed `tessera/3` connection: the TLS channel's exporter value
    /// ([`CHANNEL_EXPORTER_LABEL`], base64), which binds the connection to
    /// the signing key; empty elsewhere, and then not in the canonical form.
    pub channel: String,
}

/// The TLS 1.3 exporter label (RFC 8446, 7.5) of a `tessera/3` connection's
/// channel value: [`CHANNEL_BYTES`] bytes, no context. Both ends derive it
/// from their own handshake, so a relay that terminates TLS on either side
/// holds another value than the program's.
pub const CHANNEL_EXPORTER_LABEL: &[u8] = b"EXPORTER-tessera-answers-v1";
/// Bytes of a channel value.
pub const CHANNEL_BYTES: usize = 32;

/// A channel value as [`AnswerFields::channel`] carries it.
pub fn channel_text(exported: &[u8; CHANNEL_BYTES]) -> String {
    BASE64.encode(exported)
}

impl AnswerFields {
    /// The exact bytes the signature covers; `key_id` is the signing key's.
    pub fn canonical_form(&self, key_id: &str) -> String {
        canonical(
            ANSWER_HEADER,
            &[
                ("key_id", key_id.to_string()),
                ("outcome", self.outcome.clone()),
                ("pool_id", self.pool_id.clone()),
                ("server_id", self.server_id.clone()),
                ("hostid", self.hostid.clone()),
                ("server_unix_ms", self.server_unix_ms.to_string()),
                ("nonce", self.nonce.clone()),
                ("client_id", self.client_id.clone()),
                ("feature", self.feature.clone()),
                ("version", self.version.clone()),
                ("count", self.count.to_string()),
                ("grant_id", self.grant_id.clone()),
                ("lease_ms", self.lease_ms.to_string()),
                (
                    "heartbeat_interval_ms",
                    self.heartbeat_interval_ms.to_string(),
                ),
                ("codes_sha256", self.codes_sha256.clone()),
            ]
            .into_iter()
            .chain((!self.channel.is_empty()).then(|| ("channel", self.channel.clone())))
            .collect::<Vec<_>>(),
        )
    }
}

impl AnswerFields {
    /// The answer's leaf in a signed batch: its canonical form under `key_id`.
    pub fn leaf_hash(&self, key_id: &str) -> Hash {
        merkle::leaf_hash(self.canonical_form(key_id).as_bytes())
    }
}

/// SHA-256 (hex) over the codes in order: each code's canonical form and
/// its 64 signature bytes, each part preceded by its length (4 bytes,
/// big-endian), so no two lists of codes share a digest.
pub fn codes_sha256<'a>(codes: impl IntoIterator<Item = &'a LicenseCode>) -> String {
    let mut digest = Sha256::new();
    for code in codes {
        let canonical = code.canonical_form();
        let signature = code.signature_bytes();
        for part in [canonical.as_bytes(), &signature[..]] {
            digest.update((part.len() as u32).to_be_bytes());
            digest.update(part);
        }
    }
    hex::encode(digest.finalize())
}

/// A production server's chain to its vendor: the master licenses of its
/// VID and the certificate a master signed for it.
#[derive(Clone, Copy, Debug)]
pub struct Chain<'a> {
    pub master_licenses: &'a [MasterLicense],
    pub certificate: &'a VidCertificate,
    /// The program verified the signatures of these very master licenses
    /// (against its vendor keys) and of this very certificate (by its
    /// group of masters) on an earlier answer: they are not verified
    /// again. Their dates, the VID, the server and the answer key the
    /// certificate names are still checked on every answer.
    pub signatures_checked: bool,
}

/// What a program checks a grant against, besides the answer's signature.
#[derive(Clone, Copy, Debug)]
pub struct Backing<'a> {
    /// The codes the answer carries: the feature's hard limit on that server.
    pub codes: &'a [LicenseCode],
    /// The codes' vendor signatures were checked against these very vendor
    /// keys before: they are codes the program kept from an answer that
    /// checked (`codes_held`). Their signatures are then not checked again
    /// (one Ed25519 verification per code per answer); every other check is.
    pub codes_checked: bool,
    pub feature: &'a str,
    pub version: &'a Version,
    /// Who answered: its id, hostid and answer key.
    pub server_id: &'a str,
    pub hostid: &'a str,
    pub server_key: &'a ServerPublicKey,
    pub chain: Option<Chain<'a>>,
    /// The program's trusted time, Unix ms.
    pub now_unix_ms: i64,
}

/// Checks that every code behind a grant is the vendor's, in date, for this
/// feature, bound where the answering server is, and that one covers the
/// program's version. `vendor_keys` are the program's own, never a server's.
pub fn check_backing(
    vendor_keys: &[VendorPublicKey],
    backing: Backing<'_>,
) -> Result<(), AnswerError> {
    let feature = backing.feature;
    if backing.codes.is_empty() {
        return Err(AnswerError::NoCodes {
            feature: feature.to_string(),
        });
    }
    // Dates are judged with the tolerance on the lenient side: a code is
    // refused only when both clocks, as far apart as they may be, agree.
    let today = CivilDate::from_unix_ms(backing.now_unix_ms - CLOCK_TOLERANCE_MS);
    let tomorrow = CivilDate::from_unix_ms(backing.now_unix_ms + CLOCK_TOLERANCE_MS);
    let mut covered = false;
    for code in backing.codes {
        let id = code.id().to_string();
        if !backing.codes_checked {
            code.verify(vendor_keys)
                .map_err(|err| AnswerError::NotTheVendors {
                    id: id.clone(),
                    feature: feature.to_string(),
                    reason: vendor_reason(err),
                })?;
        }
        let fields = code.fields();
        if code.feature() != feature {
            return Err(AnswerError::OtherFeature {
                id,
                code_feature: code.feature().to_string(),
                feature: feature.to_string(),
            });
        }
        if let Expiry::EndOf(last_day) = fields.expiry {
            if fields.expiry.has_expired(today) {
                return Err(AnswerError::Expired {
                    id,
                    last_day,
                    today,
                });
            }
        }
        if fields.issued.days_since_epoch() > tomorrow.days_since_epoch() + 1 {
            return Err(AnswerError::NotYetValid {
                id,
                issued: fields.issued,
                today,
            });
        }
        check_binding(vendor_keys, code, &backing)?;
        covered |= &fields.version_min <= backing.version && backing.version <= &fields.version_max;
    }
    if !covered {
        return Err(AnswerError::VersionNotCovered {
            feature: feature.to_string(),
            version: backing.version.to_string(),
        });
    }
    Ok(())
}

fn vendor_reason(err: LicenseError) -> String {
    match err {
        LicenseError::UnknownVendorKey { key_id, vendor, .. } => {
            format!(
                "it is signed by key {key_id} of a vendor `{vendor}` this program does not know"
            )
        }
        LicenseError::VendorMismatch {
            key_id, key_vendor, ..
        } => format!("it is signed by key {key_id}, which is vendor `{key_vendor}`'s"),
        LicenseError::BadSignature { .. } => {
            "its signature does not check: it was changed after the vendor signed it".into()
        }
        other => other.to_string(),
    }
}

fn check_binding(
    vendor_keys: &[VendorPublicKey],
    code: &LicenseCode,
    backing: &Backing<'_>,
) -> Result<(), AnswerError> {
    let bound = code.fields().hostid.to_string();
    let Some(vid) = vid_of_binding(&bound) else {
        if code.fields().hostid.allows(backing.hostid) {
            return Ok(());
        }
        return Err(AnswerError::WrongHost {
            id: code.id().to_string(),
            bound,
            hostid: backing.hostid.to_string(),
        });
    };
    let bad = |reason: String| AnswerError::BadChain {
        id: code.id().to_string(),
        vid: vid.to_string(),
        reason,
    };
    let Some(chain) = backing.chain else {
        return Err(AnswerError::NoChain {
            id: code.id().to_string(),
            vid: vid.to_string(),
        });
    };
    let certificate = chain.certificate;
    let fields = certificate.fields();
    if fields.vid != vid {
        return Err(bad(format!("the certificate is for VID {}", fields.vid)));
    }
    let verify = !chain.signatures_checked;
    check_master_licenses(
        vendor_keys,
        chain.master_licenses,
        backing.now_unix_ms,
        verify,
    )
    .map_err(|err| bad(format!("a master license does not check: {err}")))?;
    if verify {
        certificate
            .check_group(chain.master_licenses)
            .map_err(|err| bad(format!("the certificate does not check: {err}")))?;
    }
    if fields.server_id != backing.server_id {
        return Err(bad(format!(
            "the certificate lends the VID to server {}, not to {}, which answered",
            fields.server_id, backing.server_id
        )));
    }
    if fields.server_key.as_deref() != Some(backing.server_key.to_base64().as_str()) {
        return Err(bad(
            "the certificate does not name the answer key that signed this answer".into(),
        ));
    }
    let lapsed_at = fields
        .issued_unix_ms
        .saturating_add(fields.lifetime_ms as i64)
        .saturating_add(CLOCK_TOLERANCE_MS);
    if lapsed_at < backing.now_unix_ms {
        return Err(bad(format!(
            "the certificate (serial {}) lapsed {} s ago",
            fields.serial,
            (backing.now_unix_ms - lapsed_at) / 1_000
        )));
    }
    Ok(())
}

/// Checks the master licenses an answer carries against the program's
/// vendor keys (where `verify`) and its date.
fn check_master_licenses(
    vendor_keys: &[VendorPublicKey],
    licenses: &[MasterLicense],
    now_unix_ms: i64,
    verify: bool,
) -> Result<(), String> {
    let today = CivilDate::from_unix_ms(now_unix_ms - CLOCK_TOLERANCE_MS);
    for license in licenses {
        if verify {
            license.verify(vendor_keys).map_err(|err| err.to_string())?;
        }
        license.check_date(today).map_err(|err| err.to_string())?;
    }
    Ok(())
}

/// Checks the shape of a request's `codes_held`: a SHA-256 as
/// [`codes_sha256`] writes it, 64 lowercase hex digits.
pub fn check_codes_sha256(sha256: &str) -> Result<(), String> {
    let chars = sha256.chars().count();
    if chars != 64 {
        return Err(format!(
            "codes_held is {chars} characters; it must be the SHA-256 of the codes held, 64 \
             lowercase hex digits"
        ));
    }
    if !sha256
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("codes_held must be lowercase hex digits (0-9, a-f)".into());
    }
    Ok(())
}

/// Checks a nonce's shape: base64url, [`NONCE_CHARS_MIN`] to [`NONCE_CHARS_MAX`] characters.
pub fn check_nonce(nonce: &str) -> Result<(), String> {
    let chars = nonce.len();
    if !(NONCE_CHARS_MIN..=NONCE_CHARS_MAX).contains(&chars) {
        return Err(format!(
            "nonce is {chars} characters; it must be {NONCE_CHARS_MIN} to {NONCE_CHARS_MAX}"
        ));
    }
    if !nonce
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("nonce must be base64url (A-Z, a-z, 0-9, - and _)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::tests::{test_key, unsigned};
    use crate::license::HostBinding;
    use crate::master::{CertificateFields, MasterLicenseFields, MasterSecretKey};

    /// 2026-12-01T00:00:00Z.
    const NOW: i64 = 1_796_083_200_000;

    fn server_key() -> ServerSecretKey {
        ServerSecretKey::from_seed([5; 32])
    }

    fn fields() -> AnswerFields {
        AnswerFields {
            outcome: OUTCOME_GRANTED.into(),
            pool_id: "acme-eng".into(),
            server_id: "A".into(),
            hostid: "mid-0011223344556677".into(),
            server_unix_ms: NOW,
            nonce: "6f1c0d2a9b8e4f3aa1b2c3d4e5f60718".into(),
            client_id: "ws12-4411-1f2e3d4c".into(),
            feature: "cad".into(),
            version: "2.0".into(),
            count: 1,
            grant_id: "0c5a7d2e9f1b4c3a8e6d5f4b3a2c1d0e".into(),
            lease_ms: 60_000,
            heartbeat_interval_ms: 15_000,
            codes_sha256: codes_sha256(&[code()]),
            channel: String::new(),
        }
    }

    /// A `tessera/3` answer's channel is its canonical form's last line, and
    /// a signature over one channel does not check over another: a relay's
    /// two connections have two values.
    #[test]
    fn the_channel_is_signed_and_absent_without_one() {
        let key = server_key();
        let key_id = key.public().key_id();
        let plain = fields().canonical_form(&key_id);
        assert!(!plain.contains("channel="), "{plain}");
        let ours = AnswerFields {
            channel: channel_text(&[1; CHANNEL_BYTES]),
            ..fields()
        };
        let canonical = ours.canonical_form(&key_id);
        assert_eq!(
            canonical,
            format!("{plain}channel=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n")
        );
        let signature = key.sign(&ours);
        assert!(key.public().verify(&ours, &signature).is_ok());
        let relayed = AnswerFields {
            channel: channel_text(&[2; CHANNEL_BYTES]),
            ..fields()
        };
        assert!(key.public().verify(&relayed, &signature).is_err());
        assert!(key.public().verify(&fields(), &signature).is_err());
    }

    fn code() -> LicenseCode {
        test_key("acme", 7)
            .sign(unsigned("cad-1", "cad", 10))
            .unwrap()
    }

    /// The vector PROTOCOL.md quotes: the answer key of seed 5, the fields
    /// above, one code (the license code vector's key, seed 7).
    #[test]
    fn test_vector() {
        let key = server_key();
        assert_eq!(
            key.public().to_base64(),
            "bnoc3Smwt4/ROvTFWY/v9O8qlxZuPKby5Pv8zYBQW/E="
        );
        let canonical = fields().canonical_form(&key.public().key_id());
        assert_eq!(
            canonical,
            format!(
                "tessera-answer-v1\nkey_id={}\noutcome=granted\npool_id=acme-eng\nserver_id=A\n\
                 hostid=mid-0011223344556677\nserver_unix_ms=1796083200000\n\
                 nonce=6f1c0d2a9b8e4f3aa1b2c3d4e5f60718\nclient_id=ws12-4411-1f2e3d4c\n\
                 feature=cad\nversion=2.0\ncount=1\ngrant_id=0c5a7d2e9f1b4c3a8e6d5f4b3a2c1d0e\n\
                 lease_ms=60000\nheartbeat_interval_ms=15000\ncodes_sha256={}\n",
                key.public().key_id(),
                fields().codes_sha256
            )
        );
        let signature = key.sign(&fields());
        assert_eq!(
            signature,
            "Rqb1dFFjuyD5VF0OrGWL/QmcIYuVIdh7h0EqhiLRg2ddooy/7loozcyZ7/vuQUp2sDKbupGEtgfvEeWCjnyiCA=="
        );
        key.public().verify(&fields(), &signature).unwrap();
    }

    #[test]
    fn an_answer_to_another_request_or_changed_in_transit_does_not_check() {
        let key = server_key();
        let signature = key.sign(&fields());
        let changes: [fn(&mut AnswerFields); 5] = [
            |f| f.nonce = "another-nonce-of-another-request".into(),
            |f| f.lease_ms = 3_600_000,
            |f| f.count = 100,
            |f| f.codes_sha256 = codes_sha256([]),
            |f| f.outcome = "no_seats_available".into(),
        ];
        for change in changes {
            let mut changed = fields();
            change(&mut changed);
            let err = key.public().verify(&changed, &signature).unwrap_err();
            assert!(err.to_string().contains("a replay"), "{err}");
        }
        let other = ServerSecretKey::from_seed([6; 32]).public();
        assert!(other.verify(&fields(), &signature).is_err());
        assert_ne!(codes_sha256(&[code()]), codes_sha256(&[code(), code()]));
    }

    /// `n` answers like [`fields`], each to its own nonce.
    fn batch_fields(n: usize) -> Vec<AnswerFields> {
        (0..n)
            .map(|i| AnswerFields {
                nonce: format!("nonce-of-request-number-{i:04}"),
                ..fields()
            })
            .collect()
    }

    fn signed_batch(key: &ServerSecretKey, fields: &[AnswerFields]) -> (String, Vec<BatchPlace>) {
        let key_id = key.public().key_id();
        let leaves: Vec<Hash> = fields.iter().map(|f| f.leaf_hash(&key_id)).collect();
        key.sign_batch(&leaves)
    }

    /// The batch vector PROTOCOL.md quotes: the answer of [`test_vector`]
    /// and a denial to another nonce, signed as one batch of two.
    #[test]
    fn batch_test_vector() {
        let key = server_key();
        let key_id = key.public().key_id();
        let denial = AnswerFields {
            outcome: "no_seats_available".into(),
            nonce: "Q2xpZW50Tm9uY2VPZlRoZVNlY29uZA".into(),
            grant_id: String::new(),
            lease_ms: 0,
            heartbeat_interval_ms: 0,
            codes_sha256: String::new(),
            ..fields()
        };
        let leaves = [fields().leaf_hash(&key_id), denial.leaf_hash(&key_id)];
        assert_eq!(
            hex::encode(leaves[0]),
            "cdcb5ea7f710cee74640c3f612b5d064cd70847f0755f5c4b0cfe36d7ec3a296"
        );
        let (signature, places) = key.sign_batch(&leaves);
        let root = merkle::root_from_path(leaves[0], 0, 2, &places[0].path).unwrap();
        assert_eq!(
            batch_message(&key_id, 2, &root),
            format!(
                "tessera-answer-batch-v1\nkey_id={key_id}\nsize=2\n\
                 root=0119699098ce24e139728b55075858d9b895123f49e1ec8e1a3630e4495f31f7\n"
            )
        );
        assert_eq!(places[0].path, vec![leaves[1]]);
        assert_eq!(places[1].path, vec![leaves[0]]);
        assert_eq!(
            signature,
            "xEI3lY2G7lvI++jBVY4zVTPqfbi78JejaFQA4p61LIt/uWRaEmnkufhActF/PTGTy5iUIsA9g9ZPEDxhcOgMCg=="
        );
        key.public()
            .verify_in_batch(&fields(), &signature, &places[0])
            .unwrap();
        key.public()
            .verify_in_batch(&denial, &signature, &places[1])
            .unwrap();
    }

    #[test]
    fn every_answer_of_a_batch_checks_and_nothing_else_does() {
        let key = server_key();
        for n in [1, 2, 3, 7, 32, 33, BATCH_SIZE_MAX] {
            let answers = batch_fields(n);
            let (signature, places) = signed_batch(&key, &answers);
            for (answer, place) in answers.iter().zip(&places) {
                key.public()
                    .verify_in_batch(answer, &signature, place)
                    .unwrap_or_else(|err| panic!("answer {} of {n}: {err}", place.index));
            }
            // An answer of this batch changed, or one of another request
            // in its place, does not check.
            let mut changed = answers[0].clone();
            changed.count = 100;
            assert!(key
                .public()
                .verify_in_batch(&changed, &signature, &places[0])
                .is_err());
            let other = AnswerFields {
                nonce: "a-request-that-was-never-in-the-batch".into(),
                ..fields()
            };
            assert!(key
                .public()
                .verify_in_batch(&other, &signature, &places[0])
                .is_err());
            // Another key's signature.
            let other_key = ServerSecretKey::from_seed([6; 32]).public();
            assert!(other_key
                .verify_in_batch(&answers[0], &signature, &places[0])
                .is_err());
            // A batch signature is no answer signature, nor the other way round.
            assert!(key.public().verify(&answers[0], &signature).is_err());
            let single = key.sign(&answers[0]);
            let alone = BatchPlace {
                index: 0,
                size: 1,
                path: Vec::new(),
            };
            assert!(key
                .public()
                .verify_in_batch(&answers[0], &single, &alone)
                .is_err());
        }
    }

    #[test]
    fn a_place_claimed_in_another_batch_size_or_with_a_long_path_does_not_check() {
        let key = server_key();
        // A path of a tree of 3 also leads to a root in a tree of 4: the
        // signed message names the size, so the claim fails.
        let answers = batch_fields(3);
        let (signature, places) = signed_batch(&key, &answers);
        let grown = BatchPlace {
            size: 4,
            ..places[0].clone()
        };
        let err = key
            .public()
            .verify_in_batch(&answers[0], &signature, &grown)
            .unwrap_err();
        assert!(matches!(err, AnswerError::BadSignature { .. }), "{err}");
        let past = BatchPlace {
            index: 3,
            ..places[0].clone()
        };
        let err = key
            .public()
            .verify_in_batch(&answers[0], &signature, &past)
            .unwrap_err();
        assert!(err.to_string().contains("cannot lead"), "{err}");
        let long = BatchPlace {
            index: 0,
            size: 1 << 20,
            path: vec![[0; 32]; 20],
        };
        let err = key
            .public()
            .verify_in_batch(&answers[0], &signature, &long)
            .unwrap_err();
        assert!(err.to_string().contains("at most 8"), "{err}");
    }

    struct Case {
        codes: Vec<LicenseCode>,
        hostid: &'static str,
        version: Version,
        chain: Option<(Vec<MasterLicense>, VidCertificate)>,
        now: i64,
        codes_checked: bool,
        chain_checked: bool,
    }

    impl Case {
        fn of(codes: Vec<LicenseCode>) -> Case {
            Case {
                codes,
                hostid: "mid-0011223344556677",
                version: Version::parse("2.0").unwrap(),
                chain: None,
                now: NOW,
                codes_checked: false,
                chain_checked: false,
            }
        }

        fn check(&self) -> Result<(), AnswerError> {
            let key = server_key().public();
            check_backing(
                &[test_key("acme", 7).public()],
                Backing {
                    codes: &self.codes,
                    codes_checked: self.codes_checked,
                    feature: "cad",
                    version: &self.version,
                    server_id: "P1",
                    hostid: self.hostid,
                    server_key: &key,
                    chain: self.chain.as_ref().map(|(licenses, certificate)| Chain {
                        master_licenses: licenses,
                        certificate,
                        signatures_checked: self.chain_checked,
                    }),
                    now_unix_ms: self.now,
                },
            )
        }
    }

    fn signed(change: impl FnOnce(&mut crate::license::UnsignedCode)) -> LicenseCode {
        let mut fields = unsigned("cad-1", "cad", 10);
        change(&mut fields);
        test_key("acme", 7).sign(fields).unwrap()
    }

    fn error_of(case: &Case) -> String {
        case.check().expect_err("must be refused").to_string()
    }

    #[test]
    fn every_code_behind_a_grant_must_be_the_vendors_in_date_and_for_this_version() {
        assert_eq!(Case::of(vec![code()]).check(), Ok(()));
        let mut forged = unsigned("acme-cad-more", "cad", 1000);
        forged.vendor = "acme".into();
        let forged = test_key("acme", 9).sign(forged).unwrap();
        let err = error_of(&Case::of(vec![code(), forged]));
        assert!(
            err.contains("acme-cad-more") && err.contains("no vendor key built into this program"),
            "{err}"
        );
        assert!(error_of(&Case::of(Vec::new())).contains("no license code"));
        let expired = signed(|c| c.expiry = Expiry::parse("2026-11-30").unwrap());
        let mut case = Case::of(vec![expired]);
        case.now = NOW + CLOCK_TOLERANCE_MS + 1;
        assert!(error_of(&case).contains("expired at the end of 2026-11-30"));
        // Within the tolerance of midnight, the server's clock may be behind.
        case.now = NOW + CLOCK_TOLERANCE_MS - 1;
        assert_eq!(case.check(), Ok(()));
        let mut old_version = Case::of(vec![code()]);
        old_version.version = Version::parse("3.0").unwrap();
        assert!(error_of(&old_version).contains("covers version 3.0"));
        let other_feature = test_key("acme", 7)
            .sign(unsigned("sim-1", "sim", 1))
            .unwrap();
        assert!(error_of(&Case::of(vec![other_feature])).contains("not `cad`"));
    }

    /// Codes whose signatures the program checked before are not verified
    /// again, but every other check is still made on them.
    #[test]
    fn codes_checked_before_skip_only_their_signature_check() {
        let mut forged = unsigned("acme-cad-more", "cad", 1000);
        forged.vendor = "acme".into();
        let forged = test_key("acme", 9).sign(forged).unwrap();
        let mut case = Case::of(vec![forged]);
        assert!(error_of(&case).contains("no vendor key built into this program"));
        case.codes_checked = true;
        assert_eq!(case.check(), Ok(()), "its signature is not verified again");
        case.version = Version::parse("3.0").unwrap();
        assert!(error_of(&case).contains("covers version 3.0"));
        let expired = signed(|c| c.expiry = Expiry::parse("2026-11-30").unwrap());
        let mut expired = Case::of(vec![expired]);
        expired.codes_checked = true;
        expired.now = NOW + CLOCK_TOLERANCE_MS + 1;
        assert!(error_of(&expired).contains("expired at the end of 2026-11-30"));
        let bound = signed(|c| c.hostid = HostBinding::Host("mid-0011223344556677".into()));
        let mut elsewhere = Case::of(vec![bound]);
        elsewhere.codes_checked = true;
        elsewhere.hostid = "mid-ffeeddccbbaa9988";
        assert!(error_of(&elsewhere).contains("says its hostid is mid-ffeeddccbbaa9988"));
        let other_feature = test_key("acme", 7)
            .sign(unsigned("sim-1", "sim", 1))
            .unwrap();
        let mut other_feature = Case::of(vec![other_feature]);
        other_feature.codes_checked = true;
        assert!(error_of(&other_feature).contains("not `cad`"));
    }

    #[test]
    fn a_host_bound_code_must_be_bound_to_the_answering_server() {
        let bound = signed(|c| c.hostid = HostBinding::Host("mid-0011223344556677".into()));
        assert_eq!(Case::of(vec![bound.clone()]).check(), Ok(()));
        let mut elsewhere = Case::of(vec![bound]);
        elsewhere.hostid = "mid-ffeeddccbbaa9988";
        assert!(error_of(&elsewhere).contains("says its hostid is mid-ffeeddccbbaa9988"));
    }

    fn master_license(vendor_seed: u8) -> MasterLicense {
        MasterLicense::sign(
            &test_key("acme", vendor_seed),
            MasterLicenseFields {
                id: "master-1".into(),
                vendor: String::new(),
                vid: "acme-vid-1".into(),
                servers: 3,
                master_hostid: "mid-0011223344556677".into(),
                master_key: MasterSecretKey::from_seed([9; 32]).public(),
                issued: CivilDate::parse("2026-11-01").unwrap(),
                expiry: Expiry::parse("2027-12-31").unwrap(),
                certificate_lifetime_s: 3_600,
                masters: 1,
            },
        )
        .unwrap()
    }

    fn certificate(server_key: Option<String>, issued_unix_ms: i64) -> VidCertificate {
        MasterSecretKey::from_seed([9; 32])
            .certify(CertificateFields {
                vid: "acme-vid-1".into(),
                master_license: "master-1".into(),
                server_id: "P1".into(),
                instance: "P1.1f2e3d4c".into(),
                serial: 7,
                issued_unix_ms,
                lifetime_ms: 3_600_000,
                server_key,
            })
            .unwrap()
    }

    /// Vendor key -> master license -> certificate naming the answer key:
    /// each link that is missing or another's is refused, offline.
    #[test]
    fn a_vid_bound_code_needs_the_whole_chain_to_the_answer_key() {
        let bound = signed(|c| c.hostid = HostBinding::parse("vid:acme-vid-1").unwrap());
        let own_key = Some(server_key().public().to_base64());
        let mut case = Case::of(vec![bound]);
        assert!(error_of(&case).contains("carries no certificate chain"));
        case.chain = Some((vec![master_license(7)], certificate(own_key.clone(), NOW)));
        assert_eq!(case.check(), Ok(()));

        let other_key = Some(ServerSecretKey::from_seed([6; 32]).public().to_base64());
        case.chain = Some((vec![master_license(7)], certificate(other_key, NOW)));
        assert!(error_of(&case).contains("does not name the answer key"));
        case.chain = Some((vec![master_license(7)], certificate(None, NOW)));
        assert!(error_of(&case).contains("does not name the answer key"));
        case.chain = Some((vec![master_license(9)], certificate(own_key.clone(), NOW)));
        assert!(error_of(&case).contains("a master license does not check"));
        let long_ago = NOW - 3_600_000 - CLOCK_TOLERANCE_MS - 1_000;
        case.chain = Some((vec![master_license(7)], certificate(own_key, long_ago)));
        assert!(
            error_of(&case).contains("lapsed 1 s ago"),
            "{}",
            error_of(&case)
        );
    }

    /// A chain whose signatures the program checked before is not
    /// verified again, but its dates and what it names still are.
    #[test]
    fn a_chain_checked_before_skips_only_its_signature_checks() {
        let bound = signed(|c| {
            c.hostid = HostBinding::parse("vid:acme-vid-1").unwrap();
            c.expiry = Expiry::Permanent;
        });
        let own_key = Some(server_key().public().to_base64());
        let mut case = Case::of(vec![bound]);
        // A master license signed by a key this program does not know.
        case.chain = Some((vec![master_license(9)], certificate(own_key.clone(), NOW)));
        assert!(error_of(&case).contains("a master license does not check"));
        case.chain_checked = true;
        assert_eq!(
            case.check(),
            Ok(()),
            "its signatures are not verified again"
        );
        let other_key = Some(ServerSecretKey::from_seed([6; 32]).public().to_base64());
        case.chain = Some((vec![master_license(7)], certificate(other_key, NOW)));
        assert!(error_of(&case).contains("does not name the answer key"));
        let long_ago = NOW - 3_600_000 - CLOCK_TOLERANCE_MS - 1_000;
        case.chain = Some((
            vec![master_license(7)],
            certificate(own_key.clone(), long_ago),
        ));
        assert!(error_of(&case).contains("lapsed 1 s ago"));
        case.chain = Some((vec![master_license(7)], certificate(own_key, NOW)));
        // 2028-01-02: the master licenses ended with 2027.
        case.now = NOW + 397 * 86_400_000;
        let ended = error_of(&case);
        assert!(ended.contains("a master license does not check"), "{ended}");
    }

    #[test]
    fn nonces_are_bounded_base64url() {
        assert_eq!(check_nonce("6f1c0d2a9b8e4f3aa1b2c3d4e5f60718"), Ok(()));
        for bad in [
            "short",
            &"x".repeat(NONCE_CHARS_MAX + 1),
            "6f1c0d2a9b8e4f3aa1b2c3d4e5f6071/",
        ] {
            assert!(check_nonce(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codes_held_is_a_sha256_as_codes_sha256_writes_it() {
        assert_eq!(check_codes_sha256(&codes_sha256([])), Ok(()));
        for bad in [
            String::new(),
            "ab".repeat(31),
            "ab".repeat(33),
            "AB".repeat(32),
            "g".repeat(64),
            "é".repeat(32),
        ] {
            assert!(check_codes_sha256(&bad).is_err(), "{bad}");
        }
    }
}
