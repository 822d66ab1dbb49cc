//! The SDK itself as the load: each client is a [`tessera_client::Client`]
//! with the vendor's key, as a vendor's program embeds it. It checks out
//! with [`Client::checkout`] and checks in with [`SeatGuard::release`], over
//! the framed protocol, with every check a program makes: signed answers, a
//! connection bound to the server's answer key, the codes it holds. The load
//! generator's CPU per checkout is then the SDK's.

use anyhow::{Context, Result};
use tessera_client::{Client, ClientConfig, ClientError, ClientTls, SeatGuard, Trust};
use tessera_core::VendorPublicKey;

use crate::target::{Checkout, OpError, Session, Target};
use crate::tessera::{TesseraServer, FEATURE, VENDOR};
use crate::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// A Tessera server loaded by programs that use the SDK.
pub struct SdkTarget {
    pub server: TesseraServer,
    ca_pem: Vec<u8>,
    vendor_key: VendorPublicKey,
}

impl SdkTarget {
    /// The system's name, as in the report's table.
    pub const NAME: &'static str = "tessera, SDK";

    /// `server`, whose clients speak TLS (the SDK's only way to it).
    pub fn new(server: TesseraServer) -> Result<SdkTarget> {
        let ca_pem = server
            .ca_pem
            .clone()
            .context("the SDK speaks only TLS; the server was set up for plain HTTP")?;
        let vendor_key = VendorPublicKey::from_base64(VENDOR, &server.vendor_public_key)
            .map_err(|err| anyhow::anyhow!("the bench vendor key: {err}"))?;
        Ok(SdkTarget {
            server,
            ca_pem,
            vendor_key,
        })
    }
}

impl Target for SdkTarget {
    type Session = SdkSession;

    fn name(&self) -> &str {
        SdkTarget::NAME
    }

    fn session(&self, client_index: usize) -> Result<SdkSession> {
        // One program per load client: its own connections, nonces and
        // held codes.
        let mut config = ClientConfig::new([self.server.address.clone()]);
        config.client_id = format!("bench-sdk-{client_index}");
        config.user = "bench".into();
        config.host = "localhost".into();
        config.tls = ClientTls::PoolCa(self.ca_pem.clone());
        config.trust = Trust::Vendor(vec![self.vendor_key.clone()]);
        config.request_timeout = REQUEST_TIMEOUT;
        config.connect_timeout = CONNECT_TIMEOUT;
        // Nothing written to the user's cache.
        config.clock_file = None;
        config.temporary_dir = None;
        Ok(SdkSession {
            client: Client::new(config).context("cannot make the SDK client")?,
        })
    }

    fn check_alive(&self) -> Result<()> {
        self.server.check_running()
    }

    fn resident_bytes(&self) -> Option<u64> {
        self.server.resident_bytes()
    }
}

pub struct SdkSession {
    client: Client,
}

impl Session for SdkSession {
    type Hold = SeatGuard;

    async fn checkout(&mut self, _holder: u64) -> Result<Checkout<SeatGuard>, OpError> {
        match self.client.checkout(FEATURE, "1.0", 1).await {
            Ok(seat) => Ok(Checkout::Granted(seat)),
            Err(ClientError::NoSeatsAvailable { .. }) => Ok(Checkout::Denied),
            Err(err) => Err(op_error(err)),
        }
    }

    async fn checkin(&mut self, seat: SeatGuard) -> Result<(), OpError> {
        seat.release().await.map_err(op_error)
    }

    /// The SDK renews its seats itself, in the background: the heartbeat
    /// part of `compare` is measured with the load generator's own requests.
    async fn heartbeat(&mut self, _seat: &SeatGuard) -> Result<(), OpError> {
        Err(OpError::new(
            "unsupported",
            "the SDK renews its seats itself; heartbeats are not measured through it",
        ))
    }
}

fn op_error(err: ClientError) -> OpError {
    let kind = match &err {
        ClientError::NoServerReachable { .. } => "transport",
        ClientError::Rejected { code, .. } => code.as_str(),
        _ => "sdk",
    };
    OpError::new(kind, err.to_string())
}
