//! Per-network forwarding tables and the updates that change them.
//!
//! The tables are fed from outside (a test, a static JSON file, later gossip and the
//! manager); the core never reads configuration itself.

use crate::balance::{Balancer, ConntrackConfig, ServiceSpec};
use crate::seal::{KeySet, NetworkKey};
use crate::types::{EndpointId, Epoch, Mac, SenderId, Timestamp, UnderlayAddr, Vni};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One change to the tables. Serialisable so that a static JSON file can feed a dataplane
/// before the control plane exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Update {
    /// Attach this node to a network (idempotent for the same parameters).
    AddNetwork {
        vni: Vni,
        subnet: Ipv4Net,
        /// The network's gateway address: answered by ARP, the endpoints' default route.
        gateway: Option<Ipv4Addr>,
        /// Overlay MTU; TCP SYNs are MSS-clamped to it.
        mtu: u16,
        encrypted: bool,
    },
    /// Detach from a network, forgetting its endpoints and keys.
    RemoveNetwork {
        vni: Vni,
    },
    /// An endpoint on this node (its TAP is known to the shell by `id`).
    AddLocalEndpoint {
        id: EndpointId,
        vni: Vni,
        ip: Ipv4Addr,
        mac: Mac,
    },
    RemoveLocalEndpoint {
        id: EndpointId,
    },
    /// An endpoint on another node, reached through that node's overlay socket.
    AddRemoteEndpoint {
        vni: Vni,
        ip: Ipv4Addr,
        mac: Mac,
        node: UnderlayAddr,
    },
    RemoveRemoteEndpoint {
        vni: Vni,
        ip: Ipv4Addr,
    },
    /// Install a key for receiving (step 1 of a rotation).
    InstallKey {
        vni: Vni,
        epoch: Epoch,
        key: NetworkKeyBytes,
    },
    /// Start sealing with an installed key (step 2, once every node has it).
    SetTxKey {
        vni: Vni,
        epoch: Epoch,
    },
    /// Drop a key (step 3, after the switch).
    RetireKey {
        vni: Vni,
        epoch: Epoch,
    },
    /// A service's VIP on a network and its backends, whole (balanced at this node for the
    /// clients on it). Backends it no longer lists have their flows reset.
    SetService(ServiceSpec),
    /// The VIP goes: its flows are reset.
    RemoveService {
        vni: Vni,
        vip: Ipv4Addr,
    },
}

/// 32 key bytes as they travel in an [`Update`]. Debug never prints them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NetworkKeyBytes(pub [u8; 32]);

impl std::fmt::Debug for NetworkKeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKeyBytes(..)")
    }
}

/// Why an update was refused. A refused update changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("network {0} is not attached on this node: add it first")]
    UnknownNetwork(Vni),
    #[error("network {vni} is already attached with different parameters: remove it first")]
    NetworkConflict { vni: Vni },
    #[error("endpoint {0:?} is not known on this node")]
    UnknownEndpoint(EndpointId),
    #[error("endpoint {id:?} already exists: remove it first")]
    EndpointExists { id: EndpointId },
    #[error("address {ip} is already used by another endpoint of network {vni}")]
    AddressInUse { vni: Vni, ip: Ipv4Addr },
    #[error("address {ip} is outside network {vni}'s subnet {subnet}")]
    OutsideSubnet {
        vni: Vni,
        ip: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("address {ip} of network {vni} is a service VIP: remove the service first")]
    VipInUse { vni: Vni, ip: Ipv4Addr },
    #[error("network {0} is not encrypted: keys apply only to encrypted networks")]
    NotEncrypted(Vni),
    #[error("network {vni}: {cause}")]
    Key {
        vni: Vni,
        cause: crate::seal::KeyError,
    },
}

/// A local endpoint as the core knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub vni: Vni,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// When the endpoint last sent a frame (for status; idle endpoints are not reaped here).
    pub last_sent: Option<Timestamp>,
}

/// An endpoint on another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub mac: Mac,
    pub node: UnderlayAddr,
}

/// Where an address of a network lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Local(EndpointId),
    Remote(RemoteEndpoint),
}

