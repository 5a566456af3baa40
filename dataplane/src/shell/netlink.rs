//! Small rtnetlink helpers shared by the shell (run them through
//! [`netlink_in`](super::netns::netlink_in), which opens the connection in the right namespace).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Turns an rtnetlink error into an `io::Error`, keeping the errno of a kernel NACK (so that
/// `EEXIST`, `ENODEV`, ... keep their `ErrorKind`) and naming what was being done.
pub fn nl_err(what: &str, e: rtnetlink::Error) -> io::Error {
    match &e {
        rtnetlink::Error::NetlinkError(msg) if msg.code.is_some() => {
            let io = msg.to_io();
            io::Error::new(io.kind(), format!("{what}: {io}"))
        }
        _ => io::Error::other(format!("{what}: {e}")),
    }
}

/// The index of the link called `name`; `NotFound` when there is none.
pub async fn link_index(handle: &Handle, name: &str) -> io::Result<u32> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no link {name}"),
        )),
        Err(e) => Err(nl_err(&format!("get link {name}"), e)),
    }
}

/// The MTU of link `index`.
pub async fn link_mtu(handle: &Handle, index: u32) -> io::Result<u32> {
    let mut links = handle.link().get().match_index(index).execute();
    let msg = links
        .try_next()
        .await
        .map_err(|e| nl_err(&format!("get link #{index}"), e))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link #{index}")))?;
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .ok_or_else(|| io::Error::other(format!("link #{index} has no MTU attribute")))
}

/// The index of the link that holds address `ip`; `NotFound` when no link does.
pub async fn link_of_address(handle: &Handle, ip: IpAddr) -> io::Result<u32> {
    let mut addrs = handle.address().get().set_address_filter(ip).execute();
    match addrs.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface has {ip}"),
        )),
        Err(e) => Err(nl_err(&format!("get address {ip}"), e)),
    }
}

/// Brings link `name` up (e.g. `lo` in a fresh namespace).
pub async fn set_up_by_name(handle: &Handle, name: &str) -> io::Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_name(name).up().build())
        .execute()
        .await
        .map_err(|e| nl_err(&format!("set {name} up"), e))
}

/// Adds a default route via `gateway` out of link `index`.
pub async fn add_default_route(handle: &Handle, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle
        .route()
        .add(msg)
        .execute()
        .await
        .map_err(|e| nl_err(&format!("add default route via {gateway}"), e))
}
