//! Wire types of Tessera's `/v1` HTTP/JSON protocol.
//!
//! These are the shapes that cross the network, and nothing else: the domain
//! types live in `tessera-core` and are converted by hand in the server. Every
//! string a client sends is bounded ([`MAX_FIELD_BYTES`]) and every body is
//! bounded ([`MAX_BODY_BYTES`]); the server rejects anything larger with a
//! stable [`ErrorCode`]. PROTOCOL.md documents each endpoint.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod frame;
pub mod pool_status;
/// The shapes of signed documents that travel inside answers: a license
/// code and a master license, as their files hold them.
pub use tessera_core::license::LicenseCodeText;
pub use tessera_core::master::MasterLicenseText;
/// Text read once and shared by reference count; a JSON string on the wire.
pub use tessera_core::SharedText;

/// Path prefix of every endpoint of this protocol version.
pub const API_PREFIX: &str = "/v1";
/// Largest request body a server accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest identifier or name a client may send (client id, user, host, feature, version), in bytes.
pub const MAX_FIELD_BYTES: usize = 256;
/// Largest seat count one request may ask for.
pub const MAX_SEATS_PER_REQUEST: u32 = 1_000_000;
/// Longest a server waits for a request's whole body, in ms. A body still
/// arriving after this is answered [`ErrorCode::BodyTimeout`] and the
/// connection closed, so a slow upload cannot hold a server's capacity.
pub const BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// Highest Raft term a server takes from the network: 2^62. A pool's own
/// terms grow by one per election and never come near it; a message naming
/// more is refused ([`ErrorCode::RaftOutOfRange`]) before Raft sees it, so
/// no term or index arithmetic can overflow.
pub const RAFT_TERM_MAX: u64 = 1 << 62;
/// Highest Raft log index a server takes from the network: 2^62.
pub const RAFT_INDEX_MAX: u64 = 1 << 62;

/// `POST /v1/checkout`: ask for `count` seats of `feature`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// Stable id of the client process (the SDK makes one per process).
    pub client_id: SharedText,
    pub user: SharedText,
    pub host: SharedText,
    /// The program's display (`$DISPLAY`, else its terminal), as FlexNet's
    /// DISPLAY: the policy's `display:` rules name it, the report log and
    /// status show it. Absent where the program has neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<SharedText>,
    pub feature: SharedText,
    /// Version of the program asking; must fall inside a served code's range.
    pub version: SharedText,
    pub count: u32,
    /// How long the client waits for this answer, in ms. The server answers
    /// well inside it: a wait for borrowed seats ends early enough to deny in
    /// time, and a grant that could only be made after it is not made.
    /// Absent: the server's own `borrow_wait_ms` bounds the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_within_ms: Option<u32>,
    /// Fresh random text (base64url, 22 to 128 characters) that the signed
    /// answer repeats ([`SignedAnswer`]): an answer to another request does
    /// not check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// With a nonce: the license codes of `feature` the program already
    /// holds, checked against its vendor's keys, as their SHA-256 (64
    /// lowercase hex digits, the `codes_sha256` of the signed answer's
    /// canonical form). A server serving exactly these codes leaves
    /// [`SignedAnswer::codes`] empty, and the program checks the answer
    /// with the codes it holds (PROTOCOL.md, "Codes the program holds").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codes_held: Option<String>,
    /// A production server asking a master for its VID: its answer key
    /// (base64 Ed25519 public key), which the VID certificate names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
    /// Wait in the pool's queue when no seat is free (FIFO, pool-wide),
    /// rather than be refused: answered `queued` with a place, kept by
    /// asking again with its ticket, on any server of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueAsk>,
}

/// A checkout's wish to wait ([`CheckoutRequest::queue`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueAsk {
    /// The ticket of an earlier `queued` answer; none to join the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Leave the queue (the program stopped waiting): answered
    /// `no_seats_available`, and nothing is checked out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leave: bool,
}

/// A place in a feature's queue, as a `queued` answer gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuePlace {
    pub ticket: String,
    /// 1: next to be served.
    pub position: u32,
    /// Programs in the queue.
    pub waiting: u32,
    /// When the program joined the queue (Unix ms, the server's clock).
    pub since_unix_ms: i64,
    /// Until when the place holds unless the program asks again (Unix ms,
    /// the server's clock).
    pub until_unix_ms: i64,
}

/// `POST /v1/heartbeat`: renew a grant. It carries everything a checkout does,
/// so that a server that did not issue the grant can convert it into a
/// checkout for the same count (fail-over).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub grant_id: SharedText,
    pub client_id: SharedText,
    pub user: SharedText,
    pub host: SharedText,
    /// As in [`CheckoutRequest::display`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<SharedText>,
    /// How long the program has been idle, in ms, as it told the SDK
    /// (`SeatGuard::set_idle`); absent while it is in use. A feature with
    /// an `idle_timeout_s` in the pool's policy frees the seat of a program
    /// idle that long and answers [`ErrorCode::IdleTimeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    pub feature: SharedText,
    pub version: SharedText,
    pub count: u32,
    /// As in [`CheckoutRequest::answer_within_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_within_ms: Option<u32>,
    /// As in [`CheckoutRequest::nonce`]: fresh for every heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// As in [`CheckoutRequest::codes_held`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codes_held: Option<String>,
    /// As in [`CheckoutRequest::server_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
    /// The SDK's count of heartbeats sent for this seat, rising with every
    /// attempt on any server. The server holding the newest renewal of a
    /// grant tells the pool, and every other server drops its older copy
    /// (see [`SupersededGrant`]). 0: not counted (an older SDK).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub renewal: u64,
    /// The grant's proof, as the checkout answered it ([`Grant::proof`]).
    /// Required: a heartbeat without the proof of its grant id, client id,
    /// feature and count is refused ([`ErrorCode::GrantProofInvalid`]),
    /// renewal and fail-over conversion alike.
    #[serde(default)]
    pub proof: Proof,
    /// Where the grant was held last ([`Grant::holding`]), sent when the
    /// heartbeat goes to another server: if that server and the pool are
    /// short of seats, the seat is handed over from the holding server once
    /// its quota has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<Holding>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl HeartbeatRequest {
    /// The checkout this heartbeat turns into on a server that does not hold the grant.
    pub fn as_checkout(&self) -> CheckoutRequest {
        CheckoutRequest {
            client_id: self.client_id.clone(),
            user: self.user.clone(),
            host: self.host.clone(),
            display: self.display.clone(),
            feature: self.feature.clone(),
            version: self.version.clone(),
            count: self.count,
            answer_within_ms: self.answer_within_ms,
            nonce: self.nonce.clone(),
            codes_held: self.codes_held.clone(),
            server_key: self.server_key.clone(),
            queue: None,
        }
    }
}

