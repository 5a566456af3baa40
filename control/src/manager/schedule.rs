//! Placement: which nodes may run a service's tasks, and which of them gets the next one.
//! Replicated tasks spread (fewest tasks of the service, then fewest tasks in all); global
//! services run one task on every eligible node.

use std::collections::BTreeMap;

use super::model::{Availability, Node, NodeStatus, ServiceSpec, Task};

/// May `node` keep a task of `spec` it already runs? Not when it drains, is down, or no longer
/// meets the constraints. (A paused node keeps its tasks.)
pub fn may_keep(node: &Node, spec: &ServiceSpec) -> bool {
    node.status == NodeStatus::Ready
        && node.availability != Availability::Drain
        && spec.constraints.iter().all(|c| c.matches(node))
}

/// May `node` take a new task of `spec`?
pub fn may_take(node: &Node, spec: &ServiceSpec) -> bool {
    node.availability == Availability::Active && may_keep(node, spec)
}

/// The node for a new task of `service`: the eligible one with the fewest live tasks of the
/// service, then the fewest live tasks in all, then the smallest id (so the choice is the same
/// every time for the same state).
pub fn choose<'a>(
    nodes: &'a BTreeMap<String, Node>,
    tasks: &BTreeMap<String, Task>,
    service_id: &str,
    spec: &ServiceSpec,
) -> Option<&'a Node> {
    let mut of_service: BTreeMap<&str, usize> = BTreeMap::new();
    let mut in_all: BTreeMap<&str, usize> = BTreeMap::new();
    for task in tasks.values().filter(|t| t.is_live()) {
        if let Some(node) = task.node.as_deref() {
            *in_all.entry(node).or_default() += 1;
            if task.service == service_id {
                *of_service.entry(node).or_default() += 1;
            }
        }
    }
    let count = |map: &BTreeMap<&str, usize>, id: &str| map.get(id).copied().unwrap_or(0);
    nodes
        .values()
        .filter(|n| may_take(n, spec))
        .min_by_key(|n| {
            (
                count(&of_service, &n.id),
                count(&in_all, &n.id),
                n.id.clone(),
            )
        })
}

/// Why no node could take a task, for `service ps` ("no suitable node (...)").
pub fn why_unplaced(nodes: &BTreeMap<String, Node>, spec: &ServiceSpec) -> String {
    if nodes.is_empty() {
        return "no suitable node (the cluster has no nodes)".to_owned();
    }
    let (mut down, mut unavailable, mut constrained) = (0, 0, 0);
    for node in nodes.values() {
        if node.status != NodeStatus::Ready {
            down += 1;
        } else if node.availability != Availability::Active {
            unavailable += 1;
        } else if !spec.constraints.iter().all(|c| c.matches(node)) {
            constrained += 1;
        }
    }
    format!(
        "no suitable node ({} nodes: {down} down, {unavailable} paused or drained, {constrained} not matching the constraints)",
        nodes.len()
    )
}
