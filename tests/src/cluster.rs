//! An overlay cluster on the testbed: node namespaces each running an in-process dataplane,
//! container namespaces with one TAP per attached network, and the tables every node needs,
//! fed as the control plane will feed them later (here: straight from the spec).

use crate::testbed::{Container, Node, Testbed};
use dataplane::forward::{NetworkKeyBytes, Update};
use dataplane::shell::runtime::{Dataplane, DataplaneConfig, Stats};
use dataplane::shell::tap::TapConfig;
use dataplane::types::{EndpointId, Epoch, Mac, OverlayIp, SenderId, UnderlayAddr, Vni};
use ipnet::Ipv4Net;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

/// The overlay port; every node has its own namespace, so all use the default.
pub const OVERLAY_PORT: u16 = 4789;

/// One overlay network of the spec.
#[derive(Clone, Debug)]
pub struct NetworkSpec {
    pub name: &'static str,
    pub vni: Vni,
    pub subnet: Ipv4Net,
    pub encrypted: bool,
}

impl NetworkSpec {
    pub fn new(name: &'static str, vni: u32, subnet: &str, encrypted: bool) -> NetworkSpec {
        let vni = Vni::new(vni).expect("VNI fits in 24 bits");
        let subnet = subnet.parse().expect("a valid subnet");
        NetworkSpec {
            name,
            vni,
            subnet,
            encrypted,
        }
    }

    /// The first host address: the gateway, as in Docker.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// The `n`th address of the subnet.
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + n)
    }
}

/// A container of the spec: which node it runs on and its address on each network.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    pub name: &'static str,
    pub node: usize,
    /// (index into the spec's networks, host number in that subnet).
    pub attachments: Vec<(usize, u32)>,
}

/// A whole overlay cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub underlay_mtu: u32,
    /// TAPs with TSO/checksum offload (the dataplane's default) or plain frame by frame.
    pub offload: bool,
    pub networks: Vec<NetworkSpec>,
    pub containers: Vec<ContainerSpec>,
}

/// Index of `public` in [`ClusterSpec::public_and_secret`].
pub const PUBLIC: usize = 0;
/// Index of `secret` in [`ClusterSpec::public_and_secret`].
pub const SECRET: usize = 1;

impl ContainerSpec {
    /// A container on node `node` (0-based) with `attachments` (network index, host number).
    pub fn new(name: &'static str, node: usize, attachments: &[(usize, u32)]) -> ContainerSpec {
        ContainerSpec {
            name,
            node,
            attachments: attachments.to_vec(),
        }
    }
}

impl ClusterSpec {
    /// The shape most tests use: three nodes on a 1500-byte underlay with offload, a plain
    /// network `public` (VNI 4096, 10.10.0.0/24) and an encrypted one `secret` (VNI 4097,
    /// 10.20.0.0/24), and the given containers.
    pub fn public_and_secret(containers: Vec<ContainerSpec>) -> ClusterSpec {
        ClusterSpec {
            nodes: 3,
            underlay_mtu: 1500,
            offload: true,
            networks: vec![
                NetworkSpec::new("public", 4096, "10.10.0.0/24", false),
                NetworkSpec::new("secret", 4097, "10.20.0.0/24", true),
            ],
            containers,
        }
    }
}

/// One node: its namespace and its running dataplane.
#[derive(Debug)]
pub struct ClusterNode {
    pub node: Node,
    pub dataplane: Dataplane,
}

impl ClusterNode {
    pub fn underlay(&self) -> UnderlayAddr {
        UnderlayAddr(SocketAddr::from((self.node.underlay_ip, OVERLAY_PORT)))
    }
}

/// A running cluster. Field order matters for Drop: dataplanes (and their TAPs) close before
/// the testbed deletes the namespaces.
#[derive(Debug)]
pub struct Cluster {
    pub spec: ClusterSpec,
    pub nodes: Vec<ClusterNode>,
    pub containers: Vec<Container>,
    pub testbed: Testbed,
}

/// The endpoint id of a container's `k`th attachment: unique per node.
fn endpoint_id(container: usize, attachment: usize) -> EndpointId {
    EndpointId((container * 16 + attachment) as u32 + 1)
}

/// The key of epoch `epoch` of network `vni` in tests: derived, so every node agrees.
pub fn test_key(vni: Vni, epoch: Epoch) -> NetworkKeyBytes {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&vni.get().to_be_bytes());
    key[4..8].copy_from_slice(&epoch.0.to_be_bytes());
    key[8..].fill(0x5a);
    NetworkKeyBytes(key)
}

