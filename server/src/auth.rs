//! Secrets: enrolment codes and device tokens. Both are random, shown once, and stored only
//! as SHA-256 hashes. They carry enough entropy (codes 40 bits and single-use with an expiry,
//! tokens 256 bits) that a fast hash is the right one; passwords, which people choose, get
//! argon2 elsewhere.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Letters and digits that cannot be mistaken for one another when read aloud or typed.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// A one-time enrolment code such as `K7QF-3M9X`.
pub fn new_code() -> String {
    let mut rng = rand::thread_rng();
    let chars: String = (0..8)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// The hash a code is stored and looked up by; case, spaces and dashes do not matter.
pub fn code_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hash(&normal)
}

/// A device's bearer token.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    format!("mam_{}", hex(&bytes))
}

pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_the_same_however_typed() {
        let code = new_code();
        assert_eq!(code.len(), 9);
        assert_eq!(
            code_hash(&code),
            code_hash(&code.to_lowercase().replace('-', " "))
        );
        assert_ne!(code_hash(&code), code_hash(&new_code()));
    }
}
