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

use serde::{Deserialize, Serialize};
use tessera_core::answer::{AnswerFields, ServerSecretKey, OUTCOME_GRANTED};
use tessera_core::master::vid_of_binding;
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
    client_id: String,
    feature: String,
    version: String,
    count: u32,
}

impl Asked {
    pub(crate) fn of(request: &CheckoutRequest) -> Option<Asked> {
        Some(Asked {
            nonce: request.nonce.clone()?,
            client_id: request.client_id.clone(),
            feature: request.feature.clone(),
            version: request.version.clone(),
            count: request.count,
        })
    }

    fn fields(&self, app: &App, outcome: &str, unix_ms: i64) -> AnswerFields {
        AnswerFields {
            outcome: outcome.to_string(),
            pool_id: app.pool.pool_id.clone(),
            server_id: app.pool.server_id.clone(),
            hostid: app.hostid.clone(),
            server_unix_ms: unix_ms,
            nonce: self.nonce.clone(),
            client_id: self.client_id.clone(),
            feature: self.feature.clone(),
            version: self.version.clone(),
            count: self.count,
            ..AnswerFields::default()
        }
    }
}

impl App {
    /// The signed answer of `grant`, the codes behind it, and the VID chain
    /// where one of them is bound to a VID.
    pub(crate) fn sign_grant(&self, asked: &Asked, grant: &proto::Grant) -> proto::SignedAnswer {
        let (codes, codes_sha256) = {
            let issuer = self.issuer();
            match issuer.licenses().feature(&grant.feature) {
                Some(feature) => (feature.served_texts.clone(), feature.served_sha256.clone()),
                None => (Default::default(), tessera_core::answer::codes_sha256([])),
            }
        };
        let chain = match codes
            .iter()
            .any(|code| vid_of_binding(&code.hostid).is_some())
        {
            true => self.vid_chain(),
            false => None,
        };
        let unix_ms = self.clock.unix_ms();
        let fields = AnswerFields {
            grant_id: grant.grant_id.clone(),
            lease_ms: grant.lease_ms,
            heartbeat_interval_ms: grant.heartbeat_interval_ms,
            codes_sha256,
            ..asked.fields(self, OUTCOME_GRANTED, unix_ms)
        };
        self.signed(&fields, codes.as_ref().clone(), chain)
    }

    /// The signed answer of a refusal with `code`.
    pub(crate) fn sign_denial(&self, asked: &Asked, code: ErrorCode) -> proto::SignedAnswer {
        let fields = asked.fields(self, code.as_str(), self.clock.unix_ms());
        self.signed(&fields, Vec::new(), None)
    }

    fn signed(
        &self,
        fields: &AnswerFields,
        codes: Vec<proto::LicenseCodeText>,
        chain: Option<proto::AnswerChain>,
    ) -> proto::SignedAnswer {
        proto::SignedAnswer {
            server_key: self.answer_key_public.clone(),
            pool_id: fields.pool_id.clone(),
            server_id: fields.server_id.clone(),
            hostid: fields.hostid.clone(),
            server_unix_ms: fields.server_unix_ms,
            signature: self.answer_key.sign(fields),
            codes,
            chain,
        }
    }

    fn vid_chain(&self) -> Option<proto::AnswerChain> {
        let vid = self.vid.lock().unwrap_or_else(|p| p.into_inner());
        vid.as_ref()
            .filter(|hold| hold.held())
            .and_then(|hold| hold.chain.clone())
    }
}
