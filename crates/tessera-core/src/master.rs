//! Seed 003's two signed documents: the master license and the VID
//! certificate.
//!
//! A **master license** is signed by the vendor. It names a virtual
//! identifier (VID), how many production servers may hold it at once (N),
//! the one physical host the master server may run on (its hostid) and the
//! master's own public key, which the administrator printed with
//! `tessera master init` on that host. A **VID certificate** is signed by
//! that master key: it lends the VID to one production server instance for
//! a bounded time. The chain a production server and its peers check is
//! vendor key → master license → certificate; license codes bound to
//! `vid:<VID>` are served only under a certificate that checks.
//!
//! Both documents sign a canonical text of `name=value` lines under a
//! versioned header, as license codes do (`license.rs`); PROTOCOL.md has
//! both layouts and test vectors.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::date::{CivilDate, Expiry};
use crate::license::{
    canonical, decode_32, decode_signature, key_id_hex, trusted_key, HostBinding, KeyLookup,
    LicenseCode, LicenseCodeText, Policy, UnsignedCode, VendorKeyId, VendorPublicKey,
    VendorSecretKey,
};
use crate::names::check_name;
use crate::version::Version;

/// Header of a master license's canonical form.
pub const MASTER_LICENSE_HEADER: &str = "tessera-master-license-v1";
/// Header of a VID certificate's canonical form.
pub const VID_CERTIFICATE_HEADER: &str = "tessera-vid-certificate-v1";
/// The prefix of a code's `hostid` that binds it to a VID.
pub const VID_BINDING_PREFIX: &str = "vid:";
/// Most production servers one master license may admit at once.
pub const MASTER_SERVERS_MAX: u32 = 1_000;
/// Most masters that may share one VID's N (a pool has at most 11 servers).
pub const MASTERS_MAX: u32 = 11;
/// Shortest and longest certificate lifetime a master license may set.
pub const CERTIFICATE_LIFETIME_S_MIN: u32 = 2;
pub const CERTIFICATE_LIFETIME_S_MAX: u32 = crate::license::LEASE_S_MAX;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterError {
    #[error("master license {id}: {message}")]
    InvalidField { id: String, message: String },
    #[error("master license file is not valid TOML with one [master_license] table: {0}")]
    Syntax(String),
    #[error(
        "master license {id} is signed by vendor key {key_id}, which is not trusted; add the \
         public key of vendor `{vendor}` to `vendors` in the config"
    )]
    UnknownVendorKey {
        id: String,
        vendor: String,
        key_id: String,
    },
    #[error("master license {id} names vendor `{vendor}` but key {key_id} belongs to vendor `{key_vendor}`")]
    VendorMismatch {
        id: String,
        vendor: String,
        key_id: String,
        key_vendor: String,
    },
    #[error(
        "master license {id} has a bad signature: it was changed after it was signed, or signed \
         with another key"
    )]
    BadSignature { id: String },
    #[error(
        "master license {id} is bound to host {bound}, and this machine's hostid is {actual}; \
         a master runs only on the physical host its license names"
    )]
    WrongHost {
        id: String,
        bound: String,
        actual: String,
    },
    #[error("master license {id} expired at the end of {last_day}")]
    Expired { id: String, last_day: CivilDate },
    #[error(
        "master license {id} names master key {licensed}, but this master's key is {actual}; \
         the license was signed for another master (run `tessera master init` on the licensed \
         host and have the vendor sign its key)"
    )]
    WrongMasterKey {
        id: String,
        licensed: String,
        actual: String,
    },
    #[error("master key: {0}")]
    BadKey(String),
    #[error(
        "master license {id}: {message}; the file must hold the slot code the vendor signed \
         with it (`tessera license sign --master` writes both)"
    )]
    SlotCode { id: String, message: String },
    #[error("VID certificate: {0}")]
    Certificate(#[from] CertificateError),
}

/// Why a VID certificate does not check.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("field {field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error(
        "the certificate is for VID `{certificate}`, and the master license it names is for \
         VID `{license}`"
    )]
    OtherVid {
        certificate: String,
        license: String,
    },
    #[error(
        "the certificate names master license {certificate}, not {license}, the one it was \
         checked against"
    )]
    OtherLicense {
        certificate: String,
        license: String,
    },
    #[error(
        "the certificate is signed by master key {certificate}, and master license {license_id} \
         names key {license}"
    )]
    OtherMasterKey {
        certificate: String,
        license: String,
        license_id: String,
    },
    #[error(
        "the certificate's signature does not check: it was changed after the master signed \
         it, or not signed by the master its license names"
    )]
    BadSignature,
    #[error(
        "the certificate is signed by {signed} of the {masters} masters that share VID `{vid}`; \
         it needs {needed}: a majority of them, in one pool"
    )]
    TooFewMasters {
        vid: String,
        signed: usize,
        needed: usize,
        masters: u32,
    },
}

/// The short id of a master's public key: the first 8 bytes of its SHA-256, in hex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MasterKeyId(String);

impl MasterKeyId {
    pub fn of(key: &VerifyingKey) -> MasterKeyId {
        MasterKeyId(key_id_hex(key))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MasterKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A master's public key, as printed by `tessera master init` and named in
/// its master license.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterPublicKey(VerifyingKey);

impl MasterPublicKey {
    pub fn from_base64(text: &str) -> Result<MasterPublicKey, MasterError> {
        let bytes =
            decode_32(text).map_err(|err| MasterError::BadKey(format!("public key: {err}")))?;
        VerifyingKey::from_bytes(&bytes)
            .map(MasterPublicKey)
            .map_err(|err| {
                MasterError::BadKey(format!("public key is not an Ed25519 point: {err}"))
            })
    }
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_bytes())
    }
    pub fn key_id(&self) -> MasterKeyId {
        MasterKeyId::of(&self.0)
    }
}

