//! VIP balancing, east-west: the client's node picks a backend for each new flow and rewrites
//! the destination on the way out and the source on the way back, so backends see the real
//! client address and clients only ever see the VIP. Sans-IO, like the rest of the core:
//! packets and `now` in, rewrites and decisions out.
//!
//! - [`flow`]: the 5-tuple of a packet;
//! - [`service`]: a VIP's backends, their counters and the algorithms;
//! - [`maglev`]: the Maglev lookup table (consistent hashing);
//! - [`conntrack`]: the bounded flow table.

pub mod conntrack;
pub mod flow;
pub mod maglev;
pub mod service;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

pub use conntrack::{Class, ConntrackConfig, Entry};
pub use service::{Algorithm, Backend, BackendSpec, BackendState, ServiceSpec, VipService};

use crate::types::{Timestamp, Vni};
use crate::wire::checksum::{rewrite_ipv4_dst, rewrite_ipv4_src};
use conntrack::Conntrack;
use flow::{Kind, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// What happened to flows, for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BalanceCounters {
    /// New flows given a backend.
    pub flows_opened: u64,
    /// New flows refused because no backend takes new flows.
    pub no_backend: u64,
    /// Packets to a VIP that belong to no flow (a TCP segment that is not a SYN): reset.
    pub untracked: u64,
    /// Packets of flows whose backend was removed: reset (TCP) or refused (UDP).
    pub backend_gone: u64,
    /// Entries evicted to make room (the table was full).
    pub evicted: u64,
    /// Entries removed after their idle timeout.
    pub expired: u64,
    /// ICMP echo requests to a VIP answered by the VIP itself.
    pub echo_replies: u64,
    /// Packets to a VIP we do not balance (fragments, ICMP other than echo, other protocols).
    pub not_balanced: u64,
}

/// The decision for a packet from a local endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Not addressed to a VIP of this network.
    NotVip,
    /// The destination is now this backend: deliver the packet there.
    Forward(Ipv4Addr),
    /// Answer the client at once, from the VIP.
    Answer(Answer),
    /// A packet to a VIP that cannot be balanced: dropped, counted.
    Drop,
}

/// How the VIP answers a packet itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A TCP reset: no backend, no flow, or the flow's backend is gone.
    Reset,
    /// ICMP port unreachable (UDP with no backend).
    PortUnreachable,
    /// ICMP echo reply (people ping service names).
    EchoReply,
}

/// A VIP's counters, for status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipStats {
    pub vni: Vni,
    pub vip: Ipv4Addr,
    pub algorithm: Algorithm,
    pub backends: Vec<Backend>,
}

#[derive(Debug)]
pub struct Balancer {
    services: BTreeMap<(Vni, Ipv4Addr), VipService>,
    conntrack: Conntrack,
    /// splitmix64 state: two-choices draws (seeded by the caller, no clock, no OS).
    rng: u64,
    counters: BalanceCounters,
}

impl Balancer {
    pub fn new(config: ConntrackConfig, seed: u64) -> Self {
        Self {
            services: BTreeMap::new(),
            conntrack: Conntrack::new(config),
            rng: seed,
            counters: BalanceCounters::default(),
        }
    }

    pub fn counters(&self) -> BalanceCounters {
        self.counters
    }

    pub fn conntrack_len(&self) -> usize {
        self.conntrack.len()
    }

    pub fn conntrack_config(&self) -> ConntrackConfig {
        self.conntrack.config()
    }

    pub fn is_vip(&self, vni: Vni, ip: Ipv4Addr) -> bool {
        self.services.contains_key(&(vni, ip))
    }

    pub fn service(&self, vni: Vni, vip: Ipv4Addr) -> Option<&VipService> {
        self.services.get(&(vni, vip))
    }

    pub fn stats(&self) -> Vec<VipStats> {
        self.services
            .values()
            .map(|s| VipStats {
                vni: s.vni,
                vip: s.vip,
                algorithm: s.algorithm,
                backends: s.backends.clone(),
            })
            .collect()
    }

    /// Sets a service whole. Flows of backends it no longer has are marked for reset; flows
    /// of draining backends carry on.
    pub fn set_service(&mut self, spec: &ServiceSpec) {
        let key = (spec.vni, spec.vip);
        let service = VipService::new(spec, self.services.get(&key));
        let kept = |ip: Ipv4Addr| service.backends.iter().any(|b| b.ip == ip);
        let mut gone =
            |e: &Entry| e.orig.vni == spec.vni && e.orig.dst == spec.vip && !kept(e.backend);
        self.mark_reset(&mut gone);
        self.services.insert(key, service);
    }

