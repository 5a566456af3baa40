//! Address management: subnets from a pool, addresses within a subnet, VNIs, published
//! ports. Pure bookkeeping over sets; the manager persists it with the rest of its state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::error::ManagerError;
use super::model::Protocol;

/// Where subnets come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Docker's default address pool.
    pub pool: Ipv4Net,
    /// The size of a subnet given from the pool.
    pub prefix_len: u8,
    /// The routing mesh's network.
    pub ingress: Ipv4Net,
    /// Published ports given when none is asked for (Docker's range).
    pub ports: (u16, u16),
    /// The first VNI handed out (Docker's overlay driver starts at 4096).
    pub first_vni: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            pool: Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap_or_default(),
            prefix_len: 24,
            ingress: Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 24).unwrap_or_default(),
            ports: (30000, 32767),
            first_vni: 4096,
        }
    }
}

/// The addresses in use in one subnet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SubnetUse {
    subnet: Ipv4Net,
    used: BTreeSet<Ipv4Addr>,
    /// Where the next search starts: addresses are handed out in turn, so a freed one is
    /// not reused at once (a stale DNS answer or ARP entry would point at a new task).
    cursor: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    pub config: PoolConfig,
    /// Per network id.
    subnets: BTreeMap<String, SubnetUse>,
    vnis: BTreeSet<u32>,
    ports: BTreeSet<(Protocol, u16)>,
}

impl Ipam {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Reserves a subnet for network `id`: the one asked for (it must not overlap another),
    /// or the next free one of the pool. Returns the subnet and its gateway (first host).
    pub fn add_network(
        &mut self,
        id: &str,
        name: &str,
        asked: Option<Ipv4Net>,
    ) -> Result<(Ipv4Net, Ipv4Addr), ManagerError> {
        let subnet = match asked {
            Some(subnet) => {
                let subnet = subnet.trunc();
                if subnet.prefix_len() > 29 {
                    return Err(ManagerError::SubnetTooSmall {
                        network: name.to_owned(),
                        subnet,
                    });
                }
                if let Some(other) = self.overlapping(subnet) {
                    return Err(ManagerError::SubnetOverlaps {
                        network: name.to_owned(),
                        subnet,
                        other,
                    });
                }
                subnet
            }
            None => self.next_free_subnet(name)?,
        };
        let gateway = first_host(subnet);
        let mut used = BTreeSet::new();
        used.insert(gateway);
        self.subnets.insert(
            id.to_owned(),
            SubnetUse {
                subnet,
                used,
                cursor: 0,
            },
        );
        Ok((subnet, gateway))
    }

    fn overlapping(&self, subnet: Ipv4Net) -> Option<Ipv4Net> {
        self.subnets
            .values()
            .map(|s| s.subnet)
            .find(|s| s.contains(&subnet.network()) || subnet.contains(&s.network()))
    }

    fn next_free_subnet(&self, name: &str) -> Result<Ipv4Net, ManagerError> {
        let exhausted = || ManagerError::PoolExhausted {
            network: name.to_owned(),
            pool: self.config.pool,
            prefix_len: self.config.prefix_len,
        };
        let candidates = self
            .config
            .pool
            .subnets(self.config.prefix_len)
            .map_err(|_| exhausted())?;
        candidates
            .into_iter()
            .find(|c| self.overlapping(*c).is_none())
            .ok_or_else(exhausted)
    }

    pub fn remove_network(&mut self, id: &str) {
        self.subnets.remove(id);
    }

    /// The next free address of network `id` (`name` for the error).
    pub fn allocate(&mut self, id: &str, name: &str) -> Result<Ipv4Addr, ManagerError> {
        let Some(subnet) = self.subnets.get_mut(id) else {
            return Err(ManagerError::NotFound {
                kind: "network",
                name: name.to_owned(),
            });
        };
        let first = u32::from(subnet.subnet.network()) + 1;
        let hosts = host_count(subnet.subnet);
        for step in 0..hosts {
            let offset = (subnet.cursor + step) % hosts;
            let ip = Ipv4Addr::from(first + offset);
            if subnet.used.insert(ip) {
                subnet.cursor = (offset + 1) % hosts;
                return Ok(ip);
            }
        }
        Err(ManagerError::SubnetExhausted {
            network: name.to_owned(),
            subnet: subnet.subnet,
            in_use: subnet.used.len(),
        })
    }

    /// Takes a given address (restoring state, or a static one); false if already in use.
    pub fn claim(&mut self, id: &str, ip: Ipv4Addr) -> bool {
        self.subnets
            .get_mut(id)
            .is_some_and(|s| s.subnet.contains(&ip) && s.used.insert(ip))
    }

    pub fn release(&mut self, id: &str, ip: Ipv4Addr) {
        if let Some(subnet) = self.subnets.get_mut(id) {
            subnet.used.remove(&ip);
        }
    }

    /// The next VNI from the first one.
    pub fn allocate_vni(&mut self) -> Result<u32, ManagerError> {
        let vni = (self.config.first_vni..=(1 << 24) - 1)
            .find(|v| !self.vnis.contains(v))
            .ok_or(ManagerError::VnisExhausted)?;
        self.vnis.insert(vni);
        Ok(vni)
    }

    pub fn release_vni(&mut self, vni: u32) {
        self.vnis.remove(&vni);
    }

    /// Reserves a published port: the one asked for, or the next free one of the range.
    pub fn allocate_port(
        &mut self,
        service: &str,
        protocol: Protocol,
        asked: Option<u16>,
    ) -> Result<u16, ManagerError> {
        let port = match asked {
            Some(port) if self.ports.contains(&(protocol, port)) => {
                return Err(ManagerError::PortInUse {
                    service: service.to_owned(),
                    port,
                    protocol,
                });
            }
            Some(port) => port,
            None => {
                let (low, high) = self.config.ports;
                (low..=high)
                    .find(|p| !self.ports.contains(&(protocol, *p)))
                    .ok_or(ManagerError::PortsExhausted {
                        service: service.to_owned(),
                        low,
                        high,
                    })?
            }
        };
        self.ports.insert((protocol, port));
        Ok(port)
    }

    pub fn release_port(&mut self, protocol: Protocol, port: u16) {
        self.ports.remove(&(protocol, port));
    }
}

fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Usable host addresses: all but the network and broadcast addresses.
fn host_count(subnet: Ipv4Net) -> u32 {
    let size = 1u64 << (32 - u32::from(subnet.prefix_len()));
    u32::try_from(size.saturating_sub(2)).unwrap_or(u32::MAX)
}
