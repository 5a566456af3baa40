//! What a manager view asks of this node, sans-IO: the networks to add and remove (with
//! their keys, in the hitless order), the tasks to start and stop, and what to report back.
//! The shell ([`super::Agent`]) carries the plan out.

use std::collections::{BTreeMap, BTreeSet};

use dataplane::forward::{NetworkKeyBytes, Update};
use dataplane::types::{Epoch, Vni};

use crate::manager::model::TaskState;
use crate::manager::view::{EndpointView, NetworkView, NodeView};

/// A network as this node has programmed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNetwork {
    pub view: NetworkView,
    /// Key epochs installed for receiving.
    pub installed: BTreeSet<u32>,
    /// The epoch sealed with.
    pub tx: Option<u32>,
}

/// Network changes, in the order to apply them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPlan {
    pub added: Vec<NetworkView>,
    pub removed: Vec<NetworkView>,
    /// Per network id: the dataplane updates for it (network first, then keys).
    pub dataplane: Vec<(String, Update)>,
}

/// The parameters that, changed, make a network a new one (it is removed and added again).
fn same_network(a: &NetworkView, b: &NetworkView) -> bool {
    a.vni == b.vni
        && a.subnet == b.subnet
        && a.gateway == b.gateway
        && a.keys.is_some() == b.keys.is_some()
}

/// A network's VNI. The manager allocates them from 4096 within VXLAN's 24 bits; a network
/// a view gives outside them (a manager bug) is left out of the plan.
pub fn vni_of(net: &NetworkView) -> Option<Vni> {
    Vni::new(net.vni)
}

/// The networks of `view` against what is programmed. `mtu(encrypted)` is the overlay MTU.
pub fn networks(
    local: &BTreeMap<String, LocalNetwork>,
    wanted: &[NetworkView],
    mtu: impl Fn(bool) -> u16,
) -> NetworkPlan {
    let mut plan = NetworkPlan::default();
    let wanted_ids: BTreeSet<&str> = wanted.iter().map(|n| n.id.as_str()).collect();
    for (id, have) in local {
        let changed = wanted
            .iter()
            .find(|n| n.id == *id)
            .is_some_and(|n| !same_network(n, &have.view));
        if let Some(vni) = vni_of(&have.view)
            && (!wanted_ids.contains(id.as_str()) || changed)
        {
            plan.removed.push(have.view.clone());
            plan.dataplane
                .push((id.clone(), Update::RemoveNetwork { vni }));
        }
    }
    for net in wanted {
        let Some(vni) = vni_of(net) else { continue };
        let have = local
            .get(&net.id)
            .filter(|have| same_network(net, &have.view));
        if have.is_none() {
            plan.added.push(net.clone());
            plan.dataplane.push((
                net.id.clone(),
                Update::AddNetwork {
                    vni,
                    subnet: net.subnet,
                    gateway: Some(net.gateway),
                    mtu: mtu(net.keys.is_some()),
                    encrypted: net.keys.is_some(),
                },
            ));
        }
        let Some(keys) = &net.keys else { continue };
        let installed = have.map(|h| h.installed.clone()).unwrap_or_default();
        let tx = have.and_then(|h| h.tx);
        // Receive with every new key first, then switch, then drop: no packet is lost.
        for e in keys.epochs.iter().filter(|e| !installed.contains(&e.epoch)) {
            plan.dataplane.push((
                net.id.clone(),
                Update::InstallKey {
                    vni,
                    epoch: Epoch(e.epoch),
                    key: NetworkKeyBytes(e.key.0),
                },
            ));
        }
        if let Some(want) = keys.tx
            && tx != Some(want)
        {
            plan.dataplane.push((
                net.id.clone(),
                Update::SetTxKey {
                    vni,
                    epoch: Epoch(want),
                },
            ));
        }
        let kept: BTreeSet<u32> = keys.epochs.iter().map(|e| e.epoch).collect();
        for old in installed.difference(&kept) {
            plan.dataplane.push((
                net.id.clone(),
                Update::RetireKey {
                    vni,
                    epoch: Epoch(*old),
                },
            ));
        }
    }
    plan
}