    pub fn remove_service(&mut self, vni: Vni, vip: Ipv4Addr) {
        self.services.remove(&(vni, vip));
        self.mark_reset(&mut |e: &Entry| e.orig.vni == vni && e.orig.dst == vip);
    }

    /// Forgets a network's services (the node left it); their flows are reset.
    pub fn remove_network(&mut self, vni: Vni) {
        self.services.retain(|(v, _), _| *v != vni);
        self.mark_reset(&mut |e: &Entry| e.orig.vni == vni);
    }

    /// Marks the flows `matches` selects: their next packet is answered with a reset, and
    /// they close soon (no longer counted open).
    fn mark_reset(&mut self, matches: &mut impl FnMut(&Entry) -> bool) {
        for entry in self.conntrack.entries_mut() {
            if matches(entry) {
                entry.reset = true;
            }
        }
    }

    /// A packet from a local endpoint, `ip` starting at its IPv4 header: balanced if it goes
    /// to a VIP (the destination rewritten in place).
    pub fn outbound(&mut self, now: Timestamp, vni: Vni, ip: &mut [u8]) -> Outbound {
        if self.services.is_empty() {
            return Outbound::NotVip;
        }
        let Some(packet) = flow::parse(vni, ip) else {
            return Outbound::NotVip;
        };
        let Some(service) = self.services.get(&(vni, packet.key.dst)) else {
            return Outbound::NotVip;
        };
        let has_backend = service.has_eligible();
        match packet.kind {
            Kind::Other => {
                self.counters.not_balanced += 1;
                return Outbound::Drop;
            }
            Kind::EchoRequest if has_backend => {
                self.counters.echo_replies += 1;
                return Outbound::Answer(Answer::EchoReply);
            }
            Kind::EchoRequest => {
                self.counters.no_backend += 1;
                return Outbound::Answer(Answer::PortUnreachable);
            }
            Kind::Tcp { .. } | Kind::Udp => {}
        }
        let backend = match self.existing_flow(now, &packet) {
            Some(Ok(backend)) => backend,
            Some(Err(answer)) => return Outbound::Answer(answer),
            None => match self.new_flow(now, &packet) {
                Ok(backend) => backend,
                Err(answer) => return Outbound::Answer(answer),
            },
        };
        match rewrite_ipv4_dst(ip, backend) {
            Ok(()) => Outbound::Forward(backend),
            Err(_) => Outbound::Drop,
        }
    }

    /// The backend of the packet's flow, if it has one; `Err` when the flow must be refused.
    fn existing_flow(
        &mut self,
        now: Timestamp,
        packet: &Packet,
    ) -> Option<Result<Ipv4Addr, Answer>> {
        let (slot, is_reply) = self.find(now, &packet.key)?;
        if is_reply {
            return None;
        }
        let entry = *self.conntrack.get(slot)?;
        // A new SYN on the 4-tuple of a finished flow, or of one whose backend is gone (a
        // client reusing its port): a new flow, not a refusal.
        let fresh_syn = matches!(packet.kind, Kind::Tcp { flags, .. } if flags & (TCP_SYN | TCP_ACK) == TCP_SYN);
        if fresh_syn && (entry.reset || entry.class == Class::Closing) {
            self.close(slot);
            return None;
        }
        if entry.reset {
            self.close(slot);
            self.counters.backend_gone += 1;
            return Some(Err(refusal(packet.kind)));
        }
        let class = next_class(&entry, packet.kind, false);
        self.update(slot, now, class, packet.kind, false);
        Some(Ok(entry.backend))
    }

    fn new_flow(&mut self, now: Timestamp, packet: &Packet) -> Result<Ipv4Addr, Answer> {
        let class = match packet.kind {
            Kind::Tcp { flags, .. } if flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN => {
                Class::Opening
            }
            Kind::Tcp { .. } => {
                self.counters.untracked += 1;
                return Err(Answer::Reset);
            }
            _ => Class::Datagram,
        };
        let random = self.next_random();
        let hash = service::flow_hash(&packet.key.to_bytes());
        let Some(service) = self.services.get_mut(&(packet.key.vni, packet.key.dst)) else {
            return Err(refusal(packet.kind));
        };
        let Some(index) = service.pick(packet.key.src, hash, random) else {
            self.counters.no_backend += 1;
            return Err(refusal(packet.kind));
        };
        let backend = service.backends[index].ip;
        let entry = Entry {
            orig: packet.key,
            backend,
            class,
            fin_orig: false,
            fin_reply: false,
            reset: false,
            last_seen: now,
        };
        let (services, counters) = (&mut self.services, &mut self.counters);
        let inserted = self.conntrack.insert(entry, &mut |evicted| {
            counters.evicted += 1;
            release(services, &evicted);
        });
        if inserted.is_none() {
            // A table with room for nothing: balance without state (each packet anew).
            release(&mut self.services, &entry);
        }
        self.counters.flows_opened += 1;
        Ok(backend)
    }

