//! memberlist's keyring (`security.go`, `keyring.go`): AES-GCM with 16-, 24- or 32-byte keys,
//! every installed key tried on receive, the primary one used to send.
//!
//! An encrypted message is `[version][nonce: 12][ciphertext][tag: 16]`. Version 1 (every
//! protocol from 2 on, so every peer we meet) seals the plaintext as it is; version 0 first
//! pads it PKCS7 to the AES block size. The associated data is the label for packets and
//! `[10][u32 len]` + label for streams (see [`frame`](super::frame) and
//! [`stream`](super::stream)).
//!
//! Why `aes-gcm`: memberlist fixes the cipher (AES-GCM, 96-bit nonce, 128-bit tag), and
//! RustCrypto's `aes-gcm` is the same family and `aead` 0.6 traits as the workspace's
//! `chacha20poly1305`, constant-time, with AES-NI/CLMUL when the CPU has them. `ring` (also
//! in the workspace) has no AES-192, which memberlist accepts.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use data_encoding::BASE64;

use super::error::{KeyError, WireError};

type Aes192Gcm = AesGcm<Aes192, U12>;

const NONCE: usize = 12;
const TAG: usize = 16;
const BLOCK: usize = 16;
/// Version byte of the padded legacy format, sent only to protocol-1 peers.
const V0: u8 = 0;
/// Version byte of the unpadded format.
const V1: u8 = 1;

/// One gossip key, ready to use. Its `Debug` shows the cipher, never the key.
#[derive(Clone)]
pub struct Key {
    cipher: Cipher,
}

#[derive(Clone)]
enum Cipher {
    Aes128(Aes128Gcm),
    Aes192(Aes192Gcm),
    Aes256(Aes256Gcm),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.cipher {
            Cipher::Aes128(_) => "AES-128-GCM",
            Cipher::Aes192(_) => "AES-192-GCM",
            Cipher::Aes256(_) => "AES-256-GCM",
        };
        f.debug_tuple("Key").field(&name).finish()
    }
}

impl Key {
    /// A key from its raw bytes.
    ///
    /// # Errors
    /// [`KeyError::Length`] unless it is 16, 24 or 32 bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = |_| KeyError::Length(bytes.len());
        let cipher = match bytes.len() {
            16 => Cipher::Aes128(Aes128Gcm::new_from_slice(bytes).map_err(bad)?),
            24 => Cipher::Aes192(Aes192Gcm::new_from_slice(bytes).map_err(bad)?),
            32 => Cipher::Aes256(Aes256Gcm::new_from_slice(bytes).map_err(bad)?),
            n => return Err(KeyError::Length(n)),
        };
        Ok(Self { cipher })
    }

    /// A key as Serf's `-encrypt` flag and `serf keygen` write it: standard base64.
    ///
    /// # Errors
    /// [`KeyError::Base64`] if it does not decode, [`KeyError::Length`] if it is not 16, 24
    /// or 32 bytes once decoded.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(text.trim().as_bytes())
            .map_err(|_| KeyError::Base64)?;
        Self::new(&bytes)
    }

    fn seal(&self, nonce: &[u8; NONCE], msg: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = Nonce::<U12>::from(*nonce);
        let payload = Payload { msg, aad };
        // AES-GCM fails to seal only past 64 GiB of plaintext: no message of ours comes near.
        let sealed = match &self.cipher {
            Cipher::Aes128(c) => c.encrypt(&nonce, payload),
            Cipher::Aes192(c) => c.encrypt(&nonce, payload),
            Cipher::Aes256(c) => c.encrypt(&nonce, payload),
        };
        sealed.unwrap_or_default()
    }

    fn open(&self, nonce: &[u8], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let nonce = Nonce::<U12>::try_from(nonce).ok()?;
        let payload = Payload { msg, aad };
        match &self.cipher {
            Cipher::Aes128(c) => c.decrypt(&nonce, payload),
            Cipher::Aes192(c) => c.decrypt(&nonce, payload),
            Cipher::Aes256(c) => c.decrypt(&nonce, payload),
        }
        .ok()
    }
}

/// The installed keys: one primary to send with, any number of others still accepted (the
/// rotation window). The primary is tried first on receive.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring holding only `primary`.
    #[must_use]
    pub fn new(primary: Key) -> Self {
        Self {
            keys: vec![primary],
        }
    }

    /// Also accepts messages sealed with `key` (installed before any peer sends with it).
    #[must_use]
    pub fn with(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// The key we send with.
    #[must_use]
    pub fn primary(&self) -> &Key {
        // `new` puts one key in and nothing takes keys out.
        &self.keys[0]
    }

    /// Every key accepted on receive, the primary first.
    #[must_use]
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// Seals `plaintext` in encryption version 1: `[1][nonce][ciphertext + tag]`. `nonce` must
/// never repeat under one key (draw it from a CSPRNG in the shell); `aad` is the packet's
/// label, or a stream's 5-byte frame header followed by its label.
#[must_use]
pub fn encrypt(key: &Key, nonce: [u8; NONCE], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + NONCE + plaintext.len() + TAG);
    out.push(V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&key.seal(&nonce, plaintext, aad));
    out
}

/// Seals `plaintext` in the legacy version 0: PKCS7-padded to 16 bytes first (1 to 16 bytes
/// of padding, always some). Only protocol-1 peers need it; it is here so the receive path
/// can be tested against both.
#[must_use]
pub fn encrypt_legacy(key: &Key, nonce: [u8; NONCE], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let pad = BLOCK - plaintext.len() % BLOCK;
    let mut padded = Vec::with_capacity(plaintext.len() + pad);
    padded.extend_from_slice(plaintext);
    padded.resize(plaintext.len() + pad, pad as u8);
    let mut out = Vec::with_capacity(1 + NONCE + padded.len() + TAG);
    out.push(V0);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&key.seal(&nonce, &padded, aad));
    out
}

/// Opens a message sealed by [`encrypt`], [`encrypt_legacy`] or Go memberlist, trying each
/// key in turn, and strips version 0's padding.
///
/// # Errors
/// [`WireError::Empty`], [`WireError::EncryptionVersion`] for a version byte above 1,
/// [`WireError::Truncated`] if shorter than the smallest sealed message of its version,
/// [`WireError::Decrypt`] if no key opens it, [`WireError::Padding`] for bad version-0
/// padding.
pub fn decrypt(keys: &[Key], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, WireError> {
    let (&version, rest) = msg.split_first().ok_or(WireError::Empty)?;
    // memberlist's `encryptedLength(vsn, 0)`: version 0 always carries a padding block.
    let min = match version {
        V0 => NONCE + BLOCK + TAG,
        V1 => NONCE + TAG,
        v => return Err(WireError::EncryptionVersion(v)),
    };
    if rest.len() < min {
        return Err(WireError::Truncated("encrypted message"));
    }
    let (nonce, sealed) = rest.split_at(NONCE);
    let mut plain = keys
        .iter()
        .find_map(|key| key.open(nonce, sealed, aad))
        .ok_or(WireError::Decrypt)?;
    if version == V0 {
        // Go trusts the last byte blindly (and panics past the start); check it is PKCS7.
        let pad = usize::from(*plain.last().ok_or(WireError::Padding)?);
        if pad == 0 || pad > BLOCK || pad > plain.len() {
            return Err(WireError::Padding);
        }
        plain.truncate(plain.len() - pad);
    }
    Ok(plain)
}
