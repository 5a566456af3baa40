//! Counters of the shoal paths after the measured runs: the dataplane's own (`Cluster::stats`)
//! and the kernel's around it (TAP drops, node UDP socket errors).

use super::paths::{Beds, Kind, PathDef};
use dataplane::shell::runtime::Stats;
use serde_json::Value;
use std::collections::BTreeMap;
use tests::cluster::Cluster;

/// One device's or socket's kernel counters: (what, [(counter, value)]).
pub(super) type KernelCounters = (String, Vec<(String, u64)>);

/// The counters of every shoal path, by kind.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Each node's dataplane counters.
    pub(super) dataplane: BTreeMap<Kind, Vec<Stats>>,
    /// The kernel's counters around the dataplane.
    pub(super) kernel: BTreeMap<Kind, Vec<KernelCounters>>,
}

impl Counters {
    pub(super) fn read(beds: &Beds, paths: &[PathDef]) -> Counters {
        let mut c = Counters::default();
        for p in paths.iter().filter(|p| p.kind.is_shoal()) {
            let cluster = beds.cluster(p.kind).expect("a shoal path has a cluster");
            c.dataplane
                .insert(p.kind, cluster.stats().unwrap_or_default());
            c.kernel.insert(p.kind, kernel_side(cluster));
        }
        c
    }
}

/// Kernel-side drop counters around the dataplane: each container's TAP (`eth0`) TX/RX
/// drops, each node's UDP socket errors.
fn kernel_side(cluster: &Cluster) -> Vec<KernelCounters> {
    let tb = &cluster.testbed;
    let mut out = Vec::new();
    for (c, spec) in cluster.containers.iter().zip(&cluster.spec.containers) {
        let o = tb.exec(
            &c.netns_name,
            &["ip", "-j", "-s", "link", "show", "dev", "eth0"],
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let s = &v[0]["stats64"];
        let get = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
        out.push((
            format!("{} eth0 (TAP)", spec.name),
            vec![
                ("tx_packets".into(), get("tx", "packets")),
                ("tx_dropped".into(), get("tx", "dropped")),
                ("rx_packets".into(), get("rx", "packets")),
                ("rx_dropped".into(), get("rx", "dropped")),
            ],
        ));
    }
    for (i, n) in cluster.nodes.iter().enumerate() {
        let o = tb.exec(&n.node.netns_name, &["cat", "/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&o.stdout);
        let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
        let mut vals = Vec::new();
        if let [names, values] = udp[..] {
            for (k, v) in names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
            {
                if matches!(
                    k,
                    "InDatagrams" | "InErrors" | "RcvbufErrors" | "SndbufErrors" | "OutDatagrams"
                ) {
                    vals.push((k.to_string(), v.parse().unwrap_or(0)));
                }
            }
        }
        out.push((format!("n{} UDP", i + 1), vals));
    }
    out
}

/// A node's dataplane counters as (name, value) rows; only non-zero drop reasons.
pub(super) fn stats_rows(stats: &Stats) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = vec![
        ("tap_frames_read".into(), stats.shell.tap_frames_read),
        ("encapsulated".into(), stats.core.encapsulated),
        ("datagrams_sent".into(), stats.shell.datagrams_sent),
        ("datagrams_received".into(), stats.shell.datagrams_received),
        ("decapsulated".into(), stats.core.decapsulated),
        ("local_delivered".into(), stats.core.local_delivered),
        ("arp_replies".into(), stats.core.arp_replies),
        ("icmp_rejects".into(), stats.core.icmp_rejects),
        ("mss_clamped".into(), stats.core.mss_clamped),
        ("send_errors".into(), stats.shell.send_errors),
        ("tap_write_errors".into(), stats.shell.tap_write_errors),
        ("no_tap".into(), stats.shell.no_tap),
        ("send_backlog_drops".into(), stats.shell.send_backlog_drops),
        ("offload_errors".into(), stats.shell.offload_errors),
        (
            "tso_frames (TAP reads cut into segments)".into(),
            stats.shell.tso_frames,
        ),
        (
            "coalesced_frames (super-frames written to TAPs)".into(),
            stats.shell.coalesced_frames,
        ),
        ("coalesced_segments".into(), stats.shell.coalesced_segments),
        ("drops (total)".into(), stats.core.total_drops()),
    ];
    v.extend(
        stats
            .core
            .drop_counts()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (format!("drop: {r:?}"), n)),
    );
    v
}
