//! A sliding anti-replay window over 64-bit counters (RFC 6479; the layout WireGuard uses).
//!
//! The window is a ring of 64-bit words. Moving forward clears whole words instead of
//! shifting bits, so an update costs at most [`WORDS`] word writes whatever the jump. One word
//! is kept as slack so that the word holding the greatest counter never has to be cleared
//! while older counters in it are still tracked: the window proper is
//! [`WINDOW_SIZE`] = 2048 − 64 counters behind the greatest seen.

use core::fmt;

const WORD_BITS: u64 = u64::BITS as u64;
/// Words in the ring: 32 × 64 = 2048 counters of bitmap.
const WORDS: usize = 32;
/// How far behind the greatest counter seen a counter may be and still be accepted (once).
pub const WINDOW_SIZE: u64 = (WORDS as u64 - 1) * WORD_BITS;

/// Anti-replay state of one (sender, epoch) stream. Counter 0 is acceptable on a fresh window.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Greatest counter marked so far (0 before any).
    greatest: u64,
    /// Bit `c % 2048` set: counter `c` was seen, for `c` within the window.
    ring: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    /// An empty window: every counter is acceptable.
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            greatest: 0,
            ring: [0; WORDS],
        }
    }

    /// Whether `mark(counter)` would accept. Does not change the window: use it to reject
    /// replays before paying for decryption.
    pub fn check(&self, counter: u64) -> bool {
        if counter > self.greatest {
            return true;
        }
        if self.greatest - counter > WINDOW_SIZE {
            return false;
        }
        let (word, bit) = position(counter);
        self.ring[word] & bit == 0
    }

    /// Accepts and records `counter`; `false` (and no change) for a duplicate or a counter
    /// too far behind the window. Call only for authentic packets.
    pub fn mark(&mut self, counter: u64) -> bool {
        if counter > self.greatest {
            // Clear the words the window slides over, at most the whole ring.
            let current = self.greatest / WORD_BITS;
            let target = counter / WORD_BITS;
            let steps = (target - current).min(WORDS as u64);
            for i in 1..=steps {
                self.ring[((current + i) % WORDS as u64) as usize] = 0;
            }
            self.greatest = counter;
        } else if self.greatest - counter > WINDOW_SIZE {
            return false;
        }
        let (word, bit) = position(counter);
        let seen = self.ring[word] & bit != 0;
        self.ring[word] |= bit;
        !seen
    }

    /// The greatest counter marked so far (0 on a fresh window).
    pub fn greatest(&self) -> u64 {
        self.greatest
    }
}

/// The ring word and bit mask of a counter. The word index is `< WORDS` by construction, so
/// indexing the ring with it cannot fail.
fn position(counter: u64) -> (usize, u64) {
    let word = ((counter / WORD_BITS) % WORDS as u64) as usize;
    (word, 1u64 << (counter % WORD_BITS))
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("greatest", &self.greatest)
            .finish_non_exhaustive()
    }
}