/// A master's signing key, kept in its data directory.
#[derive(Clone)]
pub struct MasterSecretKey(SigningKey);

impl fmt::Debug for MasterSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterSecretKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

impl MasterSecretKey {
    pub fn from_seed(seed: [u8; 32]) -> MasterSecretKey {
        MasterSecretKey(SigningKey::from_bytes(&seed))
    }
    pub fn from_base64(text: &str) -> Result<MasterSecretKey, MasterError> {
        let seed =
            decode_32(text).map_err(|err| MasterError::BadKey(format!("secret key: {err}")))?;
        Ok(MasterSecretKey::from_seed(seed))
    }
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }
    pub fn public(&self) -> MasterPublicKey {
        MasterPublicKey(self.0.verifying_key())
    }

    /// Signs a certificate for `fields`.
    pub fn certify(&self, fields: CertificateFields) -> Result<VidCertificate, CertificateError> {
        fields.validate()?;
        let mut certificate = VidCertificate {
            fields,
            master_key_id: self.public().key_id(),
            signature: Signature::from_bytes(&[0; 64]),
            cosignatures: Vec::new(),
        };
        certificate.signature = self.0.sign(certificate.canonical_form().as_bytes());
        Ok(certificate)
    }

    /// Co-signs another master's certificate under this master's license
    /// `license_id`.
    pub fn cosign(&self, certificate: &VidCertificate, license_id: &str) -> Cosignature {
        Cosignature {
            master_license: license_id.to_string(),
            master_key_id: self.public().key_id(),
            signature: self.0.sign(certificate.canonical_form().as_bytes()),
        }
    }
}

/// The fields of a master license, before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterLicenseFields {
    pub id: String,
    /// Set from the signing key by [`MasterLicense::sign`].
    pub vendor: String,
    /// The virtual identifier codes bind to as `hostid = "vid:<vid>"`.
    pub vid: String,
    /// How many production servers may hold a valid certificate at once.
    pub servers: u32,
    /// The hostid of the physical host the master runs on.
    pub master_hostid: String,
    /// The master's public key (`tessera master init`).
    pub master_key: MasterPublicKey,
    pub issued: CivilDate,
    pub expiry: Expiry,
    /// Longest a certificate lives without renewal: how long production
    /// servers ride out an absent master, and how long a silent server's
    /// slot stays taken.
    pub certificate_lifetime_s: u32,
    /// How many masters share the VID's N, each on its own host with its
    /// own license (1 to [`MASTERS_MAX`]): a certificate needs the
    /// signatures of a majority of them.
    pub masters: u32,
}

impl MasterLicenseFields {
    fn validate(&self) -> Result<(), MasterError> {
        let invalid = |message: String| MasterError::InvalidField {
            id: self.id.clone(),
            message,
        };
        check_name("id", &self.id).map_err(invalid)?;
        check_name("vendor", &self.vendor).map_err(invalid)?;
        check_name("vid", &self.vid).map_err(invalid)?;
        check_name("master_hostid", &self.master_hostid).map_err(invalid)?;
        if self.master_hostid == "any" || self.master_hostid.starts_with(VID_BINDING_PREFIX) {
            return Err(invalid(format!(
                "master_hostid is `{}`; a master is bound to one physical host's hostid",
                self.master_hostid
            )));
        }
        if self.servers == 0 || self.servers > MASTER_SERVERS_MAX {
            return Err(invalid(format!(
                "servers is {}; it must be 1 to {MASTER_SERVERS_MAX}",
                self.servers
            )));
        }
        if self.masters == 0 || self.masters > MASTERS_MAX {
            return Err(invalid(format!(
                "masters is {}; it must be 1 to {MASTERS_MAX}",
                self.masters
            )));
        }
        if !(CERTIFICATE_LIFETIME_S_MIN..=CERTIFICATE_LIFETIME_S_MAX)
            .contains(&self.certificate_lifetime_s)
        {
            return Err(invalid(format!(
                "certificate_lifetime_s is {}; it must be {CERTIFICATE_LIFETIME_S_MIN} to \
                 {CERTIFICATE_LIFETIME_S_MAX}",
                self.certificate_lifetime_s
            )));
        }
        if let Expiry::EndOf(last_day) = self.expiry {
            if last_day < self.issued {
                return Err(invalid(format!(
                    "expiry {last_day} is before issued {}",
                    self.issued
                )));
            }
        }
        Ok(())
    }
}

/// A vendor-signed master license. Its signature is checked by
/// [`MasterLicense::verify`]; nothing acts on one before that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterLicense {
    fields: MasterLicenseFields,
    key_id: VendorKeyId,
    signature: Signature,
}

/// The TOML shape of a master license file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MasterLicenseText {
    pub id: String,
    pub vendor: String,
    pub vid: String,
    pub servers: u32,
    pub master_hostid: String,
    pub master_key: String,
    pub issued: String,
    pub expiry: String,
    pub certificate_lifetime_s: u32,
    /// Omitted when 1: a master that shares its VID with no other.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub masters: u32,
    pub key_id: String,
    pub signature: String,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// A master license file: the `[master_license]` table and the slot code
