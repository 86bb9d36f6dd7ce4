//! Access tokens: HS256 JWTs with a `kid`, and the one validation every request uses.
//!
//! Issuing goes through `jsonwebtoken`. Verifying is on every request and upgrade, so
//! it parses each part once: the header is compared as bytes with the one this key
//! signs (and only parsed when it differs), the signature is checked with an HMAC
//! keyed once at start, and the payload is decoded and deserialized once.
//! `jsonwebtoken::decode` would decode the header, rebuild the HMAC key and
//! deserialize the payload twice, two thirds of a verify's time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

pub struct TokenKeys {
    encoding: EncodingKey,
    header: Header,
    /// `header` as it appears in the tokens this key signs (base64url of its JSON).
    header_segment: String,
    /// HMAC-SHA256 with the secret already absorbed; each verify starts from a copy.
    mac: Hmac<Sha256>,
    issuer: String,
    audience: String,
    leeway_secs: i64,
    access_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid access token")]
pub struct InvalidToken;

impl TokenKeys {
    pub fn new(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
        leeway_secs: u64,
    ) -> anyhow::Result<TokenKeys> {
        anyhow::ensure!(
            jsonwebtoken::crypto::CryptoProvider::try_get_default().is_some(),
            "jsonwebtoken has no crypto backend: enable exactly one of its backend features"
        );
        anyhow::ensure!(secret.len() >= 32, "the JWT secret must be at least 32 bytes");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key_id(secret));
        let header_segment = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);

        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret)?,
            header,
            header_segment,
            mac: Hmac::new_from_slice(secret)?,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs: i64::try_from(leeway_secs)?,
            access_ttl,
        })
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
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
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.encoding)?)
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
        // Only HS256 under this key's `kid`: a token naming any other algorithm (none,
        // RS256 with our secret as a "public key", ...) is refused before its
        // signature is looked at.
        if header != self.header_segment && !self.is_own_header(token) {
            return Err(InvalidToken);
        }
        // Room for any 32-byte signature's encoding, so a longer one is an error of
        // length rather than of buffer size.
        let mut tag = [0u8; 48];
        if URL_SAFE_NO_PAD.decode_slice(signature, &mut tag) != Ok(32) {
            return Err(InvalidToken);
        }
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        // Constant time: how much of a forged tag matched must not show in the timing.
        mac.verify_slice(&tag[..32]).map_err(|_| InvalidToken)?;

        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| InvalidToken)?;
        // Every field is required, so a token without any of them fails here.
        let claims: AccessClaims = serde_json::from_slice(&payload).map_err(|_| InvalidToken)?;
        let expired = claims.exp < 0 || claims.exp < now_unix - self.leeway_secs;
        if expired || claims.iss != self.issuer || claims.aud != self.audience {
            return Err(InvalidToken);
        }
        Ok(claims)
    }

    /// A header other than the one this process writes (another serializer's field
    /// order, say) is parsed, and must still name HS256 and this key.
    fn is_own_header(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token)
            .is_ok_and(|header| header.alg == Algorithm::HS256 && header.kid == self.header.kid)
    }
}

/// Names the key without revealing it, so that a later key rotation can tell tokens apart.
fn key_id(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&[7u8; 32], "tether", "tether", Duration::from_secs(900), 30).unwrap()
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
        let other = TokenKeys::new(&[8u8; 32], "tether", "tether", Duration::from_secs(900), 30).unwrap();
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
        let (header, payload) = (URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let mut mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
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
            let foreign = TokenKeys::new(&[7u8; 32], issuer, audience, Duration::from_secs(900), 30).unwrap();
            let token =
                foreign.issue(UserId::new_random(), SessionId::new_random(), Role::Player, "x", now).unwrap();
            assert!(keys().verify(&token).is_err(), "{issuer}/{audience} passed");
        }
    }

    #[test]
    fn only_hs256_under_this_kid_passes_whatever_the_header_spelling() {
        let keys = keys();
        let kid = keys.header.kid.clone().unwrap();
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
        let header = serde_json::to_string(&keys.header).unwrap();
        let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
        assert!(keys.verify(&signed(&header, &payload(exp, None))).is_ok());
        for claim in ["iss", "aud", "sub", "sid", "jti", "iat", "exp", "role", "name"] {
            assert!(keys.verify(&signed(&header, &payload(exp, Some(claim)))).is_err(), "without {claim}");
        }
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(TokenKeys::new(b"short", "tether", "tether", Duration::from_secs(60), 30).is_err());
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