/// `POST /v1/checkin`: give a grant's seats back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    pub grant_id: SharedText,
    pub client_id: String,
    /// The grant's proof ([`Grant::proof`]); required, as for a heartbeat.
    #[serde(default)]
    pub proof: Proof,
}

/// A server of the pool, as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerInfo {
    pub id: String,
    /// `host:port` of its HTTP API.
    pub address: String,
}

/// Answer to a checkout or a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    pub grant_id: SharedText,
    pub feature: SharedText,
    pub count: u32,
    /// The server holding this grant.
    pub server_id: SharedText,
    /// The client may treat the seats as held until its own send time of the
    /// request plus this lease.
    pub lease_ms: u64,
    /// How often the client should heartbeat.
    pub heartbeat_interval_ms: u64,
    /// The pool's servers in leader-priority order: where to fail over.
    /// Shared: a server answers every grant with the same list.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<ServerInfo>))]
    pub servers: Arc<[ServerInfo]>,
    /// True when this server did not hold the grant and issued it anew
    /// (a heartbeat converted into a checkout).
    pub converted: bool,
    /// Proof that the pool issued this grant to this client: every
    /// heartbeat and the check-in carry it back. A secret of the holder,
    /// never shown in a status. PROTOCOL.md says what it covers.
    pub proof: Proof,
    /// Where this copy is held, proven: what the client shows the next
    /// server if this one dies, so the pool can hand the very seat over when
    /// it has no other. Absent from servers that do not hand over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<Holding>,
    /// From a master server (seed 003), on a grant of its VID's slots: the
    /// VID certificate that lends the VID to the holder for `lease_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<VidCertificate>,
    /// The answering server's signature over this grant and the request's
    /// nonce, with the license codes behind it (PROTOCOL.md, "Signed
    /// answers"). A program built with its vendor's keys accepts no grant
    /// without one that checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<SignedAnswer>,
}

/// A server's signature of one answer, and what a program needs to check
/// it offline against its vendor's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedAnswer {
    /// The server's answer key: base64 of the Ed25519 public key.
    pub server_key: SharedText,
    pub pool_id: SharedText,
    pub server_id: SharedText,
    /// The answering server's hostid.
    pub hostid: SharedText,
    /// The answering server's wall clock, Unix ms.
    pub server_unix_ms: i64,
    /// Base64 Ed25519 signature of the canonical form, or of the batch
    /// message where `batch` is present. Absent (empty) only on a framed
    /// `tessera/3` connection that an earlier answer signed over its TLS
    /// channel bound to `server_key`: the channel vouches for it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    /// On a grant: every license code the answering server serves for the
    /// feature (the hard limit), vendor-signed. Empty on a grant whose
    /// request named these very codes in `codes_held`: the program has them.
    /// Shared: the server keeps them once per license table.
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<LicenseCodeText>))]
    pub codes: Arc<[LicenseCodeText]>,
    /// On a grant from a server bound to a VID: its chain to the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<AnswerChain>,
    /// Where `signature` covers a batch of answers (framed protocol
    /// `tessera/2` only): this answer's place in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<AnswerBatch>,
}

/// An answer's place in a signed batch: its leaf's index, the batch's size,
/// and the sibling hashes from its leaf to the Merkle root (base64, the
/// leaf's sibling first). PROTOCOL.md, "Signed answers".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AnswerBatch {
    pub index: u64,
    pub size: u64,
    pub path: Vec<String>,
}

impl AnswerBatch {
    pub fn from_core(place: &tessera_core::answer::BatchPlace) -> AnswerBatch {
        AnswerBatch {
            index: place.index,
            size: place.size,
            path: place.path_base64(),
        }
    }

    /// The place, its hashes decoded; an error names what is malformed.
    pub fn to_core(&self) -> Result<tessera_core::answer::BatchPlace, String> {
        tessera_core::answer::BatchPlace::from_base64(self.index, self.size, &self.path)
    }
}

/// A production server's chain to its vendor: the master licenses of its
/// VID (vendor-signed) and its current certificate, which names its answer key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AnswerChain {
    pub master_licenses: Vec<MasterLicenseText>,
    pub certificate: VidCertificate,
}

