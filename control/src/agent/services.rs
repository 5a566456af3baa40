//! The service table (Docker's `endpoint_table`), sans-IO: the node running a task writes one
//! entry per network the task is on (key: the task id; value: the service, its VIP, aliases
//! and ports, the task's name and address, and whether it takes new clients); every node of
//! the network folds the entries of a service into what its balancer and resolver need:
//!
//! - the dataplane: the VIP and its backends, whole (`SetService`), enabled tasks active,
//!   disabled ones (unhealthy, stopping) draining — they keep their connections and get no
//!   new ones, Docker's weight 0 — and `RemoveService` when the last entry goes;
//! - the resolver: the service's record on that network (`SetService`/`RemoveService`).
//!
//! The service-wide fields (name, VIP, aliases, ports) come from its newest entry.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::gossip::tables::{self, Key};
use dataplane::balance::{Algorithm, BackendSpec, BackendState, ServiceSpec};
use dataplane::forward::Update as DataplaneUpdate;
use dataplane::types::Vni;
use dns::records::{EndpointMode, PortRecord, ServiceRecord, TaskRecord, Update as DnsUpdate};

/// The gossip table the entries live in.
pub const SERVICE_TABLE: &str = "endpoint_table";

/// One task of a service on one network, as its node announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    pub service_id: String,
    pub service_name: String,
    pub mode: EndpointMode,
    pub vip: Option<Ipv4Addr>,
    pub aliases: Vec<String>,
    pub ports: Vec<PortRecord>,
    pub task_name: String,
    pub ip: Ipv4Addr,
    /// Running and healthy: it takes new clients.
    pub enabled: bool,
}

impl ServiceEndpoint {
    pub fn encode(&self) -> Vec<u8> {
        // Strings, addresses and enums always serialize.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<ServiceEndpoint> {
        postcard::from_bytes(bytes).ok()
    }

    /// The table key and value for this task on `network`.
    pub fn entry(&self, network: &str, task_id: &str) -> (Key, Vec<u8>) {
        (
            Key {
                network: network.to_owned(),
                table: SERVICE_TABLE.to_owned(),
                key: task_id.to_owned(),
            },
            self.encode(),
        )
    }
}

/// What one table event changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceUpdates {
    pub dataplane: Vec<DataplaneUpdate>,
    pub dns: Vec<DnsUpdate>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "service entry {0:?}: its value is not a service endpoint (a newer or broken writer): ignored"
    )]
    Malformed(Key),
    #[error("service entry {0:?}: network not attached on this node: ignored")]
    UnknownNetwork(Key),
}

#[derive(Debug, Default)]
pub struct ServiceTable {
    /// (network, task) → (arrival, entry)
    entries: BTreeMap<(String, String), (u64, ServiceEndpoint)>,
    /// (network, service id) → the VIP programmed for it, to remove when it changes or goes.
    vips: BTreeMap<(String, String), Ipv4Addr>,
    /// (network, service id) → the name the resolver holds it under.
    names: BTreeMap<(String, String), String>,
    arrivals: u64,
}

impl ServiceTable {
    /// A table event (others than the service table's are ignored) into updates for the
    /// dataplane and the resolver; `vni_of` maps the networks this node is attached to.
    pub fn on_event(
        &mut self,
        event: &tables::Event,
        vni_of: impl Fn(&str) -> Option<Vni>,
        algorithm: Algorithm,
    ) -> Result<ServiceUpdates, ServiceError> {
        let key = match event {
            tables::Event::Put { key, .. } | tables::Event::Deleted { key } => key,
        };
        if key.table != SERVICE_TABLE {
            return Ok(ServiceUpdates::default());
        }
        let vni = vni_of(&key.network).ok_or_else(|| ServiceError::UnknownNetwork(key.clone()))?;
        let id = (key.network.clone(), key.key.clone());
        let mut touched = Vec::new();
        if let Some((_, old)) = self.entries.remove(&id) {
            touched.push(old.service_id);
        }
        if let tables::Event::Put { value, .. } = event {
            let entry = ServiceEndpoint::decode(value)
                .ok_or_else(|| ServiceError::Malformed(key.clone()))?;
            self.arrivals += 1;
            touched.push(entry.service_id.clone());
            self.entries.insert(id, (self.arrivals, entry));
        }
        touched.dedup();
        let mut updates = ServiceUpdates::default();
        for service in touched {
            self.fold(&key.network, &service, vni, algorithm, &mut updates);
        }
        Ok(updates)
    }

