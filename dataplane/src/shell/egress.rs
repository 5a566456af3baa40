//! Frames going into TAPs: the attached TAPs, and the coalescers that merge consecutive TCP
//! segments for an offloading TAP into one write (userspace GRO, `wire::offload`).

use crate::shell::runtime::ShellCounters;
use crate::shell::tap::Tap;
use crate::types::EndpointId;
use crate::wire::offload::{TcpCoalescer, VnetHdr};
use std::collections::BTreeMap;

/// Coalescers held at once: one per endpoint receiving in the current batch. Each holds up
/// to 64 KiB, so the pool is small and its buffers are reused, not one per endpoint.
const COALESCERS: usize = 8;

/// The TAPs of a node and what is pending for them.
#[derive(Debug, Default)]
pub(crate) struct Egress {
    pub taps: BTreeMap<EndpointId, Tap>,
    coalescers: Vec<(EndpointId, TcpCoalescer)>,
    pub counters: ShellCounters,
}

impl Egress {
    /// Writes `frame` to the TAP of `id`, or holds it to merge with the next segments of the
    /// same flow. Order per endpoint is kept: whatever is held goes out before a frame that
    /// does not merge with it.
    pub fn deliver(&mut self, id: EndpointId, frame: &[u8]) {
        let Some(tap) = self.taps.get(&id) else {
            self.counters.no_tap += 1;
            return;
        };
        if !tap.has_vnet_hdr() {
            let result = tap.write(frame);
            count_write(&mut self.counters, result.is_ok());
            return;
        }
        let k = self.coalescer_for(id);
        let (Some(tap), coalescer) = (self.taps.get(&id), &mut self.coalescers[k].1) else {
            return;
        };
        if coalescer.push(frame) {
            return;
        }
        write_held(tap, &mut self.counters, coalescer);
        if coalescer.push(frame) {
            return;
        }
        let result = tap.write_with_hdr(&VnetHdr::default().emit(), frame);
        count_write(&mut self.counters, result.is_ok());
    }

    /// Writes out everything held: at the end of every batch, so nothing waits for traffic
    /// that may never come.
    pub fn flush(&mut self) {
        for (id, coalescer) in &mut self.coalescers {
            release(self.taps.get(id), &mut self.counters, coalescer);
        }
    }

    /// The index of the coalescer of `id`: its own, a free one, or the first one flushed.
    fn coalescer_for(&mut self, id: EndpointId) -> usize {
        if let Some(k) = self.coalescers.iter().position(|(owner, _)| *owner == id) {
            return k;
        }
        if self.coalescers.len() < COALESCERS {
            self.coalescers.push((id, TcpCoalescer::new()));
            return self.coalescers.len() - 1;
        }
        let k = self
            .coalescers
            .iter()
            .position(|(_, c)| c.is_empty())
            .unwrap_or(0);
        let (owner, coalescer) = &mut self.coalescers[k];
        release(self.taps.get(owner), &mut self.counters, coalescer);
        *owner = id;
        k
    }
}

/// Writes out what `coalescer` holds to `tap`; counted as lost if the TAP is gone.
fn release(tap: Option<&Tap>, counters: &mut ShellCounters, coalescer: &mut TcpCoalescer) {
    match tap {
        Some(tap) => write_held(tap, counters, coalescer),
        None if !coalescer.is_empty() => {
            counters.no_tap += 1;
            let _ = coalescer.take();
        }
        None => {}
    }
}

fn write_held(tap: &Tap, counters: &mut ShellCounters, coalescer: &mut TcpCoalescer) {
    let segments = coalescer.segments();
    let Some((hdr, frame)) = coalescer.take() else {
        return;
    };
    if segments > 1 {
        counters.coalesced_frames += 1;
        counters.coalesced_segments += u64::from(segments);
    }
    let result = tap.write_with_hdr(&hdr.emit(), frame);
    count_write(counters, result.is_ok());
}

fn count_write(counters: &mut ShellCounters, ok: bool) {
    if !ok {
        counters.tap_write_errors += 1;
    }
}