/// signed with it, one `[[license]]` table for feature `vid:<VID>` with N
/// seats bound to the master's host. The master's pool serves that code like
/// any other, so the pool counts the slots: its seats are the VID's lendings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterLicenseFileText {
    master_license: MasterLicenseText,
    #[serde(default)]
    license: Vec<LicenseCodeText>,
}

/// A parsed master license file; nothing in it is verified yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterLicenseFile {
    pub license: MasterLicense,
    pub slot_codes: Vec<LicenseCode>,
}

impl MasterLicenseFile {
    pub fn parse(text: &str) -> Result<MasterLicenseFile, MasterError> {
        let file: MasterLicenseFileText =
            toml::from_str(text).map_err(|err| MasterError::Syntax(err.to_string()))?;
        let license = MasterLicense::from_text(&file.master_license)?;
        let slot_codes = file
            .license
            .iter()
            .map(LicenseCode::from_text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| MasterError::SlotCode {
                id: license.id().to_string(),
                message: err.to_string(),
            })?;
        Ok(MasterLicenseFile {
            license,
            slot_codes,
        })
    }

    pub fn write(&self) -> String {
        toml::to_string(&MasterLicenseFileText {
            master_license: self.license.to_text(),
            license: self.slot_codes.iter().map(LicenseCode::to_text).collect(),
        })
        .expect("a master license file always serializes")
    }

    /// Signs a master license and its slot code.
    pub fn sign(
        vendor: &VendorSecretKey,
        fields: MasterLicenseFields,
    ) -> Result<MasterLicenseFile, MasterError> {
        let license = MasterLicense::sign(vendor, fields)?;
        let slots =
            vendor
                .sign(license.slot_code_fields())
                .map_err(|err| MasterError::SlotCode {
                    id: license.id().to_string(),
                    message: err.to_string(),
                })?;
        Ok(MasterLicenseFile {
            license,
            slot_codes: vec![slots],
        })
    }

    /// The slot code, checked: signed by a trusted vendor key and exactly
    /// the one the master license implies.
    pub fn slot_code(&self, trusted: &[VendorPublicKey]) -> Result<&LicenseCode, MasterError> {
        let id = self.license.id().to_string();
        let [code] = self.slot_codes.as_slice() else {
            return Err(MasterError::SlotCode {
                id,
                message: format!("it holds {} slot codes, not one", self.slot_codes.len()),
            });
        };
        code.verify(trusted).map_err(|err| MasterError::SlotCode {
            id: id.clone(),
            message: err.to_string(),
        })?;
        if code.fields() != &self.license.slot_code_fields()
            || code.key_id() != self.license.key_id()
        {
            return Err(MasterError::SlotCode {
                id,
                message: format!(
                    "slot code {} does not match it (feature vid:{}, {} seats, bound to {})",
                    code.id(),
                    self.license.vid(),
                    self.license.fields.servers,
                    self.license.fields.master_hostid
                ),
            });
        }
        Ok(code)
    }
}

impl MasterLicense {
    /// Signs `fields` with the vendor's key (the vendor's name comes from the key).
    pub fn sign(
        vendor: &VendorSecretKey,
        mut fields: MasterLicenseFields,
    ) -> Result<MasterLicense, MasterError> {
        fields.vendor = vendor.vendor.clone();
        fields.validate()?;
        let mut license = MasterLicense {
            fields,
            key_id: vendor.public().key_id(),
            signature: Signature::from_bytes(&[0; 64]),
        };
        license.signature = vendor.sign_bytes(license.canonical_form().as_bytes());
        Ok(license)
    }

    pub fn fields(&self) -> &MasterLicenseFields {
        &self.fields
    }
    pub fn id(&self) -> &str {
        &self.fields.id
    }
    pub fn vid(&self) -> &str {
        &self.fields.vid
    }
    pub fn key_id(&self) -> &VendorKeyId {
        &self.key_id
    }

    /// The fields of the slot code this license implies: feature
    /// `vid:<VID>`, N seats, bound to the master's host, any version, a
    /// lease of the certificate lifetime with a heartbeat a quarter of it.
    pub fn slot_code_fields(&self) -> UnsignedCode {
        let f = &self.fields;
        UnsignedCode {
            id: format!("{}.slots", f.id),
            vendor: f.vendor.clone(),
            feature: format!("{VID_BINDING_PREFIX}{}", f.vid),
            version_min: Version::parse("0").expect("0 is a version"),
            version_max: Version::parse("999999").expect("999999 is a version"),
            seats: f.servers,
            issued: f.issued,
            expiry: f.expiry,
            hostid: HostBinding::Host(f.master_hostid.clone()),
            policy: Policy {
                borrow_threshold_percent: Policy::DEFAULT.borrow_threshold_percent,
                heartbeat_interval_s: (f.certificate_lifetime_s / 4).max(1),
                lease_s: f.certificate_lifetime_s,
            },
            temporary: None,
        }
    }

    /// The exact bytes the vendor's signature covers.
    pub fn canonical_form(&self) -> String {
        let f = &self.fields;
        canonical(
            MASTER_LICENSE_HEADER,
            &[
                ("id", f.id.clone()),
                ("vendor", f.vendor.clone()),
                ("key_id", self.key_id.to_string()),
                ("vid", f.vid.clone()),
                ("servers", f.servers.to_string()),
                ("master_hostid", f.master_hostid.clone()),
                ("master_key", f.master_key.to_base64()),
                ("issued", f.issued.to_string()),
                ("expiry", f.expiry.to_string()),
                (
                    "certificate_lifetime_s",
                    f.certificate_lifetime_s.to_string(),
                ),
            ]
            .into_iter()
            // A license of one master signs the form it always had.
            .chain((f.masters > 1).then(|| ("masters", f.masters.to_string())))
            .collect::<Vec<_>>(),
        )
    }

