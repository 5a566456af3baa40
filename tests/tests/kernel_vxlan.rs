//! Interop with the Linux kernel's `vxlan` device: a kernel VXLAN endpoint and a shoal
//! endpoint on the same plain network ping each other and exchange TCP data both ways.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dataplane::forward::Update;
use dataplane::types::{Mac, OverlayIp, UnderlayAddr};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tests::cluster::{Cluster, ClusterSpec, ContainerSpec, NetworkSpec, OVERLAY_PORT};
use tests::kernel_vxlan::{KernelVxlan, KernelVxlanPeer, add_kernel_vxlan};
use tests::traffic::{EchoServer, echo_bulk};

#[test]
fn a_kernel_vxlan_device_and_a_shoal_endpoint_talk_both_ways() {
    let spec = ClusterSpec {
        nodes: 1,
        underlay_mtu: 1500,
        offload: true,
        networks: vec![NetworkSpec::new("public", 4096, "10.10.0.0/24", false)],
        containers: vec![ContainerSpec {
            name: "a",
            node: 0,
            attachments: vec![(0, 2)],
        }],
    };
    let mut cluster = Cluster::start("kernel-vxlan", spec).expect("cluster");
    let shoal_node = cluster.nodes[0].node.underlay_ip;
    let shoal_ip = cluster.ip("a", "public");
    let shoal_mac = Mac::from_overlay_ip(OverlayIp(shoal_ip));

    // The kernel side: a node namespace holding a vxlan device on the same VNI, with static
    // FDB and neighbour entries (no learning, as in Docker's overlay driver).
    let kernel = cluster.testbed.add_node("k");
    let kernel_ip: Ipv4Addr = "10.10.0.99".parse().unwrap();
    let kernel_mac = Mac::from_overlay_ip(OverlayIp(kernel_ip));
    let ns = kernel.netns_name.clone();
    let public = cluster.network("public");
    add_kernel_vxlan(
        &cluster.testbed,
        &ns,
        &KernelVxlan {
            vni: public.vni,
            local: kernel.underlay_ip,
            underlay_if: None,
            ip: kernel_ip,
            prefix_len: public.subnet.prefix_len(),
            mac: kernel_mac,
            mtu: 1450,
            peers: vec![KernelVxlanPeer {
                mac: shoal_mac,
                ip: shoal_ip,
                underlay_ip: shoal_node,
            }],
            flood: false,
            // shoal reads the inner frames: the kernel must fill in their checksums (see
            // `KernelVxlan::tx_checksum_offload`).
            tx_checksum_offload: false,
        },
    );

    // The shoal side learns the kernel endpoint as a remote endpoint on node k.
    let node = UnderlayAddr(SocketAddr::from((kernel.underlay_ip, OVERLAY_PORT)));
    let update = Update::AddRemoteEndpoint {
        vni: public.vni,
        ip: kernel_ip,
        mac: kernel_mac,
        node,
    };
    cluster.apply_everywhere(&update).expect("remote endpoint");

    let ping = |netns: &str, to: Ipv4Addr| {
        let to = to.to_string();
        cluster
            .testbed
            .exec(netns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &to])
            .status
            .success()
    };
    assert!(
        ping(&cluster.container("a").netns_name, kernel_ip),
        "shoal -> kernel ping"
    );
    assert!(ping(&ns, shoal_ip), "kernel -> shoal ping");

    // TCP data both ways: a server on each side, the other side's client checks the echo.
    let to_kernel = SocketAddr::from((kernel_ip, 7001));
    let _k = EchoServer::start(&kernel.ns, to_kernel).unwrap();
    echo_bulk(
        &cluster.container("a").ns,
        to_kernel,
        4 << 20,
        Duration::from_secs(60),
        || {},
    )
    .expect("shoal client -> kernel server");
    let to_shoal = SocketAddr::from((shoal_ip, 7002));
    let _s = EchoServer::start(&cluster.container("a").ns, to_shoal).unwrap();
    echo_bulk(
        &kernel.ns,
        to_shoal,
        4 << 20,
        Duration::from_secs(60),
        || {},
    )
    .expect("kernel client -> shoal server");

    let stats = cluster.nodes[0].dataplane.stats().unwrap();
    assert!(
        stats.core.decapsulated > 0 && stats.core.encapsulated > 0,
        "{stats:?}"
    );
}