/// A VID certificate as a master sends it: the fields and the master key's
/// signature over their canonical form (PROTOCOL.md, "Master licenses and
/// VID certificates"). The holder checks it against the master license.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VidCertificate {
    pub vid: String,
    pub master_license: String,
    pub server_id: String,
    pub instance: String,
    pub serial: u64,
    pub issued_unix_ms: i64,
    pub lifetime_ms: u64,
    /// The holder's answer key, where it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
    pub master_key_id: String,
    pub signature: String,
    /// Where several masters share the VID: the other masters' signatures
    /// of the same canonical form; a majority of them must have signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cosignatures: Vec<Cosignature>,
}

impl VidCertificate {
    /// A signed certificate as it travels.
    pub fn from_core(certificate: &tessera_core::master::VidCertificate) -> VidCertificate {
        let text = certificate.to_text();
        let f = text.fields;
        VidCertificate {
            cosignatures: text
                .cosignatures
                .into_iter()
                .map(|c| Cosignature {
                    master_license: c.master_license,
                    master_key_id: c.master_key_id,
                    signature: c.signature,
                })
                .collect(),
            vid: f.vid,
            master_license: f.master_license,
            server_id: f.server_id,
            instance: f.instance,
            serial: f.serial,
            issued_unix_ms: f.issued_unix_ms,
            lifetime_ms: f.lifetime_ms,
            server_key: f.server_key,
            master_key_id: text.master_key_id,
            signature: text.signature,
        }
    }

    /// The certificate's fields parsed; its signatures are not checked.
    pub fn to_core(
        &self,
    ) -> Result<tessera_core::master::VidCertificate, tessera_core::master::CertificateError> {
        use tessera_core::master::{CertificateFields, CosignatureText, VidCertificateText};
        tessera_core::master::VidCertificate::from_text(&VidCertificateText {
            fields: CertificateFields {
                vid: self.vid.clone(),
                master_license: self.master_license.clone(),
                server_id: self.server_id.clone(),
                instance: self.instance.clone(),
                serial: self.serial,
                issued_unix_ms: self.issued_unix_ms,
                lifetime_ms: self.lifetime_ms,
                server_key: self.server_key.clone(),
            },
            master_key_id: self.master_key_id.clone(),
            signature: self.signature.clone(),
            cosignatures: self
                .cosignatures
                .iter()
                .map(|c| CosignatureText {
                    master_license: c.master_license.clone(),
                    master_key_id: c.master_key_id.clone(),
                    signature: c.signature.clone(),
                })
                .collect(),
        })
    }
}

/// Another master's signature of a [`VidCertificate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Cosignature {
    pub master_license: String,
    pub master_key_id: String,
    pub signature: String,
}

/// `POST /v1/peer/cosign`: a master asks another master of its pool to
/// co-sign a certificate it issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignRequest {
    pub server_id: String,
    pub certificate: VidCertificate,
}

/// Where a grant's copy is held, as its server answered it: the server,
/// its run (`boot`, random at every start), the number of its next quota
/// report, the copy's heartbeat number and when the copy lapses there (on
/// that server's monotonic clock), with the holding proof over all of them
/// and the grant (PROTOCOL.md, "Fail-over in a full pool").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Holding {
    pub server_id: String,
    pub boot: u64,
    pub report: u64,
    pub renewal: u64,
    pub expires_ms: u64,
    pub proof: Proof,
}

/// A grant's proof as it travels: base64url text. It is the holder's
/// secret, so its `Debug` hides it and no log shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Proof(pub String);

impl Proof {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("Proof(none)"),
            false => f.write_str("Proof(…)"),
        }
    }
}

/// `POST /v1/temporary/activate`: a temporary license (seed 004) of
/// `feature` for the user's ticket on this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub client_id: String,
    /// The ticket: temporary licenses are counted per user.
    pub user: String,
    pub host: String,
    pub feature: String,
    pub version: String,
    /// The device, as the SDK derives it.
    pub device: String,
    /// An offline borrow of this many days, within the vendor's
    /// `temporary_offline_days_max`; absent: the vendor's period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_within_ms: Option<u32>,
}

/// `POST /v1/temporary/extend` and `POST /v1/temporary/return`: the
/// license, its device, and the proof its activation answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemporaryRequest {
    pub feature: String,
    pub license_id: String,
    pub device: String,
    pub proof: Proof,
}

/// A temporary license as the pool signs it: what the SDK keeps in its
/// cache and checks with no network (PROTOCOL.md, "Temporary licenses").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemporaryToken {
    pub license_id: String,
    pub pool_id: String,
    pub server_id: String,
    pub feature: String,
    pub ticket: String,
    pub device: String,
    pub seats: u32,
    pub issued_unix_ms: i64,
    pub expires_unix_ms: i64,
    /// When the SDK should extend it (the vendor's `temporary_extend_after_s`
    /// after the issue), and whether closing the program returns it.
    pub extend_after_unix_ms: i64,
    pub return_on_close: bool,
    /// Proves the license to the pool for its extensions and its return.
    pub proof: Proof,
    /// The signing server's answer key (base64) and its signature of the
    /// token's canonical form, with the codes behind the feature.
    pub server_key: String,
    pub hostid: String,
    pub signature: String,
    pub codes: Vec<LicenseCodeText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<AnswerChain>,
}

