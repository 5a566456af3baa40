//! TAP devices inside container namespaces.
//!
//! The agent opens `/dev/net/tun` on a thread inside the container's namespace, so the device is
//! born there, then configures it with rtnetlink from that same thread. The agent keeps the fd;
//! closing it removes the (non-persistent) device.
//!
//! `IFF_TAP | IFF_NO_PI`, one queue, non-blocking. With offload ([`Tap::create_offloaded`])
//! the device also carries a virtio-net header (`IFF_VNET_HDR`) and takes TSO and checksum
//! offload, so the container's kernel hands over 64 KiB TCP segments with partial checksums
//! and accepts merged ones: see `wire::offload`.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use rtnetlink::LinkUnspec;

use super::netlink::{add_default_route, nl_err, set_up_by_name};
use super::netns::{NetnsRef, in_netns, netlink_here};
use crate::types::Mac;
use crate::wire::offload::VNET_HDR_LEN;

/// What the agent sets on a container's interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name inside the container, at most 15 bytes (e.g. `eth0`).
    pub name: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: Mac,
    pub mtu: u32,
    /// When set, a default route via this address (the on-link subnet route comes with the
    /// address).
    pub gateway: Option<Ipv4Addr>,
}

/// An open TAP device (Ethernet frames, no packet-info header; a virtio-net header in
/// front of each frame when opened with offload).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    ifindex: u32,
    vnet_hdr: bool,
}

impl Tap {
    /// Creates the TAP `cfg.name` inside `ns` and configures it: MAC, MTU, IPv6 off, address,
    /// up, `lo` up, default route if `cfg.gateway` is set. On any error the device is gone.
    pub fn create(ns: &NetnsRef, cfg: &TapConfig) -> io::Result<Tap> {
        Self::create_with(ns, cfg, false)
    }

    /// As [`Tap::create`], with a virtio-net header on every frame read and written, and TSO
    /// and checksum offload offered to the container's kernel.
    pub fn create_offloaded(ns: &NetnsRef, cfg: &TapConfig) -> io::Result<Tap> {
        Self::create_with(ns, cfg, true)
    }

    fn create_with(ns: &NetnsRef, cfg: &TapConfig, vnet_hdr: bool) -> io::Result<Tap> {
        validate_ifname(&cfg.name)?;
        if cfg.prefix_len > 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefix length {} > 32", cfg.prefix_len),
            ));
        }
        let cfg = cfg.clone();
        in_netns(ns, move || {
            let (file, name) = open_tap(&cfg.name, vnet_hdr)?;
            // Before the link goes up, so the kernel sends no router solicitations or MLD
            // reports into the TAP. ENOENT: IPv6 is off on this host altogether.
            match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), b"1") {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("disable IPv6 on {name}: {e}"),
                    ));
                }
                _ => {}
            }
            let ifindex = ifindex_of(&name)?;
            let cfg2 = cfg.clone();
            netlink_here(move |handle| async move {
                let cfg = cfg2;
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(ifindex)
                            .address(cfg.mac.0.to_vec())
                            .mtu(cfg.mtu)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|e| nl_err(&format!("set mac {} mtu {}", cfg.mac, cfg.mtu), e))?;
                handle
                    .address()
                    .add(ifindex, cfg.ip.into(), cfg.prefix_len)
                    .execute()
                    .await
                    .map_err(|e| nl_err(&format!("add {}/{}", cfg.ip, cfg.prefix_len), e))?;
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(ifindex).up().build())
                    .execute()
                    .await
                    .map_err(|e| nl_err(&format!("set {} up", cfg.name), e))?;
                set_up_by_name(&handle, "lo").await?;
                if let Some(gw) = cfg.gateway {
                    add_default_route(&handle, ifindex, gw).await?;
                }
                Ok(())
            })?;
            Ok(Tap {
                file,
                name,
                ifindex,
                vnet_hdr,
            })
        })
    }

    /// The interface name (as the kernel confirmed it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index inside its namespace.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Reads one frame. `WouldBlock` when none is queued. A buffer shorter than the frame gets
    /// its first `buf.len()` bytes (the rest is lost), so pass MTU + 14 bytes or more.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one whole Ethernet frame (the kernel takes it or fails; no partial writes).
    /// On an offloading TAP the frame must start with its virtio-net header.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    /// Whether frames carry a virtio-net header (the TAP was opened with offload).
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Writes `frame` with the virtio-net header `hdr` in front of it (one `writev`, no copy);
    /// on a TAP without the header, just the frame.
    pub fn write_with_hdr(&self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr {
            return self.write(frame);
        }
        let parts = [io::IoSlice::new(hdr), io::IoSlice::new(frame)];
        (&self.file).write_vectored(&parts)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `struct ifreq` as TUNSETIFF reads and writes it: name, then flags in the union.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn validate_ifname(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ))
    }
}

/// Opens `/dev/net/tun` non-blocking and attaches it to a new TAP `name` in the calling
/// thread's namespace. Returns the fd and the name the kernel confirmed.
fn open_tap(name: &str, vnet_hdr: bool) -> io::Result<(File, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let hdr_flag = if vnet_hdr { libc::IFF_VNET_HDR } else { 0 };
    req.flags = (libc::IFF_TAP | libc::IFF_NO_PI | hdr_flag) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes); `req` is a live,
    // properly laid out, exclusively borrowed value of that size for the whole call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut IfReqFlags,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
    }
    if vnet_hdr {
        // The container's kernel may then hand over TSO frames and leave checksums partial.
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4;
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the fd is a live TAP.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                offloads as libc::c_ulong,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETOFFLOAD {name}: {e}"),
            ));
        }
    }
    // SAFETY: the kernel wrote a NUL-terminated name of at most IFNAMSIZ - 1 bytes; we zeroed
    // the array and the kernel never fills all 16 bytes, so a NUL is within bounds.
    let confirmed = unsafe { CStr::from_ptr(req.name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok((file, confirmed))
}

/// `if_nametoindex` in the calling thread's namespace.
fn ifindex_of(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            format!("if_nametoindex {name}: {e}"),
        ))
    } else {
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_matches_the_kernel() {
        assert_eq!(
            std::mem::size_of::<IfReqFlags>(),
            std::mem::size_of::<libc::ifreq>()
        );
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
    }

    #[test]
    fn interface_names() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a23456789012345").is_ok());
        assert!(validate_ifname("a234567890123456").is_err());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("a b").is_err());
        assert!(validate_ifname("..").is_err());
    }
}
