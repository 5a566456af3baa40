//! The routing mesh on this node: its ingress sandbox (a namespace with one interface on the
//! ingress network, at the node's ingress address, announced in the peer table so that
//! tasks on other nodes can answer it) and a listener per published port of mode ingress,
//! relaying each connection from the sandbox to the service's VIP on the ingress network,
//! where the balancer picks a task on any node.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use dataplane::mesh::{MeshConfig, Protocol as MeshProtocol, PublishedPort, RoutingMesh};
use dataplane::shell::netns::NetnsRef;

use crate::agent::peers::PeerRecord;
use crate::manager::model::{Protocol, PublishMode};
use crate::manager::view::NodeView;

use super::Shared;
use super::sandbox::{Interface, Sandbox};

/// The node's ingress sandbox and what it publishes.
pub(super) struct Ingress {
    sandbox: Sandbox,
    mesh: RoutingMesh,
    published: BTreeMap<(MeshProtocol, u16), PublishedPort>,
}

/// The published ports a view asks for: every ingress-mode port of every service with a
/// VIP on the ingress network.
pub fn wanted_ports(
    view: &NodeView,
    ingress: &str,
) -> BTreeMap<(MeshProtocol, u16), PublishedPort> {
    let mut ports = BTreeMap::new();
    for s in &view.services {
        let Some(vip) = s.vips.get(ingress) else {
            continue;
        };
        for p in &s.ports {
            let Some(published) = p.published.filter(|_| p.mode == PublishMode::Ingress) else {
                continue;
            };
            let protocol = match p.protocol {
                Protocol::Tcp => MeshProtocol::Tcp,
                Protocol::Udp => MeshProtocol::Udp,
            };
            ports.insert(
                (protocol, published),
                PublishedPort {
                    protocol,
                    listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, published)),
                    target: SocketAddr::from((*vip, p.target)),
                    proxy_protocol: false,
                },
            );
        }
    }
    ports
}

/// Brings the ingress sandbox and the published ports in line with `view`.
pub(super) fn reconcile(shared: &Shared, view: &NodeView) {
    let Some(net) = view.networks.iter().find(|n| n.ingress) else {
        return;
    };
    let Some(ip) = view.ingress_ip else {
        return;
    };
    let mut ingress = shared.ingress.lock().unwrap_or_else(|p| p.into_inner());
    if ingress.is_none() {
        match build(shared, net, ip) {
            Ok(built) => *ingress = Some(built),
            Err(e) => {
                tracing::warn!("ingress sandbox: {e}; published ports wait for the next view");
                return;
            }
        }
    }
    let Some(ingress) = ingress.as_mut() else {
        return;
    };
    let wanted = wanted_ports(view, &net.id);
    let stale: Vec<(MeshProtocol, u16)> = ingress
        .published
        .iter()
        .filter(|(k, spec)| wanted.get(*k) != Some(*spec))
        .map(|(k, _)| *k)
        .collect();
    for (protocol, port) in stale {
        ingress.mesh.unpublish(protocol, port);
        ingress.published.remove(&(protocol, port));
    }
    for (key, spec) in wanted {
        if ingress.published.contains_key(&key) {
            continue;
        }
        match ingress.mesh.publish(spec.clone()) {
            Ok(()) => {
                ingress.published.insert(key, spec);
            }
            Err(e) => tracing::warn!("published port {}: {e}", key.1),
        }
    }
}

fn build(
    shared: &Shared,
    net: &crate::manager::view::NetworkView,
    ip: Ipv4Addr,
) -> Result<Ingress, String> {
    let vni = super::plan::vni_of(net).ok_or("the ingress network's VNI is out of range")?;
    let name = format!("{}-ingress", shared.config.netns_prefix);
    let interface = Interface {
        network: net.id.clone(),
        vni,
        endpoint: shared.endpoint_id(),
        name: "eth0".into(),
        ip,
        prefix_len: net.subnet.prefix_len(),
        mtu: shared.dataplane.overlay_mtu(net.keys.is_some()),
        gateway: None,
    };
    let mac = interface.mac().0;
    let mut sandbox = Sandbox::build(
        &shared.dataplane,
        &shared.dns,
        NetnsRef::named(&name),
        Some(&name),
        "ingress".into(),
        vec![interface],
    )
    .map_err(|e| e.to_string())?;
    let mesh = match RoutingMesh::start(&sandbox.ns, None, MeshConfig::default()) {
        Ok(mesh) => mesh,
        Err(e) => {
            sandbox.remove(&shared.dataplane, &shared.dns);
            return Err(format!("the relay thread: {e}"));
        }
    };
    let record = PeerRecord {
        ip,
        mac,
        node: shared.overlay,
    };
    let key = format!("ingress-{}", shared.config.identity.id);
    let (key, value) = PeerRecord::entry(&net.id, &key, &record);
    if let Err(e) = shared.gossip.write(key, Some(value)) {
        tracing::warn!("gossip: the ingress sandbox's entry: {e}");
    }
    Ok(Ingress {
        sandbox,
        mesh,
        published: BTreeMap::new(),
    })
}

/// Stops the published ports and removes the ingress sandbox (the agent is stopping).
pub(super) fn remove(shared: &Shared) {
    let taken = shared
        .ingress
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(mut ingress) = taken {
        drop(ingress.mesh);
        ingress.sandbox.remove(&shared.dataplane, &shared.dns);
    }
}

/// The published ports, as `tcp 0.0.0.0:8080 -> 10.0.0.5:80`.
pub(super) fn published(shared: &Shared) -> Vec<String> {
    let ingress = shared.ingress.lock().unwrap_or_else(|p| p.into_inner());
    ingress
        .iter()
        .flat_map(|i| i.published.values())
        .map(|p| format!("{:?} {} -> {}", p.protocol, p.listen, p.target).to_lowercase())
        .collect()
}
