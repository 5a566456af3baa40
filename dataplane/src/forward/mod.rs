//! The forwarding core: what happens to every frame from a local endpoint and to every
//! datagram from another node, in the order of DESIGN.md "The data path".
//!
//! Sans-IO: frames come in as a range of a caller-owned buffer, and a [`Verdict`] says where
//! the (possibly rewritten, encapsulated or sealed) bytes go. Encapsulation happens in place,
//! so the shell reads each frame [`HEADROOM`] bytes into its buffer and leaves [`TAILROOM`]
//! bytes after it. Nothing is allocated per frame; time comes in as `now`.
//!
//! Each step returns `ControlFlow`: `Break(verdict)` claims the frame, `Continue` passes it
//! on, so the precedence reads top to bottom in [`Forwarder::endpoint_steps`] and
//! [`Forwarder::wire_steps`].

mod counters;
mod reply;
mod tables;
#[cfg(test)]
mod tests;

pub use counters::{Counters, DropReason, NetworkTraffic};
pub use tables::{
    LocalEndpoint, Network, NetworkKeyBytes, RemoteEndpoint, Tables, Update, UpdateError,
};

use crate::balance::{Answer, ConntrackConfig, Outbound};
use crate::seal::{OpenError, SealError};
use crate::types::{EndpointId, Mac, OverlayIp, SenderId, Timestamp, UnderlayAddr};
use crate::wire::checksum::clamp_mss;
use crate::wire::vxlan::{self, Header, SEALED_HEADER_LEN, TAG_LEN, VXLAN_HEADER_LEN};
use reply::{ETH_LEN, Unreachable};
use std::net::Ipv4Addr;
use std::ops::{ControlFlow, Range};
use tables::Owner;

/// Bytes the shell leaves free before each frame it reads from a TAP: room for the sealed
/// VXLAN header, the longest one we prepend.
pub const HEADROOM: usize = SEALED_HEADER_LEN;
/// Bytes the shell leaves free after each frame: room for the AEAD tag.
pub const TAILROOM: usize = TAG_LEN;
/// Bytes from a frame's start the core may write when it answers that frame with an ICMP
/// error (Ethernet + IPv4 + ICMP + the quoted header and 8 bytes): a buffer with less room
/// than this after `frame.start` gets a plain drop instead of the courtesy reply.
pub const REPLY_ROOM: usize = 14 + 20 + 8 + 60 + 8;

/// Bytes the IPv4 and TCP headers take out of the MTU when clamping the MSS.
const IPV4_TCP_HEADERS: u16 = 40;

/// Where the bytes of a handled frame go.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Write `buf[frame]` (an Ethernet frame) to the TAP of `endpoint`.
    ToEndpoint {
        endpoint: EndpointId,
        frame: Range<usize>,
    },
    /// Send `buf[datagram]` (a VXLAN or sealed-VXLAN datagram) to `dest`.
    ToWire {
        dest: UnderlayAddr,
        datagram: Range<usize>,
    },
    /// Nothing goes anywhere; the reason has been counted.
    Drop(DropReason),
}

/// The forwarding core of one node.
#[derive(Debug)]
pub struct Forwarder {
    tables: Tables,
    counters: Counters,
}

/// A frame from a local endpoint that passed anti-spoofing.
#[derive(Clone, Copy, Debug)]
struct FromEndpoint {
    id: EndpointId,
    endpoint: LocalEndpoint,
    kind: FrameKind,
}

#[derive(Clone, Copy, Debug)]
enum FrameKind {
    Arp(reply::ArpRequest),
    Ipv4 { dst: Ipv4Addr },
}

impl Forwarder {
    /// `sender` must be unique per node in the cluster; `counter_start` must grow across
    /// restarts of the node (the shell derives it from the wall clock), so that no nonce is
    /// ever reused under a key that survives the restart.
    pub fn new(sender: SenderId, counter_start: u64) -> Forwarder {
        Self::with_conntrack(sender, counter_start, ConntrackConfig::default())
    }

