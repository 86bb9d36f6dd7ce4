//! The signing keys as an operator writes them: the `--jwt-keys-file` format (private
//! JWKs, one of them active), its validation, the v1 secret seen as a key set of one,
//! and the JWKs `tether keys generate` prints.
//!
//! Each key is pinned to the one algorithm its `kty` allows (`oct`: HS256, `OKP`
//! Ed25519: EdDSA), so no header can make an Ed25519 public key serve as an HMAC secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;

/// HMAC secrets shorter than this are refused (RFC 7518 3.2: at least the hash's size).
pub const MIN_HMAC_BYTES: usize = 32;
const MAX_KID_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl KeyAlgorithm {
    pub fn jwt_name(self) -> &'static str {
        match self {
            KeyAlgorithm::Hs256 => "HS256",
            KeyAlgorithm::EdDsa => "EdDSA",
        }
    }
}

/// One validated key.
#[derive(Clone)]
pub struct KeyMaterial {
    pub kid: String,
    pub secret: KeySecret,
}

#[derive(Clone)]
pub enum KeySecret {
    Hmac(Vec<u8>),
    /// The 32-byte seed (`d`) and the public key derived from it (`x`).
    Ed25519 {
        seed: [u8; 32],
        public: [u8; 32],
    },
}

impl KeyMaterial {
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.secret {
            KeySecret::Hmac(_) => KeyAlgorithm::Hs256,
            KeySecret::Ed25519 { .. } => KeyAlgorithm::EdDsa,
        }
    }

    /// The private JWK, as a key file holds it.
    pub fn to_private_jwk(&self) -> PrivateJwk {
        let mut jwk = PrivateJwk {
            kid: self.kid.clone(),
            alg: Some(self.algorithm().jwt_name().to_owned()),
            ..PrivateJwk::default()
        };
        match &self.secret {
            KeySecret::Hmac(secret) => {
                jwk.kty = "oct".into();
                jwk.k = Some(URL_SAFE_NO_PAD.encode(secret));
            }
            KeySecret::Ed25519 { seed, public } => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.d = Some(URL_SAFE_NO_PAD.encode(seed));
                jwk.x = Some(URL_SAFE_NO_PAD.encode(public));
            }
        }
        jwk
    }

    /// The public JWK the JWKS route publishes; None for an HMAC key, which has no
    /// public half.
    pub fn public_jwk(&self) -> Option<serde_json::Value> {
        let KeySecret::Ed25519 { public, .. } = &self.secret else { return None };
        Some(serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }))
    }
}

/// A validated key set: every key verifies, the active one signs.
#[derive(Clone)]
pub struct KeySet {
    pub keys: Vec<KeyMaterial>,
    pub active: usize,
}

impl KeySet {
    /// The v1 `--jwt-secret-file` secret as a set of one HS256 key with its v1 `kid`.
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<KeySet> {
        anyhow::ensure!(secret.len() >= MIN_HMAC_BYTES, "the JWT secret must be at least 32 bytes");
        Ok(KeySet {
            keys: vec![KeyMaterial { kid: v1_key_id(secret), secret: KeySecret::Hmac(secret.to_vec()) }],
            active: 0,
        })
    }

    pub fn active(&self) -> &KeyMaterial {
        &self.keys[self.active]
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.kid.as_str()).collect()
    }

    pub fn read(path: &Path) -> anyhow::Result<KeySet> {
        let text = std::fs::read(path)
            .map_err(|error| anyhow::anyhow!("cannot read the key file {}: {error}", path.display()))?;
        KeySet::parse(&text).map_err(|error| anyhow::anyhow!("the key file {}: {error:#}", path.display()))
    }

    pub fn parse(text: &[u8]) -> anyhow::Result<KeySet> {
        let file: KeyFile = serde_json::from_slice(text)?;
        let mut seen = HashSet::new();
        let mut keys = Vec::with_capacity(file.keys.len());
        for jwk in &file.keys {
            let key = jwk.validate()?;
            anyhow::ensure!(seen.insert(key.kid.clone()), "the kid {:?} appears twice", key.kid);
            keys.push(key);
        }
        let active = keys
            .iter()
            .position(|key| key.kid == file.active)
            .ok_or_else(|| anyhow::anyhow!("the active kid {:?} is not among the keys", file.active))?;
        Ok(KeySet { keys, active })
    }
}

/// `{"active": "<kid>", "keys": [<private JWK>, ...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    active: String,
    keys: Vec<PrivateJwk>,
}

/// A JWK with its private part, only the members Tether reads; `use`, `key_ops` and
/// the like may be present and are ignored.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PrivateJwk {
    pub kty: String,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
}

