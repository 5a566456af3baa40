//! Acceptance of the overlay dataplane (root, network namespaces): three nodes, a plain and
//! a sealed network, containers spread over the nodes and two on one node.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dataplane::forward::{DropReason, Update};
use dataplane::shell::runtime::Stats;
use dataplane::types::Epoch;
use std::net::SocketAddr;
use std::time::Duration;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, PUBLIC, SECRET, test_key};
use tests::traffic::{EchoServer, connect_error, echo_bulk};

const MIB: usize = 1024 * 1024;

/// a1 (n1) and a2 (n1) share a node; b (n2) and c (n3) are elsewhere. s2 (n2) and s3 (n3)
/// are on the sealed network only; both (n1) is on both networks.
fn spec() -> ClusterSpec {
    ClusterSpec::public_and_secret(vec![
        ContainerSpec::new("a1", 0, &[(PUBLIC, 2)]),
        ContainerSpec::new("a2", 0, &[(PUBLIC, 3)]),
        ContainerSpec::new("b", 1, &[(PUBLIC, 4)]),
        ContainerSpec::new("c", 2, &[(PUBLIC, 5)]),
        ContainerSpec::new("s2", 1, &[(SECRET, 2)]),
        ContainerSpec::new("s3", 2, &[(SECRET, 3)]),
        ContainerSpec::new("both", 0, &[(PUBLIC, 9), (SECRET, 9)]),
    ])
}

fn total(stats: &[Stats], f: impl Fn(&Stats) -> u64) -> u64 {
    stats.iter().map(f).sum()
}

/// Pings and a checked 10 MiB TCP echo between every pair kind; returns the counters.
fn pings_and_echoes(test: &str, spec: ClusterSpec) -> Vec<Stats> {
    let cluster = Cluster::start(test, spec).expect("cluster");
    let pairs = [
        ("a1", "a2", "public"), // same node
        ("a1", "b", "public"),  // n1 -> n2
        ("b", "c", "public"),   // n2 -> n3
        ("s2", "s3", "secret"), // sealed, n2 -> n3
        ("both", "s2", "secret"),
        ("both", "c", "public"),
    ];
    for (from, to, net) in pairs {
        let dst = cluster.ip(to, net);
        assert!(
            cluster.ping(from, dst),
            "{from} cannot ping {to} ({dst}) on {net}"
        );
    }
    for (from, to, net) in pairs {
        let dst = SocketAddr::from((cluster.ip(to, net), 7000));
        let _server = EchoServer::start(&cluster.container(to).ns, dst).expect("echo server");
        echo_bulk(
            &cluster.container(from).ns,
            dst,
            10 * MIB,
            Duration::from_secs(60),
            || {},
        )
        .unwrap_or_else(|e| panic!("10 MiB echo {from} -> {to} on {net}: {e}"));
    }
    let stats = cluster.stats().expect("stats");
    assert!(total(&stats, |s| s.core.encapsulated) > 0);
    assert!(total(&stats, |s| s.core.local_delivered) > 0);
    assert_eq!(
        total(&stats, |s| s.shell.offload_errors
            + s.shell.tap_write_errors),
        0
    );
    stats
}

#[test]
fn pings_and_tcp_echo_work_within_each_network_across_and_on_one_node() {
    let stats = pings_and_echoes("overlay-within", spec());
    // With offload, the containers' kernels hand over TSO frames and take merged ones.
    assert!(
        total(&stats, |s| s.shell.tso_frames) > 0,
        "no TSO frame was segmented"
    );
    assert!(
        total(&stats, |s| s.shell.coalesced_frames) > 0,
        "no segments were merged"
    );
}

#[test]
fn the_same_traffic_works_frame_by_frame_without_offload() {
    let stats = pings_and_echoes(
        "overlay-nooffload",
        ClusterSpec {
            offload: false,
            ..spec()
        },
    );
    assert_eq!(
        total(&stats, |s| s.shell.tso_frames + s.shell.coalesced_frames),
        0
    );
}

#[test]
fn nothing_passes_between_networks_and_connects_fail_fast() {
    let cluster = Cluster::start("overlay-isolation", spec()).expect("cluster");
    let before = total(&cluster.stats().unwrap(), |s| {
        s.core.drops(DropReason::Isolation)
    });
    // Listeners exist on the other side, so a success would really be a leak.
    let secret = SocketAddr::from((cluster.ip("s3", "secret"), 7000));
    let _s = EchoServer::start(&cluster.container("s3").ns, secret).unwrap();
    let public = SocketAddr::from((cluster.ip("c", "public"), 7000));
    let _p = EchoServer::start(&cluster.container("c").ns, public).unwrap();

    for (from, dst) in [("b", secret), ("a1", secret), ("s2", public)] {
        match connect_error(&cluster.container(from).ns, dst, Duration::from_secs(5)) {
            Ok(()) => panic!("{from} connected to {dst} across networks"),
            Err((e, took)) => {
                assert!(
                    took < Duration::from_secs(2),
                    "{from} -> {dst} took {took:?} to fail: {e}"
                );
            }
        }
        let SocketAddr::V4(v4) = dst else {
            unreachable!("IPv4 overlays")
        };
        assert!(
            !cluster.ping(from, *v4.ip()),
            "{from} pinged {dst} across networks"
        );
    }
    let after = total(&cluster.stats().unwrap(), |s| {
        s.core.drops(DropReason::Isolation)
    });
    assert!(
        after >= before + 3,
        "isolation counter went from {before} to {after}"
    );
    // The container on both networks reaches both.
    assert!(cluster.ping("both", cluster.ip("s3", "secret")));
    assert!(cluster.ping("both", cluster.ip("c", "public")));
}

