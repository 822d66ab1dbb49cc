//! The master server of seed 003: on one physical host, it lends a vendor's
//! virtual identifier (VID) to at most N production servers at once.
//!
//! A master is a Tessera server whose config names a master license file
//! (`master_license_file`). The file holds the vendor-signed master license
//! and its slot code: feature `vid:<VID>` with N seats, bound to the
//! master's host. The master's pool serves that code like any other, so the
//! pool's own guarantees count the lendings (never more than N held, through
//! crashes, restarts and clock drift; a clean stop frees a slot at once, a
//! silent holder's only when its lease has run out). What the master adds is
//! its key (`key.rs`, made by `tessera master init`) and the check at start
//! below: it serves only on the licensed host, with the licensed key, a
//! license that checks against a trusted vendor key and has not expired.

pub mod cosign;
pub mod key;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_core::master::{
    CertificateFields, MasterError, MasterLicense, MasterLicenseFile, MasterSecretKey,
    VidCertificate, VID_BINDING_PREFIX,
};
use tessera_core::CivilDate;
use tessera_proto as proto;

use crate::config::ServerConfig;
use crate::hostid::{self, Hostid};

/// Why a master does not start.
#[derive(Debug, thiserror::Error)]
#[error("master license {path}: {message}")]
pub struct MasterStartError {
    pub path: PathBuf,
    pub message: String,
}

/// What a master signs certificates with: its license and its key.
pub struct MasterSigner {
    license: MasterLicense,
    key: MasterSecretKey,
    /// The feature of the VID's slots, `vid:<VID>`.
    slot_feature: String,
    /// The next certificate's serial: from the clock at start, so a restart
    /// does not repeat serials, then one more per certificate.
    next_serial: AtomicU64,
}

impl MasterSigner {
    /// The feature of the VID's slots, `vid:<VID>`.
    pub fn slot_feature(&self) -> &str {
        &self.slot_feature
    }

    /// Refuses a checkout or renewal of a slot by a run the pool's state
    /// `control` records as revoked.
    pub fn check_not_revoked(
        &self,
        feature: &str,
        instance: &str,
        control: &tessera_core::control::ControlState,
    ) -> Result<(), crate::refusal::Refusal> {
        if feature == self.slot_feature() && control.is_revoked(instance) {
            return Err(crate::refusal::Refusal::new(
                proto::ErrorCode::LicenseNotServed,
                format!(
                    "run `{instance}` was revoked by the master's administrator: its certificate \
                     for VID {} is not renewed",
                    self.license.vid()
                ),
            ));
        }
        Ok(())
    }

    /// How many other masters of its VID must co-sign each certificate it
    /// signs: a majority of the VID's masters, less itself.
    pub fn cosignatures_needed(&self) -> usize {
        self.license.fields().masters as usize / 2
    }

    /// Co-signs `wire`, a certificate another master of this pool signed
    /// under its own license of the same VID (`POST /v1/peer/cosign`).
    pub fn cosign(
        &self,
        wire: &proto::VidCertificate,
    ) -> Result<proto::Cosignature, crate::refusal::Refusal> {
        let refuse = |message: String| {
            crate::refusal::Refusal::new(proto::ErrorCode::MalformedRequest, message)
        };
        let own = self.license.fields();
        if own.masters < 2 {
            return Err(refuse(format!(
                "master license {} shares VID {} with no other master",
                own.id, own.vid
            )));
        }
        if wire.vid != own.vid || wire.master_license == own.id {
            return Err(refuse(format!(
                "this master co-signs only the certificates of VID {} that another master of \
                 its pool signed",
                own.vid
            )));
        }
        let longest_ms = u64::from(own.certificate_lifetime_s) * 1_000;
        if wire.lifetime_ms > longest_ms {
            return Err(refuse(format!(
                "the certificate lives {} ms, longer than the VID's {longest_ms}",
                wire.lifetime_ms
            )));
        }
        let certificate = domain_certificate(wire).map_err(|err| refuse(err.to_string()))?;
        let text = self.key.cosign(&certificate, &own.id).to_text();
        Ok(proto::Cosignature {
            master_license: text.master_license,
            master_key_id: text.master_key_id,
            signature: text.signature,
        })
    }

    /// The certificate for a grant of `feature` to `instance` of production
    /// server `server_id`, valid for the grant's lease; `None` unless
    /// `feature` is this master's VID.
    pub fn certify(
        &self,
        feature: &str,
        server_id: &str,
        instance: &str,
        lease_ms: u64,
        unix_ms: i64,
        server_key: Option<&str>,
    ) -> Option<proto::VidCertificate> {
        if feature != self.slot_feature() {
            return None;
        }
        let fields = CertificateFields {
            vid: self.license.vid().to_string(),
            master_license: self.license.id().to_string(),
            server_id: server_id.to_string(),
            instance: instance.to_string(),
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            issued_unix_ms: unix_ms,
            lifetime_ms: lease_ms,
            server_key: server_key.map(str::to_string),
        };
        match self.key.certify(fields) {
            Ok(certificate) => Some(wire_certificate(&certificate)),
            Err(err) => {
                tracing::warn!("no certificate for `{server_id}` ({instance}): {err}");
                None
            }
        }
    }
}

pub fn wire_certificate(certificate: &VidCertificate) -> proto::VidCertificate {
    proto::VidCertificate::from_core(certificate)
}

pub fn domain_certificate(
    wire: &proto::VidCertificate,
) -> Result<VidCertificate, tessera_core::master::CertificateError> {
    wire.to_core()
}

/// For a server whose config names a master license file: the license,
/// checked whole (vendor signature, this machine's hostid, expiry, the key
/// in the data directory, the slot code), and the key to sign with. `None`
/// for any other server.
pub fn check_at_start(
    config: &ServerConfig,
    today: CivilDate,
    unix_ms: i64,
) -> Result<Option<MasterSigner>, MasterStartError> {
    let Some(path) = &config.master_license_file else {
        return Ok(None);
    };
    let refuse = |message: String| MasterStartError {
        path: path.clone(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|err| refuse(format!("cannot read it: {err}")))?;
    let file = MasterLicenseFile::parse(&text).map_err(|err| refuse(err.to_string()))?;
    let hostid = match hostid::inspect() {
        Hostid::Stable { hostid, .. } => hostid,
        Hostid::Refused { reason } => {
            return Err(refuse(format!(
                "a master runs only on a physical host with a stable hostid, and {reason}"
            )))
        }
    };
    let secret = key::read(&config.data_dir).map_err(|err| {
        refuse(format!(
            "{err}; run `tessera master init --data-dir {}` on this host first",
            config.data_dir.display()
        ))
    })?;
    let own_key = secret.public();
    let check = |file: &MasterLicenseFile| -> Result<(), MasterError> {
        file.license
            .check_for_master(&config.vendors, &hostid, today, &own_key)?;
        file.slot_code(&config.vendors)?;
        Ok(())
    };
    check(&file).map_err(|err| refuse(err.to_string()))?;
    let masters = file.license.fields().masters;
    tracing::info!(
        "master of VID {} for {} production servers (license {}{})",
        file.license.vid(),
        file.license.fields().servers,
        file.license.id(),
        if masters > 1 {
            format!(
                "; one of {masters} masters, each certificate co-signed by {} more",
                masters / 2
            )
        } else {
            String::new()
        }
    );
    Ok(Some(MasterSigner {
        slot_feature: format!("{VID_BINDING_PREFIX}{}", file.license.vid()),
        license: file.license,
        key: secret,
        next_serial: AtomicU64::new(u64::try_from(unix_ms).unwrap_or(0).max(1)),
    }))
}