    /// [`new`](Self::new) with the VIP balancer's flow-table limits and timeouts.
    pub fn with_conntrack(
        sender: SenderId,
        counter_start: u64,
        conntrack: ConntrackConfig,
    ) -> Forwarder {
        Forwarder {
            tables: Tables::new(sender, counter_start, conntrack),
            counters: Counters::default(),
        }
    }

    /// Removes balanced flows idle past their timeouts (the shell calls it about once a second).
    pub fn expire(&mut self, now: Timestamp) {
        self.tables.balancer.expire(now);
    }

    /// Applies a table or key update. A refused update changes nothing.
    pub fn handle_update(&mut self, update: Update) -> Result<(), UpdateError> {
        self.tables.apply(update)
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Handles the Ethernet frame `buf[frame]` that local endpoint `from` sent.
    /// `buf` must have [`HEADROOM`] bytes before `frame` and [`TAILROOM`] after it for the
    /// frame to be encapsulated; without them it is dropped as [`DropReason::NoRoom`]. A
    /// refused frame is answered in place with an ICMP error only if [`REPLY_ROOM`] bytes
    /// (or the frame and its tailroom, if longer) follow `frame.start`.
    pub fn handle_endpoint_frame(
        &mut self,
        now: Timestamp,
        from: EndpointId,
        buf: &mut [u8],
        frame: Range<usize>,
    ) -> Verdict {
        let flow = self.endpoint_steps(now, from, buf, frame);
        self.settle(flow)
    }

    /// Handles the UDP payload `buf[datagram]` that arrived on the overlay socket from `from`.
    pub fn handle_wire_datagram(
        &mut self,
        now: Timestamp,
        from: UnderlayAddr,
        buf: &mut [u8],
        datagram: Range<usize>,
    ) -> Verdict {
        let flow = self.wire_steps(now, from, buf, datagram);
        self.settle(flow)
    }

    /// The verdict the steps reached, its drop (if any) counted.
    fn settle(&mut self, flow: ControlFlow<Verdict, Verdict>) -> Verdict {
        let (ControlFlow::Break(verdict) | ControlFlow::Continue(verdict)) = flow;
        if let Verdict::Drop(reason) = verdict {
            self.counters.count_drop(reason);
        }
        verdict
    }

    // ---- frames from a local endpoint -------------------------------------------------

    /// The ordered steps of DESIGN.md for a frame from a local endpoint.
    fn endpoint_steps(
        &mut self,
        now: Timestamp,
        from: EndpointId,
        buf: &mut [u8],
        frame: Range<usize>,
    ) -> ControlFlow<Verdict, Verdict> {
        // 1. anti-spoofing
        let src = self.anti_spoofing(now, from, buf, &frame)?;
        // 2. ARP, answered from the tables
        self.answer_arp(src, buf, &frame)?;
        // 3. VIP: answers of balanced flows get their VIP back; packets to a VIP a backend
        let src = self.balance(now, src, buf, &frame)?;
        // 4. endpoint: a local TAP, or encapsulated to the owning node
        self.deliver(src, buf, &frame)?;
        // 5. anything else is refused
        ControlFlow::Continue(self.refuse(src, buf, frame))
    }

    fn anti_spoofing(
        &mut self,
        now: Timestamp,
        from: EndpointId,
        buf: &[u8],
        frame: &Range<usize>,
    ) -> ControlFlow<Verdict, FromEndpoint> {
        let drop = |r| ControlFlow::Break(Verdict::Drop(r));
        let Some(endpoint) = self.tables.endpoints.get_mut(&from) else {
            return drop(DropReason::UnknownEndpoint);
        };
        endpoint.last_sent = Some(now);
        let endpoint = *endpoint;
        let Some(bytes) = buf.get(frame.clone()) else {
            return drop(DropReason::MalformedFrame);
        };
        let Ok((eth, payload)) = etherparse::Ethernet2Header::from_slice(bytes) else {
            return drop(DropReason::MalformedFrame);
        };
        if eth.source != endpoint.mac.0 {
            return drop(DropReason::SpoofedMac);
        }
        let (kind, claimed_src) = match eth.ether_type {
            etherparse::EtherType::ARP => match reply::parse_arp_request(payload) {
                Some(req) => (FrameKind::Arp(req), req.sender_ip),
                None => return drop(DropReason::ArpNotRequest),
            },
            etherparse::EtherType::IPV4 => match etherparse::Ipv4HeaderSlice::from_slice(payload) {
                Ok(ip) => (
                    FrameKind::Ipv4 {
                        dst: ip.destination_addr(),
                    },
                    ip.source_addr(),
                ),
                Err(_) => return drop(DropReason::MalformedFrame),
            },
            _ => return drop(DropReason::UnsupportedEtherType),
        };
        if claimed_src != endpoint.ip {
            return drop(DropReason::SpoofedIp);
        }
        ControlFlow::Continue(FromEndpoint {
            id: from,
            endpoint,
            kind,
        })
    }

    fn answer_arp(
        &mut self,
        src: FromEndpoint,
        buf: &mut [u8],
        frame: &Range<usize>,
    ) -> ControlFlow<Verdict> {
        let FrameKind::Arp(req) = src.kind else {
            return ControlFlow::Continue(());
        };
        let Some(net) = self.tables.networks.get(&src.endpoint.vni) else {
            return ControlFlow::Break(Verdict::Drop(DropReason::UnknownEndpoint));
        };
        // Never flood, never learn: an address the tables do not hold gets no answer.
        let vip_mac = self
            .tables
            .balancer
            .is_vip(net.vni, req.target_ip)
            .then(|| Mac::from_overlay_ip(OverlayIp(req.target_ip)));
        let Some(mac) = net
            .mac_of(req.target_ip, &self.tables.endpoints)
            .or(vip_mac)
        else {
            return ControlFlow::Break(Verdict::Drop(DropReason::ArpUnknownTarget));
        };
        let Some(len) = buf
            .get_mut(frame.clone())
            .and_then(|f| reply::write_arp_reply(f, &req, mac))
        else {
            return ControlFlow::Break(Verdict::Drop(DropReason::MalformedFrame));
        };
        self.counters.arp_replies += 1;
        ControlFlow::Break(Verdict::ToEndpoint {
            endpoint: src.id,
            frame: frame.start..frame.start + len,
        })
    }

    /// The balancer's step: a packet answering a balanced flow (a local backend replying to a
    /// local client) gets the VIP back as its source; a packet to a VIP gets a backend as its
    /// destination, or is answered by the VIP itself.
    fn balance(
        &mut self,
        now: Timestamp,
        src: FromEndpoint,
        buf: &mut [u8],
        frame: &Range<usize>,
    ) -> ControlFlow<Verdict, FromEndpoint> {
        let FrameKind::Ipv4 { dst } = src.kind else {
            return ControlFlow::Continue(src);
        };
        let vni = src.endpoint.vni;
        let Some(ip) = buf.get_mut(frame.start + ETH_LEN..frame.end) else {
            return ControlFlow::Continue(src);
        };
        let balancer = &mut self.tables.balancer;
        if balancer.inbound(now, vni, ip) {
            return ControlFlow::Continue(src);
        }
        match balancer.outbound(now, vni, ip) {
            Outbound::NotVip => ControlFlow::Continue(src),
            Outbound::Forward(backend) => ControlFlow::Continue(FromEndpoint {
                kind: FrameKind::Ipv4 { dst: backend },
                ..src
            }),
            Outbound::Drop => ControlFlow::Break(Verdict::Drop(DropReason::VipNotBalanced)),
            Outbound::Answer(answer) => {
                ControlFlow::Break(self.answer_from_vip(answer, dst, src.id, buf, frame))
            }
        }
    }

    /// Writes the VIP's own answer to the frame in place (a reset, a port unreachable, an
    /// echo reply) and sends it back to the endpoint.
    fn answer_from_vip(
        &mut self,
        answer: Answer,
        vip: Ipv4Addr,
        to: EndpointId,
        buf: &mut [u8],
        frame: &Range<usize>,
    ) -> Verdict {
        let vip_mac = Mac::from_overlay_ip(OverlayIp(vip));
        // An ICMP error may be longer than the frame: the same room rule as `refuse`.
        let room = (frame.len() + TAILROOM).max(REPLY_ROOM);
        let len = frame.len();
        let written = buf
            .get_mut(frame.start..frame.start + room)
            .and_then(|out| match answer {
                Answer::Reset => reply::write_tcp_reset(out, len, vip_mac),
                Answer::EchoReply => reply::write_echo_reply(out, len, vip_mac),
                Answer::PortUnreachable => {
                    reply::write_icmp_unreachable(out, len, Unreachable::Port, vip, vip_mac)
                }
            });
        match written {
            Some(n) => {
                self.counters.vip_answers += 1;
                Verdict::ToEndpoint {
                    endpoint: to,
                    frame: frame.start..frame.start + n,
                }
            }
            None => Verdict::Drop(DropReason::NoRoom),
        }
    }

    fn deliver(
        &mut self,
        src: FromEndpoint,
        buf: &mut [u8],
        frame: &Range<usize>,
    ) -> ControlFlow<Verdict> {
        let FrameKind::Ipv4 { dst } = src.kind else {
            return ControlFlow::Continue(());
        };
        let Some(net) = self.tables.networks.get_mut(&src.endpoint.vni) else {
            return ControlFlow::Break(Verdict::Drop(DropReason::UnknownEndpoint));
        };
        if !is_unicast(dst, net) {
            return ControlFlow::Break(Verdict::Drop(DropReason::NotUnicast));
        }
        // Never put a frame on the overlay that its MTU does not allow: the underlay would
        // fragment it (or, batched with UDP GSO, refuse the whole batch).
        if frame.len() > usize::from(net.mtu) + ETH_LEN {
            return ControlFlow::Break(Verdict::Drop(DropReason::TooBig));
        }
        let owner = match net.owner(dst) {
            Some(owner) => owner,
            None => return ControlFlow::Continue(()),
        };
        let mss = net.mtu.saturating_sub(IPV4_TCP_HEADERS);
        if clamp_mss(&mut buf[frame.start + ETH_LEN..frame.end], mss) {
            self.counters.mss_clamped += 1;
        }
        let verdict = match owner {
            Owner::Local(id) => {
                let Some(mac) = self.tables.endpoints.get(&id).map(|e| e.mac) else {
                    return ControlFlow::Break(Verdict::Drop(DropReason::UnknownEndpoint));
                };
                set_dst_mac(buf, frame, mac);
                self.counters.local_delivered += 1;
                Verdict::ToEndpoint {
                    endpoint: id,
                    frame: frame.clone(),
                }
            }
            Owner::Remote(remote) => {
                set_dst_mac(buf, frame, remote.mac);
                let (vni, bytes) = (net.vni, frame.len());
                match encapsulate(net, buf, frame) {
                    Ok(datagram) => {
                        self.counters.encapsulated += 1;
                        self.counters.count_out(vni, bytes);
                        Verdict::ToWire {
                            dest: remote.node,
                            datagram,
                        }
                    }
                    Err(reason) => Verdict::Drop(reason),
                }
            }
        };
        ControlFlow::Break(verdict)
    }

    /// Answers a frame no step claimed with an ICMP error where that makes the sender's
    /// connect fail at once, and counts why it went nowhere.
    fn refuse(&mut self, src: FromEndpoint, buf: &mut [u8], frame: Range<usize>) -> Verdict {
        let FrameKind::Ipv4 { dst } = src.kind else {
            return Verdict::Drop(DropReason::MalformedFrame);
        };
        let vni = src.endpoint.vni;
        let elsewhere = self
            .tables
            .networks
            .values()
            .any(|n| n.vni != vni && n.claims(dst));
        let Some(net) = self.tables.networks.get(&vni) else {
            return Verdict::Drop(DropReason::UnknownEndpoint);
        };
        let (reason, code) = if elsewhere {
            (DropReason::Isolation, Unreachable::Prohibited)
        } else {
            (DropReason::NoRoute, Unreachable::Host)
        };
        // The error comes from the gateway, the hop the endpoint routed the packet through.
        let Some(gateway) = net.gateway else {
            return Verdict::Drop(reason);
        };
        let gateway_mac = Mac::from_overlay_ip(OverlayIp(gateway));
        // The reply may be longer than the frame: write only within the room the contract
        // gives (the frame, its tailroom, or REPLY_ROOM, whichever is more).
        let room = (frame.len() + TAILROOM).max(REPLY_ROOM);
        let Some(out) = buf.get_mut(frame.start..frame.start + room) else {
            return Verdict::Drop(reason);
        };
        let len = frame.end - frame.start;
        match reply::write_icmp_unreachable(out, len, code, gateway, gateway_mac) {
            Some(n) => {
                // The frame itself was dropped: count it, though the verdict carries the reply.
                self.counters.count_drop(reason);
                self.counters.icmp_rejects += 1;
                Verdict::ToEndpoint {
                    endpoint: src.id,
                    frame: frame.start..frame.start + n,
                }
            }
            None => Verdict::Drop(reason),
        }
    }

    // ---- datagrams from another node --------------------------------------------------

    /// The ordered steps of DESIGN.md for a datagram from the wire.
    fn wire_steps(
        &mut self,
        now: Timestamp,
        from: UnderlayAddr,
        buf: &mut [u8],
        datagram: Range<usize>,
    ) -> ControlFlow<Verdict, Verdict> {
        let drop = |r| ControlFlow::Break(Verdict::Drop(r));
        let Some(bytes) = buf.get(datagram.clone()) else {
            return drop(DropReason::MalformedDatagram);
        };
        let Ok((header, header_len)) = vxlan::parse(bytes) else {
            return drop(DropReason::MalformedDatagram);
        };
        let vni = match header {
            Header::Plain { vni } => vni,
            Header::Sealed(h) => h.vni,
        };
        let Some(net) = self.tables.networks.get_mut(&vni) else {
            return drop(DropReason::UnknownVni);
        };
        let frame = match open(net, header, buf, datagram, header_len) {
            Ok(frame) => frame,
            Err(reason) => return drop(reason),
        };
        let net = &*net;
        let Some(inner) = buf.get(frame.clone()) else {
            return drop(DropReason::MalformedFrame);
        };
        let Ok((eth, payload)) = etherparse::Ethernet2Header::from_slice(inner) else {
            return drop(DropReason::MalformedFrame);
        };
        match eth.ether_type {
            etherparse::EtherType::IPV4 => {}
            etherparse::EtherType::ARP => return drop(DropReason::ArpFromWire),
            _ => return drop(DropReason::UnsupportedEtherType),
        }
        let Ok(ip) = etherparse::Ipv4HeaderSlice::from_slice(payload) else {
            return drop(DropReason::MalformedFrame);
        };
        let (src_ip, dst_ip) = (ip.source_addr(), ip.destination_addr());
        // The inner source must be an endpoint the sending node owns: a node cannot speak
        // for another node's endpoints.
        let src_mac = match net.owner(src_ip) {
            Some(Owner::Remote(r)) if r.node.0.ip() == from.0.ip() => r.mac,
            _ => return drop(DropReason::SpoofedRemote),
        };
        let Some(Owner::Local(id)) = net.owner(dst_ip) else {
            return drop(DropReason::NotLocal);
        };
        // A remote backend answering a local client of a VIP: the client sees the VIP.
        if let Some(ip) = buf.get_mut(frame.start + ETH_LEN..frame.end) {
            self.tables.balancer.inbound(now, vni, ip);
        }
        let Some(mac) = self.tables.endpoints.get(&id).map(|e| e.mac) else {
            return drop(DropReason::NotLocal);
        };
        let mss = net.mtu.saturating_sub(IPV4_TCP_HEADERS);
        set_dst_mac(buf, &frame, mac);
        // The source MAC is the one the tables give that endpoint, whatever the sending node
        // wrote: it cannot put the gateway's or another endpoint's MAC on its frames.
        if let Some(src) = buf.get_mut(frame.start + 6..frame.start + 12) {
            src.copy_from_slice(&src_mac.0);
        }
        if clamp_mss(&mut buf[frame.start + ETH_LEN..frame.end], mss) {
            self.counters.mss_clamped += 1;
        }
        self.counters.decapsulated += 1;
        self.counters.count_in(vni, frame.len());
        ControlFlow::Break(Verdict::ToEndpoint {
            endpoint: id,
            frame,
        })
    }
}

/// Unicast within the network: not broadcast, multicast, or the subnet's broadcast address.
fn is_unicast(dst: Ipv4Addr, net: &Network) -> bool {
    !(dst.is_broadcast() || dst.is_multicast() || dst == net.subnet.broadcast())
}

fn set_dst_mac(buf: &mut [u8], frame: &Range<usize>, mac: Mac) {
    if let Some(dst) = buf.get_mut(frame.start..frame.start + 6) {
        dst.copy_from_slice(&mac.0);
    }
}

/// Prepends the VXLAN header to `buf[frame]` in place (sealing the frame on encrypted
/// networks) and returns the datagram's range.
fn encapsulate(
    net: &mut Network,
    buf: &mut [u8],
    frame: &Range<usize>,
) -> Result<Range<usize>, DropReason> {
    let vni = net.vni;
    match net.keys.as_mut() {
        None => {
            let start = frame
                .start
                .checked_sub(VXLAN_HEADER_LEN)
                .ok_or(DropReason::NoRoom)?;
            let header: &mut [u8; VXLAN_HEADER_LEN] = buf
                .get_mut(start..frame.start)
                .and_then(|h| h.try_into().ok())
                .ok_or(DropReason::NoRoom)?;
            vxlan::emit_plain(vni, header);
            Ok(start..frame.end)
        }
        Some(keys) => {
            let start = frame
                .start
                .checked_sub(SEALED_HEADER_LEN)
                .ok_or(DropReason::NoRoom)?;
            let end = frame.end + TAG_LEN;
            let region = buf.get_mut(start..end).ok_or(DropReason::NoRoom)?;
            let (header, rest) = region.split_at_mut(SEALED_HEADER_LEN);
            let (payload, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
            let header: &mut [u8; SEALED_HEADER_LEN] =
                header.try_into().map_err(|_| DropReason::NoRoom)?;
            let tag: &mut [u8; TAG_LEN] = tag.try_into().map_err(|_| DropReason::NoRoom)?;
            match keys.seal(vni, header, payload, tag) {
                Ok(_) => Ok(start..end),
                Err(SealError::NoTxKey) => Err(DropReason::NoTxKey),
                Err(SealError::CounterExhausted) => Err(DropReason::CounterExhausted),
            }
        }
    }
}

/// Checks the datagram's kind against the network's and opens sealed frames in place.
/// Returns the inner frame's range.
fn open(
    net: &mut Network,
    header: Header,
    buf: &mut [u8],
    datagram: Range<usize>,
    header_len: usize,
) -> Result<Range<usize>, DropReason> {
    match (header, net.keys.as_mut()) {
        (Header::Plain { .. }, None) => Ok(datagram.start + header_len..datagram.end),
        (Header::Plain { .. }, Some(_)) => Err(DropReason::PlainOnSealed),
        (Header::Sealed(_), None) => Err(DropReason::SealedOnPlain),
        (Header::Sealed(h), Some(keys)) => {
            let region = buf
                .get_mut(datagram.clone())
                .ok_or(DropReason::MalformedDatagram)?;
            let (header_bytes, rest) = region
                .split_at_mut_checked(SEALED_HEADER_LEN)
                .ok_or(DropReason::MalformedDatagram)?;
            let tag_at = rest
                .len()
                .checked_sub(TAG_LEN)
                .ok_or(DropReason::MalformedDatagram)?;
            let (payload, tag) = rest.split_at_mut(tag_at);
            let header_bytes: &[u8; SEALED_HEADER_LEN] = (&*header_bytes)
                .try_into()
                .map_err(|_| DropReason::MalformedDatagram)?;
            let tag: &[u8; TAG_LEN] = (&*tag)
                .try_into()
                .map_err(|_| DropReason::MalformedDatagram)?;
            keys.open(&h, header_bytes, payload, tag)
                .map_err(|e| match e {
                    OpenError::UnknownEpoch => DropReason::UnknownEpoch,
                    OpenError::Replayed => DropReason::Replayed,
                    OpenError::BadTag => DropReason::BadTag,
                    OpenError::TooManySenders => DropReason::TooManySenders,
                })?;
            let start = datagram.start + SEALED_HEADER_LEN;
            Ok(start..datagram.end - TAG_LEN)
        }
    }
}