#[test]
fn rotating_keys_during_a_transfer_loses_no_byte() {
    let cluster = Cluster::start("overlay-rotate", spec()).expect("cluster");
    let secret = cluster.network("secret").vni;
    let dst = SocketAddr::from((cluster.ip("s3", "secret"), 7000));
    let _server = EchoServer::start(&cluster.container("s3").ns, dst).unwrap();
    #[allow(clippy::disallowed_methods)] // tests measure wall time
    let started = std::time::Instant::now();
    let rotate = || {
        std::thread::sleep(Duration::from_millis(50));
        let key = test_key(secret, Epoch(2));
        // Hitless order: RX everywhere, then TX everywhere, then retire the old key.
        let steps = [
            Update::InstallKey {
                vni: secret,
                epoch: Epoch(2),
                key,
            },
            Update::SetTxKey {
                vni: secret,
                epoch: Epoch(2),
            },
            Update::RetireKey {
                vni: secret,
                epoch: Epoch(1),
            },
        ];
        for step in &steps {
            cluster.apply_everywhere(step).expect("rotation step");
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    };
    let rotated_at = echo_bulk(
        &cluster.container("s2").ns,
        dst,
        64 * MIB,
        Duration::from_secs(90),
        rotate,
    )
    .expect("transfer across the rotation");
    let finished_at = started.elapsed();
    assert!(
        rotated_at < finished_at,
        "the rotation ({rotated_at:?}) must end while bytes flow ({finished_at:?})"
    );
    // Epoch 1 is gone everywhere: traffic that still flows is sealed under epoch 2.
    assert!(cluster.ping("s2", cluster.ip("s3", "secret")));
    let stats = cluster.stats().unwrap();
    for reason in [
        DropReason::UnknownEpoch,
        DropReason::BadTag,
        DropReason::NoTxKey,
        DropReason::Replayed,
    ] {
        assert_eq!(
            total(&stats, |s| s.core.drops(reason)),
            0,
            "{reason:?} drops during rotation"
        );
    }
}

/// IP fragments the node's kernel has created so far (per namespace, from /proc/net/snmp).
fn fragments_created(cluster: &Cluster, node: usize) -> u64 {
    let ns = &cluster.nodes[node].node.netns_name;
    let snmp = cluster.testbed.exec_ok(ns, &["cat", "/proc/net/snmp"]);
    let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip_lines.next().unwrap(), ip_lines.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "FragCreates")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

#[test]
fn the_overlay_mtu_is_derived_from_the_underlay_and_full_frames_are_not_fragmented() {
    let mut small = spec();
    small.underlay_mtu = 1400;
    let cluster = Cluster::start("overlay-mtu", small).expect("cluster");
    for (name, net, want) in [("a1", "public", 1350), ("s2", "secret", 1318)] {
        let ns = &cluster.container(name).netns_name;
        let link = cluster
            .testbed
            .exec_ok(ns, &["cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(link.trim(), want.to_string(), "{name} on {net}");
    }
    let before = fragments_created(&cluster, 0) + fragments_created(&cluster, 1);
    // The largest unfragmented ping (MTU - 28), across nodes, on both networks.
    for (from, to, net, size) in [
        ("a1", "b", "public", "1322"),
        ("both", "s2", "secret", "1290"),
    ] {
        let ns = &cluster.container(from).netns_name;
        let dst = cluster.ip(to, net).to_string();
        let ping = [
            "ping", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", size, &dst,
        ];
        let out = cluster.testbed.exec(ns, &ping);
        assert!(
            out.status.success(),
            "{from} -> {to}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let after = fragments_created(&cluster, 0) + fragments_created(&cluster, 1);
    assert_eq!(
        before, after,
        "full-size overlay frames were fragmented on the underlay"
    );
}

#[test]
fn a_container_that_raises_its_mtu_past_the_overlay_gets_its_big_frames_refused_not_a_crash() {
    let cluster = Cluster::start("overlay-bigmtu", spec()).expect("cluster");
    let ns = cluster.container("a1").netns_name.clone();
    // Root inside the container may do this; the dataplane must survive it.
    cluster
        .testbed
        .exec_ok(&ns, &["ip", "link", "set", "eth0", "mtu", "16000"]);
    let dst = cluster.ip("b", "public").to_string();
    let big = [
        "ping", "-c", "2", "-i", "0.2", "-W", "1", "-M", "do", "-s", "12000", &dst,
    ];
    assert!(!cluster.testbed.exec(&ns, &big).status.success());
    cluster
        .testbed
        .exec_ok(&ns, &["ip", "link", "set", "eth0", "mtu", "1450"]);
    assert!(
        cluster.ping("a1", cluster.ip("b", "public")),
        "forwarding stopped"
    );
    let stats = cluster.nodes[0].dataplane.stats().unwrap();
    assert!(stats.shell.oversized_frames >= 2, "{:?}", stats.shell);
}

#[test]
fn a_tap_deleted_inside_its_container_is_let_go_and_the_rest_keeps_forwarding() {
    let cluster = Cluster::start("overlay-tapgone", spec()).expect("cluster");
    let ns = cluster.container("a2").netns_name.clone();
    cluster.testbed.exec_ok(&ns, &["ip", "link", "del", "eth0"]);
    let lost = || cluster.nodes[0].dataplane.stats().unwrap().shell.taps_lost;
    assert!(
        tests::wait_until(Duration::from_secs(5), || lost() == 1),
        "TAP not detached"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lost(), 1, "detached once, not reported again");
    // Same node and across nodes still work.
    assert!(cluster.ping("a1", cluster.ip("both", "public")));
    assert!(cluster.ping("a1", cluster.ip("b", "public")));
}
