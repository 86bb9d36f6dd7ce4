//! Access tokens: HS256 JWTs with a `kid`, and the one validation every request uses.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    issuer: String,
    audience: String,
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

        // Only HS256: a token naming any other algorithm (none, RS256 with our secret
        // as a "public key", ...) is refused before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = leeway_secs;
        validation.validate_nbf = false;

        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            header,
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
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
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| InvalidToken)?;
        if header.kid != self.header.kid {
            return Err(InvalidToken);
        }
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| InvalidToken)
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
