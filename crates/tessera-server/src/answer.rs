//! What makes a server's answers checkable by a program (core
//! [`tessera_core::answer`]): its answer key, `answer.key` in the data
//! directory, made at first start and kept; and the signature it puts on
//! every grant, renewal and denial of a request that carried a nonce.
//!
//! A grant's signed answer carries the license codes the server serves for
//! the feature (its hard limit), so a program checks them against its own
//! vendor keys; a production server bound to a VID adds its chain (master
//! licenses and its current certificate, which names this answer key).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tessera_core::answer::{
    channel_text, AnswerFields, BatchPlace, ServerSecretKey, BATCH_SIZE_MAX, CHANNEL_BYTES,
    OUTCOME_GRANTED,
};
use tessera_core::master::vid_of_binding;
use tessera_core::merkle::Hash;
use tessera_core::SharedText;
use tessera_proto::{self as proto, CheckoutRequest, ErrorCode};

use crate::seams::Disk;
use crate::App;

/// The answer key's file in the data directory.
pub const ANSWER_KEY_FILE: &str = "answer.key";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    secret_key: String,
}

/// The answer key in `data_dir`, made from `fresh` (32 random bytes) and
/// written (mode 0600) if there is none.
pub(crate) fn load_key(
    disk: &dyn Disk,
    data_dir: &Path,
    fresh: [u8; 32],
) -> Result<ServerSecretKey, String> {
    let path = data_dir.join(ANSWER_KEY_FILE);
    let shown = path.display();
    match disk.read_file(&path) {
        Ok(Some(bytes)) => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| format!("{shown} is not UTF-8 text; delete it to make a new key"))?;
            let file: KeyFile = toml::from_str(text).map_err(|err| {
                format!("{shown} is not an answer key file ({err}); delete it to make a new key")
            })?;
            let key = ServerSecretKey::from_base64(&file.secret_key)
                .map_err(|err| format!("{shown}: {err}; delete it to make a new key"))?;
            if key.public().key_id() != file.key_id {
                return Err(format!(
                    "{shown}: key_id does not match the key; the file was edited (delete it to \
                     make a new key)"
                ));
            }
            Ok(key)
        }
        Ok(None) => {
            let key = ServerSecretKey::from_seed(fresh);
            let text = toml::to_string(&KeyFile {
                key_id: key.public().key_id(),
                secret_key: key.to_base64(),
            })
            .expect("a key file always serializes");
            disk.create_secret_file(&path, text.as_bytes())
                .map_err(|err| format!("cannot write {shown}: {err}"))?;
            Ok(key)
        }
        Err(err) => Err(format!("cannot read {shown}: {err}")),
    }
}

/// What a signed answer repeats of its request. Only a request with a
/// nonce is answered signed: a program that checks nothing costs nothing.
#[derive(Clone, Debug)]
pub(crate) struct Asked {
    nonce: String,
    client_id: SharedText,
    feature: SharedText,
    version: SharedText,
    count: u32,
    /// The SHA-256 of the codes the program holds for the feature, which
    /// its answer then leaves out where they are the ones served.
    codes_held: Option<String>,
}

impl Asked {
    pub(crate) fn of(request: &CheckoutRequest) -> Option<Asked> {
        Some(Asked {
            nonce: request.nonce.clone()?,
            client_id: request.client_id.clone(),
            feature: request.feature.clone(),
            version: request.version.clone(),
            count: request.count,
            codes_held: request.codes_held.clone(),
        })
    }

    fn fields(&self, app: &App, outcome: &str, unix_ms: i64) -> AnswerFields {
        AnswerFields {
            outcome: outcome.to_string(),
            pool_id: app.pool_id.to_string(),
            server_id: app.server_id.to_string(),
            hostid: app.hostid.to_string(),
            server_unix_ms: unix_ms,
            nonce: self.nonce.clone(),
            client_id: self.client_id.to_string(),
            feature: self.feature.to_string(),
            version: self.version.to_string(),
            count: self.count,
            ..AnswerFields::default()
        }
    }
}

/// How an answer is signed: alone (REST and framed `tessera/1`, whose
/// clients know no other form), in a batch (framed `tessera/2`), or, on a
/// framed `tessera/3` connection over TLS 1.3, in a batch over the
/// connection's TLS channel once and then not at all: the channel vouches
/// for every later answer on it (PROTOCOL.md, "Answers bound to the
/// channel").
#[derive(Clone, Debug)]
pub enum Signing {
    Alone,
    InBatches,
    Bound(Arc<Channel>),
}

