//! The grant proof: what binds a grant to the client it was issued to.
//!
//! Every server of a pool holds the pool's shared secret, the [`PoolKey`]
//! (a file of 64 hex characters, `pool_key_file` in tessera.toml). A server
//! that issues a grant answers, with it, a *proof*: HMAC-SHA256 under the
//! pool key of the grant's id, client id, feature and count
//! ([`GrantClaim`]). A heartbeat, a fail-over conversion and a check-in
//! must carry it back; any server of the pool can [`verify`] it, so a
//! client keeps its proof across fail-over, while someone who only read a
//! grant id and a client id (from `/v1/status`, or off the network) can
//! neither release nor renew nor convert the grant.
//!
//! What the MAC covers, byte for byte: each of the domain marker
//! [`GRANT_PROOF_DOMAIN`], the grant id, the client id and the feature as
//! its length (4 bytes, big-endian) followed by its UTF-8 bytes, then the
//! count (4 bytes, big-endian). The lengths make the encoding unambiguous
//! (`("ab", "c")` and `("a", "bc")` differ); the marker keeps the key from
//! proving anything but grants. On the wire the proof is the 32 bytes of
//! the MAC in base64url without padding (43 characters).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a pool key.
pub const POOL_KEY_BYTES: usize = 32;
/// Characters of a pool key file: the key in hex, optionally followed by a newline.
pub const POOL_KEY_HEX_CHARS: usize = 2 * POOL_KEY_BYTES;
/// Characters of a proof on the wire: 32 bytes in base64url without padding.
pub const GRANT_PROOF_CHARS: usize = 43;
/// First bytes of every message a pool key proves; a later format gets a new marker.
pub const GRANT_PROOF_DOMAIN: &[u8] = b"tessera-grant-proof-v1";

type HmacSha256 = Hmac<Sha256>;

/// The pool's shared secret. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct PoolKey {
    bytes: [u8; POOL_KEY_BYTES],
    /// The MAC already keyed, cloned for every proof.
    keyed: HmacSha256,
}

/// Why the text of a pool key file is not a pool key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolKeyError {
    #[error(
        "a pool key is {POOL_KEY_HEX_CHARS} hexadecimal characters (32 bytes), optionally followed \
         by a newline; this one has {chars} characters"
    )]
    WrongLength { chars: usize },
    #[error(
        "character {position} of the pool key is not a hexadecimal digit (0-9, a-f); a pool key \
         is {POOL_KEY_HEX_CHARS} of them"
    )]
    NotHex { position: usize },
}

impl PoolKey {
    pub fn from_bytes(bytes: [u8; POOL_KEY_BYTES]) -> PoolKey {
        let keyed =
            <HmacSha256 as Mac>::new_from_slice(&bytes).expect("HMAC takes a key of any length");
        PoolKey { bytes, keyed }
    }

    /// Reads the text of a pool key file: 64 hex characters, optionally
    /// followed by one newline (`\n` or `\r\n`); nothing else.
    pub fn parse(text: &str) -> Result<PoolKey, PoolKeyError> {
        let hex_text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        let chars = hex_text.chars().count();
        if chars != POOL_KEY_HEX_CHARS {
            return Err(PoolKeyError::WrongLength { chars });
        }
        if let Some(position) = hex_text.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(PoolKeyError::NotHex {
                position: position + 1,
            });
        }
        let mut bytes = [0u8; POOL_KEY_BYTES];
        hex::decode_to_slice(hex_text, &mut bytes).expect("64 hexadecimal digits are 32 bytes");
        Ok(PoolKey::from_bytes(bytes))
    }

    /// The text of a pool key file: the key in lowercase hex and a newline.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.bytes))
    }
}

impl fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolKey(…)")
    }
}

/// What a proof binds: the grant and its holder, as the issuing server
/// recorded them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantClaim<'a> {
    pub grant_id: &'a str,
    pub client_id: &'a str,
    pub feature: &'a str,
    pub count: u32,
}

/// A proof that the pool issued a grant to a client: the MAC of its
/// [`GrantClaim`] under the pool key. `Display` is its wire form. No `==`:
/// a proof is checked with [`verify`], in constant time.
#[derive(Clone)]
pub struct GrantProof([u8; 32]);