/// One overlay network on this node.
#[derive(Debug)]
pub struct Network {
    pub vni: Vni,
    pub subnet: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u16,
    /// `Some` exactly when the network is encrypted.
    pub(crate) keys: Option<KeySet>,
    pub(crate) addresses: BTreeMap<Ipv4Addr, Owner>,
}

impl Network {
    pub fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    pub(crate) fn owner(&self, ip: Ipv4Addr) -> Option<Owner> {
        self.addresses.get(&ip).copied()
    }

    /// The MAC an ARP request for `ip` is answered with, if the network holds `ip`.
    pub(crate) fn mac_of(
        &self,
        ip: Ipv4Addr,
        endpoints: &BTreeMap<EndpointId, LocalEndpoint>,
    ) -> Option<Mac> {
        match self.owner(ip) {
            Some(Owner::Local(id)) => endpoints.get(&id).map(|e| e.mac),
            Some(Owner::Remote(r)) => Some(r.mac),
            None if self.gateway == Some(ip) => {
                Some(Mac::from_overlay_ip(crate::types::OverlayIp(ip)))
            }
            None => None,
        }
    }

    /// Whether `ip` belongs to this network at all (an endpoint, the gateway, or its subnet).
    pub(crate) fn claims(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip) || self.addresses.contains_key(&ip)
    }
}

/// All tables of one node.
#[derive(Debug)]
pub struct Tables {
    sender: SenderId,
    counter_start: u64,
    pub(crate) networks: BTreeMap<Vni, Network>,
    pub(crate) endpoints: BTreeMap<EndpointId, LocalEndpoint>,
    /// The service table and the flows balanced through it.
    pub(crate) balancer: Balancer,
}

