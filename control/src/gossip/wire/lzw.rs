//! LZW as Go's `compress/lzw` does it with `lzw.LSB` and a literal width of 8, the only
//! compression memberlist knows (`lzwAlgo`): codes start 9 bits wide, grow to 12, 256 clears
//! the table, 257 ends the data, and "GIF-style" the width grows when the *next* code would
//! not fit (no TIFF early change).
//!
//! Why our own and not a crate: it is two small loops, and owning them lets the decoder
//! mirror Go's `Reader.decode` state for state (so what Go accepts we accept, including
//! streams without a leading clear code from Go before 1.17) and stop at an output cap inside
//! the loop, which is what defuses a decompression bomb. The encoder mirrors Go's `Writer`
//! code for code, so its output is byte-identical to Go's (pinned in `tests.rs`).

use std::collections::BTreeMap;

use super::error::WireError;

const LIT_WIDTH: u32 = 8;
const CLEAR: u16 = 1 << LIT_WIDTH;
const EOF: u16 = CLEAR + 1;
const MAX_WIDTH: u32 = 12;
/// `1 << MAX_WIDTH - 1`: the writer resets when its next code would reach it.
const MAX_CODE: u16 = (1 << MAX_WIDTH) - 1;
const TABLE: usize = 1 << MAX_WIDTH;
/// No previous code (after a clear, at the start, or once the table is full).
const INVALID: u16 = 0xffff;

/// Decompresses `input`, refusing to produce more than `max_out` bytes.
///
/// # Errors
/// [`WireError::Lzw`] for a code beyond the table or data without the end code (Go's
/// `io.ErrUnexpectedEOF`, which memberlist treats as failure too); [`WireError::TooLarge`]
/// as soon as the output would pass `max_out`.
pub fn decompress(input: &[u8], max_out: usize) -> Result<Vec<u8>, WireError> {
    let mut prefix = vec![0u16; TABLE];
    let mut suffix = vec![0u8; TABLE];
    // One code's string, built back to front; a chain is at most TABLE - 256 + 2 long,
    // because every entry's prefix is a smaller code.
    let mut scratch = vec![0u8; TABLE];
    let mut out = Vec::new();
    let (mut width, mut hi, mut overflow, mut last) = (LIT_WIDTH + 1, EOF, 1u16 << 9, INVALID);
    let (mut bits, mut nbits, mut pos) = (0u32, 0u32, 0usize);
    let too_large = |len: usize| WireError::TooLarge {
        what: "decompressed payload",
        len,
        max: max_out,
    };
    loop {
        while nbits < width {
            let &byte = input
                .get(pos)
                .ok_or(WireError::Lzw("data ends before the end code"))?;
            pos += 1;
            bits |= u32::from(byte) << nbits;
            nbits += 8;
        }
        // width <= 12, so the code indexes the 4096-entry tables below.
        let code = (bits & ((1 << width) - 1)) as u16;
        bits >>= width;
        nbits -= width;
        let c = usize::from(code);
        if code < CLEAR {
            if out.len() >= max_out {
                return Err(too_large(out.len() + 1));
            }
            out.push(code as u8);
            if last != INVALID {
                suffix[usize::from(hi)] = code as u8;
                prefix[usize::from(hi)] = last;
            }
        } else if code == CLEAR {
            (width, hi, overflow, last) = (LIT_WIDTH + 1, EOF, 1 << 9, INVALID);
            continue;
        } else if code == EOF {
            return Ok(out);
        } else if code <= hi {
            let mut i = scratch.len();
            let mut walk = c;
            let push = |i: &mut usize, byte: u8, scratch: &mut [u8]| -> Result<(), WireError> {
                *i = i
                    .checked_sub(1)
                    .ok_or(WireError::Lzw("code chain too long"))?;
                scratch[*i] = byte;
                Ok(())
            };
            if code == hi && last != INVALID {
                // The code being defined right now (the "KwKwK" case): its string is the
                // previous code's string plus that string's first byte.
                let mut first = usize::from(last);
                // Every entry's prefix is a smaller code, so this ends; the bound only
                // makes that visible.
                for _ in 0..TABLE {
                    if first < usize::from(CLEAR) {
                        break;
                    }
                    first = usize::from(prefix[first]);
                }
                push(&mut i, first as u8, &mut scratch)?;
                walk = usize::from(last);
            }
            while walk >= usize::from(CLEAR) {
                push(&mut i, suffix[walk], &mut scratch)?;
                walk = usize::from(prefix[walk]);
            }
            push(&mut i, walk as u8, &mut scratch)?;
            let piece = &scratch[i..];
            if out.len() + piece.len() > max_out {
                return Err(too_large(out.len() + piece.len()));
            }
            out.extend_from_slice(piece);
            if last != INVALID {
                suffix[usize::from(hi)] = walk as u8;
                prefix[usize::from(hi)] = last;
            }
        } else {
            return Err(WireError::Lzw("code beyond the table"));
        }
        last = code;
        hi += 1;
        if hi >= overflow {
            if width == MAX_WIDTH {
                // Table full: keep decoding with it, add nothing until the next clear.
                last = INVALID;
                hi -= 1;
            } else {
                width += 1;
                overflow = 1 << width;
            }
        }
    }
}