impl fmt::Display for GrantProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; GRANT_PROOF_CHARS];
        let written = BASE64URL
            .encode_slice(self.0, &mut text)
            .expect("a proof's 32 bytes fit its characters");
        f.write_str(std::str::from_utf8(&text[..written]).expect("base64 is ASCII"))
    }
}

impl fmt::Debug for GrantProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GrantProof(…)")
    }
}

/// Why a proof was refused. The reasons say nothing about the grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofRefused {
    #[error("the request carries no grant proof")]
    Missing,
    #[error("the grant proof is not {GRANT_PROOF_CHARS} characters of base64url")]
    Malformed,
    #[error("the grant proof does not match the grant")]
    Mismatch,
}

/// The MAC of `domain` and `claim`, keyed, ready for more fields.
fn keyed_mac(key: &PoolKey, domain: &[u8], claim: &GrantClaim) -> HmacSha256 {
    let mut mac = key.keyed.clone();
    let mut field = |bytes: &[u8]| {
        let len = u32::try_from(bytes.len()).expect("fields are bounded far below 4 GiB");
        mac.update(&len.to_be_bytes());
        mac.update(bytes);
    };
    field(domain);
    field(claim.grant_id.as_bytes());
    field(claim.client_id.as_bytes());
    field(claim.feature.as_bytes());
    mac.update(&claim.count.to_be_bytes());
    mac
}

/// The proof of `claim` under `key`.
pub fn prove(key: &PoolKey, claim: &GrantClaim) -> GrantProof {
    GrantProof(
        keyed_mac(key, GRANT_PROOF_DOMAIN, claim)
            .finalize()
            .into_bytes()
            .into(),
    )
}

/// Checks the wire form of a proof against `claim`, in constant time.
pub fn verify(key: &PoolKey, claim: &GrantClaim, proof: &str) -> Result<(), ProofRefused> {
    check_mac(keyed_mac(key, GRANT_PROOF_DOMAIN, claim), proof)
}

fn check_mac(mac: HmacSha256, proof: &str) -> Result<(), ProofRefused> {
    if proof.is_empty() {
        return Err(ProofRefused::Missing);
    }
    if proof.len() != GRANT_PROOF_CHARS {
        return Err(ProofRefused::Malformed);
    }
    let mut bytes = [0u8; GRANT_PROOF_CHARS];
    let decoded = BASE64URL
        .decode_slice(proof, &mut bytes)
        .map_err(|_| ProofRefused::Malformed)?;
    mac.verify_slice(&bytes[..decoded])
        .map_err(|_| ProofRefused::Mismatch)
}

/// First bytes of every holding proof.
pub const HOLDING_PROOF_DOMAIN: &[u8] = b"tessera-holding-proof-v1";

/// Where a grant was held when its server last answered for it: what a
/// client of a server that died shows the next server, so that the pool can
/// hand that very seat over (ARCHITECTURE.md, "Fail-over in a full pool").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldingClaim<'a> {
    pub grant: GrantClaim<'a>,
    /// The server that answered.
    pub server_id: &'a str,
    /// That server's run: a random number drawn at every start.
    pub boot: u64,
    /// The number of the next quota report that server was to send.
    pub report: u64,
    /// The copy's heartbeat number ([`crate::grant_proof`]'s renewal).
    pub renewal: u64,
    /// When the copy lapses on that server, on its monotonic clock.
    pub expires_ms: u64,
}

/// A holding proof: the MAC under the pool key of [`HOLDING_PROOF_DOMAIN`],
/// the grant claim as for [`prove`], then the server id (length-prefixed)
/// and boot, report, renewal and expiry (8 bytes each, big-endian).
fn holding_mac(key: &PoolKey, claim: &HoldingClaim) -> HmacSha256 {
    let mut mac = keyed_mac(key, HOLDING_PROOF_DOMAIN, &claim.grant);
    let id = claim.server_id.as_bytes();
    let len = u32::try_from(id.len()).expect("server ids are short");
    mac.update(&len.to_be_bytes());
    mac.update(id);
    for number in [claim.boot, claim.report, claim.renewal, claim.expires_ms] {
        mac.update(&number.to_be_bytes());
    }
    mac
}

