//! Secrets: the master key that encrypts recoverable secrets at rest, random tokens, and hashes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The version written beside every ciphertext, so the master key can be rotated later.
pub const MASTER_KEY_VERSION: i32 = 1;
const NONCE_LEN: usize = 12;

/// The server's master key (32 bytes). Encrypts authentication-key secrets and provider API keys
/// with AES-256-GCM; its `Debug` never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    /// Derived from the master key; signs operator access tokens.
    access_signing_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("CONFIDANT_MASTER_KEY must be base64 of exactly 32 bytes")]
    Malformed,
}

#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted (wrong master key or tampered row)")]
pub struct DecryptError;

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let cipher = Aes256Gcm::new_from_slice(bytes).expect("32-byte key");
        // Domain-separated derivation, so the signing key never equals the encryption key.
        let mut hasher = Sha256::new();
        hasher.update(b"confidant/operator-access-token/v1\0");
        hasher.update(bytes);
        Self {
            cipher,
            access_signing_key: hasher.finalize().into(),
        }
    }

    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| MasterKeyError::Malformed)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| MasterKeyError::Malformed)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A fresh random key, base64-encoded.
    pub fn generate_base64() -> String {
        STANDARD.encode(random_bytes::<32>())
    }

    pub fn access_signing_key(&self) -> &[u8; 32] {
        &self.access_signing_key
    }

    /// Encrypts `plaintext`, binding it to `context` (for example the table, application and row
    /// id) so a ciphertext copied to another row does not decrypt. Output: nonce || ciphertext.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| DecryptError)
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

/// A random token: `prefix` followed by base64url of `N` random bytes.
pub fn random_token<const N: usize>(prefix: &str) -> String {
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<N>()))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_in_its_own_context() {
        let key = MasterKey::from_bytes(&[7; 32]);
        let sealed = key.seal("authentication_key:a:b", b"sk-cfd-secret");
        assert_eq!(key.open("authentication_key:a:b", &sealed).unwrap(), b"sk-cfd-secret");
        assert!(key.open("authentication_key:a:c", &sealed).is_err());
        assert!(
            MasterKey::from_bytes(&[8; 32])
                .open("authentication_key:a:b", &sealed)
                .is_err()
        );
        assert!(!sealed.windows(13).any(|w| w == b"sk-cfd-secret"));
    }

    #[test]
    fn malformed_master_keys_are_refused() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
        assert!(MasterKey::from_base64(&MasterKey::generate_base64()).is_ok());
    }
}
