//! The way off the overlays for tasks, as Docker's `docker_gwbridge`, without NAT: a kernel
//! bridge in the node's namespace holding the gateway address, and a veth per task (its end
//! `gw0` inside the task, the task's default route). What reaches the node through it is
//! routed by a table of its own (a policy rule on the bridge):
//!
//! - the cluster's node addresses are *local* there (the "AnyIP" route type, no netfilter), so
//!   a task connecting to any node's address and a published port is answered by this node's
//!   listener of that port — the routing mesh serves every node address the same way;
//! - everything else is *prohibited*: an ICMP "administratively prohibited" at once, nothing
//!   forwarded, so no task packet leaves the node with a private source.
//!
//! Networks stay isolated: an address of another overlay falls under the prohibit route.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::{RouteScope, RouteType};
use rtnetlink::packet_route::rule::RuleAction;
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::netlink::{link_index, nl_err};
use super::netns::{NetnsRef, netlink_in, netlink_in_or_current};

/// The bridge's name in the node's namespace.
pub const BRIDGE: &str = "shoal_gw";
/// The interface's name inside a task.
pub const TASK_IF: &str = "gw0";
/// The routing table of what arrives from the bridge.
pub const TABLE: u32 = 4789;
/// The policy rule's priority (before the main table's 32766).
const RULE_PRIORITY: u32 = 4789;

/// Creates (or finds) the bridge at `gateway/prefix_len`, its rule and its table's prohibit
/// route, in the calling thread's namespace. Idempotent.
pub fn setup_node(gateway: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    netlink_in_or_current(None, move |handle| async move {
        // The kernel answers a lookup of a missing link with ENODEV: any error means absent.
        let index = match link_index(&handle, BRIDGE).await {
            Ok(i) => i,
            Err(_) => {
                // A MAC of its own (02:42 and the gateway address, Docker's rule): a bridge
                // without one takes its lowest port's and changes it as tasks come and go,
                // which leaves the tasks' cached gateway MAC pointing at another task.
                let [a, b, c, d] = gateway.octets();
                let mac = vec![0x02, 0x42, a, b, c, d];
                handle
                    .link()
                    .add(LinkBridge::new(BRIDGE).address(mac).build())
                    .execute()
                    .await
                    .map_err(|e| nl_err(&format!("add bridge {BRIDGE}"), e))?;
                link_index(&handle, BRIDGE).await?
            }
        };
        ignore_exists(
            handle
                .address()
                .add(index, IpAddr::V4(gateway), prefix_len)
                .execute()
                .await,
            &format!("address {gateway} on {BRIDGE}"),
        )?;
        set_link(
            &handle,
            LinkUnspec::new_with_index(index).up().build(),
            &format!("set {BRIDGE} up"),
        )
        .await?;
        // Forwarding on the bridge only: what is not local meets the prohibit route and its
        // sender gets the ICMP error at once (with forwarding off the kernel drops such
        // packets silently). Nothing is forwarded: the table has no other route.
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding"), b"1")?;
        let prohibit = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(TABLE)
            .kind(RouteType::Prohibit)
            .build();
        handle
            .route()
            .add(prohibit)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err("add the egress table's prohibit route", e))?;
        ignore_exists(
            handle
                .rule()
                .add()
                .v4()
                .input_interface(BRIDGE)
                .table_id(TABLE)
                .priority(RULE_PRIORITY)
                .action(RuleAction::ToTable)
                .execute()
                .await,
            "add the egress rule",
        )
    })
}

/// Makes `addrs` local for what arrives from the bridge (the cluster's node addresses).
pub fn set_local(addrs: Vec<Ipv4Addr>) -> io::Result<()> {
    netlink_in_or_current(None, move |handle| async move {
        let lo = link_index(&handle, "lo").await?;
        for addr in addrs {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(addr, 32)
                .table_id(TABLE)
                .kind(RouteType::Local)
                // As `ip route add local`: a local route is host-scoped (else EINVAL).
                .scope(RouteScope::Host)
                .output_interface(lo)
                .build();
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| nl_err(&format!("make {addr} local for tasks"), e))?;
        }
        Ok(())
    })
}