/// The holding proof of `claim` under `key`.
pub fn prove_holding(key: &PoolKey, claim: &HoldingClaim) -> GrantProof {
    GrantProof(holding_mac(key, claim).finalize().into_bytes().into())
}

/// Checks a holding proof's wire form against `claim`, in constant time.
pub fn verify_holding(
    key: &PoolKey,
    claim: &HoldingClaim,
    proof: &str,
) -> Result<(), ProofRefused> {
    check_mac(holding_mac(key, claim), proof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn claim<'a>() -> GrantClaim<'a> {
        GrantClaim {
            grant_id: "6039d9bf67bf4103b23d468ff879fd50",
            client_id: "ws12-4411-9f3a",
            feature: "cad",
            count: 1,
        }
    }

    /// Pins the encoding: servers of one pool running different releases
    /// must compute the same proof (PROTOCOL.md gives this vector).
    #[test]
    fn test_vector() {
        let key = PoolKey::parse(KEY_HEX).unwrap();
        let proof = prove(&key, &claim()).to_string();
        assert_eq!(proof, "nGsPKtgjUOo6dSZpB-J8S87b0xSuZPMKF3VxAwmKSUE");
        assert_eq!(proof.len(), GRANT_PROOF_CHARS);
        assert_eq!(verify(&key, &claim(), &proof), Ok(()));
    }

    /// The holding proof's encoding, pinned as PROTOCOL.md gives it; each
    /// field counts, and a grant proof is no holding proof.
    #[test]
    fn holding_proofs_bind_every_field() {
        let key = PoolKey::parse(KEY_HEX).unwrap();
        let holding = HoldingClaim {
            grant: claim(),
            server_id: "A",
            boot: 7,
            report: 42,
            renewal: 3,
            expires_ms: 120_000,
        };
        let proof = prove_holding(&key, &holding).to_string();
        assert_eq!(proof, "xlEZHRCq7xxU_a-PZH3rnIe_LKidA0PciIcvQkC7pGo");
        assert_eq!(verify_holding(&key, &holding, &proof), Ok(()));
        let changed = [
            HoldingClaim {
                server_id: "B",
                ..holding
            },
            HoldingClaim { boot: 8, ..holding },
            HoldingClaim {
                report: 43,
                ..holding
            },
            HoldingClaim {
                renewal: 4,
                ..holding
            },
            HoldingClaim {
                expires_ms: 120_001,
                ..holding
            },
            HoldingClaim {
                grant: GrantClaim {
                    count: 2,
                    ..claim()
                },
                ..holding
            },
        ];
        for other in changed {
            assert_eq!(
                verify_holding(&key, &other, &proof),
                Err(ProofRefused::Mismatch),
                "{other:?}"
            );
        }
        let grant_proof = prove(&key, &claim()).to_string();
        assert_eq!(
            verify_holding(&key, &holding, &grant_proof),
            Err(ProofRefused::Mismatch)
        );
    }

    #[test]
    fn key_files_parse_or_say_what_is_wrong() {
        let lower = KEY_HEX.to_string();
        let cases: Vec<(String, Result<(), PoolKeyError>)> = vec![
            (lower.clone(), Ok(())),
            (format!("{lower}\n"), Ok(())),
            (format!("{lower}\r\n"), Ok(())),
            (lower.to_uppercase(), Ok(())),
            (String::new(), Err(PoolKeyError::WrongLength { chars: 0 })),
            (
                lower[..62].to_string(),
                Err(PoolKeyError::WrongLength { chars: 62 }),
            ),
            (
                format!("{lower}\n\n"),
                Err(PoolKeyError::WrongLength { chars: 65 }),
            ),
            (
                format!(" {lower}"),
                Err(PoolKeyError::WrongLength { chars: 65 }),
            ),
            (
                format!("{lower}00"),
                Err(PoolKeyError::WrongLength { chars: 66 }),
            ),
            (
                format!("g{}", &lower[1..]),
                Err(PoolKeyError::NotHex { position: 1 }),
            ),
            (
                format!("{}é", &lower[..63]),
                Err(PoolKeyError::NotHex { position: 64 }),
            ),
            (
                format!("{} ", &lower[..63]),
                Err(PoolKeyError::NotHex { position: 64 }),
            ),
        ];
        for (text, expected) in cases {
            let parsed = PoolKey::parse(&text).map(|_| ());
            assert_eq!(parsed, expected, "{text:?}");
        }
        let err = PoolKey::parse("abc").unwrap_err().to_string();
        assert!(
            err.contains("64 hexadecimal characters") && err.contains("has 3"),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_reads_back_and_debug_hides_the_key() {
        let key = PoolKey::parse(KEY_HEX).unwrap();
        assert_eq!(key.to_file_text(), format!("{KEY_HEX}\n"));
        let again = PoolKey::parse(&key.to_file_text()).unwrap();
        assert_eq!(
            prove(&again, &claim()).to_string(),
            prove(&key, &claim()).to_string()
        );
        assert!(!format!("{key:?}").contains("0001"));
        assert!(
            !format!("{:?}", prove(&key, &claim())).contains(&prove(&key, &claim()).to_string())
        );
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let key = PoolKey::parse(KEY_HEX).unwrap();
        let good = prove(&key, &claim()).to_string();
        let padded = format!("{good}=");
        let cases = [
            ("", ProofRefused::Missing),
            ("x", ProofRefused::Malformed),
            (padded.as_str(), ProofRefused::Malformed),
            (&good[..42], ProofRefused::Malformed),
            (
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
                ProofRefused::Malformed,
            ),
            (
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ProofRefused::Mismatch,
            ),
        ];
        for (proof, expected) in cases {
            assert_eq!(verify(&key, &claim(), proof), Err(expected), "{proof:?}");
        }
    }

    #[test]
    fn the_encoding_is_unambiguous() {
        let key = PoolKey::parse(KEY_HEX).unwrap();
        let a = GrantClaim {
            grant_id: "ab",
            client_id: "c",
            feature: "f",
            count: 1,
        };
        let b = GrantClaim {
            grant_id: "a",
            client_id: "bc",
            ..a
        };
        assert_ne!(prove(&key, &a).to_string(), prove(&key, &b).to_string());
    }

    fn field() -> impl Strategy<Value = String> {
        "[ -~]{1,40}"
    }

    proptest! {
        #[test]
        fn any_change_of_a_field_or_the_key_fails(
            key in any::<[u8; 32]>(),
            other_key in any::<[u8; 32]>(),
            grant_id in field(),
            client_id in field(),
            feature in field(),
            count in any::<u32>(),
            changed in field(),
            changed_count in any::<u32>(),
            which in 0usize..5,
        ) {
            let key = PoolKey::from_bytes(key);
            let claim = GrantClaim {
                grant_id: &grant_id,
                client_id: &client_id,
                feature: &feature,
                count,
            };
            let proof = prove(&key, &claim).to_string();
            prop_assert_eq!(verify(&key, &claim, &proof), Ok(()));
            let mut other = claim;
            let mut verifying_key = key.clone();
            let differs = match which {
                0 => { other.grant_id = &changed; changed != grant_id }
                1 => { other.client_id = &changed; changed != client_id }
                2 => { other.feature = &changed; changed != feature }
                3 => { other.count = changed_count; changed_count != count }
                _ => { verifying_key = PoolKey::from_bytes(other_key); other_key != key.bytes }
            };
            prop_assume!(differs);
            prop_assert_eq!(
                verify(&verifying_key, &other, &proof),
                Err(ProofRefused::Mismatch)
            );
        }

        #[test]
        fn any_change_of_the_proof_fails(
            key in any::<[u8; 32]>(),
            byte in 0usize..32,
            flip in 1u8..=255,
        ) {
            let key = PoolKey::from_bytes(key);
            let GrantProof(mut bytes) = prove(&key, &claim());
            bytes[byte] ^= flip;
            let tampered = GrantProof(bytes).to_string();
            prop_assert_eq!(verify(&key, &claim(), &tampered), Err(ProofRefused::Mismatch));
        }
    }
}