impl TemporaryToken {
    /// The token of `fields`, signed by `key` (a server's answer key), with
    /// the codes behind them and the license's proof.
    pub fn signed(
        fields: tessera_core::temporary::TokenFields,
        key: &tessera_core::answer::ServerSecretKey,
        proof: Proof,
        codes: Vec<LicenseCodeText>,
    ) -> TemporaryToken {
        let public = key.public();
        TemporaryToken {
            signature: key.sign_text(&fields.canonical_form(&public.key_id())),
            server_key: public.to_base64(),
            license_id: fields.license_id,
            pool_id: fields.pool_id,
            server_id: fields.server_id,
            feature: fields.feature,
            ticket: fields.ticket,
            device: fields.device,
            seats: fields.seats,
            issued_unix_ms: fields.issued_unix_ms,
            expires_unix_ms: fields.expires_unix_ms,
            extend_after_unix_ms: fields.extend_after_unix_ms,
            return_on_close: fields.return_on_close,
            proof,
            hostid: fields.hostid,
            codes,
            chain: None,
        }
    }

    /// What the signature covers, given the digest of the token's codes.
    pub fn fields(&self, codes_sha256: String) -> tessera_core::temporary::TokenFields {
        tessera_core::temporary::TokenFields {
            license_id: self.license_id.clone(),
            pool_id: self.pool_id.clone(),
            server_id: self.server_id.clone(),
            hostid: self.hostid.clone(),
            feature: self.feature.clone(),
            ticket: self.ticket.clone(),
            device: self.device.clone(),
            seats: self.seats,
            issued_unix_ms: self.issued_unix_ms,
            expires_unix_ms: self.expires_unix_ms,
            extend_after_unix_ms: self.extend_after_unix_ms,
            return_on_close: self.return_on_close,
            codes_sha256,
        }
    }
}

/// Answer to a check-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckinResponse {
    pub released_seats: u32,
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// On a denial of a checkout or heartbeat that carried a nonce: the
    /// server's signature over the refusal (its `outcome` is the code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<SignedAnswer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// A sentence a person can act on.
    pub message: String,
    /// With `queued`: the program's place in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueuePlace>,
}

