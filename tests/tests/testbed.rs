//! The testbed's own tests (root): underlay reachability, cleanup on drop and on panic, the
//! leftover sweep, a configured TAP that answers ARP, batched UDP between node namespaces, and
//! the underlay MTU lookup.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dataplane::shell::link::mtu_of_address;
use dataplane::shell::netns::{NetnsRef, in_netns};
use dataplane::shell::tap::{Tap, TapConfig};
use dataplane::shell::udp::{GRO_SLOT_SIZE, OverlaySocket, RecvBatch, SendBatch};
use dataplane::types::{Mac, OverlayIp};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tests::frames::{self, ETHERTYPE_IPV6};
use tests::testbed::{Testbed, list_netns, owner_pid, sweep_leftovers, wait_until};

const BUFFER: usize = 4 << 20;

fn ours(prefix: &str) -> Vec<String> {
    list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect()
}

fn json(tb: &Testbed, netns: &str, argv: &[&str]) -> Value {
    let out = tb.exec_ok(netns, argv);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{argv:?}: {e}: {out}"))
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; check its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Waits until `fd` is readable, up to `ms` milliseconds.
fn readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

#[test]
fn two_nodes_ping_each_other_over_the_underlay() {
    let mut tb = Testbed::new("ping");
    let a = tb.add_node("a");
    let b = tb.add_node("b");
    assert_ne!(a.underlay_ip, b.underlay_ip);
    assert_eq!(a.underlay_ip, Ipv4Addr::new(192, 168, 77, 1));
    for (from, to) in [(&a, &b), (&b, &a)] {
        let out = tb.exec(
            &from.netns_name,
            &[
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                &to.underlay_ip.to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "{} -> {}: {}",
            from.name,
            to.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A container is isolated: lo only.
    let c = tb.add_container("c");
    let links = json(&tb, &c.netns_name, &["ip", "-j", "link"]);
    let names: Vec<_> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lo"]);
}

#[test]
fn drop_removes_every_namespace_and_process() {
    let mut tb = Testbed::new("drop");
    let prefix = tb.prefix().to_string();
    let a = tb.add_node("a");
    tb.add_node("b");
    tb.add_container("c");
    let pid = tb.spawn(&a.netns_name, &["sleep", "600"]).unwrap();
    assert!(tb.is_running(pid));
    // Something the testbed did not spawn itself, still inside one of its namespaces.
    let stray = std::process::Command::new("ip")
        .args(["netns", "exec", &a.netns_name, "sleep", "600"])
        .spawn()
        .unwrap();
    let stray_pid = stray.id();
    assert_eq!(ours(&prefix).len(), 4, "{:?}", ours(&prefix));
    drop(tb);
    assert!(ours(&prefix).is_empty(), "left behind: {:?}", ours(&prefix));
    assert!(!pid_alive(pid), "spawned process survived");
    let mut stray = stray;
    let _ = stray.wait(); // reap it: the testbed killed it
    assert!(!pid_alive(stray_pid), "stray process survived");
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut tb = Testbed::new("panics");
        *prefix.lock().unwrap() = tb.prefix().to_string();
        let a = tb.add_node("a");
        tb.add_container("c");
        let _pid = tb.spawn(&a.netns_name, &["sleep", "600"]).unwrap();
        panic!("the test fails here on purpose");
    }));
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(prefix.starts_with("st"));
    assert!(ours(&prefix).is_empty(), "left behind: {:?}", ours(&prefix));
}

#[test]
fn the_sweep_removes_namespaces_of_dead_processes_only() {
    // A pid that is surely dead: a process we ran and reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    let b36 = |mut n: u32| {
        let mut s = Vec::new();
        loop {
            s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
            n /= 36;
            if n == 0 {
                break String::from_utf8(s.into_iter().rev().collect()).unwrap();
            }
        }
    };
    let dead_name = format!("st{}_0-swept", b36(dead));
    assert_eq!(owner_pid(&dead_name), Some(dead));
    // Ours (alive): created by a live testbed and must survive the sweep.
    let mut tb = Testbed::new("sweep");
    let live = tb.add_container("kept");
    let added = std::process::Command::new("ip")
        .args(["netns", "add", &dead_name])
        .status()
        .unwrap();
    assert!(added.success());
    sweep_leftovers();
    let all = list_netns();
    let still_there = all.contains(&dead_name);
    if still_there {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &dead_name])
            .status();
    }
    assert!(!still_there, "the dead process's namespace was not swept");
    assert!(
        all.contains(&live.netns_name),
        "a live testbed's namespace was swept"
    );
}

