//! The sealed network on the wire, and hostile input: captures never show plaintext;
//! tampered, replayed, unknown-epoch and plain-on-sealed datagrams are dropped and counted;
//! bursts of random datagrams and spoofed frames crash nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dataplane::forward::DropReason;
use dataplane::seal::{KeySet, NetworkKey};
use dataplane::shell::netns::{NetnsRef, in_netns};
use dataplane::shell::runtime::Stats;
use dataplane::types::{Epoch, Mac, OverlayIp, SenderId};
use dataplane::wire::vxlan::{self, SEALED_HEADER_LEN, TAG_LEN};
use rand::{Rng, SeedableRng};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, OVERLAY_PORT, PUBLIC, SECRET, test_key};

fn spec() -> ClusterSpec {
    ClusterSpec::public_and_secret(vec![
        ContainerSpec::new("p2", 1, &[(PUBLIC, 2)]),
        ContainerSpec::new("p3", 2, &[(PUBLIC, 3)]),
        ContainerSpec::new("s2", 1, &[(SECRET, 2)]),
        ContainerSpec::new("s3", 2, &[(SECRET, 3)]),
    ])
}

/// Sends `payload` `count` times as UDP from inside `ns` to `dst`.
fn send_udp(ns: &NetnsRef, dst: SocketAddr, payload: &'static [u8], count: usize) {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..count {
            s.send_to(payload, dst)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    })
    .expect("send");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_capture_between_nodes_never_shows_the_sealed_plaintext() {
    let mut cluster = Cluster::start("sealed-capture", spec()).expect("cluster");
    let pcap = std::env::temp_dir().join(format!("shoal-sealed-{}.pcap", std::process::id()));
    let _ = std::fs::remove_file(&pcap);
    let n2 = cluster.nodes[1].node.netns_name.clone();
    let path = pcap.to_string_lossy().into_owned();
    let argv = [
        "tcpdump", "-i", "any", "-U", "-n", "-w", &path, "udp", "port", "4789",
    ];
    let pid = cluster.testbed.spawn(&n2, &argv).expect("tcpdump");
    std::thread::sleep(Duration::from_millis(800)); // tcpdump needs a moment to attach

    const PLAIN: &[u8] = b"PLAIN-MARKER-visible-on-the-wire";
    const HIDDEN: &[u8] = b"SECRET-MARKER-must-never-be-seen";
    send_udp(
        &cluster.container("p3").ns,
        SocketAddr::from((cluster.ip("p2", "public"), 9)),
        PLAIN,
        5,
    );
    send_udp(
        &cluster.container("s3").ns,
        SocketAddr::from((cluster.ip("s2", "secret"), 9)),
        HIDDEN,
        5,
    );
    std::thread::sleep(Duration::from_millis(500));
    // SIGINT makes tcpdump flush and exit.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGINT,
    );
    std::thread::sleep(Duration::from_millis(300));
    let captured = std::fs::read(&pcap).expect("capture file");
    let _ = std::fs::remove_file(&pcap);

    // The positive control proves the capture saw the overlay traffic at all.
    assert!(
        contains(&captured, PLAIN),
        "the capture missed the plain network's marker"
    );
    assert!(
        !contains(&captured, HIDDEN),
        "the sealed network's plaintext is on the wire"
    );
    let stats = cluster.nodes[1].dataplane.stats().unwrap();
    assert!(stats.core.decapsulated >= 10, "{stats:?}");
}

fn drops(cluster: &Cluster, node: usize, reason: DropReason) -> u64 {
    cluster.nodes[node]
        .dataplane
        .stats()
        .unwrap()
        .core
        .drops(reason)
}

/// A sealed datagram for the secret network from s3 (on n3) to s2 (on n2), sealed by a key
/// set the test holds: as a node with the key would send it.
fn sealed_datagram(keys: &mut KeySet, cluster: &Cluster, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (cluster.ip("s3", "secret"), cluster.ip("s2", "secret"));
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(src).0, mac(dst).0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(5000, 9)
        .write(&mut frame, payload)
        .unwrap();
    let mut out = vec![0u8; SEALED_HEADER_LEN + frame.len() + TAG_LEN];
    let (header, rest) = out.split_at_mut(SEALED_HEADER_LEN);
    let (body, tag) = rest.split_at_mut(frame.len());
    body.copy_from_slice(&frame);
    let vni = cluster.network("secret").vni;
    keys.seal(
        vni,
        header.try_into().unwrap(),
        body,
        tag.try_into().unwrap(),
    )
    .unwrap();
    out
}

fn mac(ip: Ipv4Addr) -> Mac {
    Mac::from_overlay_ip(OverlayIp(ip))
}