/// Stable machine-readable error codes. Never renamed; new ones may be added,
/// so clients must accept codes they do not know ([`ErrorCode::Unknown`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON of the expected shape.
    MalformedRequest,
    /// The body exceeds [`MAX_BODY_BYTES`].
    BodyTooLarge,
    /// A field is empty, too long or has characters not allowed.
    InvalidField,
    /// No license code names this feature.
    UnknownFeature,
    /// The count is zero or above [`MAX_SEATS_PER_REQUEST`].
    InvalidCount,
    /// The count exceeds the feature's hard limit: it can never be granted.
    CountAboveLimit,
    /// No served code covers the requested version.
    VersionNotLicensed,
    /// Every seat this server may issue is taken.
    NoSeatsAvailable,
    /// The feature's codes exist but none can be served (expired, bound to
    /// another host, bad signature, unknown vendor); the message says why.
    LicenseNotServed,
    /// The server lost its store and waits out one lease before issuing new seats.
    GracePeriod,
    /// The server cannot reach a majority of its pool and does not issue.
    NoQuorum,
    /// Check-in of a grant this server does not hold.
    UnknownGrant,
    /// The grant exists but belongs to another client or has another shape.
    GrantMismatch,
    /// A heartbeat or check-in without the grant's proof, or with one that
    /// does not match the grant id, client id, feature and count.
    GrantProofInvalid,
    /// The server holds as many grants or clients as its limits allow.
    TooManyGrants,
    /// No such endpoint.
    NotFound,
    /// The method is not allowed on this endpoint.
    MethodNotAllowed,
    /// A peer or admin request for another pool.
    WrongPool,
    /// The request needs a credential (a server's peer credential, an
    /// administrator's token) and carries none, or one the pool does not know.
    Unauthenticated,
    /// The caller is known but may not do this (a read-only token asking for
    /// a change, a server speaking for another server).
    Forbidden,
    /// One source address has as many requests in flight as it may; retry shortly.
    TooManyRequests,
    /// A pool file update that is refused (stale sequence, bad signature,
    /// sums above the hard limit, unknown pool); the message says why.
    PoolFileRefused,
    /// The pool has no leader right now; retry shortly.
    NoLeader,
    /// A license code is not removed while seats of its feature are held;
    /// the message says how many (`tessera admin remove-license --force`).
    SeatsInUse,
    /// A Raft term or log index above [`RAFT_TERM_MAX`] / [`RAFT_INDEX_MAX`].
    RaftOutOfRange,
    /// A leader's snapshot that breaks the control state's invariants, or
    /// whose chunks do not fit together; nothing of it is installed.
    SnapshotRefused,
    /// The request body did not arrive within [`BODY_READ_TIMEOUT_MS`].
    BodyTimeout,
    /// The server's clock reads earlier than the latest time it trusted
    /// (kept on disk) by more than the tolerance: it was set back. The
    /// server issues and renews nothing until the clock is right again.
    ClockSetBack,
    /// The feature's codes do not allow temporary licenses, or not for as
    /// many days as asked.
    TemporaryNotAllowed,
    /// The user's ticket holds temporary licenses on as many devices as the
    /// vendor allows.
    TooManyDevices,
    /// The temporary license was withdrawn (a newer device holds the
    /// ticket) or is no longer out; the program should say so and close.
    LicenseWithdrawn,
    /// The pool's policy (`[policy]` of the pool file) does not let this
    /// user, host or address use the feature; the message names the rule.
    PolicyDenied,
    /// The program was idle longer than the feature's `idle_timeout_s`
    /// (FlexNet's TIMEOUT): its seat was freed; check out again when in use.
    IdleTimeout,
    /// No seat is free and the checkout waits in the pool's queue
    /// ([`ErrorDetail::queue`] says where); ask again with the ticket.
    Queued,
    /// The server failed; the request may be retried.
    Internal,
    /// A code this client version does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status each code is answered with: one place, used by the server.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedRequest
            | ErrorCode::InvalidField
            | ErrorCode::InvalidCount
            | ErrorCode::CountAboveLimit
            | ErrorCode::VersionNotLicensed
            | ErrorCode::RaftOutOfRange => 400,
            ErrorCode::UnknownFeature | ErrorCode::UnknownGrant | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::WrongPool | ErrorCode::Forbidden | ErrorCode::GrantProofInvalid => 403,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PoolFileRefused | ErrorCode::SnapshotRefused => 422,
            ErrorCode::BodyTimeout => 408,
            ErrorCode::NoLeader => 503,
            ErrorCode::NoSeatsAvailable
            | ErrorCode::Queued
            | ErrorCode::IdleTimeout
            | ErrorCode::GrantMismatch
            | ErrorCode::SeatsInUse
            | ErrorCode::TooManyDevices
            | ErrorCode::LicenseWithdrawn => 409,
            ErrorCode::TemporaryNotAllowed => 403,
            ErrorCode::PolicyDenied => 403,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::LicenseNotServed => 403,
            ErrorCode::TooManyGrants | ErrorCode::TooManyRequests => 429,
            ErrorCode::GracePeriod | ErrorCode::NoQuorum | ErrorCode::ClockSetBack => 503,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnknownFeature => "unknown_feature",
            ErrorCode::InvalidCount => "invalid_count",
            ErrorCode::CountAboveLimit => "count_above_limit",
            ErrorCode::VersionNotLicensed => "version_not_licensed",
            ErrorCode::NoSeatsAvailable => "no_seats_available",
            ErrorCode::LicenseNotServed => "license_not_served",
            ErrorCode::GracePeriod => "grace_period",
            ErrorCode::NoQuorum => "no_quorum",
            ErrorCode::UnknownGrant => "unknown_grant",
            ErrorCode::GrantMismatch => "grant_mismatch",
            ErrorCode::GrantProofInvalid => "grant_proof_invalid",
            ErrorCode::TooManyGrants => "too_many_grants",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::WrongPool => "wrong_pool",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::PoolFileRefused => "pool_file_refused",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::SeatsInUse => "seats_in_use",
            ErrorCode::RaftOutOfRange => "raft_out_of_range",
            ErrorCode::SnapshotRefused => "snapshot_refused",
            ErrorCode::BodyTimeout => "body_timeout",
            ErrorCode::ClockSetBack => "clock_set_back",
            ErrorCode::TemporaryNotAllowed => "temporary_not_allowed",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::Queued => "queued",
            ErrorCode::IdleTimeout => "idle_timeout",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::LicenseWithdrawn => "license_withdrawn",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A temporary license as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemporaryStatus {
    pub license_id: String,
    pub ticket: Option<String>,
    pub device: Option<String>,
    pub seats: u32,
    pub expires_unix_ms: i64,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    pub pool_id: String,
    pub pool_sequence: u64,
    /// The server that answered.
    pub server: ServerStatus,
    /// Every server of the pool in leader-priority order.
    pub servers: Vec<PeerStatus>,
    pub features: Vec<FeatureStatus>,
    /// Grants held by the answering server, oldest first, at most
    /// [`STATUS_GRANTS_MAX`] of them.
    pub grants: Vec<GrantStatus>,
    /// How many grants the answering server holds in all.
    pub grants_total: u64,
    /// True once the SDK gathered every server's own figures into this
    /// answer (`Client::pool_status`): the rows' `in_use` and the grants
    /// are the whole pool's, but for the servers in `unanswered`. A
    /// server's own answer is false: only its own row and grants are its.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pool_wide: bool,
    /// Servers that did not answer for a pool-wide status: their figures
    /// are missing, and the status is partial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unanswered: Vec<UnansweredServer>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A server whose own figures a pool-wide status lacks, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnansweredServer {
    pub id: String,
    pub address: String,
    pub error: String,
}

/// Most grants one status answer lists.
pub const STATUS_GRANTS_MAX: usize = 1_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerStatus {
    pub id: String,
    pub address: String,
    /// `leader`, `follower`, `candidate` or `learner` (a pool of one is its own leader).
    pub role: String,
    /// The pool's leader as far as this server knows.
    pub leader_id: Option<String>,
    /// `serving`, `grace` (its store was missing, or a run that synced
    /// grants in the background crashed; only renewals accepted) or
    /// `no_quorum` (no quota lease from a leader with a majority).
    pub state: String,
    pub software_version: String,
    pub uptime_ms: u64,
    /// Milliseconds left in the grace period, when `state` is `grace`.
    pub grace_remaining_ms: Option<u64>,
    /// Why the server does not serve, when `state` is `clock_set_back`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// When a new grant reaches the disk (`[store] sync`): `before-answer`,
    /// or `background` (a crash is then followed by a grace period). Absent
    /// from servers older than the setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_sync: Option<String>,
    pub hostid: String,
    /// On a production server bound to a VID (seed 003): whether it holds
    /// a valid certificate, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vid: Option<VidStatus>,
}

