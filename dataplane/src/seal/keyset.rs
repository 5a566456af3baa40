//! The key set of one encrypted network on one node: up to [`MAX_KEYS`] keys by epoch, the
//! transmit epoch, this node's counter, and a replay window per (sender, epoch).
//!
//! Rotation never drops a packet (DESIGN.md, "Wire formats"): a new epoch is installed for
//! receiving on every node ([`KeySet::install`]) before any node sends with it
//! ([`KeySet::set_tx`]), and the old epoch is retired only after ([`KeySet::retire`]).

use super::replay::ReplayWindow;
use crate::types::{Epoch, SenderId, Vni};
use crate::wire::vxlan::{SEALED_HEADER_LEN, SealedHeader, TAG_LEN, emit_sealed};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// Keys a set holds at once: the one being retired, the one in use, the one being rolled out.
pub const MAX_KEYS: usize = 3;
/// Replay windows kept per epoch (one per sending node). Windows are only created for
/// authentic frames, so only a cluster this large (or a compromised key) reaches the bound;
/// past it new senders are refused rather than growing memory without limit.
pub const MAX_SENDERS_PER_EPOCH: usize = 4096;

/// The 32 secret bytes of a network key. `Debug` does not print them.
#[derive(Clone)]
pub struct NetworkKey(pub [u8; 32]);

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

/// Why a key-management call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum KeyError {
    /// No key of that epoch is installed. The key set is unchanged.
    #[error("no key installed for this epoch")]
    UnknownEpoch,
    /// The epoch is the transmit epoch, which cannot be retired: switch transmission to another
    /// epoch with `set_tx` first. The key set is unchanged.
    #[error("the transmit key cannot be retired; switch transmission to another epoch first")]
    RetireTxKey,
}

/// Why a frame could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SealError {
    /// No transmit epoch is set. The key set is unchanged; nothing was written.
    #[error("no transmit key")]
    NoTxKey,
    /// This node's counter has reached `u64::MAX`, so no fresh nonce is left under any key
    /// (or, unreachable for frames, the payload exceeds ChaCha20's 32-bit block counter: over
    /// 256 GiB). The key set is unchanged; `header` may have been written, `payload` was not.
    #[error("nonce counter exhausted")]
    CounterExhausted,
}

/// Why a sealed frame was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum OpenError {
    /// The frame's epoch is not installed (never was, or retired). The key set is unchanged;
    /// `payload` is unchanged.
    #[error("unknown key epoch")]
    UnknownEpoch,
    /// The counter was already accepted, or is too far behind the sender's window. Rejected
    /// before decryption: the key set and `payload` are unchanged.
    #[error("replayed or too old counter")]
    Replayed,
    /// Authentication failed (forged or corrupted header, payload or tag, or a `header` that
    /// does not match `header_bytes`). The key set is unchanged; `payload` is unspecified.
    #[error("authentication failed")]
    BadTag,
    /// A frame from a new sender while [`MAX_SENDERS_PER_EPOCH`] senders already have windows
    /// under this epoch. Rejected before decryption: the key set and `payload` are unchanged.
    #[error("too many senders for this epoch")]
    TooManySenders,
}

/// The key of one epoch and the replay windows of the senders seen under it.
struct EpochKey {
    key: LessSafeKey,
    /// The key bytes, to tell a repeated install of the same key (keep the windows) from a
    /// new key under an old epoch number (fresh windows: old frames fail its tag anyway).
    material: [u8; 32],
    windows: BTreeMap<SenderId, ReplayWindow>,
}

impl EpochKey {
    fn new(key: &NetworkKey) -> EpochKey {
        EpochKey {
            key: new_key(key),
            material: key.0,
            windows: BTreeMap::new(),
        }
    }
}

/// The key set of one encrypted network on one node. See the module docs.
pub struct KeySet {
    sender: SenderId,
    /// The counter of the next frame this node seals, under whichever key.
    next_counter: u64,
    tx: Option<Epoch>,
    /// At most [`MAX_KEYS`] entries; `tx`, when set, is always one of them.
    keys: BTreeMap<Epoch, EpochKey>,
    /// The last [`MAX_KEYS`] retired or evicted epochs with their replay windows, so that
    /// installing one of them again with the same key does not accept its old frames again.
    retired: BTreeMap<Epoch, EpochKey>,
}

