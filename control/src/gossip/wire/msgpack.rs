//! The msgpack subset memberlist speaks, written as go-msgpack 0.5.5 writes it and read as
//! leniently as it reads.
//!
//! Why not a msgpack crate: byte-for-byte agreement with Go needs three quirks that serde
//! codecs do not offer together, all confirmed against bytes from Go memberlist 0.2.2 (see
//! `tests.rs`):
//! - `MsgpackHandle{}` has `WriteExt: false`, the pre-2013 spec: strings *and* `[]byte` are
//!   "raw" (fixstr up to 31 bytes, then str16, str32); never str8 (0xd9) nor bin (0xc4..);
//! - a nil `[]byte` is msgpack nil (0xc0), not an empty string;
//! - integers take the smallest encoding of their value, whatever the Go type (`uint32`
//!   42 is one byte, 70000 is `0xce` + 4 bytes), non-negative signed ones as unsigned.
//!
//! Reading accepts every encoding of a kind (str8 and bin too, any integer width, nil for a
//! zero value), as go-msgpack does, so a newer peer (go-msgpack v2 with other options) still
//! decodes.

use super::error::WireError;

/// Values nested deeper than this inside an unknown field are refused rather than skipped:
/// memberlist's own values are never deeper than 2, and recursion must stay bounded.
const MAX_SKIP_DEPTH: usize = 16;

pub(crate) fn write_map_len(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x80 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xde);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// A string or byte string, as go-msgpack's `writeContainerLen` with `WriteExt` off.
pub(crate) fn write_raw(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// A `[]byte` field: we hold no distinction between nil and empty, and Go's senders leave
/// unset byte fields nil, so empty is written as nil, as Go writes it.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.push(0xc0);
    } else {
        write_raw(out, bytes);
    }
}