    /// Recomputes one service on one network from its entries.
    fn fold(
        &mut self,
        network: &str,
        service: &str,
        vni: Vni,
        algorithm: Algorithm,
        updates: &mut ServiceUpdates,
    ) {
        let mut tasks: Vec<&(u64, ServiceEndpoint)> = self
            .entries
            .iter()
            .filter(|((n, _), (_, e))| n == network && e.service_id == service)
            .map(|(_, v)| v)
            .collect();
        tasks.sort_by_key(|(arrival, _)| *arrival);
        let slot = (network.to_owned(), service.to_owned());
        let programmed = self.vips.get(&slot).copied();
        let Some((_, newest)) = tasks.last().copied() else {
            if let Some(vip) = programmed {
                updates
                    .dataplane
                    .push(DataplaneUpdate::RemoveService { vni, vip });
                self.vips.remove(&slot);
            }
            // The service is gone with its last entry: the resolver forgets its name.
            if let Some(name) = self.names.remove(&slot) {
                updates.dns.push(DnsUpdate::RemoveService {
                    network: network.to_owned(),
                    service: name,
                });
            }
            return;
        };
        let newest = newest.clone();
        let record = ServiceRecord {
            name: newest.service_name.clone(),
            mode: newest.mode,
            vip: newest.vip,
            aliases: newest.aliases.clone(),
            tasks: tasks
                .iter()
                .map(|(_, e)| TaskRecord {
                    name: e.task_name.clone(),
                    ip: e.ip,
                    enabled: e.enabled,
                })
                .collect(),
            ports: newest.ports.clone(),
        };
        let backends = tasks
            .iter()
            .map(|(_, e)| BackendSpec {
                ip: e.ip,
                state: if e.enabled {
                    BackendState::Active
                } else {
                    BackendState::Draining
                },
            })
            .collect();
        if let Some(old) = programmed
            && Some(old) != newest.vip
        {
            updates
                .dataplane
                .push(DataplaneUpdate::RemoveService { vni, vip: old });
            self.vips.remove(&slot);
        }
        if let (EndpointMode::Vip, Some(vip)) = (newest.mode, newest.vip) {
            updates
                .dataplane
                .push(DataplaneUpdate::SetService(ServiceSpec {
                    vni,
                    vip,
                    algorithm,
                    backends,
                }));
            self.vips.insert(slot.clone(), vip);
        }
        if let Some(old) = self.names.insert(slot, newest.service_name.clone())
            && old != newest.service_name
        {
            updates.dns.push(DnsUpdate::RemoveService {
                network: network.to_owned(),
                service: old,
            });
        }
        updates.dns.push(DnsUpdate::SetService {
            network: network.to_owned(),
            service: record,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use dns::records::PortProtocol;

    fn vni(network: &str) -> Option<Vni> {
        (network == "blue").then(|| Vni::try_from(4096).unwrap())
    }

    fn endpoint(task: u8, enabled: bool) -> ServiceEndpoint {
        ServiceEndpoint {
            service_id: "svc1".into(),
            service_name: "web".into(),
            mode: EndpointMode::Vip,
            vip: Some(Ipv4Addr::new(10, 0, 1, 2)),
            aliases: vec!["www".into()],
            ports: vec![PortRecord {
                protocol: PortProtocol::Tcp,
                target: 80,
                published: Some(8080),
            }],
            task_name: format!("web.{task}.t{task}"),
            ip: Ipv4Addr::new(10, 0, 1, 10 + task),
            enabled,
        }
    }

    fn put(task: u8, e: &ServiceEndpoint) -> tables::Event {
        let (key, value) = e.entry("blue", &format!("t{task}"));
        tables::Event::Put {
            key,
            owner: "n".into(),
            value,
        }
    }

    fn deleted(task: u8) -> tables::Event {
        tables::Event::Deleted {
            key: Key {
                network: "blue".into(),
                table: SERVICE_TABLE.into(),
                key: format!("t{task}"),
            },
        }
    }

    fn run(t: &mut ServiceTable, e: &tables::Event) -> ServiceUpdates {
        t.on_event(e, vni, Algorithm::RoundRobin).unwrap()
    }

    fn backends(u: &ServiceUpdates) -> Vec<(Ipv4Addr, BackendState)> {
        match u.dataplane.last() {
            Some(DataplaneUpdate::SetService(s)) => {
                s.backends.iter().map(|b| (b.ip, b.state)).collect()
            }
            other => panic!("not a SetService: {other:?}"),
        }
    }

    #[test]
    fn tasks_fold_into_the_vips_backends_and_the_resolvers_record() {
        let mut t = ServiceTable::default();
        run(&mut t, &put(1, &endpoint(1, true)));
        let u = run(&mut t, &put(2, &endpoint(2, true)));
        assert_eq!(
            backends(&u),
            [
                (Ipv4Addr::new(10, 0, 1, 11), BackendState::Active),
                (Ipv4Addr::new(10, 0, 1, 12), BackendState::Active)
            ]
        );
        let DnsUpdate::SetService { network, service } = &u.dns[0] else {
            panic!("{u:?}")
        };
        assert_eq!(network, "blue");
        assert_eq!(service.name, "web");
        assert_eq!(service.vip, Some(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(service.aliases, ["www"]);
        assert_eq!(service.tasks.len(), 2);
        assert_eq!(service.ports[0].published, Some(8080));
        // An unhealthy task drains: in the records, disabled; in the balancer, no new flows.
        let u = run(&mut t, &put(2, &endpoint(2, false)));
        assert_eq!(backends(&u)[1].1, BackendState::Draining);
        let DnsUpdate::SetService { service, .. } = &u.dns[0] else {
            panic!()
        };
        assert!(!service.tasks[1].enabled);
    }

    #[test]
    fn the_last_task_going_removes_the_vip_and_the_name() {
        let mut t = ServiceTable::default();
        run(&mut t, &put(1, &endpoint(1, true)));
        let u = run(&mut t, &deleted(1));
        assert_eq!(
            u.dataplane,
            [DataplaneUpdate::RemoveService {
                vni: vni("blue").unwrap(),
                vip: Ipv4Addr::new(10, 0, 1, 2)
            }]
        );
        assert_eq!(
            u.dns,
            [DnsUpdate::RemoveService {
                network: "blue".into(),
                service: "web".into()
            }]
        );
        assert_eq!(run(&mut t, &deleted(1)), ServiceUpdates::default());
    }

    #[test]
    fn dnsrr_services_get_names_but_no_vip() {
        let mut t = ServiceTable::default();
        let mut e = endpoint(1, true);
        e.mode = EndpointMode::Dnsrr;
        e.vip = None;
        let u = run(&mut t, &put(1, &e));
        assert!(u.dataplane.is_empty());
        assert_eq!(u.dns.len(), 1);
    }

    #[test]
    fn bad_values_are_refused_with_the_entry_named() {
        let mut t = ServiceTable::default();
        let bad = tables::Event::Put {
            key: Key {
                network: "blue".into(),
                table: SERVICE_TABLE.into(),
                key: "t1".into(),
            },
            owner: "n".into(),
            value: vec![0xff; 3],
        };
        let err = t.on_event(&bad, vni, Algorithm::RoundRobin).unwrap_err();
        assert!(err.to_string().contains("not a service endpoint"), "{err}");
    }
}
