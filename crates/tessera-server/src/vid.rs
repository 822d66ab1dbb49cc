//! A production server bound to a VID (seed 003): it holds one slot of its
//! VID at a master, through the SDK like any program holds a seat, and
//! serves codes bound to `vid:<VID>` only while the certificate that came
//! with the slot checks and has not lapsed.
//!
//! The certificate is valid for the slot's lease, measured from when this
//! server sent the request that got it (the SDK's `valid_until`). The
//! master's pool frees a silent holder's slot only after that lease has
//! certainly run out on the holder's clock, so the master never lends more
//! slots than its license's N that are valid at one instant. A clean stop
//! checks the slot in, which frees it at once.

use std::sync::Arc;
use std::time::Duration;

use tessera_client::{Client, ClientConfig, ClientTls, SeatGuard, SeatState};
use tessera_core::master::{MasterLicense, MasterLicenseFile};
use tessera_proto as proto;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::VidConfig;
use crate::App;

/// Pause before asking the masters again after a refusal or a lost slot.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Why a production server does not start.
#[derive(Debug, thiserror::Error)]
#[error("[vid]: {0}")]
pub struct VidStartError(String);

/// What the holder needs: the VID, the licenses its certificates chain to,
/// and a client of the masters.
pub struct VidSetup {
    pub vid: String,
    licenses: Vec<MasterLicense>,
    /// The licenses as this server's answers carry them in their chain.
    license_texts: Vec<proto::MasterLicenseText>,
    client: Client,
    instance: String,
    /// This server's answer key (base64), which its certificates must name.
    server_key: String,
}

/// Where the VID stands, for the license table and the status.
#[derive(Clone, Debug)]
pub struct VidHold {
    pub vid: String,
    /// Until when the certificate is valid; `None` when none checks.
    pub valid_until: Option<Instant>,
    pub master: Option<String>,
    pub reason: Option<String>,
    /// While a certificate checks: this server's chain to the vendor, which
    /// its signed answers carry (`crate::answer`).
    pub chain: Option<proto::AnswerChain>,
}

impl VidHold {
    /// The VID of `setup`, not held yet: the masters are being asked.
    pub fn asking(setup: &VidSetup) -> VidHold {
        VidHold {
            vid: setup.vid.clone(),
            valid_until: None,
            master: None,
            reason: Some("asking the masters for a certificate".into()),
            chain: None,
        }
    }

    pub fn held(&self) -> bool {
        self.valid_until.is_some_and(|until| Instant::now() < until)
    }

