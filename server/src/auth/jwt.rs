//! Access tokens: JWTs signed by the active key of a key set, and the one validation
//! every request uses.
//!
//! Issuing goes through `jsonwebtoken`. Verifying is on every request and upgrade, so
//! it parses each part once: the header is compared as bytes with the headers this
//! server writes (and only parsed when it matches none), the key is found by `kid` and
//! checked with the one algorithm that key allows, an HMAC is keyed once per key set
//! rather than once per token, and the payload is decoded and deserialized once.
//! `jsonwebtoken::decode` would decode the header, rebuild the key and deserialize the
//! payload twice, two thirds of a verify's time.

use crate::auth::keyset::{self, KeyAlgorithm, KeySecret, KeySet};
use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use hmac::{Hmac, KeyInit as _, Mac as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tether_shared::api::Role;
use tether_shared::{SessionId, UserId};
use uuid::Uuid;

/// Tokens longer than this are refused before any parsing: a real one is ~450 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The claims of an access token; all are required.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub sid: SessionId,
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub role: Role,
    pub name: String,
}

/// The key set in force, replaced whole when the key file changes; a request reads it
/// without a lock.
pub struct Keys(ArcSwap<TokenKeys>);

impl Keys {
    pub fn new(keys: TokenKeys) -> Keys {
        Keys(ArcSwap::from_pointee(keys))
    }

    pub fn current(&self) -> arc_swap::Guard<Arc<TokenKeys>> {
        self.0.load()
    }

    pub fn replace(&self, keys: TokenKeys) {
        self.0.store(Arc::new(keys));
    }
}

/// Everything that signs and verifies under one key set.
pub struct TokenKeys {
    signing: EncodingKey,
    signing_header: Header,
    verifying: Vec<VerifyingKey>,
    /// The JWKS document: the public halves of the asymmetric keys.
    jwks: bytes::Bytes,
    issuer: String,
    audience: String,
    leeway_secs: i64,
    access_ttl: Duration,
    /// EdDSA tokens whose signature has been checked, by the SHA-256 of the whole
    /// token: an Ed25519 verify costs ~25 times an HMAC, and a client presents the same
    /// token on every request for its 15 minutes. Claims are still checked (expiry,
    /// issuer, audience) on every use; the cache goes with the key set it belongs to, so
    /// a removed key's tokens are never found in it.
    verified: DashMap<[u8; 32], AccessClaims>,
}

/// Verified tokens kept at most; when full, the cache starts over (a verify each).
const MAX_VERIFIED_CACHED: usize = 100_000;

struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    /// The header this server writes for the key, as it appears in its tokens
    /// (base64url of its JSON).
    header_segment: String,
    check: SignatureCheck,
}