impl KeySet {
    /// An empty key set for a node sealing as `sender`.
    ///
    /// `counter_start` is the first counter this node will seal with. The shell picks it so
    /// that a restarted node never reuses a nonce under a key it used before the restart (the
    /// key survives the restart, the in-memory counter does not): wall-clock nanoseconds since
    /// the Unix epoch (about 2^61 today, leaving over 2^63 frames) grow across restarts. Reusing
    /// a nonce under ChaCha20-Poly1305 reveals the XOR of two plaintexts and lets an attacker
    /// forge tags. A counter that jumps ahead also keeps peers' replay windows accepting the
    /// restarted node's frames at once. If the clock can step back, the shell should persist a
    /// high-water mark (see [`KeySet::next_counter`]) and start above it.
    pub fn new(sender: SenderId, counter_start: u64) -> KeySet {
        KeySet {
            sender,
            next_counter: counter_start,
            tx: None,
            keys: BTreeMap::new(),
            retired: BTreeMap::new(),
        }
    }

    /// Installs a receive key for `epoch`. If [`MAX_KEYS`] keys are held, first evicts the
    /// oldest (lowest) epoch that is not the transmit epoch and returns it. Re-installing an
    /// epoch with the same key keeps its replay windows (also after it was retired, for the
    /// last [`MAX_KEYS`] retired epochs); a different key under that epoch gets fresh ones.
    pub fn install(&mut self, epoch: Epoch, key: NetworkKey) -> Option<Epoch> {
        let material = key.0;
        if let Some(existing) = self.keys.get_mut(&epoch) {
            // The same key again (a replayed update, a resync): keep its replay windows, or
            // every recorded frame of this epoch would be accepted once more.
            if existing.material != material {
                *existing = EpochKey::new(&key);
            }
            return None;
        }
        let evicted = if self.keys.len() >= MAX_KEYS {
            let oldest = self.keys.keys().copied().find(|&e| Some(e) != self.tx);
            if let Some(e) = oldest {
                self.retire_unchecked(e);
            }
            oldest
        } else {
            None
        };
        let entry = match self.retired.remove(&epoch) {
            Some(old) if old.material == material => old,
            _ => EpochKey::new(&key),
        };
        self.keys.insert(epoch, entry);
        evicted
    }

    /// Moves `epoch` from the held keys to the retired ones, keeping its windows.
    fn retire_unchecked(&mut self, epoch: Epoch) -> bool {
        let Some(entry) = self.keys.remove(&epoch) else {
            return false;
        };
        self.retired.insert(epoch, entry);
        while self.retired.len() > MAX_KEYS {
            self.retired.pop_first();
        }
        true
    }

    /// Makes `epoch` the transmit epoch.
    pub fn set_tx(&mut self, epoch: Epoch) -> Result<(), KeyError> {
        if !self.keys.contains_key(&epoch) {
            return Err(KeyError::UnknownEpoch);
        }
        self.tx = Some(epoch);
        Ok(())
    }

    /// Removes the key of `epoch` and its replay windows. The transmit key cannot be retired.
    pub fn retire(&mut self, epoch: Epoch) -> Result<(), KeyError> {
        if self.tx == Some(epoch) {
            return Err(KeyError::RetireTxKey);
        }
        if self.retire_unchecked(epoch) {
            Ok(())
        } else {
            Err(KeyError::UnknownEpoch)
        }
    }

    /// The transmit epoch, if set.
    pub fn tx_epoch(&self) -> Option<Epoch> {
        self.tx
    }