    pub fn status(&self) -> proto::VidStatus {
        let now = Instant::now();
        proto::VidStatus {
            vid: self.vid.clone(),
            held: self.held(),
            valid_for_ms: self.valid_until.map_or(0, |until| {
                until.saturating_duration_since(now).as_millis() as u64
            }),
            master: self.master.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// Reads and checks the master licenses of `[vid]` against the trusted
/// vendor keys: all must check and name one VID.
pub fn setup(
    config: &VidConfig,
    server_id: &str,
    vendors: &[tessera_core::VendorPublicKey],
    answer_key: &tessera_core::answer::ServerPublicKey,
) -> Result<VidSetup, VidStartError> {
    let refuse = |message: String| VidStartError(message);
    if config.masters.is_empty() || config.license_files.is_empty() {
        return Err(refuse(
            "`masters` and `license_files` each need at least one entry".into(),
        ));
    }
    let mut licenses = Vec::new();
    for path in &config.license_files {
        let text = std::fs::read_to_string(path)
            .map_err(|err| refuse(format!("cannot read {}: {err}", path.display())))?;
        let file = MasterLicenseFile::parse(&text)
            .map_err(|err| refuse(format!("{}: {err}", path.display())))?;
        file.license
            .verify(vendors)
            .map_err(|err| refuse(format!("{}: {err}", path.display())))?;
        licenses.push(file.license);
    }
    let vid = licenses[0].vid().to_string();
    if let Some(other) = licenses.iter().find(|l| l.vid() != vid) {
        return Err(refuse(format!(
            "the master licenses name two VIDs, `{vid}` and `{}`; a server holds one",
            other.vid()
        )));
    }
    let first = licenses[0].fields();
    let (servers, masters) = (first.servers, first.masters);
    if let Some(other) = licenses
        .iter()
        .find(|l| l.fields().servers != servers || l.fields().masters != masters)
    {
        return Err(refuse(format!(
            "master licenses {} and {} of VID `{vid}` differ in N or in how many masters \
             share it; the vendor signs one group alike",
            licenses[0].id(),
            other.id()
        )));
    }
    let needed = masters as usize / 2 + 1;
    if licenses.len() < needed {
        return Err(refuse(format!(
            "{masters} masters share VID `{vid}` and a certificate needs {needed} of their \
             signatures: list at least {needed} of their master licenses in `license_files`"
        )));
    }
    let tls = if config.plain_http {
        ClientTls::Plain
    } else {
        let Some(ca_file) = &config.ca_file else {
            return Err(refuse(
                "`ca_file` (the masters' pool CA) is missing; set it, or `plain_http = true` on \
                 loopback"
                    .into(),
            ));
        };
        let pem = std::fs::read(ca_file)
            .map_err(|err| refuse(format!("cannot read {}: {err}", ca_file.display())))?;
        ClientTls::PoolCa(pem)
    };
    let Some(token_file) = &config.token_file else {
        return Err(refuse(
            "`token_file` is missing: the masters lend slots only to a token of role \
             `production` of their pool (`production.token` of `tessera pool init \
             --production-token`)"
                .into(),
        ));
    };
    let token = std::fs::read_to_string(token_file)
        .map_err(|err| refuse(format!("cannot read {}: {err}", token_file.display())))?;
    let instance = format!(
        "{server_id}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut client_config = ClientConfig::new(config.masters.clone());
    client_config.client_id = instance.clone();
    client_config.user = server_id.to_string();
    client_config.tls = tls;
    client_config.token = Some(tessera_client::BearerToken::new(&token));
    // The certificate itself is checked against the master licenses (`check`).
    client_config.trust = tessera_client::Trust::AnyServer;
    client_config.server_key = Some(answer_key.to_base64());
    let client = Client::new(client_config).map_err(|err| refuse(err.to_string()))?;
    Ok(VidSetup {
        vid,
        license_texts: licenses.iter().map(MasterLicense::to_text).collect(),
        licenses,
        client,
        instance,
        server_key: answer_key.to_base64(),
    })
}

impl VidSetup {
    fn check(&self, grant: &proto::Grant, server_id: &str) -> Result<(), String> {
        check_certificate(&self.licenses, &self.vid, server_id, &self.instance, grant)?;
        let named = grant
            .certificate
            .as_ref()
            .and_then(|c| c.server_key.as_deref());
        if named != Some(self.server_key.as_str()) {
            return Err(
                "the certificate does not name this server's answer key, so programs could \
                 not check this server's answers back to the vendor"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The certificate that came with `grant`, checked: from a master whose
/// license this server has (already checked against the vendor's key), for
/// its VID, lent to this very run (`server_id`, `instance`), for the
/// slot's lease.
fn check_certificate(
    licenses: &[MasterLicense],
    vid: &str,
    server_id: &str,
    instance: &str,
    grant: &proto::Grant,
) -> Result<(), String> {
    let Some(wire) = &grant.certificate else {
        return Err(format!(
            "master `{}` lent a slot with no certificate; is it a master of VID {vid}?",
            grant.server_id
        ));
    };
    let certificate = crate::master::domain_certificate(wire)
        .map_err(|err| format!("the master's certificate is malformed: {err}"))?;
    let fields = certificate.fields();
    if !licenses.iter().any(|l| l.id() == fields.master_license) {
        return Err(format!(
            "the certificate names master license {}, which is not among `license_files`",
            fields.master_license
        ));
    }
    certificate
        .check_group(licenses)
        .map_err(|err| format!("the master's certificate does not check: {err}"))?;
    if fields.vid != vid {
        return Err(format!(
            "the certificate is for VID {}, not {vid}",
            fields.vid
        ));
    }
    if fields.server_id != server_id || fields.instance != instance {
        return Err(format!(
            "the certificate lends the VID to {} ({}), not to this server",
            fields.server_id, fields.instance
        ));
    }
    if fields.lifetime_ms != grant.lease_ms {
        return Err("the certificate's lifetime is not its slot's lease".into());
    }
    Ok(())
}

/// Holds the VID for the server's life; checks the slot in when `stop` is
/// notified.
pub(crate) async fn hold(app: Arc<App>, setup: VidSetup, stop: Arc<Notify>) {
    let feature = format!("{}{}", tessera_core::master::VID_BINDING_PREFIX, setup.vid);
    loop {
        let checkout = tokio::select! {
            answer = setup.client.checkout(&feature, "1.0", 1) => answer,
            () = stop.notified() => return,
        };
        match checkout {
            Ok(guard) => {
                if hold_slot(&app, &setup, guard, &stop).await {
                    return;
                }
            }
            Err(err) => app.set_vid(None, None, Some(format!("no certificate: {err}"))),
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_PAUSE) => {}
            () = stop.notified() => return,
        }
    }
}

/// Follows one slot until it is lost; true if told to stop (and checked in).
async fn hold_slot(app: &App, setup: &VidSetup, guard: SeatGuard, stop: &Notify) -> bool {
    let mut states = guard.subscribe();
    loop {
        let state = states.borrow_and_update().clone();
        let valid_until = match state {
            SeatState::Held {
                server_id,
                valid_until,
            } => match setup.check(&guard.grant(), &app.pool.server_id) {
                Ok(()) => {
                    if let Some(certificate) = guard.grant().certificate {
                        app.set_vid_chain(proto::AnswerChain {
                            master_licenses: setup.license_texts.clone(),
                            certificate,
                        });
                    }
                    app.set_vid(Some(valid_until), Some(server_id), None);
                    valid_until
                }
                Err(reason) => {
                    app.set_vid(None, Some(server_id), Some(reason));
                    let _ = guard.release().await;
                    return false;
                }
            },
            SeatState::Lost { reason } => {
                app.set_vid(
                    None,
                    None,
                    Some(format!("the certificate was not renewed: {reason}")),
                );
                return false;
            }
        };
        let lapse = async {
            if valid_until > Instant::now() {
                tokio::time::sleep_until(valid_until).await;
                // Not renewed in time: the table drops the VID's codes now,
                // whatever the SDK says later.
                app.set_vid(
                    None,
                    None,
                    Some("the certificate lapsed: no master renewed it in time".into()),
                );
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
            () = lapse => {}
            () = stop.notified() => {
                let _ = guard.release().await;
                app.set_vid(None, None, Some("the server stopped".into()));
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::master::{
        CertificateFields, MasterLicenseFields, MasterSecretKey, VidCertificate,
    };
    use tessera_core::{CivilDate, Expiry, VendorSecretKey};

    fn master() -> MasterSecretKey {
        MasterSecretKey::from_seed([9; 32])
    }

    fn license(vid: &str, key: &MasterSecretKey) -> MasterLicense {
        let vendor = VendorSecretKey::from_seed("acme", [7; 32]).unwrap();
        MasterLicense::sign(
            &vendor,
            MasterLicenseFields {
                id: format!("master-{vid}"),
                vendor: String::new(),
                vid: vid.into(),
                servers: 3,
                master_hostid: "mid-0011223344556677".into(),
                master_key: key.public(),
                issued: CivilDate::parse("2026-12-01").unwrap(),
                expiry: Expiry::parse("permanent").unwrap(),
                certificate_lifetime_s: 60,
                masters: 1,
            },
        )
        .unwrap()
    }

    fn certificate(key: &MasterSecretKey, vid: &str, instance: &str) -> VidCertificate {
        key.certify(CertificateFields {
            vid: vid.into(),
            master_license: "master-v1".into(),
            server_id: "P1".into(),
            instance: instance.into(),
            serial: 7,
            issued_unix_ms: 1_796_083_200_000,
            lifetime_ms: 60_000,
            server_key: None,
        })
        .unwrap()
    }

    fn grant(certificate: Option<proto::VidCertificate>) -> proto::Grant {
        proto::Grant {
            grant_id: "g".into(),
            feature: "vid:v1".into(),
            count: 1,
            server_id: "M".into(),
            lease_ms: 60_000,
            heartbeat_interval_ms: 15_000,
            servers: Vec::new().into(),
            converted: false,
            proof: proto::Proof("p".into()),
            holding: None,
            certificate,
            answer: None,
        }
    }

    fn check(grant: &proto::Grant) -> Result<(), String> {
        check_certificate(&[license("v1", &master())], "v1", "P1", "P1.run", grant)
    }

    #[test]
    fn a_certificate_for_this_run_from_a_licensed_master_checks() {
        let wire = crate::master::wire_certificate(&certificate(&master(), "v1", "P1.run"));
        check(&grant(Some(wire))).unwrap();
    }

    /// What a fake or careless master could send: each is refused with its reason.
    #[test]
    fn a_forged_misdirected_or_missing_certificate_is_refused() {
        let mut longer = crate::master::wire_certificate(&certificate(&master(), "v1", "P1.run"));
        longer.lifetime_ms *= 10;
        let mut bigger_lease = grant(Some(longer.clone()));
        bigger_lease.lease_ms = longer.lifetime_ms;
        let stranger = MasterSecretKey::from_seed([10; 32]);
        let cases = [
            (grant(None), "no certificate"),
            (bigger_lease, "does not check"),
            (
                grant(Some(crate::master::wire_certificate(&certificate(
                    &stranger, "v1", "P1.run",
                )))),
                "does not check",
            ),
            (
                grant(Some(crate::master::wire_certificate(&certificate(
                    &master(),
                    "v2",
                    "P1.run",
                )))),
                "VID",
            ),
            (
                grant(Some(crate::master::wire_certificate(&certificate(
                    &master(),
                    "v1",
                    "P1.other-run",
                )))),
                "not to this server",
            ),
        ];
        for (grant, needle) in cases {
            let err = check(&grant).unwrap_err();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
        let mut unknown = crate::master::wire_certificate(&certificate(&master(), "v1", "P1.run"));
        unknown.master_license = "master-elsewhere".into();
        let err = check(&grant(Some(unknown))).unwrap_err();
        assert!(err.contains("not among `license_files`"), "{err}");
    }
}