enum SignatureCheck {
    /// HMAC-SHA256 with the secret already absorbed; each verify starts from a copy.
    Hmac(Hmac<Sha256>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid access token")]
pub struct InvalidToken;

impl TokenKeys {
    pub fn new(
        set: &KeySet,
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
        leeway_secs: u64,
    ) -> anyhow::Result<TokenKeys> {
        anyhow::ensure!(
            jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some(),
            "jsonwebtoken has no crypto backend: enable exactly one of its backend features"
        );
        let mut verifying = Vec::with_capacity(set.keys.len());
        for key in &set.keys {
            let check = match &key.secret {
                KeySecret::Hmac(secret) => SignatureCheck::Hmac(Hmac::new_from_slice(secret)?),
                KeySecret::Ed25519 { public, .. } => {
                    SignatureCheck::Ed25519(ed25519_dalek::VerifyingKey::from_bytes(public)?)
                }
            };
            let algorithm = jwt_algorithm(key.algorithm());
            let header_segment = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header_of(algorithm, &key.kid))?);
            verifying.push(VerifyingKey { kid: key.kid.clone(), algorithm, header_segment, check });
        }
        let active = set.active();
        let signing = match &active.secret {
            KeySecret::Hmac(secret) => EncodingKey::from_secret(secret)?,
            KeySecret::Ed25519 { seed, .. } => EncodingKey::from_ed_der(&keyset::ed25519_pkcs8(seed)),
        };
        let public: Vec<serde_json::Value> = set.keys.iter().filter_map(|key| key.public_jwk()).collect();
        Ok(TokenKeys {
            signing,
            signing_header: header_of(jwt_algorithm(active.algorithm()), &active.kid),
            verifying,
            jwks: serde_json::to_vec(&serde_json::json!({ "keys": public }))?.into(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs: i64::try_from(leeway_secs)?,
            access_ttl,
            verified: DashMap::new(),
        })
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// The `kid` new tokens carry.
    pub fn active_kid(&self) -> &str {
        self.signing_header.kid.as_deref().unwrap_or_default()
    }

    /// `{"keys":[...]}` with the public halves only.
    pub fn jwks(&self) -> bytes::Bytes {
        self.jwks.clone()
    }

    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        role: Role,
        name: &str,
        now_unix: i64,
    ) -> anyhow::Result<String> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user,
            sid: session,
            jti: Uuid::new_v4(),
            iat: now_unix,
            exp: now_unix + self.access_ttl.as_secs() as i64,
            role,
            name: name.to_owned(),
        };
        Ok(jsonwebtoken::encode(&self.signing_header, &claims, &self.signing)?)
    }

    /// Signature, algorithm, `kid`, `iss`, `aud`, `exp` and the presence of every claim.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, InvalidToken> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp() as i64)
    }

    fn verify_at(&self, token: &str, now_unix: i64) -> Result<AccessClaims, InvalidToken> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidToken);
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(InvalidToken)?;
        let (header, payload) = signed.split_once('.').ok_or(InvalidToken)?;
        // Only a key of this set, with that key's own algorithm: a token naming any
        // other (none, HS256 under an Ed25519 kid with the public key as its secret,
        // ...) is refused before its signature is looked at.
        let key = match self.verifying.iter().find(|key| key.header_segment == header) {
            Some(key) => key,
            None => self.key_of_parsed_header(token).ok_or(InvalidToken)?,
        };
        // Room for any 64-byte signature's encoding, so a longer one is an error of
        // length rather than of buffer size.
        let mut raw = [0u8; 96];
        let length = URL_SAFE_NO_PAD.decode_slice(signature, &mut raw).map_err(|_| InvalidToken)?;
        let mut remember_as = None;
        match &key.check {
            SignatureCheck::Hmac(keyed) => {
                if length != 32 {
                    return Err(InvalidToken);
                }
                let mut mac = keyed.clone();
                mac.update(signed.as_bytes());
                // Constant time: how much of a forged tag matched must not show in the timing.
                mac.verify_slice(&raw[..32]).map_err(|_| InvalidToken)?;
            }
            SignatureCheck::Ed25519(public) => {
                let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                if let Some(claims) = self.verified.get(&digest) {
                    return self.claims_in_force(claims.clone(), now_unix);
                }
                let bytes: &[u8; 64] = raw[..length].try_into().map_err(|_| InvalidToken)?;
                let signature = ed25519_dalek::Signature::from_bytes(bytes);
                public.verify_strict(signed.as_bytes(), &signature).map_err(|_| InvalidToken)?;
                remember_as = Some(digest);
            }
        }

        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| InvalidToken)?;
        // Every field is required, so a token without any of them fails here.
        let claims: AccessClaims = serde_json::from_slice(&payload).map_err(|_| InvalidToken)?;
        if let Some(digest) = remember_as {
            if self.verified.len() >= MAX_VERIFIED_CACHED {
                self.verified.clear();
            }
            self.verified.insert(digest, claims.clone());
        }
        self.claims_in_force(claims, now_unix)
    }

    /// The claims a signed token must also satisfy, now.
    fn claims_in_force(&self, claims: AccessClaims, now_unix: i64) -> Result<AccessClaims, InvalidToken> {
        let expired = claims.exp < 0 || claims.exp < now_unix - self.leeway_secs;
        if expired || claims.iss != self.issuer || claims.aud != self.audience {
            return Err(InvalidToken);
        }
        Ok(claims)
    }

    /// A header other than the ones this process writes (another serializer's field
    /// order, say) is parsed, and must still name a key of this set and its algorithm.
    fn key_of_parsed_header(&self, token: &str) -> Option<&VerifyingKey> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid?;
        self.verifying.iter().find(|key| key.kid == kid && key.algorithm == header.alg)
    }
}