    /// The installed epochs, ascending.
    pub fn epochs(&self) -> impl Iterator<Item = Epoch> + '_ {
        self.keys.keys().copied()
    }

    /// The sender id this node seals with.
    pub fn sender(&self) -> SenderId {
        self.sender
    }

    /// The counter the next sealed frame will carry: a high-water mark the shell may persist.
    pub fn next_counter(&self) -> u64 {
        self.next_counter
    }

    /// Seals in place: writes the 24-byte header into `header`, encrypts `payload` in place,
    /// writes the tag. Each call uses a fresh counter.
    pub fn seal(
        &mut self,
        vni: Vni,
        header: &mut [u8; SEALED_HEADER_LEN],
        payload: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<SealedHeader, SealError> {
        let Some(epoch) = self.tx else {
            return Err(SealError::NoTxKey);
        };
        let counter = self.next_counter;
        // u64::MAX itself is never used, so the increment below cannot wrap.
        if counter == u64::MAX {
            return Err(SealError::CounterExhausted);
        }
        let Some(keys) = self.keys.get(&epoch) else {
            return Err(SealError::NoTxKey);
        };
        let h = SealedHeader {
            vni,
            epoch,
            sender: self.sender,
            counter,
        };
        emit_sealed(&h, header);
        let sealed = keys.key.seal_in_place_separate_tag(
            nonce(self.sender, counter),
            Aad::from(&header[..]),
            payload,
        );
        // ring fails only for payloads past ChaCha20's block counter (256 GiB).
        let Ok(t) = sealed else {
            return Err(SealError::CounterExhausted);
        };
        tag.copy_from_slice(t.as_ref());
        self.next_counter = counter + 1;
        Ok(h)
    }

    /// Opens in place: `header` is the parsed header, `header_bytes` the 24 raw bytes (the
    /// associated data). Order: epoch known? → replay window check (cheap reject) →
    /// decrypt and authenticate → mark the window. The window is only advanced by authentic
    /// frames, so forged frames cannot push it forward and make genuine ones look old.
    pub fn open(
        &mut self,
        header: &SealedHeader,
        header_bytes: &[u8; SEALED_HEADER_LEN],
        payload: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError> {
        let Some(keys) = self.keys.get_mut(&header.epoch) else {
            return Err(OpenError::UnknownEpoch);
        };
        match keys.windows.get(&header.sender) {
            Some(window) if !window.check(header.counter) => return Err(OpenError::Replayed),
            Some(_) => {}
            None if keys.windows.len() >= MAX_SENDERS_PER_EPOCH => {
                return Err(OpenError::TooManySenders);
            }
            None => {}
        }
        // The nonce and the window come from `header`, the authentication from `header_bytes`:
        // they must describe the same frame, or a forged `header` could mark a window.
        if !describes(header, header_bytes) {
            return Err(OpenError::BadTag);
        }
        keys.key
            .open_in_place_separate_tag(
                nonce(header.sender, header.counter),
                Aad::from(&header_bytes[..]),
                Tag::from(*tag),
                payload,
                0..,
            )
            .map_err(|_| OpenError::BadTag)?;
        // The first frame of a sender allocates its window: once per sender and epoch, not
        // per frame.
        keys.windows
            .entry(header.sender)
            .or_default()
            .mark(header.counter);
        Ok(())
    }
}

/// nonce = sender id (4 bytes BE) ‖ counter (8 bytes BE): unique per key as long as sender
/// ids are unique in the cluster and each node never repeats a counter.
fn nonce(sender: SenderId, counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    let (s, c) = n.split_at_mut(4);
    s.copy_from_slice(&sender.0.to_be_bytes());
    c.copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn new_key(key: &NetworkKey) -> LessSafeKey {
    // ring refuses a key only when its length differs from the algorithm's (32 for
    // ChaCha20-Poly1305): `NetworkKey` holds exactly 32 bytes, so this cannot fail.
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key.0);
    #[allow(clippy::expect_used)]
    LessSafeKey::new(unbound.expect("a 32-byte key is valid for ChaCha20-Poly1305"))
}

/// Whether `bytes` encode `h` (the reserved bytes of the plain part are not compared: they
/// are authenticated as they are).
fn describes(h: &SealedHeader, bytes: &[u8; SEALED_HEADER_LEN]) -> bool {
    let mut expected = [0u8; SEALED_HEADER_LEN];
    emit_sealed(h, &mut expected);
    bytes[0] == expected[0] && bytes[4..7] == expected[4..7] && bytes[8..] == expected[8..]
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let windows: BTreeMap<Epoch, usize> = self
            .keys
            .iter()
            .map(|(e, k)| (*e, k.windows.len()))
            .collect();
        f.debug_struct("KeySet")
            .field("sender", &self.sender)
            .field("next_counter", &self.next_counter)
            .field("tx", &self.tx)
            .field("senders_by_epoch", &windows)
            .finish()
    }
}