/// `network`'s state once its part of a plan is applied.
pub fn after(net: &NetworkView) -> LocalNetwork {
    LocalNetwork {
        view: net.clone(),
        installed: net
            .keys
            .iter()
            .flat_map(|k| k.epochs.iter().map(|e| e.epoch))
            .collect(),
        tx: net.keys.as_ref().and_then(|k| k.tx),
    }
}

/// Where a task is on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its sandbox is being built and its process started.
    Starting,
    Running,
    /// Taken out of the balancer; its process ends after the graces.
    Stopping,
    /// Ended: `Complete`, `Failed` (and not restarted) or `Shutdown` (stopped).
    Ended(TaskState),
}

impl Phase {
    /// What the manager is told.
    pub fn observed(self) -> TaskState {
        match self {
            Phase::Starting => TaskState::Assigned,
            Phase::Running | Phase::Stopping => TaskState::Running,
            Phase::Ended(state) => state,
        }
    }
}

/// The tasks to start and stop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskPlan {
    pub start: Vec<EndpointView>,
    pub stop: Vec<String>,
}

/// `view`'s tasks against the local ones (by id).
pub fn tasks(local: &BTreeMap<String, Phase>, view: &NodeView) -> TaskPlan {
    let mut plan = TaskPlan::default();
    for t in &view.tasks {
        let wanted = t.desired == TaskState::Running;
        match local.get(&t.task) {
            // A task failed here and given up is not started again under the same id (the
            // manager decides what replaces it); a stopped one neither.
            None if wanted && !t.observed.is_terminal() => plan.start.push(t.clone()),
            Some(Phase::Starting | Phase::Running) if !wanted => plan.stop.push(t.task.clone()),
            _ => {}
        }
    }
    // Tasks the manager no longer lists at all (removed with their service) stop too.
    let listed: BTreeSet<&str> = view.tasks.iter().map(|t| t.task.as_str()).collect();
    for (id, phase) in local {
        if matches!(phase, Phase::Starting | Phase::Running) && !listed.contains(id.as_str()) {
            plan.stop.push(id.clone());
        }
    }
    plan
}

