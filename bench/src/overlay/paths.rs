//! The four paths and the testbeds they run on: a kernel testbed (underlay and kernel VXLAN)
//! and two 2-node shoal clusters (plain, sealed), built once and checked with ping.

use super::threads::{self, DataplaneThreads};
use dataplane::types::{Mac, Vni};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use tests::Testbed;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, NetworkSpec};
use tests::kernel_vxlan::{KernelVxlan, KernelVxlanPeer, add_kernel_vxlan};
use tests::testbed::{DEFAULT_MTU, DEFAULT_UNDERLAY, Node};

const VNI: u32 = 4097;
const KVX_MTU: u32 = 1450;
/// Addresses of the kernel VXLAN devices of k1 and k2.
pub(super) const KVX_IPS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)];
const KVX_PREFIX_LEN: u8 = 24;
const KVX_MACS: [Mac; 2] = [Mac([0x02, 0xa7, 0, 0, 0, 1]), Mac([0x02, 0xa7, 0, 0, 0, 2])];
/// The shoal networks use the same subnet as the kernel VXLAN (.1 is the gateway).
const SHOAL_SUBNET: &str = "10.77.0.0/24";
const SHOAL_HOSTS: [u32; 2] = [2, 3];

/// Which path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Veth,
    KernelVxlan,
    Plain,
    Sealed,
}

impl Kind {
    pub(super) const ALL: [Kind; 4] = [Kind::Veth, Kind::KernelVxlan, Kind::Plain, Kind::Sealed];

    /// The path's name in keys and tables.
    pub(super) fn key(self) -> &'static str {
        match self {
            Kind::Veth => "veth",
            Kind::KernelVxlan => "kernel_vxlan",
            Kind::Plain => "plain",
            Kind::Sealed => "sealed",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Veth => "underlay (veth+bridge), no overlay",
            Kind::KernelVxlan => "kernel VXLAN",
            Kind::Plain => "shoal plain VXLAN",
            Kind::Sealed => "shoal sealed VXLAN",
        }
    }

    pub(super) fn is_shoal(self) -> bool {
        matches!(self, Kind::Plain | Kind::Sealed)
    }
}

/// One path: where the client and server run and the server's address.
#[derive(Clone, Debug)]
pub(super) struct PathDef {
    pub(super) kind: Kind,
    pub(super) client_ns: String,
    pub(super) server_ns: String,
    /// Display names of the client and server ends (`k1`, `c2`, ...).
    pub(super) client_name: String,
    pub(super) server_name: String,
    pub(super) dst: Ipv4Addr,
    pub(super) mtu: u32,
}

/// A shoal cluster and its dataplane threads.
#[derive(Debug)]
struct Shoal {
    cluster: Cluster,
    threads: DataplaneThreads,
}

/// The three testbeds: the kernel one (veth and kernel VXLAN paths) and the shoal clusters
/// (by kind). Each removes its namespaces and kills its processes on drop.
#[derive(Debug)]
pub(super) struct Beds {
    kernel: Testbed,
    shoal: BTreeMap<Kind, Shoal>,
}

impl Beds {
    /// The testbed a path runs on.
    pub(super) fn testbed(&self, kind: Kind) -> &Testbed {
        self.shoal
            .get(&kind)
            .map_or(&self.kernel, |s| &s.cluster.testbed)
    }

    pub(super) fn testbed_mut(&mut self, kind: Kind) -> &mut Testbed {
        match self.shoal.get_mut(&kind) {
            Some(s) => &mut s.cluster.testbed,
            None => &mut self.kernel,
        }
    }

    /// The cluster of a shoal path.
    pub(super) fn cluster(&self, kind: Kind) -> Option<&Cluster> {
        self.shoal.get(&kind).map(|s| &s.cluster)
    }

    /// The dataplane threads of a shoal path (none for the others).
    pub(super) fn threads(&self, kind: Kind) -> DataplaneThreads {
        self.shoal
            .get(&kind)
            .map_or(DataplaneThreads::NONE, |s| s.threads)
    }
}

/// Facts of the kernel testbed, for the report.
#[derive(Clone, Debug)]
pub(super) struct KernelSetup {
    /// The kernel VXLAN commands, `[node] command`.
    pub(super) commands: Vec<String>,
    /// `net.bridge.bridge-nf-call-iptables` in the underlay namespace.
    pub(super) br_nf_call_iptables: String,
}