#[test]
fn a_tap_in_a_container_is_configured_and_answers_arp() {
    let mut tb = Testbed::new("tap");
    let c = tb.add_container("c");
    let ip = Ipv4Addr::new(10, 50, 0, 2);
    let gw = Ipv4Addr::new(10, 50, 0, 1);
    let mac = Mac::from_overlay_ip(OverlayIp(ip));
    let cfg = TapConfig {
        name: "eth0".into(),
        ip,
        prefix_len: 24,
        mac,
        mtu: 1450,
        gateway: Some(gw),
    };
    let tap = Tap::create(&c.ns, &cfg).unwrap();
    assert_eq!(tap.name(), "eth0");

    let addr = json(
        &tb,
        &c.netns_name,
        &["ip", "-j", "addr", "show", "dev", "eth0"],
    );
    let link = &addr[0];
    assert_eq!(link["address"], mac.to_string());
    assert_eq!(link["mtu"], 1450);
    let flags: Vec<_> = link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        flags.contains(&"UP") && flags.contains(&"LOWER_UP"),
        "{flags:?}"
    );
    let inet: Vec<_> = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(inet.len(), 1, "{link}");
    assert_eq!(inet[0]["local"], "10.50.0.2");
    assert_eq!(inet[0]["prefixlen"], 24);
    assert!(
        !link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["family"] == "inet6"),
        "IPv6 should be off on the TAP: {link}"
    );
    let routes = json(
        &tb,
        &c.netns_name,
        &["ip", "-j", "route", "show", "default"],
    );
    assert_eq!(routes[0]["gateway"], "10.50.0.1", "{routes}");
    assert_eq!(routes[0]["dev"], "eth0", "{routes}");
    let lo = json(&tb, &c.netns_name, &["ip", "-j", "link", "show", "lo"]);
    assert!(
        lo[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{lo}"
    );
    let v6 = tb.exec_ok(
        &c.netns_name,
        &["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"],
    );
    assert_eq!(v6.trim(), "1");
    // Nothing shows up in the host namespace.
    let host = std::process::Command::new("ip")
        .args(["link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&host.stdout).contains(&mac.to_string()),
        "the TAP leaked into the host namespace"
    );

    // The gateway asks who has 10.50.0.2; the kernel in the container answers through the TAP.
    let gw_mac = Mac([0x02, 0x42, 10, 50, 0, 1]);
    let request = frames::arp_request(gw_mac, gw, ip);
    assert_eq!(tap.write(&request).unwrap(), request.len());
    let mut buf = [0u8; 2048];
    let mut reply = None;
    let mut ipv6_frames = 0;
    let found = wait_until(Duration::from_secs(3), || {
        readable(tap.as_raw_fd(), 50);
        loop {
            match tap.read(&mut buf) {
                Ok(n) => {
                    let frame = &buf[..n];
                    if frames::ethernet(frame).is_some_and(|(_, _, t)| t == ETHERTYPE_IPV6) {
                        ipv6_frames += 1;
                    }
                    if let Some(arp) = frames::parse_arp(frame).filter(|a| a.op == 2) {
                        reply = Some((frames::ethernet(frame).unwrap(), arp));
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => panic!("tap read: {e}"),
            }
        }
    });
    assert!(found, "no ARP reply from the container");
    let ((dst, src, _), arp) = reply.unwrap();
    assert_eq!((dst, src), (gw_mac, mac));
    assert_eq!((arp.sender_mac, arp.sender_ip), (mac, ip));
    assert_eq!((arp.target_mac, arp.target_ip), (gw_mac, gw));
    assert_eq!(ipv6_frames, 0, "the kernel sent IPv6 into the TAP");
    // Empty again: non-blocking read says so.
    while tap.read(&mut buf).is_ok() {}
    assert_eq!(
        tap.read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );

    // The same name again fails while the first TAP is open; closing the fd removes it.
    assert!(Tap::create(&c.ns, &cfg).is_err());
    drop(tap);
    assert!(wait_until(Duration::from_secs(2), || {
        !tb.exec(&c.netns_name, &["ip", "link", "show", "eth0"])
            .status
            .success()
    }));
    // And it can be created again.
    let again = Tap::create(
        &c.ns,
        &TapConfig {
            gateway: None,
            ..cfg
        },
    )
    .unwrap();
    assert_eq!(again.name(), "eth0");
}

#[test]
fn bad_tap_configs_fail_cleanly() {
    let mut tb = Testbed::new("tapbad");
    let c = tb.add_container("c");
    let cfg = TapConfig {
        name: "eth0".into(),
        ip: Ipv4Addr::new(10, 51, 0, 2),
        prefix_len: 24,
        mac: Mac([0x02, 0x42, 10, 51, 0, 2]),
        mtu: 1450,
        // Not on-link: the kernel refuses the route, and the half-made TAP must go away.
        gateway: Some(Ipv4Addr::new(10, 99, 0, 1)),
    };
    assert!(Tap::create(&c.ns, &cfg).is_err());
    assert!(
        !tb.exec(&c.netns_name, &["ip", "link", "show", "eth0"])
            .status
            .success()
    );
    let long = TapConfig {
        name: "a-name-far-too-long".into(),
        gateway: None,
        ..cfg.clone()
    };
    assert_eq!(
        Tap::create(&c.ns, &long).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let missing = NetnsRef::named(&format!("{}-missing", tb.prefix()));
    assert_eq!(
        Tap::create(&missing, &cfg).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

/// Sends `count` datagrams of `size` bytes from node a to node b with SendBatch (each at offset
/// 24 of its slot, as the dataplane will), receives them all with RecvBatch.
fn batch_roundtrip(gro: bool, count: u32, size: usize) {
    let mut tb = Testbed::new(if gro { "udpgro" } else { "udp" });
    let a = tb.add_node("a");
    let b = tb.add_node("b");
    let tx_sock =
        OverlaySocket::bind(Some(&a.ns), SocketAddr::from((a.underlay_ip, 4789)), BUFFER).unwrap();
    let rx_sock =
        OverlaySocket::bind(Some(&b.ns), SocketAddr::from((b.underlay_ip, 4789)), BUFFER).unwrap();
    assert!(
        rx_sock.recv_buffer_size().unwrap() >= BUFFER,
        "SO_RCVBUFFORCE did not take"
    );
    rx_sock.set_gro(gro).unwrap();
    let dest = rx_sock.local_addr();
    let mut rx = RecvBatch::new(32, if gro { GRO_SLOT_SIZE } else { 2048 });

    // Warm ARP first: the kernel only queues a few packets per unresolved neighbour.
    tx_sock.send_to(b"warm", dest).unwrap();
    assert!(
        rx_sock.wait_readable(2000).unwrap(),
        "warm-up datagram lost"
    );
    assert_eq!(rx.recv(&rx_sock).unwrap(), 1);
    assert_eq!(rx.get(0), (tx_sock.local_addr(), &b"warm"[..]));

    let mut tx = SendBatch::new(32, 2048);
    let mut sent = 0;
    for i in 0..count {
        if tx.is_full() {
            sent += tx.flush(&tx_sock).unwrap();
            assert!(tx.is_empty(), "flush left datagrams queued");
        }
        let slot = tx.slot_mut().unwrap();
        slot[..24].fill(0xee); // headroom, not sent
        slot[24..28].copy_from_slice(&i.to_be_bytes());
        slot[28..24 + size].fill(i as u8);
        tx.commit(24..24 + size, dest);
    }
    sent += tx.flush(&tx_sock).unwrap();
    assert_eq!(sent, count as usize);
    assert_eq!(tx.failed(), 0);

    let mut seen = BTreeSet::new();
    let mut calls = 0;
    wait_until(Duration::from_secs(5), || {
        rx_sock.wait_readable(50).unwrap();
        loop {
            match rx.recv(&rx_sock) {
                Ok(k) => {
                    calls += 1;
                    for j in 0..k {
                        let (src, bytes) = rx.get_mut(j);
                        assert_eq!(src, tx_sock.local_addr());
                        assert_eq!(bytes.len(), size);
                        let i = u32::from_be_bytes(bytes[..4].try_into().unwrap());
                        assert!(
                            bytes[4..].iter().all(|&x| x == i as u8),
                            "datagram {i} corrupted"
                        );
                        bytes[0] ^= 0xff; // writable in place
                        assert!(seen.insert(i), "datagram {i} twice");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        seen.len() == count as usize
    });
    assert_eq!(
        seen.len(),
        count as usize,
        "missing: {:?}",
        (0..count).filter(|i| !seen.contains(i)).collect::<Vec<_>>()
    );
    assert_eq!(rx.truncated(), 0);
    assert!(calls <= count as usize);
}

#[test]
fn overlay_sockets_move_batches_between_nodes() {
    batch_roundtrip(false, 100, 1400);
}

#[test]
fn overlay_sockets_move_batches_between_nodes_with_gro() {
    batch_roundtrip(true, 100, 1400);
}

#[test]
fn the_underlay_mtu_is_read_from_the_interface() {
    let mut tb = Testbed::new("mtu");
    let a = tb.add_node("a");
    let j = tb.add_node_with_mtu("j", 9000);
    assert_eq!(mtu_of_address(Some(&a.ns), a.underlay_ip).unwrap(), 1500);
    assert_eq!(mtu_of_address(Some(&j.ns), j.underlay_ip).unwrap(), 9000);
    assert_eq!(
        mtu_of_address(Some(&j.ns), Ipv4Addr::LOCALHOST).unwrap(),
        65536
    );
    // The node's address is not in another namespace.
    assert_eq!(
        mtu_of_address(Some(&a.ns), j.underlay_ip)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    // A jumbo datagram crosses the 9000-byte link unfragmented only between jumbo nodes; here,
    // just check the link works at all.
    let k = tb.add_node_with_mtu("k", 9000);
    let out = tb.exec(
        &j.netns_name,
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "8972",
            &k.underlay_ip.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn sockets_made_in_netns_stay_there() {
    let mut tb = Testbed::new("inns");
    let a = tb.add_node("a");
    let b = tb.add_node("b");
    let ip = a.underlay_ip;
    // The node's address exists only in its namespace.
    assert!(std::net::UdpSocket::bind((ip, 0)).is_err());
    let sock = tb
        .run_in(&a.ns, move || std::net::UdpSocket::bind((ip, 0)))
        .unwrap();
    // Used from this (host-namespace) thread, it still sends from node a's namespace.
    let rx = in_netns(&b.ns, {
        let ip = b.underlay_ip;
        move || std::net::UdpSocket::bind((ip, 7000))
    })
    .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(b"hello", (b.underlay_ip, 7000)).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"hello"[..], sock.local_addr().unwrap())
    );
}
