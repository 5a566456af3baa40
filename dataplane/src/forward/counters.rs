//! What happened to frames, counted by outcome and by drop reason. Everything a later
//! `shoal agent status` or metrics endpoint shows about the packet path is counted here.

use serde::Serialize;

/// Why a frame or datagram was dropped. Every drop has exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A frame came from an endpoint id the tables do not know (a shell/update race).
    UnknownEndpoint,
    /// Not a well-formed Ethernet/IPv4/ARP frame.
    MalformedFrame,
    /// Source MAC is not the sending endpoint's own.
    SpoofedMac,
    /// Source IPv4 (or ARP sender address) is not the sending endpoint's own.
    SpoofedIp,
    /// Neither IPv4 nor ARP (IPv6, LLDP, ...): overlays are IPv4 for now.
    UnsupportedEtherType,
    /// An ARP packet that is not a request, or not Ethernet/IPv4.
    ArpNotRequest,
    /// An ARP request for an address this network does not hold: never flooded.
    ArpUnknownTarget,
    /// Broadcast or multicast IPv4: overlays carry unicast only.
    NotUnicast,
    /// Destination is on another network: networks never route into each other.
    Isolation,
    /// Destination is on no network at all (egress is not built yet).
    NoRoute,
    /// A datagram that is not a valid VXLAN or sealed-VXLAN header.
    MalformedDatagram,
    /// VNI of no network this node is attached to.
    UnknownVni,
    /// A plain datagram on an encrypted network.
    PlainOnSealed,
    /// A sealed datagram on a plain network.
    SealedOnPlain,
    /// Sealed with a key epoch this node does not hold.
    UnknownEpoch,
    /// Counter already seen or older than the replay window.
    Replayed,
    /// Authentication failed: tampered or forged.
    BadTag,
    /// More senders than one epoch's replay windows may track.
    TooManySenders,
    /// The inner source is not an endpoint that the sending node owns.
    SpoofedRemote,
    /// The inner destination is not a local endpoint of that network.
    NotLocal,
    /// ARP inside a datagram: every node answers ARP locally, so none should cross.
    ArpFromWire,
    /// The network is encrypted but no transmit key is installed yet.
    NoTxKey,
    /// The transmit counter is exhausted: the key must be rotated.
    CounterExhausted,
    /// The shell passed a buffer without the head- or tailroom encapsulation needs.
    NoRoom,
    /// Longer than the network's MTU allows (the container raised its interface MTU).
    TooBig,
    /// To a VIP, but not balanceable: a fragment, ICMP other than echo, another protocol.
    VipNotBalanced,
}

impl DropReason {
    pub const ALL: [DropReason; 26] = [
        DropReason::UnknownEndpoint,
        DropReason::MalformedFrame,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::UnsupportedEtherType,
        DropReason::ArpNotRequest,
        DropReason::ArpUnknownTarget,
        DropReason::NotUnicast,
        DropReason::Isolation,
        DropReason::NoRoute,
        DropReason::MalformedDatagram,
        DropReason::UnknownVni,
        DropReason::PlainOnSealed,
        DropReason::SealedOnPlain,
        DropReason::UnknownEpoch,
        DropReason::Replayed,
        DropReason::BadTag,
        DropReason::TooManySenders,
        DropReason::SpoofedRemote,
        DropReason::NotLocal,
        DropReason::ArpFromWire,
        DropReason::NoTxKey,
        DropReason::CounterExhausted,
        DropReason::NoRoom,
        DropReason::TooBig,
        DropReason::VipNotBalanced,
    ];

    /// The name used in status output and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownEndpoint => "unknown_endpoint",
            DropReason::MalformedFrame => "malformed_frame",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::UnsupportedEtherType => "unsupported_ether_type",
            DropReason::ArpNotRequest => "arp_not_request",
            DropReason::ArpUnknownTarget => "arp_unknown_target",
            DropReason::NotUnicast => "not_unicast",
            DropReason::Isolation => "isolation",
            DropReason::NoRoute => "no_route",
            DropReason::MalformedDatagram => "malformed_datagram",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::PlainOnSealed => "plain_on_sealed",
            DropReason::SealedOnPlain => "sealed_on_plain",
            DropReason::UnknownEpoch => "unknown_epoch",
            DropReason::Replayed => "replayed",
            DropReason::BadTag => "bad_tag",
            DropReason::TooManySenders => "too_many_senders",
            DropReason::SpoofedRemote => "spoofed_remote",
            DropReason::NotLocal => "not_local",
            DropReason::ArpFromWire => "arp_from_wire",
            DropReason::NoTxKey => "no_tx_key",
            DropReason::CounterExhausted => "counter_exhausted",
            DropReason::NoRoom => "no_room",
            DropReason::TooBig => "too_big",
            DropReason::VipNotBalanced => "vip_not_balanced",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one forwarding core. Plain integers: the core is single-threaded and the shell
/// copies a snapshot out when asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames delivered between two endpoints of this node.
    pub local_delivered: u64,
    /// Frames encapsulated (and sealed, on encrypted networks) towards another node.
    pub encapsulated: u64,
    /// Datagrams from another node decapsulated and delivered to a local endpoint.
    pub decapsulated: u64,
    /// ARP requests answered from the tables.
    pub arp_replies: u64,
    /// ICMP errors sent back to endpoints so that their connects fail fast.
    pub icmp_rejects: u64,
    /// TCP SYNs whose MSS was lowered to the overlay MTU.
    pub mss_clamped: u64,
    /// Packets a VIP answered itself (resets, port unreachables, echo replies).
    pub vip_answers: u64,
    drops: [u64; DropReason::ALL.len()],
    /// Overlay traffic per network: frames and bytes sent to other nodes and received from
    /// them (one lookup in a small map per frame; an entry appears with a network's first).
    pub networks: std::collections::BTreeMap<crate::types::Vni, NetworkTraffic>,
}

/// One network's overlay traffic (inner frames, Ethernet header included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkTraffic {
    pub frames_out: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub bytes_in: u64,
}

impl Counters {
    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// A frame of `bytes` sent to another node on `vni`.
    pub(crate) fn count_out(&mut self, vni: crate::types::Vni, bytes: usize) {
        let t = self.networks.entry(vni).or_default();
        t.frames_out += 1;
        t.bytes_out += bytes as u64;
    }

    /// A frame of `bytes` received from another node on `vni`.
    pub(crate) fn count_in(&mut self, vni: crate::types::Vni, bytes: usize) {
        let t = self.networks.entry(vni).or_default();
        t.frames_in += 1;
        t.bytes_in += bytes as u64;
    }

    /// How many frames were dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// All drop reasons with their counts, in a fixed order.
    pub fn drop_counts(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.drops[r.index()]))
    }

    /// The sum over every drop reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}