/// Compresses `input` exactly as Go's `lzw.NewWriter(w, lzw.LSB, 8)` then `Close` does
/// (a leading clear code, a clear when the table fills, the end code, the last bits padded).
/// memberlist peers accept uncompressed packets, so shoal need not send compressed; this
/// exists to test the decoder against Go's output and for a shell that wants smaller
/// push/pulls.
#[must_use]
pub fn compress(input: &[u8]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let (mut hi, mut overflow) = (EOF, 1u16 << 9);
    let mut table: BTreeMap<(u16, u8), u16> = BTreeMap::new();
    w.write(CLEAR);
    let Some((&first, rest)) = input.split_first() else {
        // Go's Write skips empty input, and Close then writes the clear code it never wrote.
        w.write(CLEAR);
        w.write(EOF);
        return w.finish();
    };
    let mut code = u16::from(first);
    // Go's `incHi`: returns true when the table was reset (the new entry is not stored).
    let inc_hi = |w: &mut BitWriter, hi: &mut u16, overflow: &mut u16| -> bool {
        *hi += 1;
        if *hi == *overflow {
            w.width += 1;
            *overflow <<= 1;
        }
        if *hi == MAX_CODE {
            w.write(CLEAR);
            w.width = LIT_WIDTH + 1;
            *hi = EOF;
            *overflow = 1 << 9;
            return true;
        }
        false
    };
    for &byte in rest {
        if let Some(&next) = table.get(&(code, byte)) {
            code = next;
            continue;
        }
        w.write(code);
        let key = (code, byte);
        code = u16::from(byte);
        if inc_hi(&mut w, &mut hi, &mut overflow) {
            table.clear();
            continue;
        }
        table.insert(key, hi);
    }
    w.write(code);
    inc_hi(&mut w, &mut hi, &mut overflow);
    w.write(EOF);
    w.finish()
}

/// Codes packed least significant bit first, as `Writer.writeLSB`.
#[derive(Debug)]
struct BitWriter {
    out: Vec<u8>,
    bits: u32,
    nbits: u32,
    width: u32,
}

impl Default for BitWriter {
    fn default() -> Self {
        Self {
            out: Vec::new(),
            bits: 0,
            nbits: 0,
            width: LIT_WIDTH + 1,
        }
    }
}

impl BitWriter {
    fn write(&mut self, code: u16) {
        self.bits |= u32::from(code) << self.nbits;
        self.nbits += self.width;
        while self.nbits >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.out.push(self.bits as u8);
        }
        self.out
    }
}
