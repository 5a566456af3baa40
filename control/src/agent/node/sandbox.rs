//! A sandbox: the network namespace of a task (created here) or of a standalone container
//! (given by its runtime), with one TAP per attached network, held by the dataplane, and the
//! resolver listening on 127.0.0.11:53 inside it. Built all or nothing: a failure part way
//! removes what was made.

use std::io;
use std::net::Ipv4Addr;

use dataplane::shell::netns::{self, NetnsRef};
use dataplane::shell::runtime::Dataplane;
use dataplane::shell::tap::TapConfig;
use dataplane::types::{EndpointId, Mac, OverlayIp, Vni};
use dns::answer::Scope;
use dns::shell::{DnsServer, ListenSockets, RESOLVER_ADDR};

/// One interface of a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The network's id (the gossip and resolver key).
    pub network: String,
    pub vni: Vni,
    pub endpoint: EndpointId,
    pub name: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u32,
    /// Set on the sandbox's first non-internal network: its default route.
    pub gateway: Option<Ipv4Addr>,
}

impl Interface {
    /// Docker's rule: `02:42` and the IPv4 address.
    pub fn mac(&self) -> Mac {
        Mac::from_overlay_ip(OverlayIp(self.ip))
    }
}

/// A built sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub ns: NetnsRef,
    /// The netns name this agent created (and removes); `None`: the container runtime's.
    pub owned: Option<String>,
    pub interfaces: Vec<Interface>,
    /// The resolver's endpoint id.
    pub dns_id: String,
    /// Its address on the node's egress bridge, if it has the way off its overlays.
    pub egress: Option<Ipv4Addr>,
}

impl Sandbox {
    /// Builds a sandbox in `ns` (created first when `create` names it).
    pub fn build(
        dataplane: &Dataplane,
        dns: &DnsServer,
        ns: NetnsRef,
        create: Option<&str>,
        dns_id: String,
        interfaces: Vec<Interface>,
    ) -> io::Result<Sandbox> {
        if let Some(name) = create {
            netns::create_named(name)?;
        } else {
            // A container runtime's namespace may not have its loopback up yet; the
            // resolver's address lives on it.
            let lo = ns.clone();
            netns::netlink_in(&lo, |handle| async move {
                dataplane::shell::netlink::set_up_by_name(&handle, "lo").await
            })?;
        }
        let mut sandbox = Sandbox {
            ns,
            owned: create.map(str::to_owned),
            interfaces: Vec::new(),
            dns_id,
            egress: None,
        };
        match sandbox.fill(dataplane, dns, interfaces) {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                sandbox.remove(dataplane, dns);
                Err(e)
            }
        }
    }

    fn fill(
        &mut self,
        dataplane: &Dataplane,
        dns: &DnsServer,
        interfaces: Vec<Interface>,
    ) -> io::Result<()> {
        for i in interfaces {
            self.plug(dataplane, i)?;
        }
        let sockets = netns::in_netns(&self.ns, || ListenSockets::bind(RESOLVER_ADDR))?;
        dns.add_endpoint(&self.dns_id, sockets, self.scope())
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Creates the interface's TAP in the namespace and registers it with the dataplane.
    fn plug(&mut self, dataplane: &Dataplane, i: Interface) -> io::Result<()> {
        let tap = TapConfig {
            name: i.name.clone(),
            ip: i.ip,
            prefix_len: i.prefix_len,
            mac: i.mac(),
            mtu: i.mtu,
            gateway: i.gateway,
        };
        dataplane
            .add_endpoint(&self.ns, i.endpoint, i.vni, &tap)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("interface {} ({}): {e}", i.name, i.ip))
            })?;
        self.interfaces.push(i);
        Ok(())
    }

    /// Adds an interface to a built sandbox; its resolver answers for the new network too.
    pub fn add_interface(
        &mut self,
        dataplane: &Dataplane,
        dns: &DnsServer,
        i: Interface,
    ) -> io::Result<()> {
        self.plug(dataplane, i)?;
        dns.set_scope(&self.dns_id, self.scope());
        Ok(())
    }

    /// Whether an interface holds the default route.
    pub fn has_default_route(&self) -> bool {
        self.interfaces.iter().any(|i| i.gateway.is_some())
    }

    /// The networks the sandbox's resolver answers for.
    pub fn scope(&self) -> Scope {
        Scope {
            networks: self.interfaces.iter().map(|i| i.network.clone()).collect(),
            user_ndots: false,
        }
    }

    /// Removes everything the sandbox holds; never fails (what is already gone is skipped).
    pub fn remove(&mut self, dataplane: &Dataplane, dns: &DnsServer) {
        dns.remove_endpoint(&self.dns_id);
        for i in self.interfaces.drain(..) {
            let _ = dataplane.remove_endpoint(i.endpoint);
        }
        if let Some(name) = self.owned.take() {
            let _ = netns::delete_named(&name);
        }
    }
}