impl PrivateJwk {
    fn validate(&self) -> anyhow::Result<KeyMaterial> {
        let kid = &self.kid;
        anyhow::ensure!(
            !kid.is_empty() && kid.chars().count() <= MAX_KID_CHARS,
            "a kid must have 1-{MAX_KID_CHARS} characters"
        );
        let decode = |field: &str, value: &Option<String>| -> anyhow::Result<Vec<u8>> {
            let value = value.as_deref().ok_or_else(|| anyhow::anyhow!("key {kid:?} has no {field:?}"))?;
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| anyhow::anyhow!("key {kid:?}: {field:?} is not base64url without padding"))
        };
        let (secret, algorithm) = match self.kty.as_str() {
            "oct" => {
                let secret = decode("k", &self.k)?;
                anyhow::ensure!(
                    secret.len() >= MIN_HMAC_BYTES,
                    "key {kid:?}: an HMAC key must have at least {MIN_HMAC_BYTES} bytes"
                );
                (KeySecret::Hmac(secret), KeyAlgorithm::Hs256)
            }
            "OKP" => {
                anyhow::ensure!(
                    self.crv.as_deref() == Some("Ed25519"),
                    "key {kid:?}: the only OKP curve is Ed25519"
                );
                let seed: [u8; 32] = decode("d", &self.d)?
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("key {kid:?}: \"d\" must be 32 bytes"))?;
                let public = ed25519_public(&seed);
                if self.x.is_some() {
                    anyhow::ensure!(
                        decode("x", &self.x)? == public,
                        "key {kid:?}: \"x\" is not the public key of \"d\""
                    );
                }
                (KeySecret::Ed25519 { seed, public }, KeyAlgorithm::EdDsa)
            }
            other => anyhow::bail!("key {kid:?}: kty {other:?} is not supported (oct or OKP)"),
        };
        if let Some(alg) = &self.alg {
            anyhow::ensure!(
                alg == algorithm.jwt_name(),
                "key {kid:?}: alg {alg:?} does not fit kty {:?} (expected {})",
                self.kty,
                algorithm.jwt_name()
            );
        }
        Ok(KeyMaterial { kid: kid.clone(), secret })
    }
}

/// A fresh key, with a random `kid` unless one is given.
pub fn generate(algorithm: KeyAlgorithm, kid: Option<String>) -> KeyMaterial {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let kid = kid.unwrap_or_else(|| {
        let mut id = [0u8; 9];
        rand::rng().fill_bytes(&mut id);
        URL_SAFE_NO_PAD.encode(id)
    });
    let secret = match algorithm {
        KeyAlgorithm::Hs256 => KeySecret::Hmac(bytes.to_vec()),
        KeyAlgorithm::EdDsa => KeySecret::Ed25519 { seed: bytes, public: ed25519_public(&bytes) },
    };
    KeyMaterial { kid, secret }
}

fn ed25519_public(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// The PKCS#8 v1 form of an Ed25519 seed (RFC 8410), which is what jsonwebtoken's
/// signer takes: a fixed 16-byte prefix, then the seed.
pub fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    [&PREFIX[..], seed].concat()
}

/// The v1 `kid`: names the secret without revealing it, so that tokens issued under
/// `--jwt-secret-file` stay valid under the key file made from it.
pub fn v1_key_id(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(keys: &[serde_json::Value], active: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"active": active, "keys": keys})).unwrap()
    }

    fn jwk(key: &KeyMaterial) -> serde_json::Value {
        serde_json::to_value(key.to_private_jwk()).unwrap()
    }

    #[test]
    fn generated_keys_read_back_with_their_algorithms() {
        let hmac = generate(KeyAlgorithm::Hs256, Some("h1".into()));
        let ed = generate(KeyAlgorithm::EdDsa, None);
        let set = KeySet::parse(&file(&[jwk(&hmac), jwk(&ed)], &ed.kid)).unwrap();
        assert_eq!(set.kids(), ["h1", ed.kid.as_str()]);
        assert_eq!(set.active().algorithm(), KeyAlgorithm::EdDsa);
        assert!(hmac.public_jwk().is_none(), "an HMAC key has no public half");
        assert_eq!(ed.public_jwk().unwrap()["alg"], "EdDSA");
    }

    #[test]
    fn every_malformed_file_is_refused_with_a_reason() {
        let hmac = generate(KeyAlgorithm::Hs256, Some("h1".into()));
        let ed = generate(KeyAlgorithm::EdDsa, Some("e1".into()));
        let mut short = jwk(&hmac);
        short["k"] = URL_SAFE_NO_PAD.encode([1u8; 31]).into();
        let mut wrong_alg = jwk(&ed);
        wrong_alg["alg"] = "HS256".into();
        let mut hmac_as_eddsa = jwk(&hmac);
        hmac_as_eddsa["alg"] = "EdDSA".into();
        let mut wrong_x = jwk(&ed);
        wrong_x["x"] = URL_SAFE_NO_PAD.encode([9u8; 32]).into();
        let mut other_curve = jwk(&ed);
        other_curve["crv"] = "X25519".into();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("duplicate kid", file(&[jwk(&hmac), jwk(&hmac)], "h1")),
            ("active missing", file(&[jwk(&hmac)], "nope")),
            ("short HMAC key", file(&[short], "h1")),
            ("EdDSA key named HS256", file(&[wrong_alg], "e1")),
            ("HMAC key named EdDSA", file(&[hmac_as_eddsa], "h1")),
            ("x not of d", file(&[wrong_x], "e1")),
            ("X25519", file(&[other_curve], "e1")),
            ("RSA", file(&[serde_json::json!({"kty": "RSA", "kid": "r", "n": "AQ", "e": "AQAB"})], "r")),
            ("not JSON", b"{\"active\":".to_vec()),
            ("no keys", file(&[], "h1")),
        ];
        for (name, text) in cases {
            assert!(KeySet::parse(&text).is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn the_v1_secret_keeps_its_kid() {
        let secret = [7u8; 40];
        let set = KeySet::from_secret(&secret).unwrap();
        assert_eq!(set.active().kid, v1_key_id(&secret));
        let round_trip = KeySet::parse(&file(&[jwk(set.active())], &v1_key_id(&secret))).unwrap();
        assert!(matches!(&round_trip.active().secret, KeySecret::Hmac(s) if s == &secret));
    }

    #[test]
    fn the_pkcs8_form_is_what_the_signer_reads() {
        let key = generate(KeyAlgorithm::EdDsa, None);
        let KeySecret::Ed25519 { seed, public } = key.secret else { unreachable!() };
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let parsed = ed25519_dalek::SigningKey::from_pkcs8_der(&ed25519_pkcs8(&seed)).unwrap();
        assert_eq!(parsed.verifying_key().to_bytes(), public);
    }
}