pub(crate) fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v <= 0x7f {
        out.push(v as u8);
    } else if let Ok(b) = u8::try_from(v) {
        out.extend_from_slice(&[0xcc, b]);
    } else if let Ok(s) = u16::try_from(v) {
        out.push(0xcd);
        out.extend_from_slice(&s.to_be_bytes());
    } else if let Ok(w) = u32::try_from(v) {
        out.push(0xce);
        out.extend_from_slice(&w.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

/// A map key then its value written by `value`: keeps the encoders one line per field.
pub(crate) fn field(out: &mut Vec<u8>, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
    write_raw(out, key.as_bytes());
    value(out);
}

/// A cursor over msgpack bytes. Running off the end is [`WireError::Incomplete`], so the
/// stream decoder can ask for more bytes; callers holding a complete buffer turn it into
/// [`WireError::Truncated`].
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Any declared length above this is refused at once, before waiting for the bytes.
    limit: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], limit: usize) -> Self {
        Self { buf, pos: 0, limit }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn byte(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if len > self.limit {
            return Err(WireError::TooLarge {
                what: "msgpack value",
                len,
                max: self.limit,
            });
        }
        let end = self.pos.checked_add(len).ok_or(WireError::Incomplete)?;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Incomplete)?;
        self.pos = end;
        Ok(bytes)
    }

    fn be(&mut self, len: usize) -> Result<u64, WireError> {
        Ok(self
            .take(len)?
            .iter()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    /// The number of entries of a map (nil counts as an empty map, as Go decodes it).
    pub(crate) fn map_len(&mut self) -> Result<usize, WireError> {
        let len = match self.byte()? {
            b @ 0x80..=0x8f => usize::from(b & 0x0f),
            0xde => self.be(2)? as usize,
            0xdf => self.be(4)? as usize,
            0xc0 => 0,
            _ => return Err(WireError::Malformed("expected a msgpack map")),
        };
        // Each entry takes at least two bytes: refuse a count no buffer under the limit holds.
        if len > self.limit / 2 {
            return Err(WireError::TooLarge {
                what: "msgpack map",
                len,
                max: self.limit / 2,
            });
        }
        Ok(len)
    }

    /// A string or byte string in any encoding; nil is `None`.
    pub(crate) fn raw(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let len = match self.byte()? {
            0xc0 => return Ok(None),
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 | 0xc4 => self.be(1)? as usize,
            0xda | 0xc5 => self.be(2)? as usize,
            0xdb | 0xc6 => self.be(4)? as usize,
            _ => return Err(WireError::Malformed("expected a msgpack string")),
        };
        self.take(len).map(Some)
    }

    /// An unsigned integer in any encoding (nil is 0, as Go decodes it), at most `max`.
    pub(crate) fn uint(&mut self, max: u64) -> Result<u64, WireError> {
        let Some(v) = self.int_value()? else {
            return Err(WireError::Malformed("negative integer"));
        };
        if v > max {
            return Err(WireError::Malformed("integer out of range"));
        }
        Ok(v)
    }

    /// An integer in any encoding: `Some` if it is non-negative, `None` if negative (no field
    /// of memberlist's may be negative, so the value itself is not needed).
    fn int_value(&mut self) -> Result<Option<u64>, WireError> {
        let b = self.byte()?;
        Ok(match b {
            0x00..=0x7f => Some(u64::from(b)),
            0xe0..=0xff => None,
            0xc0 => Some(0),
            0xcc => Some(self.be(1)?),
            0xcd => Some(self.be(2)?),
            0xce => Some(self.be(4)?),
            0xcf => Some(self.be(8)?),
            0xd0..=0xd3 => {
                let width = 1usize << (b - 0xd0);
                let raw = self.be(width)?;
                // Sign-extend from `width` bytes.
                let shift = 64 - 8 * width as u32;
                let v = ((raw << shift) as i64) >> shift;
                u64::try_from(v).ok()
            }
            _ => return Err(WireError::Malformed("expected a msgpack integer")),
        })
    }

    pub(crate) fn bool(&mut self) -> Result<bool, WireError> {
        match self.byte()? {
            0xc3 => Ok(true),
            0xc2 | 0xc0 => Ok(false),
            _ => Err(WireError::Malformed("expected a msgpack bool")),
        }
    }

    /// Skips one value of any type, for fields we do not know (a newer peer's additions).
    pub(crate) fn skip(&mut self) -> Result<(), WireError> {
        self.skip_depth(0)
    }

    fn skip_depth(&mut self, depth: usize) -> Result<(), WireError> {
        if depth > MAX_SKIP_DEPTH {
            return Err(WireError::Malformed("msgpack value nested too deeply"));
        }
        let b = self.byte()?;
        let (data, items) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(b & 0x0f)),
            0x90..=0x9f => (0, usize::from(b & 0x0f)),
            0xa0..=0xbf => (usize::from(b & 0x1f), 0),
            0xc4 | 0xd9 => (self.be(1)? as usize, 0),
            0xc5 | 0xda => (self.be(2)? as usize, 0),
            0xc6 | 0xdb => (self.be(4)? as usize, 0),
            0xc7 => (self.be(1)? as usize + 1, 0),
            0xc8 => (self.be(2)? as usize + 1, 0),
            0xc9 => (self.be(4)? as usize + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, self.be(2)? as usize),
            0xdd => (0, self.be(4)? as usize),
            0xde => (0, 2 * self.be(2)? as usize),
            0xdf => (0, 2 * self.be(4)? as usize),
            0xc1 => return Err(WireError::Malformed("msgpack byte 0xc1 is never used")),
        };
        self.take(data)?;
        if items > self.limit {
            return Err(WireError::TooLarge {
                what: "msgpack container",
                len: items,
                max: self.limit,
            });
        }
        for _ in 0..items {
            self.skip_depth(depth + 1)?;
        }
        Ok(())
    }

    /// Reads a map whose keys are field names, handing each value to `field`, which returns
    /// `false` for a name it does not know (then the value is skipped, as Go ignores it).
    pub(crate) fn fields(
        &mut self,
        mut field: impl FnMut(&[u8], &mut Self) -> Result<bool, WireError>,
    ) -> Result<(), WireError> {
        for _ in 0..self.map_len()? {
            let key = self.raw()?.unwrap_or_default();
            if !field(key, self)? {
                self.skip()?;
            }
        }
        Ok(())
    }
}

/// Turns running off the end of a buffer known to be complete into truncation.
pub(crate) fn complete<T>(r: Result<T, WireError>, what: &'static str) -> Result<T, WireError> {
    r.map_err(|e| match e {
        WireError::Incomplete => WireError::Truncated(what),
        other => other,
    })
}