    /// A packet travelling toward a local endpoint (from a backend, local or remote): if it
    /// answers a balanced flow, its source becomes the VIP again. Returns whether it did.
    pub fn inbound(&mut self, now: Timestamp, vni: Vni, ip: &mut [u8]) -> bool {
        if self.conntrack.is_empty() {
            return false;
        }
        let Some(packet) = flow::parse(vni, ip) else {
            return false;
        };
        let Some((slot, true)) = self.find(now, &packet.key) else {
            return false;
        };
        let Some(entry) = self.conntrack.get(slot).copied() else {
            return false;
        };
        let class = next_class(&entry, packet.kind, true);
        self.update(slot, now, class, packet.kind, true);
        rewrite_ipv4_src(ip, entry.orig.dst).is_ok()
    }

    fn find(&mut self, now: Timestamp, key: &flow::FlowKey) -> Option<(conntrack::Slot, bool)> {
        let (services, counters) = (&mut self.services, &mut self.counters);
        self.conntrack.find(key, now, &mut |expired| {
            counters.expired += 1;
            release(services, &expired);
        })
    }

    /// Records a packet: time, FIN flags, class; an entry that stops being open releases its
    /// backend's count.
    fn update(
        &mut self,
        slot: conntrack::Slot,
        now: Timestamp,
        class: Class,
        kind: Kind,
        is_reply: bool,
    ) {
        let Some(entry) = self.conntrack.get_mut(slot) else {
            return;
        };
        if let Kind::Tcp { flags, .. } = kind
            && flags & TCP_FIN != 0
        {
            if is_reply {
                entry.fin_reply = true;
            } else {
                entry.fin_orig = true;
            }
        }
        let was_open = entry.is_open();
        let before = *entry;
        self.conntrack.touch(slot, now, class);
        if was_open && class == Class::Closing {
            release(&mut self.services, &before);
        }
    }

    /// Removes a flow now.
    fn close(&mut self, slot: conntrack::Slot) {
        if let Some(entry) = self.conntrack.remove(slot) {
            release(&mut self.services, &entry);
        }
    }

    /// Removes flows idle past their timeout. The shell calls this now and then (each second);
    /// lookups also drop an expired entry they find.
    pub fn expire(&mut self, now: Timestamp) {
        let (services, counters) = (&mut self.services, &mut self.counters);
        self.conntrack.expire(now, &mut |expired| {
            counters.expired += 1;
            release(services, &expired);
        });
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64 (Steele, Lea, Flood 2014): fast, and good enough to draw two backends.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// An open entry leaving (closed, expired, evicted) gives its backend one fewer open flow.
fn release(services: &mut BTreeMap<(Vni, Ipv4Addr), VipService>, entry: &Entry) {
    if !entry.is_open() || entry.reset {
        return;
    }
    if let Some(service) = services.get_mut(&(entry.orig.vni, entry.orig.dst)) {
        service.release(entry.backend);
    }
}

/// The class a flow moves to with this packet.
fn next_class(entry: &Entry, kind: Kind, is_reply: bool) -> Class {
    let Kind::Tcp { flags, .. } = kind else {
        return entry.class;
    };
    let fin_orig = entry.fin_orig || (!is_reply && flags & TCP_FIN != 0);
    let fin_reply = entry.fin_reply || (is_reply && flags & TCP_FIN != 0);
    if flags & TCP_RST != 0 || (fin_orig && fin_reply) || entry.class == Class::Closing {
        Class::Closing
    } else if is_reply && entry.class == Class::Opening {
        Class::Established
    } else {
        entry.class
    }
}

/// How a refused packet is answered: TCP gets a reset, UDP a port unreachable.
fn refusal(kind: Kind) -> Answer {
    match kind {
        Kind::Tcp { .. } => Answer::Reset,
        _ => Answer::PortUnreachable,
    }
}