fn jwt_algorithm(algorithm: KeyAlgorithm) -> Algorithm {
    match algorithm {
        KeyAlgorithm::Hs256 => Algorithm::HS256,
        KeyAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

fn header_of(algorithm: Algorithm, kid: &str) -> Header {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(set: &KeySet) -> TokenKeys {
        TokenKeys::new(set, "tether", "tether", Duration::from_secs(900), 30).unwrap()
    }

    fn keys() -> TokenKeys {
        keys_of(&KeySet::from_secret(&[7u8; 32]).unwrap())
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let keys = keys();
        let (user, session) = (UserId::new_random(), SessionId::new_random());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token = keys.issue(user, session, Role::Player, "alice", now).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub, claims.sid, claims.exp - claims.iat), (user, session, 900));
        assert_eq!(claims.name, "alice");
    }

    #[test]
    fn another_key_or_a_changed_payload_is_refused() {
        let keys = keys();
        let other = keys_of(&KeySet::from_secret(&[8u8; 32]).unwrap());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let token =
            other.issue(UserId::new_random(), SessionId::new_random(), Role::Admin, "mallory", now).unwrap();
        assert!(keys.verify(&token).is_err());
        let mine =
            keys.issue(UserId::new_random(), SessionId::new_random(), Role::Player, "bob", now).unwrap();
        let mut parts: Vec<String> = mine.split('.').map(str::to_owned).collect();
        let flipped = if &parts[1][5..6] == "A" { "B" } else { "A" };
        parts[1].replace_range(5..6, flipped);
        assert!(keys.verify(&parts.join(".")).is_err());
    }

    /// A token over any header and payload, signed with `keys()`'s secret.
    fn signed(header: &str, payload: &str) -> String {
        hmac_signed(header, payload, &[7u8; 32])
    }

    fn payload(exp: i64, leave_out: Option<&str>) -> String {
        let mut claims = serde_json::json!({
            "iss": "tether", "aud": "tether", "sub": UserId::new_random(), "sid": SessionId::new_random(),
            "jti": Uuid::new_v4(), "iat": exp - 900, "exp": exp, "role": "player", "name": "carol",
        });
        if let Some(claim) = leave_out {
            claims.as_object_mut().unwrap().remove(claim);
        }
        claims.to_string()
    }

    #[test]
    fn the_leeway_is_the_only_grace_after_expiry() {
        let keys = keys();
        let now = 1_800_000_000;
        let token =
            keys.issue(UserId::new_random(), SessionId::new_random(), Role::Player, "bob", now).unwrap();
        assert!(keys.verify_at(&token, now + 900 + 30).is_ok(), "within the 30 s leeway");
        assert!(keys.verify_at(&token, now + 900 + 31).is_err());
    }

    #[test]
    fn another_issuer_or_audience_is_refused_under_the_same_secret() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (issuer, audience) in [("elsewhere", "tether"), ("tether", "the-shop")] {
            let set = KeySet::from_secret(&[7u8; 32]).unwrap();
            let foreign = TokenKeys::new(&set, issuer, audience, Duration::from_secs(900), 30).unwrap();
            let token =
                foreign.issue(UserId::new_random(), SessionId::new_random(), Role::Player, "x", now).unwrap();
            assert!(keys().verify(&token).is_err(), "{issuer}/{audience} passed");
        }
    }

    #[test]
    fn only_hs256_under_this_kid_passes_whatever_the_header_spelling() {
        let keys = keys();
        let kid = keys.active_kid().to_owned();
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        let reordered = format!(r#"{{"kid":"{kid}","alg":"HS256"}}"#);
        assert!(keys.verify(&signed(&reordered, &payload(exp, None))).is_ok(), "same key, other spelling");
        for header in [
            format!(r#"{{"alg":"HS384","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"none","kid":"{kid}"}}"#),
            r#"{"alg":"HS256","kid":"0000000000000000"}"#.to_owned(),
            r#"{"alg":"HS256"}"#.to_owned(),
        ] {
            assert!(keys.verify(&signed(&header, &payload(exp, None))).is_err(), "{header} passed");
        }
    }

    #[test]
    fn a_signed_token_missing_any_claim_is_refused() {
        let keys = keys();
        let header = serde_json::to_string(&keys.signing_header).unwrap();
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        assert!(keys.verify(&signed(&header, &payload(exp, None))).is_ok());
        for claim in ["iss", "aud", "sub", "sid", "jti", "iat", "exp", "role", "name"] {
            assert!(keys.verify(&signed(&header, &payload(exp, Some(claim)))).is_err(), "without {claim}");
        }
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(KeySet::from_secret(b"short").is_err());
    }

    /// An HMAC key, an Ed25519 key and a second Ed25519 key, the first Ed25519 active.
    fn mixed_set() -> KeySet {
        let text = serde_json::json!({
            "active": "ed-1",
            "keys": [
                keyset::generate(KeyAlgorithm::Hs256, Some("hs-1".into())).to_private_jwk(),
                keyset::generate(KeyAlgorithm::EdDsa, Some("ed-1".into())).to_private_jwk(),
                keyset::generate(KeyAlgorithm::EdDsa, Some("ed-2".into())).to_private_jwk(),
            ],
        });
        KeySet::parse(text.to_string().as_bytes()).unwrap()
    }

    fn issue_with(keys: &TokenKeys) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        keys.issue(UserId::new_random(), SessionId::new_random(), Role::Player, "dora", now).unwrap()
    }

    #[test]
    fn every_key_of_the_set_verifies_and_only_the_active_one_signs() {
        let mut set = mixed_set();
        let eddsa = keys_of(&set);
        let token = issue_with(&eddsa);
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(), Some("ed-1"));
        assert!(eddsa.verify(&token).is_ok());
        set.active = 0;
        let hmac = keys_of(&set);
        assert!(hmac.verify(&token).is_ok(), "a token of a key that is no longer active still verifies");
        assert!(eddsa.verify(&issue_with(&hmac)).is_ok());
        set.keys.remove(1);
        set.active = 0;
        assert!(keys_of(&set).verify(&token).is_err(), "a removed key's tokens are refused");
    }

    #[test]
    fn a_cached_eddsa_token_still_expires_and_a_changed_one_is_not_found() {
        let keys = keys_of(&mixed_set());
        let now = 1_800_000_000;
        let token =
            keys.issue(UserId::new_random(), SessionId::new_random(), Role::Player, "erin", now).unwrap();
        assert!(keys.verify_at(&token, now).is_ok());
        assert_eq!(keys.verified.len(), 1, "verified once, then remembered");
        assert!(keys.verify_at(&token, now + 1).is_ok());
        assert!(keys.verify_at(&token, now + 900 + 31).is_err(), "the cache does not outlive exp");
        let signed_part = token.rfind('.').unwrap();
        let mut changed = token.clone();
        let flipped = if &changed[signed_part - 2..signed_part - 1] == "A" { "B" } else { "A" };
        changed.replace_range(signed_part - 2..signed_part - 1, flipped);
        assert!(keys.verify_at(&changed, now).is_err(), "a changed token is verified, not looked up");
    }

    #[test]
    fn jwks_holds_the_public_halves_only() {
        let set = mixed_set();
        let jwks: serde_json::Value = serde_json::from_slice(&keys_of(&set).jwks()).unwrap();
        let kids: Vec<&str> =
            jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, ["ed-1", "ed-2"]);
        for key in jwks["keys"].as_array().unwrap() {
            assert!(key.get("d").is_none() && key.get("k").is_none(), "a private part was published: {key}");
        }
    }

    /// A token whose header and payload are `header`/`payload`, HMAC-signed with `secret`.
    fn hmac_signed(header: &str, payload: &str, secret: &[u8]) -> String {
        let (header, payload) = (URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn the_public_key_never_serves_as_an_hmac_secret() {
        let set = mixed_set();
        let keys = keys_of(&set);
        let KeySecret::Ed25519 { public, .. } = &set.keys[1].secret else { unreachable!() };
        let jwk = set.keys[1].public_jwk().unwrap().to_string();
        let encoded = URL_SAFE_NO_PAD.encode(public);
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        for secret in [&public[..], encoded.as_bytes(), jwk.as_bytes()] {
            for kid in ["ed-1", "hs-1"] {
                let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
                assert!(keys.verify(&hmac_signed(&header, &payload(exp, None), secret)).is_err());
            }
        }
        // An EdDSA signature under the HMAC key's kid is refused too.
        let token = issue_with(&keys);
        let (_, rest) = token.split_once('.').unwrap();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT","kid":"hs-1"}"#);
        assert!(keys.verify(&format!("{header}.{rest}")).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn verifying_garbage_never_panics_and_never_passes(token in ".{0,600}") {
                prop_assert!(keys().verify(&token).is_err());
            }

            #[test]
            fn any_change_to_header_or_payload_is_refused(position in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_-]") {
                let keys = keys();
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let token = keys.issue(UserId::new_random(), SessionId::new_random(), Role::Player, "bob", now).unwrap();
                // The signature's own last character carries unused bits: leave it out.
                let signed_part = token.rfind('.').unwrap();
                let index = position.index(signed_part);
                prop_assume!(token.as_bytes()[index] != b'.' && token[index..=index] != replacement);
                let mut changed = token.clone();
                changed.replace_range(index..=index, &replacement);
                prop_assert!(keys.verify(&changed).is_err());
            }
        }
    }
}