    /// Checks the vendor's signature against the trusted vendor keys.
    pub fn verify(&self, trusted: &[VendorPublicKey]) -> Result<(), MasterError> {
        let id = self.fields.id.clone();
        let key =
            trusted_key(trusted, &self.key_id, &self.fields.vendor).map_err(
                |lookup| match lookup {
                    KeyLookup::Unknown => MasterError::UnknownVendorKey {
                        id: id.clone(),
                        vendor: self.fields.vendor.clone(),
                        key_id: self.key_id.to_string(),
                    },
                    KeyLookup::OtherVendor(key_vendor) => MasterError::VendorMismatch {
                        id: id.clone(),
                        vendor: self.fields.vendor.clone(),
                        key_id: self.key_id.to_string(),
                        key_vendor,
                    },
                },
            )?;
        key.key
            .verify(self.canonical_form().as_bytes(), &self.signature)
            .map_err(|_| MasterError::BadSignature { id })
    }

    /// Everything a master checks before it serves: the vendor's signature,
    /// that this is the licensed host, that the license has not expired,
    /// and that the key it names is the master's own.
    pub fn check_for_master(
        &self,
        trusted: &[VendorPublicKey],
        hostid: &str,
        today: CivilDate,
        own_key: &MasterPublicKey,
    ) -> Result<(), MasterError> {
        self.verify(trusted)?;
        let f = &self.fields;
        if f.master_hostid != hostid {
            return Err(MasterError::WrongHost {
                id: f.id.clone(),
                bound: f.master_hostid.clone(),
                actual: hostid.to_string(),
            });
        }
        self.check_date(today)?;
        if f.master_key != *own_key {
            return Err(MasterError::WrongMasterKey {
                id: f.id.clone(),
                licensed: f.master_key.key_id().to_string(),
                actual: own_key.key_id().to_string(),
            });
        }
        Ok(())
    }

    /// Refuses a license whose last day has passed.
    pub fn check_date(&self, today: CivilDate) -> Result<(), MasterError> {
        match self.fields.expiry {
            Expiry::EndOf(last_day) if last_day < today => Err(MasterError::Expired {
                id: self.fields.id.clone(),
                last_day,
            }),
            _ => Ok(()),
        }
    }

    pub fn to_text(&self) -> MasterLicenseText {
        let f = &self.fields;
        MasterLicenseText {
            id: f.id.clone(),
            vendor: f.vendor.clone(),
            vid: f.vid.clone(),
            servers: f.servers,
            master_hostid: f.master_hostid.clone(),
            master_key: f.master_key.to_base64(),
            issued: f.issued.to_string(),
            expiry: f.expiry.to_string(),
            certificate_lifetime_s: f.certificate_lifetime_s,
            masters: f.masters,
            key_id: self.key_id.to_string(),
            signature: BASE64.encode(self.signature.to_bytes()),
        }
    }

    /// Parses the fields of a master license; does not check its signature.
    pub fn from_text(text: &MasterLicenseText) -> Result<MasterLicense, MasterError> {
        let invalid = |message: String| MasterError::InvalidField {
            id: text.id.clone(),
            message,
        };
        let fields = MasterLicenseFields {
            id: text.id.clone(),
            vendor: text.vendor.clone(),
            vid: text.vid.clone(),
            servers: text.servers,
            master_hostid: text.master_hostid.clone(),
            master_key: MasterPublicKey::from_base64(&text.master_key)
                .map_err(|err| invalid(format!("master_key: {err}")))?,
            issued: CivilDate::parse(&text.issued)
                .map_err(|err| invalid(format!("issued: {err}")))?,
            expiry: Expiry::parse(&text.expiry).map_err(|err| invalid(format!("expiry: {err}")))?,
            certificate_lifetime_s: text.certificate_lifetime_s,
            masters: text.masters,
        };
        fields.validate()?;
        check_name("key_id", &text.key_id).map_err(invalid)?;
        Ok(MasterLicense {
            fields,
            key_id: VendorKeyId::from_text(&text.key_id),
            signature: decode_signature(&text.signature).map_err(invalid)?,
        })
    }
}

/// The fields of a VID certificate, before the master signs them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFields {
    pub vid: String,
    /// The id of the master license the certificate was issued under.
    pub master_license: String,
    /// The production server the VID is lent to, and its run.
    pub server_id: String,
    pub instance: String,
    /// Counts the master's certificates, from 1; a renewal gets a new one.
    pub serial: u64,
    /// The master's clock when it signed (Unix ms), for people and for a
    /// peer's sanity check; validity itself is `lifetime_ms`.
    pub issued_unix_ms: i64,
    /// How long the certificate is valid, measured by the holder from the
    /// moment it sent the request this certificate answers.
    pub lifetime_ms: u64,
    /// The holder's answer key (base64 Ed25519 public key), which signs what
    /// it answers programs ([`crate::answer`]): the link that lets a program
    /// check a production server's answers back to the vendor. Absent (and
    /// left out of the canonical form) where the holder named none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
}