impl Cluster {
    /// Builds the namespaces, starts a dataplane per node, creates the TAPs and feeds every
    /// node the tables of the networks it is attached to (all of them, in this first cut).
    pub fn start(test_name: &str, spec: ClusterSpec) -> io::Result<Cluster> {
        let mut testbed = Testbed::new(test_name);
        testbed.add_underlay("192.168.77.0/24".parse().expect("valid"));
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            let node = testbed.add_node_with_mtu(&format!("n{}", i + 1), spec.underlay_mtu);
            let mut config = DataplaneConfig::new(
                SenderId(i as u32 + 1),
                SocketAddr::from((node.underlay_ip, OVERLAY_PORT)),
            );
            config.netns = Some(node.ns.clone());
            config.offload = spec.offload;
            let dataplane = Dataplane::start(config)?;
            nodes.push(ClusterNode { node, dataplane });
        }
        let containers = spec
            .containers
            .iter()
            .map(|c| testbed.add_container(c.name))
            .collect::<Vec<_>>();
        let cluster = Cluster {
            spec,
            nodes,
            containers,
            testbed,
        };
        cluster.attach_networks()?;
        cluster.attach_containers()?;
        Ok(cluster)
    }

    fn apply(&self, node: usize, update: Update) -> io::Result<()> {
        self.nodes[node]
            .dataplane
            .apply(update)?
            .map_err(|e| io::Error::other(format!("node n{}: {e}", node + 1)))
    }

    fn attach_networks(&self) -> io::Result<()> {
        for node in 0..self.nodes.len() {
            for net in &self.spec.networks {
                self.apply(
                    node,
                    Update::AddNetwork {
                        vni: net.vni,
                        subnet: net.subnet,
                        gateway: Some(net.gateway()),
                        mtu: self.nodes[node].dataplane.overlay_mtu(net.encrypted) as u16,
                        encrypted: net.encrypted,
                    },
                )?;
                if net.encrypted {
                    let key = test_key(net.vni, Epoch(1));
                    self.apply(
                        node,
                        Update::InstallKey {
                            vni: net.vni,
                            epoch: Epoch(1),
                            key,
                        },
                    )?;
                    self.apply(
                        node,
                        Update::SetTxKey {
                            vni: net.vni,
                            epoch: Epoch(1),
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    fn attach_containers(&self) -> io::Result<()> {
        for (ci, c) in self.spec.containers.iter().enumerate() {
            for (k, &(net_index, host)) in c.attachments.iter().enumerate() {
                let net = &self.spec.networks[net_index];
                let ip = net.host(host);
                let mac = Mac::from_overlay_ip(OverlayIp(ip));
                let tap = TapConfig {
                    name: format!("eth{k}"),
                    ip,
                    prefix_len: net.subnet.prefix_len(),
                    mac,
                    mtu: self.nodes[c.node].dataplane.overlay_mtu(net.encrypted),
                    // The first network's gateway is the default route, as in Docker.
                    gateway: (k == 0).then(|| net.gateway()),
                };
                let id = endpoint_id(ci, k);
                let ns = &self.containers[ci].ns;
                self.nodes[c.node]
                    .dataplane
                    .add_endpoint(ns, id, net.vni, &tap)?;
                let node = self.nodes[c.node].underlay();
                for other in (0..self.nodes.len()).filter(|&o| o != c.node) {
                    self.apply(
                        other,
                        Update::AddRemoteEndpoint {
                            vni: net.vni,
                            ip,
                            mac,
                            node,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> &Container {
        let i = self.index(name);
        &self.containers[i]
    }

    fn index(&self, name: &str) -> usize {
        self.spec
            .containers
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name} in the spec"))
    }

    /// The address of container `name` on network `network`.
    pub fn ip(&self, name: &str, network: &str) -> Ipv4Addr {
        let c = &self.spec.containers[self.index(name)];
        let (ni, net) = self
            .spec
            .networks
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == network)
            .unwrap_or_else(|| panic!("no network {network} in the spec"));
        let host = c
            .attachments
            .iter()
            .find(|(i, _)| *i == ni)
            .unwrap_or_else(|| panic!("{name} is not attached to {network}"))
            .1;
        net.host(host)
    }

    /// Whether container `from` gets echo replies from `to` (two pings, 2 s at most).
    pub fn ping(&self, from: &str, to: Ipv4Addr) -> bool {
        let ns = &self.container(from).netns_name;
        let to = to.to_string();
        let argv = ["ping", "-c", "2", "-i", "0.2", "-W", "2", &to];
        self.testbed.exec(ns, &argv).status.success()
    }

    /// The node a container runs on.
    pub fn node_of(&self, name: &str) -> &ClusterNode {
        &self.nodes[self.spec.containers[self.index(name)].node]
    }

    pub fn network(&self, name: &str) -> &NetworkSpec {
        self.spec
            .networks
            .iter()
            .find(|n| n.name == name)
            .expect("network in the spec")
    }

    /// Applies `update` on every node.
    pub fn apply_everywhere(&self, update: &Update) -> io::Result<()> {
        (0..self.nodes.len()).try_for_each(|n| self.apply(n, update.clone()))
    }

    /// The counters of every node.
    pub fn stats(&self) -> io::Result<Vec<Stats>> {
        self.nodes.iter().map(|n| n.dataplane.stats()).collect()
    }
}
