//! The files a task sees in place of the host's: /etc/resolv.conf pointing at the agent's
//! DNS on 127.0.0.11, /etc/hosts with the task's own names, /etc/hostname. They are written
//! to the task's folder in the runtime's state directory and bind-mounted over the host's
//! files inside the task's own mount namespace, so the host's files never change.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::spec::TaskSpec;

/// Every task resolves through the agent's DNS (DESIGN.md, "DNS"). `ndots:0`, as Docker
/// writes for swarm tasks: a service name is tried as is before any search domain.
pub const RESOLV_CONF: &str = "nameserver 127.0.0.11\noptions ndots:0\n";

/// A generated file and the host path it is mounted over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcFile {
    pub source: PathBuf,
    pub target: &'static str,
    /// A missing target is an error (resolv.conf: name resolution is the point), or the
    /// file is skipped (a host without /etc/hostname).
    pub required: bool,
}

/// The task's /etc/hosts: localhost, then each of its addresses with its hostname and name
/// (Docker maps the container's hostname to its address). A task without addresses maps
/// its names to 127.0.1.1, as Debian does for a host without a fixed address, so they
/// still resolve.
pub fn hosts(hostname: &str, name: &str, addresses: &[Ipv4Addr]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let names = if name.is_empty() || name == hostname {
        hostname.to_owned()
    } else {
        format!("{hostname} {name}")
    };
    let fallback = [Ipv4Addr::new(127, 0, 1, 1)];
    let addresses = if addresses.is_empty() {
        &fallback[..]
    } else {
        addresses
    };
    for address in addresses {
        text.push_str(&format!("{address}\t{names}\n"));
    }
    text
}

/// Writes the three files into `dir` (created if needed) and says where each goes.
pub fn write(dir: &Path, spec: &TaskSpec) -> Result<Vec<EtcFile>, (PathBuf, io::Error)> {
    std::fs::create_dir_all(dir).map_err(|e| (dir.to_owned(), e))?;
    let files = [
        (
            "resolv.conf",
            "/etc/resolv.conf",
            true,
            RESOLV_CONF.to_owned(),
        ),
        (
            "hosts",
            "/etc/hosts",
            false,
            hosts(&spec.hostname, &spec.name, &spec.addresses),
        ),
        (
            "hostname",
            "/etc/hostname",
            false,
            format!("{}\n", spec.hostname),
        ),
    ];
    let mut out = Vec::with_capacity(files.len());
    for (file, target, required, text) in files {
        let source = dir.join(file);
        std::fs::write(&source, text).map_err(|e| (source.clone(), e))?;
        out.push(EtcFile {
            source,
            target,
            required,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_maps_hostname_and_name_to_each_address() {
        let text = hosts(
            "abc",
            "web.1.abc",
            &[Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 2, 7)],
        );
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"), "{text}");
        assert!(text.contains("10.0.1.5\tabc web.1.abc\n"), "{text}");
        assert!(text.contains("10.0.2.7\tabc web.1.abc\n"), "{text}");
    }

    #[test]
    fn hosts_without_addresses_still_resolves_the_hostname() {
        let text = hosts("abc", "abc", &[]);
        assert!(text.ends_with("127.0.1.1\tabc\n"), "{text}");
    }
}