/// The task states to report: every task of the view whose observed state is not what this
/// node knows. A task this node does not hold (a restarted agent, a lost start) and that is
/// to stop is reported shut down.
pub fn task_reports(local: &BTreeMap<String, Phase>, view: &NodeView) -> Vec<(String, TaskState)> {
    view.tasks
        .iter()
        .filter_map(|t| {
            let ours = match local.get(&t.task) {
                Some(phase) => phase.observed(),
                None if t.desired != TaskState::Running && !t.observed.is_terminal() => {
                    TaskState::Shutdown
                }
                None => return None,
            };
            // Assigned is where the manager starts: nothing to say until it runs.
            (ours != t.observed && ours != TaskState::Assigned).then(|| (t.task.clone(), ours))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::manager::keys::{Epoch as KeyEpoch, KeyBytes, KeySet};

    fn net(id: &str, vni: u32, epochs: &[u32], tx: Option<u32>) -> NetworkView {
        NetworkView {
            id: id.into(),
            name: format!("{id}-name"),
            vni,
            subnet: "10.0.1.0/24".parse().unwrap(),
            gateway: "10.0.1.1".parse().unwrap(),
            internal: false,
            ingress: false,
            keys: (!epochs.is_empty()).then(|| KeySet {
                epochs: epochs
                    .iter()
                    .map(|&epoch| KeyEpoch {
                        epoch,
                        key: KeyBytes([epoch as u8; 32]),
                        acked: BTreeSet::new(),
                    })
                    .collect(),
                tx,
            }),
        }
    }

    fn kinds(plan: &NetworkPlan) -> Vec<String> {
        plan.dataplane
            .iter()
            .map(|(id, u)| {
                let what = match u {
                    Update::AddNetwork { .. } => "add".to_owned(),
                    Update::RemoveNetwork { .. } => "remove".to_owned(),
                    Update::InstallKey { epoch, .. } => format!("install{}", epoch.0),
                    Update::SetTxKey { epoch, .. } => format!("tx{}", epoch.0),
                    Update::RetireKey { epoch, .. } => format!("retire{}", epoch.0),
                    other => format!("{other:?}"),
                };
                format!("{id}:{what}")
            })
            .collect()
    }

    #[test]
    fn a_new_encrypted_network_is_added_then_keyed_in_order() {
        let plan = networks(&BTreeMap::new(), &[net("a", 4096, &[1], Some(1))], |_| 1400);
        assert_eq!(kinds(&plan), ["a:add", "a:install1", "a:tx1"]);
        assert_eq!(plan.added.len(), 1);
    }

    #[test]
    fn a_rotation_installs_before_switching_and_retires_last() {
        let mut local = BTreeMap::new();
        local.insert("a".to_owned(), after(&net("a", 4096, &[1], Some(1))));
        // Step 1: the new key arrives for receiving only.
        let plan = networks(&local, &[net("a", 4096, &[1, 2], Some(1))], |_| 1400);
        assert_eq!(kinds(&plan), ["a:install2"]);
        local.insert("a".to_owned(), after(&net("a", 4096, &[1, 2], Some(1))));
        // Step 2: everyone holds it: switch.
        let plan = networks(&local, &[net("a", 4096, &[1, 2], Some(2))], |_| 1400);
        assert_eq!(kinds(&plan), ["a:tx2"]);
        local.insert("a".to_owned(), after(&net("a", 4096, &[1, 2], Some(2))));
        // Step 3 (next rotation): 3 in, 1 out only after the switch to 3.
        let plan = networks(&local, &[net("a", 4096, &[2, 3], Some(3))], |_| 1400);
        assert_eq!(kinds(&plan), ["a:install3", "a:tx3", "a:retire1"]);
    }

    #[test]
    fn unchanged_networks_plan_nothing_and_gone_ones_are_removed() {
        let mut local = BTreeMap::new();
        local.insert("a".to_owned(), after(&net("a", 4096, &[], None)));
        local.insert("b".to_owned(), after(&net("b", 4097, &[], None)));
        let plan = networks(&local, &[net("a", 4096, &[], None)], |_| 1400);
        assert_eq!(kinds(&plan), ["b:remove"]);
        // A network recreated under the same id with another VNI: out, then in.
        let plan = networks(
            &local,
            &[net("a", 5000, &[], None), net("b", 4097, &[], None)],
            |_| 1400,
        );
        assert_eq!(kinds(&plan), ["a:remove", "a:add"]);
    }

    fn task(id: &str, desired: TaskState, observed: TaskState) -> EndpointView {
        EndpointView {
            task: id.into(),
            service: "s1".into(),
            name: format!("web.1.{id}"),
            node: "n1".into(),
            node_addr: "192.168.1.1".parse().unwrap(),
            addresses: BTreeMap::new(),
            desired,
            observed,
        }
    }

    fn view(tasks: Vec<EndpointView>) -> NodeView {
        NodeView {
            revision: 1,
            node: "n1".into(),
            networks: vec![],
            tasks,
            services: vec![],
            gossip_keys: KeySet::default(),
            peers: BTreeMap::new(),
            ingress_ip: None,
        }
    }

    #[test]
    fn wanted_tasks_start_once_and_unwanted_ones_stop() {
        use TaskState::*;
        let v = view(vec![
            task("new", Running, Assigned),
            task("up", Running, Running),
            task("down", Shutdown, Running),
            task("failed", Running, Failed),
        ]);
        let mut local = BTreeMap::new();
        local.insert("up".to_owned(), Phase::Running);
        local.insert("down".to_owned(), Phase::Running);
        local.insert("orphan".to_owned(), Phase::Running);
        let plan = tasks(&local, &v);
        assert_eq!(
            plan.start
                .iter()
                .map(|t| t.task.as_str())
                .collect::<Vec<_>>(),
            ["new"]
        );
        assert_eq!(plan.stop, ["down", "orphan"]);
    }

    #[test]
    fn reports_say_what_differs_and_shut_down_tasks_this_node_lost() {
        use TaskState::*;
        let v = view(vec![
            task("a", Running, Assigned),
            task("b", Running, Running),
            task("c", Shutdown, Running),
            task("d", Running, Running),
        ]);
        let mut local = BTreeMap::new();
        local.insert("a".to_owned(), Phase::Running);
        local.insert("b".to_owned(), Phase::Running);
        local.insert("d".to_owned(), Phase::Ended(Failed));
        let reports = task_reports(&local, &v);
        assert_eq!(
            reports,
            [
                ("a".to_owned(), Running),
                ("c".to_owned(), Shutdown),
                ("d".to_owned(), Failed)
            ]
        );
    }
}
