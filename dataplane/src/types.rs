//! Small types for the roles values play (STYLE.md §6): an overlay address is never an
//! underlay address, a VNI is never a sender id.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

/// A VXLAN network identifier (24 bits). shoal allocates them from 4096. Deserialising
/// checks the range, so no `Vni` ever holds more than 24 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub struct Vni(u32);

impl TryFrom<u32> for Vni {
    type Error = String;

    fn try_from(raw: u32) -> Result<Vni, String> {
        Vni::new(raw).ok_or_else(|| format!("VNI {raw} does not fit in 24 bits (max {})", Vni::MAX))
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> u32 {
        v.0
    }
}

impl Vni {
    pub const MAX: u32 = (1 << 24) - 1;

    /// `None` when `raw` does not fit in 24 bits.
    pub const fn new(raw: u32) -> Option<Vni> {
        if raw <= Self::MAX {
            Some(Vni(raw))
        } else {
            None
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The UDP address of a node's overlay socket (underlay IP, port 4789 by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnderlayAddr(pub SocketAddr);

/// An IPv4 address inside an overlay network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OverlayIp(pub Ipv4Addr);

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Docker's rule: `02:42:` followed by the four bytes of the IPv4 address.
    pub fn from_overlay_ip(ip: OverlayIp) -> Mac {
        let o = ip.0.octets();
        Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A local endpoint: one TAP device of one container on one network, on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointId(pub u32);

/// The sender id of sealed frames: unique per node in a cluster, part of the AEAD nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SenderId(pub u32);

/// The epoch of a network key; a key set holds up to three at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u32);

/// Time as the cores see it: nanoseconds since an origin the shell picks. Cores never read a
/// clock; the shell passes this in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms * 1_000_000)
    }

    pub const fn saturating_sub_nanos(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