/// Builds the three testbeds and checks every path with a ping.
pub(super) fn build() -> (Beds, Vec<PathDef>, KernelSetup) {
    // Kernel side: two nodes on an underlay bridge, a vxlan device in each.
    let mut kernel = Testbed::new("overlay-bench-kernel");
    kernel.add_underlay(DEFAULT_UNDERLAY.parse().expect("valid subnet"));
    let k = [kernel.add_node("k1"), kernel.add_node("k2")];
    let commands = setup_kernel_vxlan(&kernel, &k);
    let br_nf_call_iptables = kernel
        .underlay_netns()
        .map(|ns| {
            let out = kernel.exec(ns, &["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "n/a".into());

    let clk_tck = threads::clk_tck();
    let mut shoal = BTreeMap::new();
    for (kind, encrypted) in [(Kind::Plain, false), (Kind::Sealed, true)] {
        let name = kind.key();
        let (cluster, threads) = DataplaneThreads::started_by(clk_tck, || {
            Cluster::start(
                &format!("overlay-bench-{name}"),
                cluster_spec(name, encrypted),
            )
        });
        let cluster = cluster.unwrap_or_else(|e| panic!("{name} cluster: {e:?}"));
        shoal.insert(kind, Shoal { cluster, threads });
    }

    let kernel_path = |kind, dst, mtu| PathDef {
        kind,
        client_ns: k[0].netns_name.clone(),
        server_ns: k[1].netns_name.clone(),
        client_name: k[0].name.clone(),
        server_name: k[1].name.clone(),
        dst,
        mtu,
    };
    let mut paths = vec![
        kernel_path(Kind::Veth, k[1].underlay_ip, k[1].mtu),
        kernel_path(Kind::KernelVxlan, KVX_IPS[1], KVX_MTU),
    ];
    for (&kind, Shoal { cluster, .. }) in &shoal {
        let net = &cluster.spec.networks[0];
        paths.push(PathDef {
            kind,
            client_ns: cluster.container("c1").netns_name.clone(),
            server_ns: cluster.container("c2").netns_name.clone(),
            client_name: "c1".into(),
            server_name: "c2".into(),
            dst: cluster.ip("c2", net.name),
            mtu: cluster.nodes[1].dataplane.overlay_mtu(net.encrypted),
        });
    }
    let beds = Beds { kernel, shoal };
    for p in &paths {
        let dst = p.dst.to_string();
        let out = beds.testbed(p.kind).exec(
            &p.client_ns,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", &dst],
        );
        assert!(
            out.status.success(),
            "{}: {} cannot ping {dst}: {}",
            p.kind.key(),
            p.client_name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let setup = KernelSetup {
        commands,
        br_nf_call_iptables,
    };
    (beds, paths, setup)
}

/// Two nodes on the same underlay shape as the kernel testbed, one network (plain or
/// encrypted), container c1 on node n1 and c2 on n2.
fn cluster_spec(name: &'static str, encrypted: bool) -> ClusterSpec {
    let container = |name, node| ContainerSpec::new(name, node, &[(0, SHOAL_HOSTS[node])]);
    ClusterSpec {
        nodes: 2,
        underlay_mtu: DEFAULT_MTU,
        offload: true,
        networks: vec![NetworkSpec::new(name, VNI, SHOAL_SUBNET, encrypted)],
        containers: vec![container("c1", 0), container("c2", 1)],
    }
}

/// A kernel vxlan device in each node (as `shared/anchors/lib.sh` `setup_vxlan`, with the
/// testbed's underlay; kernel defaults for offloads). Returns the commands, for the report.
fn setup_kernel_vxlan(tb: &Testbed, k: &[Node; 2]) -> Vec<String> {
    let mut log = Vec::new();
    for side in 0..2 {
        let (me, peer) = (&k[side], &k[1 - side]);
        let spec = KernelVxlan {
            vni: Vni::new(VNI).expect("VNI fits in 24 bits"),
            local: me.underlay_ip,
            underlay_if: Some(me.underlay_if.clone()),
            ip: KVX_IPS[side],
            prefix_len: KVX_PREFIX_LEN,
            mac: KVX_MACS[side],
            mtu: KVX_MTU,
            peers: vec![KernelVxlanPeer {
                mac: KVX_MACS[1 - side],
                ip: KVX_IPS[1 - side],
                underlay_ip: peer.underlay_ip,
            }],
            flood: true,
            tx_checksum_offload: true,
        };
        let commands = add_kernel_vxlan(tb, &me.netns_name, &spec);
        log.extend(commands.iter().map(|c| format!("[{}] {c}", me.name)));
    }
    log
}
