//! Facts about the underlay links.

use std::io;
use std::net::Ipv4Addr;

use super::netlink::{link_mtu, link_of_address};
use super::netns::{NetnsRef, netlink_in_or_current};

/// The MTU of the interface that holds `ip` (in `ns`, or the calling thread's namespace when
/// `None`): the underlay MTU, from which the overlay MTU is derived (− 50 plain, − 82 sealed).
/// `NotFound` when no interface has that address.
pub fn mtu_of_address(ns: Option<&NetnsRef>, ip: Ipv4Addr) -> io::Result<u32> {
    netlink_in_or_current(ns, move |handle| async move {
        let index = link_of_address(&handle, ip.into()).await?;
        link_mtu(&handle, index).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_mtu() {
        // lo holds 127.0.0.1 in every namespace; its MTU is 65536 by default.
        let mtu = mtu_of_address(None, Ipv4Addr::LOCALHOST).unwrap();
        assert!(mtu >= 1500, "{mtu}");
    }

    #[test]
    fn unknown_address() {
        let err = mtu_of_address(None, Ipv4Addr::new(203, 0, 113, 254)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