/// A production server's hold on its VID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VidStatus {
    pub vid: String,
    /// True while a certificate checked and has not lapsed.
    pub held: bool,
    /// Milliseconds the certificate stays valid without renewal.
    pub valid_for_ms: u64,
    /// The master server that renewed it last.
    pub master: Option<String>,
    /// Why the VID is not held (or what last went wrong).
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerStatus {
    pub id: String,
    pub address: String,
    pub role: String,
    pub up: bool,
    /// Milliseconds since the answering server last heard from it; `None` if never.
    pub last_contact_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeatureStatus {
    pub feature: String,
    pub vendor: String,
    /// Sum of the seats of every served code.
    pub hard_limit: u32,
    pub free_pool: u32,
    /// Seats available across the pool as far as the answering server knows.
    pub pool_available: u32,
    pub lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub borrow_threshold_percent: u32,
    /// Requests for seats that wait for their donor's consent.
    #[serde(default)]
    pub pending_requests: u32,
    /// Rows of the distribution table, in leader-priority order.
    pub servers: Vec<DistributionRow>,
    /// Every code naming this feature, served or not, and why not.
    pub codes: Vec<CodeStatus>,
    /// Seats out as temporary licenses (seed 004), in no server's allocation.
    #[serde(default)]
    pub temporary_seats: u32,
    /// The allocation those licenses took: `temporary_seats`, or more where
    /// they came from servers that serve part of the feature's codes.
    #[serde(default)]
    pub temporary_allocation: u32,
    /// The temporary licenses out; ticket and device only for a caller
    /// with a credential, as grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temporaries: Vec<TemporaryStatus>,
    /// Seats checked in on the answering server and still held for the
    /// policy's `linger_s`.
    #[serde(default)]
    pub lingering_seats: u32,
    /// The policy's `reserve` rules, with the seats held pool-wide by those
    /// each keeps seats for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserves: Vec<LimitStatus>,
    /// The policy's `max` rules, with the seats held pool-wide by those
    /// each names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maxima: Vec<LimitStatus>,
    /// Programs waiting for seats, first first; user and host only for a
    /// caller with a credential, as grants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiters: Vec<WaiterStatus>,
    /// Checkouts of this feature refused since the answering server started
    /// (a pool-wide status: since each server started), by error code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<DenialCount>,
}

/// How many checkouts were refused with one error code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DenialCount {
    pub code: ErrorCode,
    pub count: u64,
}

/// A program in a feature's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaiterStatus {
    pub position: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub seats: u32,
    pub since_unix_ms: i64,
}