impl Tables {
    pub fn new(sender: SenderId, counter_start: u64, conntrack: ConntrackConfig) -> Tables {
        Tables {
            sender,
            counter_start,
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            // Two-choices draws need no secrecy, only spread: any per-node seed will do.
            balancer: Balancer::new(conntrack, counter_start ^ u64::from(sender.0)),
        }
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    pub fn network(&self, vni: Vni) -> Option<&Network> {
        self.networks.get(&vni)
    }

    pub fn endpoint(&self, id: EndpointId) -> Option<&LocalEndpoint> {
        self.endpoints.get(&id)
    }

    /// Applies one update; on error nothing changed.
    pub fn apply(&mut self, update: Update) -> Result<(), UpdateError> {
        match update {
            Update::AddNetwork {
                vni,
                subnet,
                gateway,
                mtu,
                encrypted,
            } => {
                if let Some(n) = self.networks.get(&vni) {
                    let same = n.subnet == subnet
                        && n.gateway == gateway
                        && n.mtu == mtu
                        && n.encrypted() == encrypted;
                    return if same {
                        Ok(())
                    } else {
                        Err(UpdateError::NetworkConflict { vni })
                    };
                }
                let keys = encrypted.then(|| KeySet::new(self.sender, self.counter_start));
                let addresses = BTreeMap::new();
                self.networks.insert(
                    vni,
                    Network {
                        vni,
                        subnet,
                        gateway,
                        mtu,
                        keys,
                        addresses,
                    },
                );
                Ok(())
            }
            Update::RemoveNetwork { vni } => {
                let net = self
                    .networks
                    .remove(&vni)
                    .ok_or(UpdateError::UnknownNetwork(vni))?;
                // The network may come back with the same key: its counter must go on from
                // here, never restart, or nonces would repeat under that key.
                if let Some(keys) = &net.keys {
                    self.counter_start = self.counter_start.max(keys.next_counter());
                }
                self.endpoints.retain(|_, e| e.vni != vni);
                self.balancer.remove_network(vni);
                Ok(())
            }
            Update::AddLocalEndpoint { id, vni, ip, mac } => {
                if self.endpoints.contains_key(&id) {
                    return Err(UpdateError::EndpointExists { id });
                }
                let net = self.free_address(vni, ip)?;
                net.addresses.insert(ip, Owner::Local(id));
                self.endpoints.insert(
                    id,
                    LocalEndpoint {
                        vni,
                        ip,
                        mac,
                        last_sent: None,
                    },
                );
                Ok(())
            }
            Update::RemoveLocalEndpoint { id } => {
                let ep = self
                    .endpoints
                    .remove(&id)
                    .ok_or(UpdateError::UnknownEndpoint(id))?;
                if let Some(net) = self.networks.get_mut(&ep.vni) {
                    net.addresses.remove(&ep.ip);
                }
                Ok(())
            }
            Update::AddRemoteEndpoint { vni, ip, mac, node } => {
                let is_vip = self.balancer.is_vip(vni, ip);
                let net = self.network_mut(vni)?;
                // A remote entry may be refreshed in place (a node re-announcing, or an
                // endpoint moving between nodes), but never shadows a local endpoint.
                if let Some(Owner::Local(_)) = net.owner(ip) {
                    return Err(UpdateError::AddressInUse { vni, ip });
                }
                if is_vip {
                    return Err(UpdateError::VipInUse { vni, ip });
                }
                check_in_subnet(net, ip)?;
                net.addresses
                    .insert(ip, Owner::Remote(RemoteEndpoint { mac, node }));
                Ok(())
            }
            Update::RemoveRemoteEndpoint { vni, ip } => {
                let net = self.network_mut(vni)?;
                if let Some(Owner::Remote(_)) = net.owner(ip) {
                    net.addresses.remove(&ip);
                }
                Ok(())
            }
            Update::InstallKey { vni, epoch, key } => {
                // The evicted epoch (if any) is visible through `Network::key_epochs`.
                let _evicted = self.keys_mut(vni)?.install(epoch, NetworkKey(key.0));
                Ok(())
            }
            Update::SetTxKey { vni, epoch } => self
                .keys_mut(vni)?
                .set_tx(epoch)
                .map_err(|cause| UpdateError::Key { vni, cause }),
            Update::RetireKey { vni, epoch } => self
                .keys_mut(vni)?
                .retire(epoch)
                .map_err(|cause| UpdateError::Key { vni, cause }),
            Update::SetService(spec) => {
                let net = self.network_mut(spec.vni)?;
                check_in_subnet(net, spec.vip)?;
                if net.owner(spec.vip).is_some() || net.gateway == Some(spec.vip) {
                    return Err(UpdateError::AddressInUse {
                        vni: spec.vni,
                        ip: spec.vip,
                    });
                }
                for backend in &spec.backends {
                    check_in_subnet(net, backend.ip)?;
                }
                self.balancer.set_service(&spec);
                Ok(())
            }
            Update::RemoveService { vni, vip } => {
                self.network_mut(vni)?;
                self.balancer.remove_service(vni, vip);
                Ok(())
            }
        }
    }

    fn network_mut(&mut self, vni: Vni) -> Result<&mut Network, UpdateError> {
        self.networks
            .get_mut(&vni)
            .ok_or(UpdateError::UnknownNetwork(vni))
    }

    fn keys_mut(&mut self, vni: Vni) -> Result<&mut KeySet, UpdateError> {
        self.network_mut(vni)?
            .keys
            .as_mut()
            .ok_or(UpdateError::NotEncrypted(vni))
    }

    fn free_address(&mut self, vni: Vni, ip: Ipv4Addr) -> Result<&mut Network, UpdateError> {
        if self.balancer.is_vip(vni, ip) {
            return Err(UpdateError::VipInUse { vni, ip });
        }
        let net = self.network_mut(vni)?;
        check_in_subnet(net, ip)?;
        if net.owner(ip).is_some() || net.gateway == Some(ip) {
            return Err(UpdateError::AddressInUse { vni, ip });
        }
        Ok(net)
    }
}

fn check_in_subnet(net: &Network, ip: Ipv4Addr) -> Result<(), UpdateError> {
    if net.subnet.contains(&ip) {
        Ok(())
    } else {
        Err(UpdateError::OutsideSubnet {
            vni: net.vni,
            ip,
            subnet: net.subnet,
        })
    }
}

impl Network {
    /// The epochs of the keys held, ascending, and the one used for sending.
    pub fn key_epochs(&self) -> Option<(Vec<Epoch>, Option<Epoch>)> {
        self.keys
            .as_ref()
            .map(|k| (k.epochs().collect(), k.tx_epoch()))
    }
}