impl CertificateFields {
    fn validate(&self) -> Result<(), CertificateError> {
        let invalid = |field: &'static str, message: String| CertificateError::InvalidField {
            field,
            message,
        };
        check_name("vid", &self.vid).map_err(|m| invalid("vid", m))?;
        check_name("master_license", &self.master_license)
            .map_err(|m| invalid("master_license", m))?;
        check_name("server_id", &self.server_id).map_err(|m| invalid("server_id", m))?;
        check_name("instance", &self.instance).map_err(|m| invalid("instance", m))?;
        if self.serial == 0 {
            return Err(invalid("serial", "serials count from 1".into()));
        }
        let longest = u64::from(CERTIFICATE_LIFETIME_S_MAX) * 1_000;
        if self.lifetime_ms == 0 || self.lifetime_ms > longest {
            return Err(invalid(
                "lifetime_ms",
                format!("{} is not 1 to {longest}", self.lifetime_ms),
            ));
        }
        if let Some(key) = &self.server_key {
            crate::answer::ServerPublicKey::from_base64(key)
                .map_err(|err| invalid("server_key", err.to_string()))?;
        }
        Ok(())
    }
}

/// A VID certificate, signed by a master key, and by other masters of the
/// VID where several share it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VidCertificate {
    fields: CertificateFields,
    master_key_id: MasterKeyId,
    signature: Signature,
    cosignatures: Vec<Cosignature>,
}

/// Another master's signature of a certificate's canonical form, under its
/// own license of the same VID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    pub master_license: String,
    pub master_key_id: MasterKeyId,
    signature: Signature,
}

/// The JSON shape of a [`Cosignature`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CosignatureText {
    pub master_license: String,
    pub master_key_id: String,
    pub signature: String,
}

impl Cosignature {
    pub fn to_text(&self) -> CosignatureText {
        CosignatureText {
            master_license: self.master_license.clone(),
            master_key_id: self.master_key_id.to_string(),
            signature: BASE64.encode(self.signature.to_bytes()),
        }
    }

    /// Parses a co-signature; does not check it.
    pub fn from_text(text: &CosignatureText) -> Result<Cosignature, CertificateError> {
        let invalid = |field: &'static str, message: String| CertificateError::InvalidField {
            field,
            message,
        };
        check_name("cosignature master_license", &text.master_license)
            .map_err(|m| invalid("cosignatures", m))?;
        check_name("cosignature master_key_id", &text.master_key_id)
            .map_err(|m| invalid("cosignatures", m))?;
        Ok(Cosignature {
            master_license: text.master_license.clone(),
            master_key_id: MasterKeyId(text.master_key_id.clone()),
            signature: decode_signature(&text.signature).map_err(|m| invalid("cosignatures", m))?,
        })
    }
}

/// The JSON shape of a VID certificate on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VidCertificateText {
    #[serde(flatten)]
    pub fields: CertificateFields,
    pub master_key_id: String,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cosignatures: Vec<CosignatureText>,
}

impl VidCertificate {
    pub fn fields(&self) -> &CertificateFields {
        &self.fields
    }
    pub fn master_key_id(&self) -> &MasterKeyId {
        &self.master_key_id
    }
    pub fn cosignatures(&self) -> &[Cosignature] {
        &self.cosignatures
    }

    /// Adds another master's co-signature (unchecked; [`Self::check_group`]
    /// checks them).
    pub fn add_cosignature(&mut self, cosignature: Cosignature) {
        self.cosignatures.push(cosignature);
    }