#[test]
fn tampered_replayed_unknown_epoch_and_plain_on_sealed_datagrams_are_dropped_and_counted() {
    let cluster = Cluster::start("sealed-hostile", spec()).expect("cluster");
    let vni = cluster.network("secret").vni;
    let n2 = SocketAddr::from((cluster.nodes[1].node.underlay_ip, OVERLAY_PORT));
    // Sent from n3's namespace, so the underlay source is the node that owns s3.
    let socket = in_netns(&cluster.nodes[2].node.ns, || UdpSocket::bind("0.0.0.0:0")).unwrap();
    let mut keys = KeySet::new(SenderId(77), 0);
    keys.install(Epoch(1), NetworkKey(test_key(vni, Epoch(1)).0));
    keys.set_tx(Epoch(1)).unwrap();

    let before = cluster.nodes[1]
        .dataplane
        .stats()
        .unwrap()
        .core
        .decapsulated;
    let good = sealed_datagram(&mut keys, &cluster, b"authentic");
    socket.send_to(&good, n2).unwrap();
    socket.send_to(&good, n2).unwrap(); // replay
    let mut tampered = sealed_datagram(&mut keys, &cluster, b"tampered");
    tampered[SEALED_HEADER_LEN + 30] ^= 0x40;
    socket.send_to(&tampered, n2).unwrap();
    let mut rogue = KeySet::new(SenderId(77), 1 << 40);
    rogue.install(Epoch(9), NetworkKey([1; 32]));
    rogue.set_tx(Epoch(9)).unwrap();
    socket
        .send_to(&sealed_datagram(&mut rogue, &cluster, b"unknown epoch"), n2)
        .unwrap();
    let mut plain = vec![0u8; 8];
    vxlan::emit_plain(vni, (&mut plain[..8]).try_into().unwrap());
    plain.extend_from_slice(&good[SEALED_HEADER_LEN..good.len() - TAG_LEN]);
    socket.send_to(&plain, n2).unwrap();

    let expect = [
        (DropReason::Replayed, 1),
        (DropReason::BadTag, 1),
        (DropReason::UnknownEpoch, 1),
        (DropReason::PlainOnSealed, 1),
    ];
    tests::testbed::wait_until(Duration::from_secs(5), || {
        expect.iter().all(|&(r, n)| drops(&cluster, 1, r) >= n)
    });
    for (reason, n) in expect {
        assert_eq!(drops(&cluster, 1, reason), n, "{reason:?}");
    }
    let after = cluster.nodes[1]
        .dataplane
        .stats()
        .unwrap()
        .core
        .decapsulated;
    assert_eq!(
        after,
        before + 1,
        "exactly the authentic datagram was delivered"
    );
}

/// An AF_PACKET socket on `eth0` inside `ns`: sends any Ethernet frame, spoofed or not.
fn raw_socket(ns: &NetnsRef) -> std::os::fd::OwnedFd {
    in_netns(ns, || {
        use std::os::fd::FromRawFd;
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2)/bind(2) calls; the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new("eth0").expect("no NUL");
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto as u16;
        addr.sll_ifindex = index as i32;
        use std::os::fd::AsRawFd;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    })
    .expect("raw socket")
}

#[test]
fn bursts_of_random_datagrams_and_spoofed_frames_crash_nothing() {
    let cluster = Cluster::start("sealed-burst", spec()).expect("cluster");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EA1);
    let n2 = SocketAddr::from((cluster.nodes[1].node.underlay_ip, OVERLAY_PORT));
    let socket = in_netns(&cluster.nodes[2].node.ns, || UdpSocket::bind("0.0.0.0:0")).unwrap();
    let good = {
        let vni = cluster.network("secret").vni;
        let mut keys = KeySet::new(SenderId(78), 0);
        keys.install(Epoch(1), NetworkKey(test_key(vni, Epoch(1)).0));
        keys.set_tx(Epoch(1)).unwrap();
        sealed_datagram(&mut keys, &cluster, b"template")
    };
    // 3,000 datagrams: random bytes, truncations of a valid one, and valid headers with
    // random bodies. Bounded in count; paced so the receiver's buffer is not the test.
    for i in 0..3000 {
        let d: Vec<u8> = match i % 3 {
            0 => (0..rng.random_range(0..1600))
                .map(|_| rng.random())
                .collect(),
            1 => good[..rng.random_range(0..good.len())].to_vec(),
            _ => {
                let mut d = good.clone();
                for b in &mut d[8..] {
                    *b = rng.random();
                }
                d[0] = [0x08, 0x48, 0xff, 0x00][rng.random_range(0..4)];
                d
            }
        };
        let _ = socket.send_to(&d, n2);
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // 2,000 frames from container p2 with spoofed MACs, spoofed IPs and garbage.
    let raw = raw_socket(&cluster.container("p2").ns);
    let own = cluster.ip("p2", "public");
    let peer = cluster.ip("p3", "public");
    for i in 0..2000 {
        let mut frame = Vec::new();
        let (src_mac, src_ip) = match i % 3 {
            0 => (rng.random::<[u8; 6]>(), own),
            1 => (mac(own).0, Ipv4Addr::from(rng.random::<u32>())),
            _ => (mac(own).0, own),
        };
        etherparse::PacketBuilder::ethernet2(src_mac, mac(peer).0)
            .ipv4(src_ip.octets(), peer.octets(), 64)
            .udp(1, 2)
            .write(&mut frame, b"spoof")
            .unwrap();
        if i % 3 == 2 {
            // Valid addresses, garbage after the Ethernet header.
            for b in &mut frame[14..] {
                *b = rng.random();
            }
        }
        use std::os::fd::AsRawFd;
        // SAFETY: send(2) from a valid buffer on an owned fd.
        unsafe { libc::send(raw.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::thread::sleep(Duration::from_millis(300));

    // Forwarding continues, on both networks.
    assert!(cluster.ping("p2", peer));
    assert!(cluster.ping("s3", cluster.ip("s2", "secret")));
    let n2_stats: Stats = cluster.nodes[1].dataplane.stats().unwrap();
    let c = &n2_stats.core;
    assert!(c.drops(DropReason::MalformedDatagram) > 0, "{c:?}");
    assert!(
        c.drops(DropReason::BadTag) + c.drops(DropReason::UnknownEpoch) > 0,
        "{c:?}"
    );
    assert!(
        c.drops(DropReason::SpoofedMac) > 0 && c.drops(DropReason::SpoofedIp) > 0,
        "{c:?}"
    );
    assert!(c.drops(DropReason::MalformedFrame) > 0, "{c:?}");
}