/// A `tessera/3` connection's TLS channel: its exporter value, and whether
/// an answer signed over it has gone out (after which the program holds
/// the connection bound to this server's answer key).
#[derive(Debug)]
pub struct Channel {
    value: String,
    signed: AtomicBool,
}

impl Channel {
    /// The channel whose exporter gave `exported`
    /// ([`tessera_core::answer::CHANNEL_EXPORTER_LABEL`]).
    pub fn new(exported: &[u8; CHANNEL_BYTES]) -> Arc<Channel> {
        Arc::new(Channel {
            value: channel_text(exported),
            signed: AtomicBool::new(false),
        })
    }
}

/// One answer waiting for its batch's signature.
struct Pending {
    leaf: Hash,
    signed: tokio::sync::oneshot::Sender<(Arc<str>, BatchPlace)>,
}

/// Signs answers in batches: one Ed25519 signature over the Merkle root of
/// every answer that waits while the previous batch is being signed
/// ([`ServerSecretKey::sign_batch`]). Alone, an answer is a batch of one;
/// under load, one signature covers many, so signing stops growing with
/// the rate. Its thread, `tessera-sign`, starts with the first batch.
pub(crate) struct BatchSigner {
    key: ServerSecretKey,
    queue: OnceLock<std::sync::mpsc::Sender<Pending>>,
    /// Batches signed, and the answers in them (for `/metrics`).
    counts: Arc<BatchCounts>,
}

#[derive(Default)]
pub(crate) struct BatchCounts {
    pub(crate) batches: AtomicU64,
    pub(crate) answers: AtomicU64,
    /// Answers sent unsigned on a channel bound by an earlier one.
    pub(crate) bound: AtomicU64,
    /// Grants answered without their codes, which the program held.
    pub(crate) codes_held: AtomicU64,
}

impl BatchSigner {
    pub(crate) fn new(key: ServerSecretKey) -> BatchSigner {
        BatchSigner {
            key,
            queue: OnceLock::new(),
            counts: Arc::default(),
        }
    }

    /// Batches signed so far, the answers they covered, the answers sent
    /// unsigned on bound channels, and the grants sent without the codes
    /// the program held.
    pub(crate) fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.counts.batches.load(Ordering::Relaxed),
            self.counts.answers.load(Ordering::Relaxed),
            self.counts.bound.load(Ordering::Relaxed),
            self.counts.codes_held.load(Ordering::Relaxed),
        )
    }

    /// The signature of the batch that holds `leaf`, and its place in it;
    /// `None` when the signing thread cannot be had (then the answer is
    /// signed alone).
    async fn sign(&self, leaf: Hash) -> Option<(Arc<str>, BatchPlace)> {
        let queue = self.queue.get_or_init(|| self.start());
        let (signed, place) = tokio::sync::oneshot::channel();
        queue.send(Pending { leaf, signed }).ok()?;
        place.await.ok()
    }

    fn start(&self) -> std::sync::mpsc::Sender<Pending> {
        let (queue, waiting) = std::sync::mpsc::channel::<Pending>();
        let key = self.key.clone();
        let counts = self.counts.clone();
        let started = std::thread::Builder::new()
            .name("tessera-sign".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH_SIZE_MAX {
                        match waiting.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let leaves: Vec<Hash> = batch.iter().map(|pending| pending.leaf).collect();
                    let (signature, places) = key.sign_batch(&leaves);
                    counts.batches.fetch_add(1, Ordering::Relaxed);
                    counts
                        .answers
                        .fetch_add(leaves.len() as u64, Ordering::Relaxed);
                    let signature: Arc<str> = signature.into();
                    for (pending, place) in batch.into_iter().zip(places) {
                        let _ = pending.signed.send((signature.clone(), place));
                    }
                }
            });
        if let Err(err) = started {
            // The queue's receiver is gone with the closure: every answer
            // is then signed alone.
            tracing::warn!(
                "cannot start the answer-signing thread ({err}); answers are signed one by one"
            );
        }
        queue
    }
}

