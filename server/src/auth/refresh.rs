//! Opaque refresh tokens: 256 random bits, handed out once, stored only as a hash.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

pub const COOKIE_NAME: &str = "tether_refresh";
pub const COOKIE_PATH: &str = "/api/auth";

/// A fresh token and the hash under which it is stored.
pub fn generate() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&token);
    (token, hash)
}

/// SHA-256 suffices: the token has 256 bits of entropy, so there is nothing to
/// brute-force, and the lookup by hash needs it deterministic (no salt). Looking up by
/// hash also means no secret is ever compared byte by byte in variable time.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_unique_and_hash_to_their_stored_form() {
        let (a, hash_a) = super::generate();
        let (b, _) = super::generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in unpadded base64url");
        assert_eq!(super::hash(&a), hash_a);
    }
}
