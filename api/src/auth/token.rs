//! Device tokens: 256 random bits shown once, stored only as a SHA-256 hash.
//!
//! A token is `adt_` followed by 64 hex digits. It is random, so an unsalted SHA-256 is a
//! one-way function of it that nobody can invert by guessing; the registry indexes devices by
//! that hash and compares the stored hash in constant time before it trusts a match.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every device token starts with this, so it is never taken for a JWT.
pub const DEVICE_TOKEN_PREFIX: &str = "adt_";

/// The SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// A new token: `adt_` and 256 bits from `rand`'s thread generator (ChaCha12, seeded by the
/// operating system: cryptographically secure).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{DEVICE_TOKEN_PREFIX}{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` has the shape of a device token (prefix and 64 hex digits).
pub fn is_device_token(token: &str) -> bool {
    token
        .strip_prefix(DEVICE_TOKEN_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Constant-time equality of two hashes.
pub fn same_hash(a: &TokenHash, b: &TokenHash) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_recognised() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(is_device_token(&a));
        assert!(!is_device_token("adt_xyz"));
        assert!(!is_device_token("eyJhbGciOi.x.y"));
        assert!(same_hash(&hash(&a), &hash(&a)));
        assert!(!same_hash(&hash(&a), &hash(&b)));
    }
}