/// Removes the bridge, its rule and its table (an agent going, or leftovers at its start).
pub fn teardown_node() {
    let _ = netlink_in_or_current(None, |handle| async move {
        if let Ok(index) = link_index(&handle, BRIDGE).await {
            let _ = handle.link().del(index).execute().await;
        }
        let mut rules = handle.rule().get(rtnetlink::IpVersion::V4).execute();
        let mut ours = Vec::new();
        while let Ok(Some(rule)) = rules.try_next().await {
            if rule.header.action == RuleAction::ToTable
                && rule.attributes.iter().any(|a| {
                    matches!(a, rtnetlink::packet_route::rule::RuleAttribute::Table(t) if *t == TABLE)
                })
            {
                ours.push(rule);
            }
        }
        for rule in ours {
            let _ = handle.rule().del(rule).execute().await;
        }
        let mut routes = handle
            .route()
            .get(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .table_id(TABLE)
                    .build(),
            )
            .execute();
        let mut stale = Vec::new();
        while let Ok(Some(route)) = routes.try_next().await {
            if route_table(&route) == TABLE {
                stale.push(route);
            }
        }
        for route in stale {
            let _ = handle.route().del(route).execute().await;
        }
        Ok(())
    });
}

fn route_table(route: &rtnetlink::packet_route::route::RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            rtnetlink::packet_route::route::RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// Plugs a task into the bridge: a veth `host_if` (on the bridge, in the calling thread's
/// namespace) whose peer becomes [`TASK_IF`] in `task` at `ip/prefix_len`, with the task's
/// default route via `gateway`.
pub fn plug_task(
    host_if: &str,
    task: &NetnsRef,
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
) -> io::Result<()> {
    let fd = task.open()?;
    let host = host_if.to_owned();
    // Created under a name of its own, renamed once inside the task: the node's namespace
    // may have a `gw0` of its own.
    let peer = format!("{host_if}p");
    let peer_for_task = peer.clone();
    netlink_in_or_current(None, move |handle| async move {
        let bridge = link_index(&handle, BRIDGE).await?;
        handle
            .link()
            .add(LinkVeth::new(&host, &peer).build())
            .execute()
            .await
            .map_err(|e| nl_err(&format!("add veth {host}"), e))?;
        let host_index = link_index(&handle, &host).await?;
        let peer_index = link_index(&handle, &peer).await?;
        set_link(
            &handle,
            LinkUnspec::new_with_index(host_index)
                .controller(bridge)
                .up()
                .build(),
            &format!("put {host} on {BRIDGE}"),
        )
        .await?;
        set_link(
            &handle,
            LinkUnspec::new_with_index(peer_index)
                .setns_by_fd(fd.as_raw_fd())
                .build(),
            &format!("move {peer} into the task"),
        )
        .await?;
        Ok(())
    })?;
    netlink_in(task, move |handle| async move {
        let index = link_index(&handle, &peer_for_task).await?;
        set_link(
            &handle,
            LinkUnspec::new_with_index(index)
                .name(TASK_IF.to_owned())
                .up()
                .build(),
            &format!("name {TASK_IF} up"),
        )
        .await?;
        handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .execute()
            .await
            .map_err(|e| nl_err(&format!("address {ip} on {TASK_IF}"), e))?;
        super::netlink::add_default_route(&handle, index, gateway).await
    })
}

/// Removes a task's veth (both ends go); what is gone already is fine.
pub fn unplug_task(host_if: &str) {
    let host = host_if.to_owned();
    let _ = netlink_in_or_current(None, move |handle| async move {
        if let Ok(index) = link_index(&handle, &host).await {
            let _ = handle.link().del(index).execute().await;
        }
        Ok(())
    });
}

/// `ip link set`: `message` applied, the error naming `what` was being done.
async fn set_link(handle: &rtnetlink::Handle, message: LinkMessage, what: &str) -> io::Result<()> {
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|e| nl_err(what, e))
}

/// `EEXIST` is what an idempotent setup expects on its second run.
fn ignore_exists(result: Result<(), rtnetlink::Error>, what: &str) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = nl_err(what, e);
            if e.kind() == io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