/// A `reserve` or `max` rule of the policy at work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitStatus {
    /// Whom it names, as written (`group:design`).
    pub rule: String,
    pub seats: u32,
    /// Seats held pool-wide by those it counts.
    pub held: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DistributionRow {
    pub server_id: String,
    pub allocation: u32,
    /// `None` where the answering server does not know (a follower knows only its own row).
    pub in_use: Option<u32>,
    pub available: Option<u32>,
    /// Seats held back from new checkouts: asked for by another server, or
    /// above a distribution target the administrator set.
    #[serde(default)]
    pub reserved: u32,
    /// The administrator's distribution for this server, while not reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u32>,
    /// Borrows this server received, and seats moved in and out of it.
    #[serde(default)]
    pub borrows: u64,
    #[serde(default)]
    pub seats_in: u64,
    #[serde(default)]
    pub seats_out: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CodeStatus {
    pub id: String,
    pub vendor: String,
    pub seats: u32,
    pub version_min: String,
    pub version_max: String,
    /// `YYYY-MM-DD` or `permanent`.
    pub expiry: String,
    pub hostid: String,
    pub served: bool,
    /// Why the code is not served; `None` when it is.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantStatus {
    pub grant_id: String,
    pub feature: String,
    pub count: u32,
    pub client_id: String,
    pub user: String,
    pub host: String,
    /// The program's display, where it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// The server holding the grant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_id: String,
    pub version: String,
    pub age_ms: u64,
    pub expires_in_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_unknown_codes_are_accepted() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::NoSeatsAvailable,
                message: "all 5 seats taken".into(),
                queue: None,
            },
            answer: None,
        };
        let text = serde_json::to_string(&body).unwrap();
        assert!(text.contains("\"no_seats_available\""));
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), body);
        let future: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"from_the_future","message":"x"}}"#).unwrap();
        assert_eq!(future.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn as_str_matches_serde_name() {
        for code in [
            ErrorCode::MalformedRequest,
            ErrorCode::BodyTooLarge,
            ErrorCode::InvalidField,
            ErrorCode::UnknownFeature,
            ErrorCode::InvalidCount,
            ErrorCode::CountAboveLimit,
            ErrorCode::VersionNotLicensed,
            ErrorCode::NoSeatsAvailable,
            ErrorCode::LicenseNotServed,
            ErrorCode::GracePeriod,
            ErrorCode::NoQuorum,
            ErrorCode::UnknownGrant,
            ErrorCode::GrantMismatch,
            ErrorCode::GrantProofInvalid,
            ErrorCode::TooManyGrants,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::WrongPool,
            ErrorCode::PoolFileRefused,
            ErrorCode::NoLeader,
            ErrorCode::SeatsInUse,
            ErrorCode::RaftOutOfRange,
            ErrorCode::SnapshotRefused,
            ErrorCode::BodyTimeout,
            ErrorCode::ClockSetBack,
            ErrorCode::TemporaryNotAllowed,
            ErrorCode::TooManyDevices,
            ErrorCode::LicenseWithdrawn,
            ErrorCode::PolicyDenied,
            ErrorCode::Queued,
            ErrorCode::IdleTimeout,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(code.http_status() >= 400);
        }
    }

    /// A request without a proof parses, so that the server refuses it
    /// with `grant_proof_invalid` rather than `malformed_request`; a proof
    /// never shows in `Debug`.
    #[test]
    fn proofs_are_optional_on_parse_and_hidden_from_debug() {
        let checkin: CheckinRequest =
            serde_json::from_str(r#"{"grant_id":"g","client_id":"c"}"#).unwrap();
        assert_eq!(checkin.proof, Proof::default());
        let checkin: CheckinRequest =
            serde_json::from_str(r#"{"grant_id":"g","client_id":"c","proof":"s3cr3t"}"#).unwrap();
        assert_eq!(checkin.proof.as_str(), "s3cr3t");
        assert!(!format!("{checkin:?}").contains("s3cr3t"));
        let text = serde_json::to_string(&checkin).unwrap();
        assert!(text.contains(r#""proof":"s3cr3t""#), "{text}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<CheckinRequest>(
            r#"{"grant_id":"g","client_id":"c","proof":"p","extra":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"));
    }

    /// Every request type a server reads, client, admin or peer: its
    /// smallest valid body reads, and the same body with one more field is
    /// refused naming the field.
    #[test]
    fn every_request_type_refuses_unknown_fields() {
        fn check<T: serde::de::DeserializeOwned>(name: &str, valid: serde_json::Value) {
            serde_json::from_value::<T>(valid.clone())
                .unwrap_or_else(|err| panic!("{name}: {valid} does not read: {err}"));
            let mut extended = valid;
            extended["sneaky"] = true.into();
            let err = serde_json::from_value::<T>(extended)
                .map(|_| ())
                .expect_err(name)
                .to_string();
            assert!(err.contains("unknown field `sneaky`"), "{name}: {err}");
        }
        let checkout = serde_json::json!({"client_id": "c", "user": "u", "host": "h",
            "feature": "f", "version": "1", "count": 1});
        let mut heartbeat = checkout.clone();
        heartbeat["grant_id"] = "g".into();
        check::<CheckoutRequest>("CheckoutRequest", checkout);
        check::<HeartbeatRequest>("HeartbeatRequest", heartbeat);
        check::<CheckinRequest>(
            "CheckinRequest",
            serde_json::json!({"grant_id": "g", "client_id": "c"}),
        );
        check::<PoolFileUpdate>("PoolFileUpdate", serde_json::json!({"text": ""}));
        check::<SetDistribution>(
            "SetDistribution",
            serde_json::json!({"feature": "f", "servers": {}}),
        );
        check::<AddLicense>("AddLicense", serde_json::json!({"text": ""}));
        check::<RemoveLicense>("RemoveLicense", serde_json::json!({"id": "x"}));
        check::<BorrowAsk>(
            "BorrowAsk",
            serde_json::json!({"server_id": "A", "feature": "f", "seats": 1}),
        );
        check::<PeerReport>(
            "PeerReport",
            serde_json::json!({"server_id": "A", "in_use": {}}),
        );
        check::<SupersededGrant>(
            "SupersededGrant",
            serde_json::json!({"grant_id": "g", "renewal": 1}),
        );
    }

    /// Answers a server reads from its peers stay tolerant: a newer peer may
    /// add a field.
    #[test]
    fn answers_from_peers_take_fields_they_do_not_know() {
        let ack: PeerReportAck = serde_json::from_value(serde_json::json!({
            "leader_id": "A", "applied_index_required": 3, "servers": [], "later": 1}))
        .unwrap();
        assert_eq!(ack.applied_index_required, 3);
        let hello: PeerHello = serde_json::from_value(serde_json::json!({
            "pool_id": "p", "server_id": "A", "initialized": true,
            "installed_sequence": null, "later": 1}))
        .unwrap();
        assert!(hello.initialized);
        let answer: BorrowAnswer = serde_json::from_value(serde_json::json!({
            "moved": 1, "requested": 0, "later": 1}))
        .unwrap();
        assert_eq!(answer.moved, 1);
        // A leader from before the committed allocation was sent: none.
        assert_eq!(answer.allocation, None);
    }

    #[test]
    fn remove_license_sends_force_only_when_set() {
        let plain = RemoveLicense {
            id: "x".into(),
            expected_sequence: None,
            force: false,
        };
        assert!(!serde_json::to_string(&plain).unwrap().contains("force"));
        let forced = RemoveLicense {
            force: true,
            ..plain
        };
        let text = serde_json::to_string(&forced).unwrap();
        assert_eq!(
            serde_json::from_str::<RemoveLicense>(&text).unwrap(),
            forced
        );
    }
}

/// Header that names the pool on every peer and admin request.
pub const POOL_HEADER: &str = "x-tessera-pool";
/// Header that names the sending server on peer requests.
pub const PEER_HEADER: &str = "x-tessera-peer";

/// `POST /v1/admin/pool-file`: install a pool file with a higher sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolFileUpdate {
    pub text: String,
}

/// `POST /v1/peer/borrow` (to the leader): a server asks for seats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BorrowAsk {
    pub server_id: String,
    pub feature: String,
    pub seats: u32,
    /// Asked ahead of need (above the threshold): live servers then give
    /// only seats beyond what keeps them under their own threshold.
    #[serde(default)]
    pub ahead: bool,
    /// Seats without which the request that asks fails (at most `seats`;
    /// `seats` may add a batch). When the pool cannot give this many now,
    /// the leader moves nothing and answers at once. 0: `seats`.
    #[serde(default)]
    pub needed: u32,
    /// The seats are for a client of a silent server that failed over to
    /// the asker: hand that grant's seats over if nothing else can be had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand_over: Option<HandOverClaim>,
}

/// A grant held on a silent server, claimed by the server its client
/// failed over to, with the holding proof the client showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandOverClaim {
    pub grant_id: String,
    pub client_id: String,
    pub count: u32,
    pub holding: Holding,
}

/// The leader's answer: seats moved at once, and seats asked of live servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BorrowAnswer {
    pub moved: u32,
    pub requested: u32,
    /// Seats already asked of live servers for this server, still pending:
    /// worth waiting for.
    #[serde(default)]
    pub pending: u32,
    /// Seats the leader sees free across the pool for this server now: its
    /// own spare as last reported, the free pool, the seats of silent
    /// servers it may reassign and the spare of the live ones. A borrower
    /// that cannot be helped is told this number instead of waiting.
    #[serde(default)]
    pub pool_available: Option<u32>,
    /// A hand-over that may be decided in this many ms (the silent server's
    /// quota has not surely ended yet): worth asking again then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hand_over_in_ms: Option<u64>,
    /// The asker's allocation as the leader has committed it, before this
    /// answer's moves. Above the allocation the asker has applied, the
    /// difference is on its way in the pool log: worth waiting for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<u32>,
}