impl App {
    /// The signed answer of `grant`, the codes behind it (none where the
    /// program holds these very ones, `codes_held`), and the VID chain
    /// where one of them is bound to a VID. On a channel already bound
    /// nothing is signed, so the fields a signature covers are not built.
    pub(crate) async fn sign_grant(
        &self,
        asked: &Asked,
        grant: &proto::Grant,
        signing: Signing,
    ) -> proto::SignedAnswer {
        let unsigned = self.bound(&signing);
        let (codes, codes_sha256, held) = {
            let issuer = self.issuer();
            match issuer.licenses().feature(&grant.feature) {
                Some(feature) => (
                    feature.served_texts.clone(),
                    (!unsigned).then(|| feature.served_sha256.clone()),
                    asked.codes_held.as_deref() == Some(feature.served_sha256.as_str()),
                ),
                None => (Arc::default(), None, false),
            }
        };
        let chain = match codes
            .iter()
            .any(|code| vid_of_binding(&code.hostid).is_some())
        {
            true => self.vid_chain(),
            false => None,
        };
        let codes = match held {
            true => {
                self.batch_signer
                    .counts
                    .codes_held
                    .fetch_add(1, Ordering::Relaxed);
                Arc::default()
            }
            false => codes,
        };
        let unix_ms = self.clock.unix_ms();
        let signature = match unsigned {
            true => (String::new(), None),
            false => {
                let fields = AnswerFields {
                    grant_id: grant.grant_id.to_string(),
                    lease_ms: grant.lease_ms,
                    heartbeat_interval_ms: grant.heartbeat_interval_ms,
                    codes_sha256: codes_sha256
                        .unwrap_or_else(|| tessera_core::answer::codes_sha256([])),
                    ..asked.fields(self, OUTCOME_GRANTED, unix_ms)
                };
                self.signature(fields, signing).await
            }
        };
        self.signed_answer(unix_ms, signature, codes, chain)
    }

    /// The signed answer of a refusal with `code`.
    pub(crate) async fn sign_denial(
        &self,
        asked: &Asked,
        code: ErrorCode,
        signing: Signing,
    ) -> proto::SignedAnswer {
        let unix_ms = self.clock.unix_ms();
        let signature = match self.bound(&signing) {
            true => (String::new(), None),
            false => {
                let fields = asked.fields(self, code.as_str(), unix_ms);
                self.signature(fields, signing).await
            }
        };
        self.signed_answer(unix_ms, signature, Arc::default(), None)
    }

    /// Whether an answer goes out unsigned: on a `tessera/3` channel that
    /// an earlier signed answer bound (counted for `/metrics`).
    fn bound(&self, signing: &Signing) -> bool {
        let bound =
            matches!(signing, Signing::Bound(channel) if channel.signed.load(Ordering::Relaxed));
        if bound {
            self.batch_signer
                .counts
                .bound
                .fetch_add(1, Ordering::Relaxed);
        }
        bound
    }

    /// The signature over `fields` as `signing` asks, and its batch.
    async fn signature(
        &self,
        fields: AnswerFields,
        signing: Signing,
    ) -> (String, Option<proto::AnswerBatch>) {
        match signing {
            Signing::Alone => (self.answer_key.sign(&fields), None),
            Signing::InBatches => self.signed_in_batch(&fields).await,
            Signing::Bound(channel) => {
                let over_channel = AnswerFields {
                    channel: channel.value.clone(),
                    ..fields
                };
                let signed = self.signed_in_batch(&over_channel).await;
                channel.signed.store(true, Ordering::Relaxed);
                signed
            }
        }
    }

    /// The answer as the program gets it: this server's names shared,
    /// `signature` (empty on a bound channel) and the codes.
    fn signed_answer(
        &self,
        server_unix_ms: i64,
        (signature, batch): (String, Option<proto::AnswerBatch>),
        codes: Arc<[proto::LicenseCodeText]>,
        chain: Option<proto::AnswerChain>,
    ) -> proto::SignedAnswer {
        proto::SignedAnswer {
            server_key: self.answer_key_public.clone(),
            pool_id: self.pool_id.clone(),
            server_id: self.server_id.clone(),
            hostid: self.hostid.clone(),
            server_unix_ms,
            signature,
            codes,
            chain,
            batch,
        }
    }

    /// The signature of the batch that holds `fields`, and its place in it;
    /// signed alone when the signing thread cannot be had.
    async fn signed_in_batch(&self, fields: &AnswerFields) -> (String, Option<proto::AnswerBatch>) {
        let leaf = fields.leaf_hash(&self.answer_key_id);
        match self.batch_signer.sign(leaf).await {
            Some((signature, place)) => (
                signature.to_string(),
                Some(proto::AnswerBatch::from_core(&place)),
            ),
            None => (self.answer_key.sign(fields), None),
        }
    }

    fn vid_chain(&self) -> Option<proto::AnswerChain> {
        let vid = self.vid.lock().unwrap_or_else(|p| p.into_inner());
        vid.as_ref()
            .filter(|hold| hold.held())
            .and_then(|hold| hold.chain.clone())
    }
}
