//! A Linux kernel `vxlan` device in a testbed namespace: the kernel's own VXLAN endpoint, with
//! static FDB and neighbour entries for its peers (no learning, as in Docker's overlay driver),
//! to talk to a shoal node or to another kernel endpoint.

use crate::cluster::OVERLAY_PORT;
use crate::testbed::Testbed;
use dataplane::types::{Mac, Vni};
use std::net::Ipv4Addr;

/// The device's name in its namespace.
pub const KERNEL_VXLAN_IF: &str = "vx0";

/// A remote VXLAN endpoint the device knows statically.
#[derive(Clone, Copy, Debug)]
pub struct KernelVxlanPeer {
    /// The endpoint's MAC (a static FDB entry and the neighbour's `lladdr`).
    pub mac: Mac,
    /// Its overlay address (a permanent neighbour entry).
    pub ip: Ipv4Addr,
    /// The underlay address of the node that holds it (where its frames are sent).
    pub underlay_ip: Ipv4Addr,
}

/// What [`add_kernel_vxlan`] sets up.
#[derive(Clone, Debug)]
pub struct KernelVxlan {
    pub vni: Vni,
    /// The underlay address the device sends from (`local`).
    pub local: Ipv4Addr,
    /// The underlay interface to bind the device to (`dev`); `None` leaves it to the routes.
    pub underlay_if: Option<String>,
    /// The device's overlay address and prefix length.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: Mac,
    pub mtu: u32,
    pub peers: Vec<KernelVxlanPeer>,
    /// Also send broadcast and unknown unicast to every peer (an all-zero FDB entry per peer,
    /// as `shared/anchors` does); without it only the static entries are reachable.
    pub flood: bool,
    /// `true` keeps the kernel's default TX checksum offload; `false` turns it off
    /// (`ethtool -K vx0 tx off`) so that the kernel fills in inner checksums itself. Over
    /// veth the kernel leaves them to "hardware" that never computes them (CHECKSUM_PARTIAL
    /// crosses veth as is), where a real NIC would: a userspace receiver that reads the bytes
    /// (shoal) needs them off, a kernel receiver does not care.
    pub tx_checksum_offload: bool,
}

/// Creates and configures [`KERNEL_VXLAN_IF`] in namespace `netns_name` of `testbed` (VXLAN
/// port [`OVERLAY_PORT`]); panics if a command fails. Returns the commands it ran, in order.
pub fn add_kernel_vxlan(testbed: &Testbed, netns_name: &str, spec: &KernelVxlan) -> Vec<String> {
    let dev = KERNEL_VXLAN_IF;
    let mut add = format!(
        "ip link add {dev} type vxlan id {} dstport {OVERLAY_PORT} local {}",
        spec.vni, spec.local
    );
    if let Some(underlay_if) = &spec.underlay_if {
        add += &format!(" dev {underlay_if}");
    }
    add += " nolearning";
    let mut cmds = vec![
        add,
        format!("ip link set {dev} address {} mtu {}", spec.mac, spec.mtu),
        format!("ip addr add {}/{} dev {dev}", spec.ip, spec.prefix_len),
        format!("ip link set {dev} up"),
    ];
    if !spec.tx_checksum_offload {
        cmds.push(format!("ethtool -K {dev} tx off"));
    }
    for peer in &spec.peers {
        let (mac, ip, remote) = (peer.mac, peer.ip, peer.underlay_ip);
        if spec.flood {
            cmds.push(format!(
                "bridge fdb append 00:00:00:00:00:00 dev {dev} dst {remote}"
            ));
        }
        cmds.push(format!(
            "bridge fdb add {mac} dev {dev} dst {remote} static"
        ));
        cmds.push(format!(
            "ip neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
        ));
    }
    for cmd in &cmds {
        // No argument contains a space: every one is a name, a number or an address.
        let argv: Vec<&str> = cmd.split(' ').collect();
        testbed.exec_ok(netns_name, &argv);
    }
    cmds
}