    /// Checks the certificate against the master licenses of its VID that
    /// have each been verified against the vendor's key: the license it
    /// names and its master's signature ([`Self::verify`]), then, where
    /// several masters share the VID, that a majority of them signed it.
    /// A co-signature counts once per license, only under a license of the
    /// same VID, N and number of masters, and only if it checks.
    pub fn check_group(&self, licenses: &[MasterLicense]) -> Result<(), CertificateError> {
        let license = licenses
            .iter()
            .find(|l| l.id() == self.fields.master_license)
            .ok_or_else(|| CertificateError::OtherLicense {
                certificate: self.fields.master_license.clone(),
                license: licenses
                    .iter()
                    .map(|l| l.id().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        self.verify(license)?;
        let lf = license.fields();
        if lf.masters == 1 {
            return Ok(());
        }
        let canonical = self.canonical_form();
        let mut signed = std::collections::BTreeSet::from([lf.id.as_str()]);
        for cosignature in &self.cosignatures {
            let Some(other) = licenses
                .iter()
                .find(|l| l.id() == cosignature.master_license)
            else {
                continue;
            };
            let of = other.fields();
            let same_group =
                of.vid == lf.vid && of.servers == lf.servers && of.masters == lf.masters;
            if !same_group || of.master_key.key_id() != cosignature.master_key_id {
                continue;
            }
            if of
                .master_key
                .0
                .verify(canonical.as_bytes(), &cosignature.signature)
                .is_ok()
            {
                signed.insert(of.id.as_str());
            }
        }
        let needed = lf.masters as usize / 2 + 1;
        if signed.len() < needed {
            return Err(CertificateError::TooFewMasters {
                vid: lf.vid.clone(),
                signed: signed.len(),
                needed,
                masters: lf.masters,
            });
        }
        Ok(())
    }

    /// The exact bytes the master's signature covers.
    pub fn canonical_form(&self) -> String {
        let f = &self.fields;
        let mut lines = vec![
            ("vid", f.vid.clone()),
            ("master_license", f.master_license.clone()),
            ("master_key_id", self.master_key_id.to_string()),
            ("server_id", f.server_id.clone()),
            ("instance", f.instance.clone()),
            ("serial", f.serial.to_string()),
            ("issued_unix_ms", f.issued_unix_ms.to_string()),
            ("lifetime_ms", f.lifetime_ms.to_string()),
        ];
        // Absent, the line is left out, so certificates without it (and
        // their test vector) keep their canonical form.
        if let Some(key) = &f.server_key {
            lines.push(("server_key", key.clone()));
        }
        canonical(VID_CERTIFICATE_HEADER, &lines)
    }

    /// Checks the certificate against a master license that has itself been
    /// verified against the vendor's key: same VID, same license, signed by
    /// the master key the license names.
    pub fn verify(&self, license: &MasterLicense) -> Result<(), CertificateError> {
        let lf = license.fields();
        if self.fields.vid != lf.vid {
            return Err(CertificateError::OtherVid {
                certificate: self.fields.vid.clone(),
                license: lf.vid.clone(),
            });
        }
        if self.fields.master_license != lf.id {
            return Err(CertificateError::OtherLicense {
                certificate: self.fields.master_license.clone(),
                license: lf.id.clone(),
            });
        }
        let licensed = lf.master_key.key_id();
        if self.master_key_id != licensed {
            return Err(CertificateError::OtherMasterKey {
                certificate: self.master_key_id.to_string(),
                license: licensed.to_string(),
                license_id: lf.id.clone(),
            });
        }
        lf.master_key
            .0
            .verify(self.canonical_form().as_bytes(), &self.signature)
            .map_err(|_| CertificateError::BadSignature)
    }

    pub fn to_text(&self) -> VidCertificateText {
        VidCertificateText {
            fields: self.fields.clone(),
            master_key_id: self.master_key_id.to_string(),
            signature: BASE64.encode(self.signature.to_bytes()),
            cosignatures: self.cosignatures.iter().map(Cosignature::to_text).collect(),
        }
    }

    /// Parses a certificate's fields; does not check its signature.
    pub fn from_text(text: &VidCertificateText) -> Result<VidCertificate, CertificateError> {
        text.fields.validate()?;
        check_name("master_key_id", &text.master_key_id).map_err(|message| {
            CertificateError::InvalidField {
                field: "master_key_id",
                message,
            }
        })?;
        Ok(VidCertificate {
            fields: text.fields.clone(),
            master_key_id: MasterKeyId(text.master_key_id.clone()),
            signature: decode_signature(&text.signature).map_err(|message| {
                CertificateError::InvalidField {
                    field: "signature",
                    message,
                }
            })?,
            cosignatures: if text.cosignatures.len() > MASTERS_MAX as usize {
                return Err(CertificateError::InvalidField {
                    field: "cosignatures",
                    message: format!(
                        "{} co-signatures; a VID has at most {MASTERS_MAX} masters",
                        text.cosignatures.len()
                    ),
                });
            } else {
                text.cosignatures
                    .iter()
                    .map(Cosignature::from_text)
                    .collect::<Result<_, _>>()?
            },
        })
    }
}

/// The VID a code's `hostid` binds it to, if it is `vid:<VID>`.
pub fn vid_of_binding(hostid: &str) -> Option<&str> {
    hostid.strip_prefix(VID_BINDING_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor() -> VendorSecretKey {
        VendorSecretKey::from_seed("acme", [7; 32]).unwrap()
    }

    fn master() -> MasterSecretKey {
        MasterSecretKey::from_seed([9; 32])
    }

    fn fields() -> MasterLicenseFields {
        MasterLicenseFields {
            id: "master-1".into(),
            vendor: String::new(),
            vid: "acme-vid-1".into(),
            servers: 3,
            master_hostid: "mid-0011223344556677".into(),
            master_key: master().public(),
            issued: CivilDate::parse("2026-12-01").unwrap(),
            expiry: Expiry::parse("2027-12-31").unwrap(),
            certificate_lifetime_s: 3_600,
            masters: 1,
        }
    }

    fn license() -> MasterLicense {
        MasterLicense::sign(&vendor(), fields()).unwrap()
    }

    fn certificate_fields() -> CertificateFields {
        CertificateFields {
            vid: "acme-vid-1".into(),
            master_license: "master-1".into(),
            server_id: "a".into(),
            instance: "a-1f2e3d4c".into(),
            serial: 1,
            issued_unix_ms: 1_796_083_200_000,
            lifetime_ms: 3_600_000,
            server_key: None,
        }
    }

    #[test]
    fn the_test_vectors_hold() {
        // PROTOCOL.md quotes these: vendor seed [7; 32] ("acme"), master seed [9; 32].
        let license = license();
        assert_eq!(
            license.to_text().signature,
            "xnT5kwAjuKYa+yVPHOMhdydBJPkRxCwUisJdhczCmewdLMM/D8wIYLSp0x8cFSfSG+c5q5EA1ePkZUcX/Yo2Cw=="
        );
        let certificate = master().certify(certificate_fields()).unwrap();
        assert_eq!(
            certificate.to_text().signature,
            "9yzVfWVbjkGr0nbBGpg1758RaAFjNw/UXb9AKrn4+GG2mSxX4C8olkKx0wbeyZAXNOWFhDskqvFLzdD+ypMACw=="
        );
    }

    #[test]
    fn a_signed_license_checks_and_round_trips_through_its_file() {
        let file = MasterLicenseFile::sign(&vendor(), fields()).unwrap();
        let license = file.license.clone();
        let again = MasterLicenseFile::parse(&file.write()).unwrap();
        assert_eq!(again, file);
        let again = again.license;
        assert_eq!(again, license);
        again.verify(&[vendor().public()]).unwrap();
        again
            .check_for_master(
                &[vendor().public()],
                "mid-0011223344556677",
                CivilDate::parse("2027-06-01").unwrap(),
                &master().public(),
            )
            .unwrap();
    }

    #[test]
    fn a_changed_field_breaks_the_vendors_signature() {
        let mut text = license().to_text();
        text.servers = 30;
        let tampered = MasterLicense::from_text(&text).unwrap();
        assert_eq!(
            tampered.verify(&[vendor().public()]),
            Err(MasterError::BadSignature {
                id: "master-1".into()
            })
        );
    }

    #[test]
    fn a_master_refuses_another_host_an_expired_license_and_another_key() {
        let license = license();
        let trusted = [vendor().public()];
        let in_term = CivilDate::parse("2027-06-01").unwrap();
        let err = license
            .check_for_master(
                &trusted,
                "mid-ffffffffffffffff",
                in_term,
                &master().public(),
            )
            .unwrap_err();
        assert!(matches!(err, MasterError::WrongHost { .. }), "{err}");
        let err = license
            .check_for_master(
                &trusted,
                "mid-0011223344556677",
                CivilDate::parse("2028-01-01").unwrap(),
                &master().public(),
            )
            .unwrap_err();
        assert!(matches!(err, MasterError::Expired { .. }), "{err}");
        let other = MasterSecretKey::from_seed([10; 32]).public();
        let err = license
            .check_for_master(&trusted, "mid-0011223344556677", in_term, &other)
            .unwrap_err();
        assert!(matches!(err, MasterError::WrongMasterKey { .. }), "{err}");
        let stranger = VendorSecretKey::from_seed("acme", [8; 32])
            .unwrap()
            .public();
        let err = license
            .check_for_master(
                &[stranger],
                "mid-0011223344556677",
                in_term,
                &master().public(),
            )
            .unwrap_err();
        assert!(matches!(err, MasterError::UnknownVendorKey { .. }), "{err}");
    }

    #[test]
    fn bad_fields_are_refused_with_their_reason() {
        let vendor = vendor();
        for (change, needle) in [
            (
                Box::new(|f: &mut MasterLicenseFields| f.servers = 0) as Box<dyn Fn(&mut _)>,
                "servers is 0",
            ),
            (
                Box::new(|f: &mut MasterLicenseFields| f.master_hostid = "any".into()),
                "one physical host",
            ),
            (
                Box::new(|f: &mut MasterLicenseFields| f.master_hostid = "vid:x".into()),
                "one physical host",
            ),
            (
                Box::new(|f: &mut MasterLicenseFields| f.certificate_lifetime_s = 1),
                "certificate_lifetime_s is 1",
            ),
            (
                Box::new(|f: &mut MasterLicenseFields| f.vid = "has space".into()),
                "vid",
            ),
        ] {
            let mut fields = fields();
            change(&mut fields);
            let err = MasterLicense::sign(&vendor, fields)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        let err = MasterLicenseFile::parse("[master_license]\nid = 3\n").unwrap_err();
        assert!(matches!(err, MasterError::Syntax(_)), "{err}");
    }

    #[test]
    fn a_certificate_checks_only_against_its_own_license_and_master() {
        let license = license();
        let certificate = master().certify(certificate_fields()).unwrap();
        certificate.verify(&license).unwrap();
        let wire = serde_json::to_string(&certificate.to_text()).unwrap();
        let again =
            VidCertificate::from_text(&serde_json::from_str::<VidCertificateText>(&wire).unwrap())
                .unwrap();
        assert_eq!(again, certificate);

        // Tampered: a longer life than the master gave.
        let mut text = certificate.to_text();
        text.fields.lifetime_ms *= 2;
        let tampered = VidCertificate::from_text(&text).unwrap();
        assert_eq!(
            tampered.verify(&license),
            Err(CertificateError::BadSignature)
        );

        // Another VID, signed by the same master.
        let mut other = certificate_fields();
        other.vid = "acme-vid-2".into();
        let err = master()
            .certify(other)
            .unwrap()
            .verify(&license)
            .unwrap_err();
        assert!(matches!(err, CertificateError::OtherVid { .. }), "{err}");

        // A master the license does not name.
        let stranger = MasterSecretKey::from_seed([10; 32]);
        let err = stranger
            .certify(certificate_fields())
            .unwrap()
            .verify(&license)
            .unwrap_err();
        assert!(
            matches!(err, CertificateError::OtherMasterKey { .. }),
            "{err}"
        );

        // A forged key id over another master's signature.
        let mut forged = stranger.certify(certificate_fields()).unwrap().to_text();
        forged.master_key_id = master().public().key_id().to_string();
        let err = VidCertificate::from_text(&forged)
            .unwrap()
            .verify(&license)
            .unwrap_err();
        assert_eq!(err, CertificateError::BadSignature);
    }

    /// Three masters share a VID: master `i` from seed [10 + i; 32], its
    /// license `master-i` on host `mid-…0i`, all for N = 3.
    fn group() -> (Vec<MasterSecretKey>, Vec<MasterLicense>) {
        let keys: Vec<MasterSecretKey> = (1..=3u8)
            .map(|i| MasterSecretKey::from_seed([10 + i; 32]))
            .collect();
        let licenses = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let fields = MasterLicenseFields {
                    id: format!("master-{}", i + 1),
                    master_hostid: format!("mid-00112233445566{:02}", i + 1),
                    master_key: key.public(),
                    masters: 3,
                    ..fields()
                };
                MasterLicense::sign(&vendor(), fields).unwrap()
            })
            .collect();
        (keys, licenses)
    }

    #[test]
    fn a_shared_vids_certificate_needs_a_majority_of_its_masters() {
        let (keys, licenses) = group();
        // A license of one master signs the form it always had; of three, it says so.
        assert!(!license().canonical_form().contains("masters="));
        assert!(licenses[0].canonical_form().ends_with("masters=3\n"));
        let text = MasterLicenseFile::sign(&vendor(), licenses[0].fields().clone())
            .unwrap()
            .write();
        assert!(text.contains("masters = 3"), "{text}");
        assert!(!MasterLicenseFile::sign(&vendor(), fields())
            .unwrap()
            .write()
            .contains("masters"));

        let mut certificate = keys[0].certify(certificate_fields()).unwrap();
        let alone = certificate.check_group(&licenses).unwrap_err();
        assert_eq!(
            alone.to_string(),
            "the certificate is signed by 1 of the 3 masters that share VID `acme-vid-1`; it \
             needs 2: a majority of them, in one pool"
        );
        // The same master twice, or a forged co-signature, adds nobody.
        certificate.add_cosignature(keys[0].cosign(&certificate, "master-1"));
        let mut forged = keys[0].cosign(&certificate, "master-2");
        forged.master_key_id = keys[1].public().key_id();
        certificate.add_cosignature(forged);
        assert!(matches!(
            certificate.check_group(&licenses),
            Err(CertificateError::TooFewMasters { signed: 1, .. })
        ));
        // A co-signature under a license the holder does not list adds nobody.
        certificate.add_cosignature(keys[2].cosign(&certificate, "master-3"));
        assert!(certificate.check_group(&licenses[..2]).is_err());
        // Under the license it lists, it makes the majority; through the wire form too.
        certificate.check_group(&licenses).unwrap();
        let again = VidCertificate::from_text(&certificate.to_text()).unwrap();
        again.check_group(&licenses).unwrap();
        // Any change to the fields breaks every signature.
        let mut text = certificate.to_text();
        text.fields.lifetime_ms += 1;
        let changed = VidCertificate::from_text(&text).unwrap();
        assert_eq!(
            changed.check_group(&licenses),
            Err(CertificateError::BadSignature)
        );
        // A license of another group (another N) does not count.
        let other = MasterLicense::sign(
            &vendor(),
            MasterLicenseFields {
                servers: 30,
                ..licenses[2].fields().clone()
            },
        )
        .unwrap();
        assert!(certificate
            .check_group(&[licenses[0].clone(), licenses[1].clone(), other])
            .is_err());
        // More co-signatures than masters can exist are refused as malformed.
        let mut text = certificate.to_text();
        text.cosignatures = vec![text.cosignatures[0].clone(); 12];
        assert!(VidCertificate::from_text(&text)
            .unwrap_err()
            .to_string()
            .contains("12 co-signatures"));
    }

    #[test]
    fn codes_name_a_vid_with_the_vid_prefix() {
        assert_eq!(vid_of_binding("vid:acme-vid-1"), Some("acme-vid-1"));
        assert_eq!(vid_of_binding("mid-0011223344556677"), None);
        assert_eq!(vid_of_binding("any"), None);
    }

    /// The slot code a vendor signs with the master license is what the
    /// master's pool serves: feature `vid:<VID>`, N seats, the master's host.
    #[test]
    fn the_slot_code_is_the_licenses_n_seats_bound_to_the_master_host() {
        let file = MasterLicenseFile::sign(&vendor(), fields()).unwrap();
        let trusted = [vendor().public()];
        let code = file.slot_code(&trusted).unwrap();
        assert_eq!(code.feature(), "vid:acme-vid-1");
        assert_eq!(code.seats(), 3);
        assert_eq!(code.fields().hostid.to_string(), "mid-0011223344556677");
        assert_eq!(code.fields().policy.lease_s, 3_600);
        assert_eq!(code.fields().policy.heartbeat_interval_s, 900);
        // The same text read as a license file gives the slot code alone.
        let codes = LicenseCode::parse_file(&file.write()).unwrap();
        assert_eq!(codes, vec![code.clone()]);

        // The customer signs nothing: a slot code with more seats fails its
        // signature; a genuine code of another master license does not match.
        let mut text = code.to_text();
        text.seats = 30;
        let more = MasterLicenseFile {
            license: file.license.clone(),
            slot_codes: vec![LicenseCode::from_text(&text).unwrap()],
        };
        let err = more.slot_code(&trusted).unwrap_err().to_string();
        assert!(err.contains("bad signature"), "{err}");
        let mut bigger = fields();
        bigger.servers = 30;
        let other = MasterLicenseFile::sign(&vendor(), bigger).unwrap();
        let swapped = MasterLicenseFile {
            license: file.license.clone(),
            slot_codes: other.slot_codes.clone(),
        };
        let err = swapped.slot_code(&trusted).unwrap_err().to_string();
        assert!(err.contains("does not match it"), "{err}");
        let none = MasterLicenseFile {
            license: file.license,
            slot_codes: Vec::new(),
        };
        let err = none.slot_code(&trusted).unwrap_err().to_string();
        assert!(err.contains("0 slot codes"), "{err}");
    }
}
