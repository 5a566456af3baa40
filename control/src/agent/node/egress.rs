//! The tasks' way off their overlays (`dataplane::shell::gwbridge`): the node's bridge set up
//! at start and removed at shutdown, an address of the egress subnet per task (known only on
//! this node: nothing leaves it with it), and the cluster's node addresses kept local for the
//! tasks, so that a published port on any node address is served by this node's mesh.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use dataplane::shell::gwbridge;
use dataplane::shell::netns::NetnsRef;
use ipnet::Ipv4Net;

/// Docker's docker_gwbridge takes 172.18.0.0/16; this one keeps clear of Docker's pools'
/// usual first picks.
pub const DEFAULT_SUBNET: &str = "172.30.0.0/16";

#[derive(Debug)]
pub struct Egress {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: Mutex<BTreeSet<Ipv4Addr>>,
    locals: Mutex<BTreeSet<Ipv4Addr>>,
}

/// The lowest address of `subnet` after the gateway that is not in `used`.
pub fn pick(subnet: Ipv4Net, gateway: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    subnet
        .hosts()
        .find(|ip| *ip != gateway && !used.contains(ip))
}

/// The host end of a task's veth: `gw` and the task id's first 10 characters (15 at most).
pub fn host_if(task: &str) -> String {
    format!("gw{}", task.get(..10).unwrap_or(task))
}

impl Egress {
    /// Removes what a previous agent left, then sets the bridge up at the subnet's first host.
    pub fn start(subnet: Ipv4Net) -> io::Result<Egress> {
        let gateway = subnet
            .hosts()
            .next()
            .ok_or_else(|| io::Error::other(format!("egress subnet {subnet} has no host")))?;
        gwbridge::teardown_node();
        gwbridge::setup_node(gateway, subnet.prefix_len())?;
        Ok(Egress {
            subnet,
            gateway,
            used: Mutex::new(BTreeSet::new()),
            locals: Mutex::new(BTreeSet::new()),
        })
    }

    /// Plugs a task's namespace in; its address.
    pub fn plug(&self, task: &str, ns: &NetnsRef) -> io::Result<Ipv4Addr> {
        let ip = {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            let ip = pick(self.subnet, self.gateway, &used).ok_or_else(|| {
                io::Error::other(format!("egress subnet {} is full", self.subnet))
            })?;
            used.insert(ip);
            ip
        };
        // A previous agent's task of the same id may have left its veth: its namespace goes
        // only when the last of its processes is gone, and with it the veth.
        gwbridge::unplug_task(&host_if(task));
        let plugged = gwbridge::plug_task(
            &host_if(task),
            ns,
            ip,
            self.subnet.prefix_len(),
            self.gateway,
        );
        if let Err(e) = plugged {
            gwbridge::unplug_task(&host_if(task));
            self.release(ip);
            return Err(e);
        }
        Ok(ip)
    }

    /// The address of a task that is gone (its veth went with its namespace).
    pub fn release(&self, ip: Ipv4Addr) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }

    /// The cluster's node addresses, local for the tasks (added as nodes appear; a node that
    /// left keeps its route: the mesh here still serves its address).
    pub fn set_nodes(&self, nodes: BTreeSet<Ipv4Addr>) {
        let new: Vec<Ipv4Addr> = {
            let locals = self.locals.lock().unwrap_or_else(|p| p.into_inner());
            nodes.difference(&locals).copied().collect()
        };
        if new.is_empty() {
            return;
        }
        match gwbridge::set_local(new.clone()) {
            Ok(()) => self
                .locals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(new),
            Err(e) => tracing::warn!("egress: node addresses for the tasks: {e}"),
        }
    }

    pub fn stop(&self) {
        gwbridge::teardown_node();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_are_the_lowest_free_after_the_gateway() {
        let subnet: Ipv4Net = "172.30.0.0/30".parse().unwrap();
        let gw = Ipv4Addr::new(172, 30, 0, 1);
        let mut used = BTreeSet::new();
        assert_eq!(pick(subnet, gw, &used), Some(Ipv4Addr::new(172, 30, 0, 2)));
        used.insert(Ipv4Addr::new(172, 30, 0, 2));
        assert_eq!(pick(subnet, gw, &used), None, "a /30 has two hosts");
        assert_eq!(host_if("abcdefghijklmnop"), "gwabcdefghij");
        assert!(host_if("abcdefghijklmnop").len() < 15, "the peer adds a p");
    }
}