/// `POST /v1/admin/distribution`: a new distribution of one feature.
/// Servers not named get none; the rest of the seats go to the free pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetDistribution {
    pub feature: String,
    pub servers: std::collections::BTreeMap<String, u32>,
    /// Refuse unless this is the installed pool file's sequence.
    #[serde(default)]
    pub expected_sequence: Option<u64>,
}

/// `POST /v1/admin/license`: license codes to add, as `tessera license sign`
/// writes them (`[[license]]` tables).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddLicense {
    pub text: String,
    /// Give the new seats to this server rather than the free pool.
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub expected_sequence: Option<u64>,
}

/// `POST /v1/admin/license/remove`: the id of a code to take out of the pool.
/// The leader refuses it ([`ErrorCode::SeatsInUse`]) while seats of the
/// code's feature are held, unless `force` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoveLicense {
    pub id: String,
    #[serde(default)]
    pub expected_sequence: Option<u64>,
    /// Remove the code even while clients hold seats of its feature.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolFileInstalled {
    pub pool_id: String,
    pub sequence: u64,
}

/// `GET /v1/peer/hello`: what a peer knows, for bootstrapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    pub pool_id: String,
    pub server_id: String,
    /// True once the server belongs to a formed pool (its Raft log is not empty).
    pub initialized: bool,
    pub installed_sequence: Option<u64>,
    /// The Raft term of the server's vote, if it may vote (it holds its
    /// pool log). A server that lost its log learns from these answers the
    /// term below which a leader is stale. Older servers leave it out and
    /// count as not answering.
    #[serde(default)]
    pub term: Option<u64>,
}

/// `POST /v1/peer/report`: a server's in-use counts, sent to the leader
/// every quota renew interval; the answer renews the sender's quota lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerReport {
    pub server_id: String,
    /// Seats in use per feature.
    pub in_use: std::collections::BTreeMap<String, u32>,
    /// Per feature the sender serves only part of the codes of (a pool of
    /// masters, each serving its own host's slot code): the allocation its
    /// seats in use require, more than `in_use`. The leader counts this
    /// instead of `in_use` for what the sender may give away.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held: std::collections::BTreeMap<String, u32>,
    /// The allocation the seats its clients hold require, per feature: the
    /// seats counted in `in_use` less those only held back for a grant
    /// about to be handed over here or a temporary license being activated.
    /// A pool re-formed from a lost majority gives a survivor back this,
    /// never more. Absent from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients_hold: Option<std::collections::BTreeMap<String, u32>>,
    /// Grants this server checked in, or renewed after another server had
    /// (a fail-over conversion, a fail-back): the leader passes them to
    /// every other server, which drops its stale copy. At most
    /// [`SUPERSEDED_PER_MESSAGE_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<SupersededGrant>,
    /// The sender's run: a random number drawn at every start.
    #[serde(default)]
    pub boot: u64,
    /// The report's number in this run, from 1.
    #[serde(default)]
    pub report: u64,
    /// When it was sent, on the sender's monotonic clock: its quota runs
    /// `quota_lease_ms` from here if acknowledged.
    #[serde(default)]
    pub sent_ms: u64,
}

/// Most [`SupersededGrant`]s in one report or acknowledgement; the rest wait
/// for the next one, keeping both well under [`MAX_BODY_BYTES`].
pub const SUPERSEDED_PER_MESSAGE_MAX: usize = 400;

/// A grant whose copies on other servers are stale: a copy renewed for the
/// last time before heartbeat `renewal` is dropped; [`SupersededGrant::CHECKED_IN`]
/// drops every copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupersededGrant {
    pub grant_id: SharedText,
    pub renewal: u64,
}

impl SupersededGrant {
    /// The grant was checked in: no copy of it is needed anywhere.
    pub const CHECKED_IN: u64 = u64::MAX;
}

/// The leader's acknowledgement of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerReportAck {
    pub leader_id: String,
    /// The sender may issue only once it has applied the control log this far.
    pub applied_index_required: u64,
    /// Every server of the pool as the leader sees it.
    pub servers: Vec<PeerStatus>,
    /// Stale copies to drop: what other servers reported superseded since
    /// this server's last report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<SupersededGrant>,
}

/// `POST /v1/admin/master/revoke` (a master server, seed 003): stop
/// renewing the certificates of one production server run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeInstance {
    /// The run, as a VID certificate and `tessera master status` name it.
    pub instance: String,
}

/// The answer to [`RevokeInstance`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceRevoked {
    pub instance: String,
    /// False when the run had been revoked already.
    pub newly: bool,
    /// When its slot comes free: its last certificate's lease still running
    /// here, in milliseconds; `None` if it holds no slot now.
    pub slot_free_in_ms: Option<u64>,
}
