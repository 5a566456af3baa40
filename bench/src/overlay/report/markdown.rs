//! `overlay.md`: the results table, targets, per-run values, counters, profiles, topology and
//! commands, caveats.

use super::{Report, counts, dataplane_cpus, two_cpus};
use crate::overlay::counters::stats_rows;
use crate::overlay::measure::{
    RunResult, iperf_client_argv, iperf_server_argv, sockperf_client_argv, sockperf_server_argv,
};
use crate::overlay::paths::{KVX_IPS, Kind};
use crate::{Table, first_line_of, fmt_summary};
use tests::testbed::{DEFAULT_MTU, DEFAULT_UNDERLAY};

impl Report<'_> {
    /// The main table: one row a path, medians [min..max] and ratios to kernel VXLAN.
    pub(in crate::overlay) fn results_table(&self) -> String {
        let mut t = Table::new(&[
            "path",
            "inner MTU",
            "iperf3 1 stream, Gbit/s",
            "× kernel VXLAN",
            "TCP RR p50, µs",
            "p99, µs",
            "p50 × kernel VXLAN",
            "retransmits / run",
            "CPU % client / server (iperf3)",
            "CPU % dataplane n1 / n2",
        ]);
        for p in self.paths {
            let k = p.kind;
            let summary =
                |f: fn(&RunResult) -> f64, decimals| fmt_summary(&self.values(k, f), decimals);
            t.row(&[
                format!("{} (`{}`)", k.label(), k.key()),
                p.mtu.to_string(),
                format!("**{}**", summary(|r| r.gbps, 2)),
                format!("{:.2}", self.ratio_gbps(k)),
                format!("**{}**", summary(|r| r.rtt_p50, 1)),
                summary(|r| r.rtt_p99, 0),
                format!("{:.2}", self.ratio_rtt(k)),
                summary(|r| r.retransmits, 0),
                two_cpus(self.med(k, |r| r.cpu_client), self.med(k, |r| r.cpu_server)),
                dataplane_cpus(
                    k,
                    [self.med(k, |r| r.dp_cpu[0]), self.med(k, |r| r.dp_cpu[1])],
                ),
            ]);
        }
        t.to_markdown()
    }

    pub(super) fn markdown(&self) -> String {
        let mut s = String::new();
        s += &self.intro();
        s += "## Results\n\n";
        s += &self.results_table();
        s += "\nRTT = sockperf TCP ping-pong round trip (`--full-rtt`), 64-byte messages, one \
              outstanding; p99 is the median over runs of each run's p99. CPU % = share of one \
              core (the machine has nproc of them); dataplane CPU is the node's dataplane thread \
              (n1 = client side: TAP read + encapsulate; n2 = server side: decapsulate + TAP \
              write; the ACKs go the other way), from /proc during the iperf3 run.\n\n";
        s += &self.targets_section();
        s += &self.per_run();
        s += &self.counters_section();
        if !self.profiles.is_empty() {
            s += "## Where the dataplane's time goes (profile, not part of the measured runs)\n\n";
            s += "perf has no hardware counters in this VM, so `cpu-clock` sampling. The \
                  process profiled is the benchmark itself, which holds both nodes' dataplane \
                  threads (iperf3 runs in other processes; kernel work done in the dataplane \
                  thread's context, e.g. delivering a frame written to a TAP, is included). \
                  Without a PMU, `cpu-clock` samples cannot land where interrupts are disabled: \
                  that time is charged to where they are enabled again, which is why \
                  `_raw_spin_unlock_irqrestore` (e.g. the wakeup of a reader in \
                  `sock_def_readable`) can rank high.\n\n";
            for prof in self.profiles {
                s += &prof.markdown();
                s += "\n";
            }
        }
        s += &self.topology();
        s += "## Caveats\n\n\
              - 2 shared vCPUs: iperf3 client and server, both dataplane threads and the kernel's \
              softirq work share them, so a path's figure is a joint limit of everything on it, \
              not of the dataplane alone.\n\
              - Noisy VM: run-to-run spread of 5–30% is normal here (see \
              `shared/anchors/RESULTS.md`); compare paths within this run, not with figures from \
              other sittings. With RUNS=3 the median is the middle run.\n\
              - The anchor figures in `shared/anchors/RESULTS.md` §1 used 10 s runs, 5 \
              repetitions, and a direct veth pair; the kernel VXLAN path here is otherwise the \
              same (VNI 4097, UDP 4789, static FDB and neighbours, MTU 1450).\n";
        s
    }

    /// Title, when and how, the machine, the code and the load.
    fn intro(&self) -> String {
        let c = self.cfg;
        let mut s = String::new();
        s += "# Overlay data path: shoal vs. kernel VXLAN (`bench/src/bin/overlay.rs`)\n\n";
        s += &format!(
            "Measured {} in one run of `target/release/overlay` ({:.0} s for the measured runs, \
             {:.0} s in all with setup and the profile pass). RUNS={}, IPERF_T={} s, SOCKPERF_T={} s; \
             the paths are interleaved (run 1 of every path, then run 2, ...). Median [min..max] \
             over the runs.\n\n",
            self.date, self.measured_s, self.total_s, c.runs, c.iperf_t, c.sockperf_t
        );
        s += &format!(
            "Machine: nproc {}, kernel {}, CPU {}, {} MiB. Tools: {}; {}; {}.\n\n",
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu,
            self.machine.mem_mib,
            first_line_of(&["iperf3", "--version"]),
            first_line_of(&["sockperf", "--version"]),
            first_line_of(&["perf", "--version"]),
        );
        s += &format!("Code measured: {}.\n\n", self.revision);
        s += &format!(
            "Load from others (the machine is shared; another benchmark or a build running at \
             the same time lowers every figure): {}.\n\n",
            self.conditions.join("; ")
        );
        s
    }

    fn targets_section(&self) -> String {
        let mut s = "## Targets (against kernel VXLAN, same run)\n\n".to_string();
        let mut t = Table::new(&["target", "measured", "needed", "met?"]);
        for (name, v, need, ok) in self.targets() {
            t.row(&[
                name,
                format!("{v:.2}×"),
                need,
                if ok { "**yes**" } else { "**no**" }.to_string(),
            ]);
        }
        s += &t.to_markdown();
        s += "\n";
        s
    }

    fn per_run(&self) -> String {
        let mut s = "## Per-run values\n\n".to_string();
        let mut t = Table::new(&[
            "run",
            "path",
            "Gbit/s",
            "retransmits",
            "CPU % client / server",
            "CPU % dataplane n1 / n2",
            "RTT p50 / p99 / avg, µs",
            "round trips/s",
            "errors",
        ]);
        for run in 0..self.cfg.runs {
            for p in self.paths {
                let Some(r) = self.results.get(&p.kind).and_then(|v| v.get(run)) else {
                    continue;
                };
                t.row(&[
                    (run + 1).to_string(),
                    p.kind.key().to_string(),
                    format!("{:.3}", r.gbps),
                    format!("{:.0}", r.retransmits),
                    two_cpus(r.cpu_client, r.cpu_server),
                    dataplane_cpus(p.kind, r.dp_cpu),
                    format!("{:.1} / {:.1} / {:.1}", r.rtt_p50, r.rtt_p99, r.rtt_avg),
                    format!("{:.0}", r.round_trips_per_s),
                    r.errors.join("; "),
                ]);
            }
        }
        s += &t.to_markdown();
        s += "\n";
        s
    }

    fn counters_section(&self) -> String {
        let mut s = "## Dataplane counters after the measured runs\n\n".to_string();
        s += "From `Cluster::stats()` of each shoal cluster, cumulative since it started (the \
              measured runs plus a few setup pings), before the profile pass. Only non-zero \
              drop reasons are listed.\n\n";
        for (kind, stats) in &self.counters.dataplane {
            s += &format!("**{}** (`{}`)\n\n", kind.label(), kind.key());
            let rows: Vec<Vec<(String, u64)>> = stats.iter().map(stats_rows).collect();
            let mut names: Vec<String> = Vec::new();
            for (k, _) in rows.iter().flatten() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
            let mut header = vec!["counter".to_string()];
            header.extend((1..=rows.len()).map(|i| format!("n{i}")));
            let mut t = Table::new(&header);
            for name in &names {
                let mut row = vec![name.clone()];
                for r in &rows {
                    let v = r.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v);
                    row.push(v.to_string());
                }
                t.row(&row);
            }
            s += &t.to_markdown();
            s += "\nAround the dataplane (kernel counters, same moment): ";
            if let Some(kd) = self.counters.kernel.get(kind) {
                s += &kd
                    .iter()
                    .map(|(what, vals)| format!("{what}: {}", counts(vals)))
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            s += ".\n\n";
        }
        s
    }

    /// The testbeds, each path, the kernel VXLAN commands and the tools' command lines.
    fn topology(&self) -> String {
        let c = self.cfg;
        let mut s = "## Topology and commands\n\n".to_string();
        s += &format!(
            "Three testbeds (`tests::Testbed`, namespaces `st<pid>_<n>-*`, removed on exit), each \
             with an underlay namespace holding bridge `br0` and two node namespaces whose \
             `eth0` (veth, MTU {DEFAULT_MTU}) plugs into it, underlay {DEFAULT_UNDERLAY}, no \
             default route. In the underlay namespace \
             `net.bridge.bridge-nf-call-iptables` = {} (1: bridged IPv4 frames pass the \
             iptables hooks, br_netfilter; a per-frame cost every path pays, amortised by GSO on \
             the kernel paths):\n\n",
            self.kernel_setup.br_nf_call_iptables
        );
        for p in self.paths {
            s += &format!(
                "- `{}`: client in {} → server in {} at {} (inner MTU {}).{}\n",
                p.kind.key(),
                p.client_name,
                p.server_name,
                p.dst,
                p.mtu,
                match p.kind {
                    Kind::Veth =>
                        " Node to node over the underlay: veth → bridge → veth. Note: the anchor \
                         (`shared/anchors/1a_veth.sh`) used one direct veth pair; this path adds \
                         the bridge, like every other path here.",
                    Kind::KernelVxlan =>
                        " `vx0` in nodes k1, k2 (kernel defaults for offloads: TX checksum and \
                         GSO stay on, as in the anchor `1b_vxlan.sh`; the `ethtool -K vx0 tx off` \
                         of `tests/tests/kernel_vxlan.rs` is only needed when a userspace \
                         receiver reads the inner frames).",
                    Kind::Plain =>
                        " `tests::cluster::Cluster`, 2 nodes n1, n2 each with a shoal dataplane \
                         thread (UDP 4789), plain network VNI 4097 10.77.0.0/24, container c1 \
                         on n1, c2 on n2, one TAP `eth0` each.",
                    Kind::Sealed =>
                        " Same as plain, with the network encrypted (ChaCha20-Poly1305, test key \
                         of epoch 1).",
                }
            );
        }
        s += "\nKernel VXLAN setup (in each node namespace):\n\n```\n";
        for l in &self.kernel_setup.commands {
            s += l;
            s.push('\n');
        }
        s += "```\n\nPer run and path (client in the client namespace, server spawned through \
              `Testbed::spawn` in the server namespace and killed after the measurement), e.g. \
              for kernel VXLAN:\n\n```\n";
        let dst = KVX_IPS[1].to_string();
        s += &format!(
            "server: {}\nclient: {}\nserver: {}\nclient: {}\n",
            iperf_server_argv(&dst).join(" "),
            iperf_client_argv(&dst, c.iperf_t, 1).join(" "),
            sockperf_server_argv(&dst).join(" "),
            sockperf_client_argv(&dst, c.sockperf_t).join(" "),
        );
        s += "```\n\nThroughput = `end.sum_received.bits_per_second` of the iperf3 JSON \
              (`-O 1`: the first second is omitted); retransmits = `end.sum_sent.retransmits`; \
              CPU = `end.cpu_utilization_percent.host_total` / `remote_total`. RTT = sockperf's \
              `percentile 50.000` / `99.000` lines.\n\n";
        s += "Reproduce: `cargo build -p bench --release --bin overlay && sudo \
              target/release/overlay` (env `RUNS`, `IPERF_T`, `SOCKPERF_T`, `PROFILE=0` to skip \
              perf).\n\n";
        s
    }
}
