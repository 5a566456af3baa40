//! The lookup index of one network, built from its records, and the snapshot of all
//! networks that answering threads read. Names are stored lower-cased, without the trailing
//! dot; Docker's lookup order is implemented by [`Snapshot::find`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::records::{EndpointMode, NetworkFlags, NetworkRecords, ServiceRecord};

/// Which configured TTL an answer gets: VIPs are stable for a service's life, task addresses
/// change with every scale or restart, so a client must not cache them for long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlClass {
    Vip,
    Task,
}

/// One SRV answer: `port` on `target` (a fully qualified name this index also answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    pub port: u16,
    pub target: String,
    pub addr: Ipv4Addr,
}

/// What a name resolves to on one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameEntry {
    pub addrs: Vec<Ipv4Addr>,
    pub srv: Vec<SrvTarget>,
    pub ttl: TtlClass,
}

/// The name a reverse lookup of an address gives (`<name>.<network>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtrEntry {
    pub name: String,
    pub ttl: TtlClass,
}

/// One network's names and reverse names.
#[derive(Debug, Default)]
pub struct NetworkIndex {
    pub flags: NetworkFlags,
    names: BTreeMap<String, NameEntry>,
    ptrs: BTreeMap<Ipv4Addr, PtrEntry>,
}

impl NetworkIndex {
    pub fn build(network: &str, records: &NetworkRecords) -> Self {
        let mut index = Self {
            flags: records.flags,
            ..Self::default()
        };
        // The routing-mesh network registers nothing (as in Docker): a task's ingress address
        // is not how other tasks should reach it.
        if records.flags.ingress {
            return index;
        }
        let network = network.to_ascii_lowercase();
        for service in records.services.values() {
            index.add_service(&network, service);
        }
        for container in records.containers.values() {
            for name in std::iter::once(&container.name).chain(&container.aliases) {
                index.add_addrs(name, &[container.ip], TtlClass::Task);
            }
            index.add_ptr(container.ip, &container.name, &network, TtlClass::Task);
        }
        index
    }

    fn add_service(&mut self, network: &str, service: &ServiceRecord) {
        let enabled: Vec<Ipv4Addr> = service
            .tasks
            .iter()
            .filter(|t| t.enabled)
            .map(|t| t.ip)
            .collect();
        let names = || std::iter::once(&service.name).chain(&service.aliases);
        for task in &service.tasks {
            self.add_addrs(&task.name, &[task.ip], TtlClass::Task);
            self.add_ptr(task.ip, &task.name, network, TtlClass::Task);
        }
        let vip = match service.mode {
            EndpointMode::Vip => service.vip,
            EndpointMode::Dnsrr => None,
        };
        if let Some(vip) = vip {
            self.add_ptr(vip, &service.name, network, TtlClass::Vip);
        }
        // A name with no enabled backend does not resolve: a VIP nothing answers behind would
        // only make clients wait for a refusal.
        if enabled.is_empty() {
            return;
        }
        for name in names() {
            self.add_addrs(&format!("tasks.{name}"), &enabled, TtlClass::Task);
            match vip {
                Some(vip) => self.add_addrs(name, &[vip], TtlClass::Vip),
                None if service.mode == EndpointMode::Dnsrr => {
                    self.add_addrs(name, &enabled, TtlClass::Task)
                }
                None => {}
            }
        }
        let srv_targets: Vec<(String, Ipv4Addr)> = match vip {
            Some(vip) => vec![(format!("{}.{network}.", service.name), vip)],
            None => service
                .tasks
                .iter()
                .filter(|t| t.enabled)
                .map(|t| (format!("{}.{network}.", t.name), t.ip))
                .collect(),
        };
        for port in &service.ports {
            let srv: Vec<SrvTarget> = srv_targets
                .iter()
                .map(|(target, addr)| SrvTarget {
                    port: port.target,
                    target: target.to_ascii_lowercase(),
                    addr: *addr,
                })
                .collect();
            let numbers = std::iter::once(port.target).chain(port.published);
            for number in numbers {
                for name in names() {
                    let key = format!("_{number}.{}.{name}", port.protocol.label());
                    self.entry(&key, TtlClass::Vip)
                        .srv
                        .extend(srv.iter().cloned());
                }
            }
        }
    }

    fn entry(&mut self, name: &str, ttl: TtlClass) -> &mut NameEntry {
        let entry = self
            .names
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| NameEntry {
                addrs: Vec::new(),
                srv: Vec::new(),
                ttl,
            });
        // Shared names (two containers with one alias) take the shorter-lived class.
        if ttl == TtlClass::Task {
            entry.ttl = TtlClass::Task;
        }
        entry
    }

    /// Registers addresses under a name; a name several objects share answers all of their
    /// addresses (Docker's ref-counted aliases).
    fn add_addrs(&mut self, name: &str, addrs: &[Ipv4Addr], ttl: TtlClass) {
        let entry = self.entry(name, ttl);
        for addr in addrs {
            if !entry.addrs.contains(addr) {
                entry.addrs.push(*addr);
            }
        }
    }

    /// The first object to claim an address names it.
    fn add_ptr(&mut self, ip: Ipv4Addr, name: &str, network: &str, ttl: TtlClass) {
        self.ptrs.entry(ip).or_insert_with(|| PtrEntry {
            name: format!("{}.{network}.", name.to_ascii_lowercase()),
            ttl,
        });
    }

    pub fn name(&self, name: &str) -> Option<&NameEntry> {
        self.names.get(name)
    }

    pub fn ptr(&self, ip: Ipv4Addr) -> Option<&PtrEntry> {
        self.ptrs.get(&ip)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// All networks' indexes at one moment. Cloning it is cheap (reference counts).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    networks: BTreeMap<String, Arc<NetworkIndex>>,
}

impl Snapshot {
    pub fn new(networks: BTreeMap<String, Arc<NetworkIndex>>) -> Self {
        Self { networks }
    }

    pub fn network(&self, network: &str) -> Option<&NetworkIndex> {
        self.networks.get(network).map(|n| n.as_ref())
    }

    /// Docker's lookup: the whole name on each of the client's networks in order, first hit
    /// wins (no merging); then `<prefix>.<network>` for each split of the name, the prefix on
    /// that one network if the client is on it. `name` is lower-case, without trailing dot.
    pub fn find<'a>(&'a self, scope: &[String], name: &str) -> Option<&'a NameEntry> {
        let indexes = || scope.iter().filter_map(|n| self.network(n));
        if let Some(entry) = indexes().find_map(|index| index.name(name)) {
            return Some(entry);
        }
        let splits = name
            .match_indices('.')
            .map(|(at, _)| (&name[..at], &name[at + 1..]));
        for (prefix, suffix) in splits {
            let network = scope.iter().find(|n| n.eq_ignore_ascii_case(suffix));
            if let Some(entry) = network
                .and_then(|n| self.network(n))
                .and_then(|i| i.name(prefix))
            {
                return Some(entry);
            }
        }
        None
    }

    /// The name of an address, from the first of the client's networks that knows it.
    pub fn find_ptr<'a>(&'a self, scope: &[String], ip: Ipv4Addr) -> Option<&'a PtrEntry> {
        scope
            .iter()
            .filter_map(|n| self.network(n))
            .find_map(|index| index.ptr(ip))
    }

    /// True when every network of the scope is internal: nothing is forwarded for such a
    /// client (its networks have no way out, so neither do its names).
    pub fn all_internal(&self, scope: &[String]) -> bool {
        !scope.is_empty()
            && scope
                .iter()
                .all(|n| self.network(n).is_some_and(|index| index.flags.internal))
    }
}
