//! `mesh.md`.

use std::fmt::Write as _;

use dataplane::balance::Algorithm;

use super::{Report, alg_key, alg_label, dist_balance, mean};
use crate::Table;
use crate::mesh::lab::{DIRECT_TASK, HAPROXY_PORT, PUBLISHED, SERVICE_TASKS, TASKS, Target};
use crate::mesh::{ALGORITHMS, Cell, KEY_CONC};

/// The anchor's own figures (`shared/anchors/RESULTS.md` §2, another topology and day).
const ANCHOR_NOTE: &str = "For reference, the anchor script itself (`2_l4lb_haproxy.sh`, two \
namespaces on a veth pair, no overlay) measured at concurrency 16 HAProxy 6,476 \
[6,132..6,896] and direct 13,075 [11,054..14,324] conn/s (`RESULTS.md` §2; an earlier run \
6,331 and 12,168). The ratios here are against HAProxy in this run, on this topology.";

fn f0(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.0}")
    }
}

fn f4(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.4}")
    }
}

fn opt(x: Option<f64>, d: usize) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.d$}"))
}

fn summ(cells: &[&Cell], d: usize, f: impl Fn(&Cell) -> f64) -> String {
    Report::summary_of(cells, f).map_or("n/a".into(), |s| s.fmt(d))
}

fn med(cells: &[&Cell], f: impl Fn(&Cell) -> f64) -> f64 {
    Report::summary_of(cells, f).map_or(f64::NAN, |s| s.median)
}

/// CPU shares of a set of cells (medians), `client / HAProxy / backends / dp n1 / n2 / n3 /
/// relays`, and the machine's busy share.
fn cpu_cells(cells: &[&Cell]) -> (String, String) {
    let g = |name: &'static str| med(cells, move |c| *c.usage.groups.get(name).unwrap_or(&0.0));
    let parts = [
        med(cells, |c| c.client_cpu),
        g("haproxy"),
        g("backends"),
        g("dataplane n1"),
        g("dataplane n2"),
        g("dataplane n3"),
        g("mesh relays"),
    ];
    (
        parts.iter().map(|p| f0(*p)).collect::<Vec<_>>().join(" / "),
        f0(med(cells, |c| c.usage.machine_pct)),
    )
}

fn errors_of(cells: &[&Cell]) -> String {
    let total: usize = cells.iter().map(|c| c.error_count()).sum();
    let timed_out = cells.iter().filter(|c| c.timed_out).count();
    let failed = cells.iter().filter(|c| c.failure.is_some()).count();
    let mut s = total.to_string();
    if timed_out > 0 {
        let _ = write!(s, ", {timed_out} cell(s) hit CELL_T");
    }
    if failed > 0 {
        let _ = write!(s, ", {failed} cell(s) failed");
    }
    s
}

pub(super) fn render(r: &Report, plot: &Result<String, String>) -> String {
    let mut md = String::new();
    let cfg = r.cfg;
    let k = r.key();
    let _ = writeln!(
        md,
        "# Connection distribution: shoal's VIP and routing mesh vs. HAProxy \
         (`bench/src/bin/mesh.rs`)\n"
    );
    let _ = writeln!(
        md,
        "Measured {} in one run of `target/release/mesh` ({:.0} s for the measured cells, {:.0} \
         s in all). N={} connections per cell (bounded also by CELL_T={} s), concurrencies {:?}, \
         RUNS={}; cells interleaved (run 1 of every target and concurrency, then the \
         algorithms, then run 2, ...), 2 s apart as in the anchor. Median [min..max] over the \
         runs.\n",
        r.date, r.measured_s, r.total_s, cfg.n, cfg.cell_t, cfg.concs, cfg.runs
    );
    let m = r.machine;
    let _ = writeln!(
        md,
        "Machine: nproc {}, kernel {}, CPU {}, {} MiB. {}.\n",
        m.nproc, m.kernel, m.cpu, m.mem_mib, r.haproxy_version
    );
    let _ = writeln!(md, "Code measured: {}.\n", r.revision);
    let _ = writeln!(
        md,
        "Load from others (the machine is shared; a build or another benchmark at the same time \
         lowers every figure): {}.\n",
        r.conditions.join("; ")
    );

    md += "## Topology\n\n";
    let _ = writeln!(
        md,
        "Three shoal nodes (namespaces on one underlay bridge, a dataplane each, in this \
         process), one overlay network `ingress` (VNI 4100, 10.255.0.0/24) carrying both the \
         east-west VIP and the routing mesh. Tasks t1 (n1), t2 (n2), t3 and t4 (n3) each run \
         the anchor's backend on :80 (accept, write `tN\\n`, close; one thread). The VIP \
         10.255.0.100 balances them, set on every node. The clients are the anchor's client \
         (N connections, C blocking threads, connect start → first byte, 3 s timeouts). Four \
         targets:\n"
    );
    for t in Target::ALL {
        let _ = writeln!(md, "- `{}`: {}", t.key(), t.label());
    }
    let _ = writeln!(
        md,
        "\nc1 and the HAProxy container `hap` are on n1. The underlay cannot reach overlay \
         addresses, so HAProxy runs as a Swarm user would run it: in a container on the same \
         overlay network (`hap`, 10.255.0.50:{HAPROXY_PORT}), with the four tasks' overlay \
         addresses as its servers; c1 → hap is local to n1's dataplane, hap → tasks takes the \
         same overlay path as the VIP's flows (t1 local, t2..t4 over VXLAN). The published \
         port {PUBLISHED} is published on every node (`RoutingMesh` in each node's ingress \
         sandbox sb1..sb3, `0.0.0.0:{PUBLISHED}` → VIP:80); the client `outside` (a namespace \
         on the underlay, outside the cluster) connects to n1's underlay address only, so n1's \
         relay (one tokio thread in sb1) and n1's balancer serve it. The direct path goes to \
         {DIRECT_TASK} on n2 (a remote task, like 3 of the VIP's 4) from a client of its own, \
         c2 on n1: a client's kernel derives a connection's initial sequence number and \
         timestamp offset from the address it connects to (the VIP, not the task), so when one \
         client address and port reach a task once through the VIP and once directly within \
         the task's TIME_WAIT, the task may refuse the SYN (PAWS) and the client waits 1 s to \
         send it again; any DNAT balancer has this (Docker's IPVS too), and c2 keeps it out of \
         the figures (so does c3 for the Maglev run below). Ephemeral ports \
         1024–65000 and `tcp_tw_reuse=1` in every namespace of the run (the anchor's \
         settings). HAProxy has the anchor's configuration (below): `maxconn 8000`, default \
         threading ({}).\n",
        r.counters
            .haproxy_rss_threads
            .map_or("thread count unknown".into(), |(_, t)| format!(
                "{t} threads here"
            ))
    );

    md += "## Results (round robin everywhere)\n\n";
    let mut t = Table::new(&[
        "target",
        "conc.",
        "conn/s",
        "× HAProxy",
        "p50, µs",
        "p99, µs",
        "p99.9, µs",
        "backend max/mean",
        "CV",
        "errors",
        "SYNs sent again / accept-queue drops (all runs)",
        "CPU % client / HAProxy / backends / dataplane n1 / n2 / n3 / mesh relays",
        "machine busy %",
    ]);
    for &c in &cfg.concs {
        let hap = med(&r.select(Target::Haproxy, c, Algorithm::RoundRobin), |x| {
            x.cps
        });
        for target in Target::ALL {
            let cells = r.select(target, c, Algorithm::RoundRobin);
            if cells.is_empty() {
                continue;
            }
            let cps = summ(&cells, 0, |x| x.cps);
            let ratio = med(&cells, |x| x.cps) / hap;
            let (cpu, busy) = cpu_cells(&cells);
            let bold = if c == KEY_CONC { "**" } else { "" };
            t.row(&[
                target.key().to_string(),
                c.to_string(),
                format!("{bold}{cps}{bold}"),
                format!("{ratio:.2}"),
                summ(&cells, 0, |x| x.p50),
                summ(&cells, 0, |x| x.p99),
                f0(med(&cells, |x| x.p999)),
                if target == Target::Direct {
                    "–".into()
                } else {
                    f4(med(&cells, |x| x.balance().0))
                },
                if target == Target::Direct {
                    "–".into()
                } else {
                    f4(med(&cells, |x| x.balance().1))
                },
                errors_of(&cells),
                format!(
                    "{} / {}",
                    cells
                        .iter()
                        .map(|c| c.kernel_sum("TcpExt:TCPSynRetrans"))
                        .sum::<u64>(),
                    cells
                        .iter()
                        .map(|c| c.kernel_sum("TcpExt:ListenOverflows"))
                        .sum::<u64>()
                ),
                cpu,
                busy,
            ]);
        }
    }
    md += &t.to_markdown();
    md += "\nconn/s = successful connections / wall time of the cell; latency = connect start → \
           first byte of the reply; max/mean and CV (population standard deviation / mean) \
           over the four tasks' reply counts of each run (median over runs). CPU = share of \
           one core during the cell (medians): client threads and HAProxy from their own \
           run time; backends, each node's dataplane thread and the three mesh relay threads \
           from `/proc/self/task/*/schedstat`. Kernel TCP work in softirq context is partly \
           charged to whatever thread ran, so these do not add up to the machine's busy \
           share (all CPUs, `/proc/stat`, 100 % = both cores busy). SYNs sent again = the \
           kernel's `TCPSynRetrans` in the client's namespace and, for HAProxy and the \
           published port, in the namespaces whose connections go on to the tasks (each one \
           costs its connection 1 s); accept-queue drops = `ListenOverflows` of the tasks and \
           of HAProxy / n1's listener.\n\n";

    md += &format!("## Targets (concurrency {KEY_CONC}, same run)\n\n");
    let mut t = Table::new(&["target", "measured", "needed", "met?"]);
    let met = |ok: Option<bool>| match ok {
        Some(true) => "yes".to_string(),
        Some(false) => "**no**".to_string(),
        None => "n/a".to_string(),
    };
    let vip_x = k.over_haproxy(k.vip_cps);
    let pub_x = k.over_haproxy(k.published_cps);
    t.row(&[
        format!(
            "VIP conn/s ≥ 1.5× HAProxy ({} vs {})",
            opt(k.vip_cps, 0),
            opt(k.haproxy_cps, 0)
        ),
        format!("{}×", opt(vip_x, 2)),
        "≥ 1.5".into(),
        met(vip_x.map(|x| x >= 1.5)),
    ]);
    t.row(&[
        format!(
            "published port conn/s ≥ 1.0× HAProxy ({} vs {})",
            opt(k.published_cps, 0),
            opt(k.haproxy_cps, 0)
        ),
        format!("{}×", opt(pub_x, 2)),
        "≥ 1.0".into(),
        met(pub_x.map(|x| x >= 1.0)),
    ]);
    t.row(&[
        "VIP round robin backend max/mean".into(),
        opt(k.rr_max_over_mean, 4),
        "≤ 1.01".into(),
        met(k.rr_max_over_mean.map(|x| x <= 1.01)),
    ]);
    md += &t.to_markdown();
    let _ = writeln!(
        md,
        "\nDirect (no balancer) at concurrency {KEY_CONC}: {} conn/s, {}× HAProxy: the ceiling \
         of this topology. {ANCHOR_NOTE}\n",
        opt(k.direct_cps, 0),
        opt(k.over_haproxy(k.direct_cps), 2)
    );

    for &c in &cfg.alg_concs {
        md += &format!("## The VIP's algorithms (concurrency {c})\n\n");
        let mut t = Table::new(&[
            "algorithm",
            "conn/s",
            "× HAProxy",
            "p50, µs",
            "p99, µs",
            "max/mean",
            "CV",
            "errors",
            "CPU % dataplane n1",
        ]);
        let hap = med(&r.select(Target::Haproxy, c, Algorithm::RoundRobin), |x| {
            x.cps
        });
        for a in ALGORITHMS {
            let cells = r.select(Target::Vip, c, a);
            if cells.is_empty() {
                continue;
            }
            t.row(&[
                format!("{} (`{}`)", alg_label(a), alg_key(a)),
                summ(&cells, 0, |x| x.cps),
                format!("{:.2}", med(&cells, |x| x.cps) / hap),
                summ(&cells, 0, |x| x.p50),
                summ(&cells, 0, |x| x.p99),
                summ(&cells, 4, |x| x.balance().0),
                summ(&cells, 4, |x| x.balance().1),
                errors_of(&cells),
                f0(med(&cells, |x| {
                    *x.usage.groups.get("dataplane n1").unwrap_or(&f64::NAN)
                })),
            ]);
        }
        md += &t.to_markdown();
        md += "\nPer-backend counts, summed over the runs (the same shares are plotted in \
               `mesh.png`):\n\n";
        let mut header = vec!["distribution".to_string()];
        header.extend(
            TASKS[..SERVICE_TASKS]
                .iter()
                .zip(["n1", "n2", "n3", "n3"])
                .map(|(t, n)| format!("{t} ({n})")),
        );
        header.extend(["total".into(), "max/mean".into(), "CV".into()]);
        let mut t = Table::new(&header);
        for d in r.distributions(c) {
            let (mm, cv) = dist_balance(&d);
            let mut row = vec![d.label.clone()];
            row.extend(d.counts.iter().map(|(_, n)| n.to_string()));
            row.extend([d.total().to_string(), f4(mm), f4(cv)]);
            t.row(&row);
        }
        md += &t.to_markdown();
        md += "\n";
    }
    let mismatches = r.count_mismatches();
    if mismatches.is_empty() {
        md += "n1's balancer counted, for every VIP and published-port cell, exactly the \
               replies the client got from each task (`Cluster::stats()`, per backend `total`, \
               before and after the cell).\n\n";
    } else {
        let _ = writeln!(
            md,
            "Cells where n1's balancer counted other per-task flows than the replies the \
             client got ({}): {}\n",
            mismatches.len(),
            mismatches.join("; ")
        );
    }

    md += "## Maglev disruption (ten backends, one removed)\n\n";
    let e = r.end_to_end;
    let _ = writeln!(
        md,
        "End to end (the figure `maglev_disruption`): a second VIP, 10.255.0.101, balances all \
         ten tasks t1..t10 (spread over the three nodes) with Maglev. c3 (on n1, a client of its own) opened {} connections, \
         each from its own source port (20000 + i), and recorded the task that answered; then \
         {} left the service on every node and the same source ports connected again (same \
         5-tuples, same flow hashes).\n",
        e.flows, e.removed
    );
    let mut t = Table::new(&["", "value"]);
    t.row(&[
        "flows answered in both rounds".into(),
        format!("{} of {}", e.compared, e.flows),
    ]);
    t.row(&[
        format!("flows on {} in round 1 (must move)", e.removed),
        format!(
            "{} ({:.2} %)",
            e.on_removed,
            100.0 * e.on_removed as f64 / e.compared.max(1) as f64
        ),
    ]);
    t.row(&[
        "**flows that changed task**".into(),
        format!("**{} ({:.2} %)**", e.moved, 100.0 * e.fraction()),
    ]);
    t.row(&[
        "of which between surviving tasks (ideal 0)".into(),
        format!(
            "{} ({:.2} %)",
            e.moved_from_survivors,
            100.0 * e.survivors_fraction()
        ),
    ]);
    t.row(&[
        "round 2 connections that failed at first (retried once)".into(),
        if e.round2_first_errors.is_empty() {
            "none".into()
        } else {
            format!("{:?}", e.round2_first_errors)
        },
    ]);
    t.row(&["failed for good".into(), e.failed.to_string()]);
    t.row(&["round 1 answers by task".into(), format!("{:?}", e.before)]);
    md += &t.to_markdown();
    let c = r.computed;
    let _ = writeln!(
        md,
        "\nComputed (no network): `dataplane::balance::VipService` with the same ten task \
         addresses and Maglev, {} synthetic flows (64 client addresses × source ports, TCP to \
         the VIP:80, hashed with `flow_hash` as the dataplane does), each of the ten removed in \
         turn; the reference is `hash mod N` → `hash mod (N-1)` on the same flows.\n",
        c.flows
    );
    let mut t = Table::new(&["", "mean over the 10 removals", "min", "max", "ideal"]);
    let row = |v: &[f64]| {
        let s = crate::Summary::of(v);
        (
            format!("{:.2} %", 100.0 * mean(v)),
            s.map_or("n/a".into(), |s| format!("{:.2} %", 100.0 * s.min)),
            s.map_or("n/a".into(), |s| format!("{:.2} %", 100.0 * s.max)),
        )
    };
    let ideal = format!("{:.2} %", 100.0 / c.backends.max(1) as f64);
    for (name, v, ideal) in [
        (
            "Maglev: flows that changed backend",
            &c.moved,
            ideal.clone(),
        ),
        (
            "Maglev: of which between surviving backends",
            &c.moved_from_survivors,
            "0 %".into(),
        ),
        (
            "hash mod N: flows that changed backend",
            &c.mod_n_moved,
            ideal,
        ),
    ] {
        let (m, lo, hi) = row(v);
        t.row(&[name.into(), m, lo, hi, ideal]);
    }
    md += &t.to_markdown();
    let (smin, smax) = c
        .shares
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &s| (a.min(s), b.max(s)));
    let _ = writeln!(
        md,
        "\nWith all ten, Maglev's shares of the synthetic flows range {:.2} %..{:.2} % (ideal \
         10 %).\n",
        100.0 * smin,
        100.0 * smax
    );

    md += "## Plot\n\n";
    match plot {
        Ok(what) => {
            let _ = writeln!(
                md,
                "![per-backend shares and conn/s](mesh.png)\n\n{what}.\n"
            );
        }
        Err(why) => {
            let _ = writeln!(md, "No plot: {why}.\n");
        }
    }

    md += "## Per-run values\n\n";
    let mut t = Table::new(&[
        "run",
        "target",
        "algorithm",
        "conc.",
        "ok",
        "errors",
        "s",
        "conn/s",
        "p50 / p90 / p99 / p99.9 / max, µs",
        "per task",
        "max/mean",
        "CV",
        "CPU % client / machine",
        "kernel TCP counters that moved",
    ]);
    for c in r.cells {
        let (mm, cv) = c.balance();
        let mut errs = c.error_count().to_string();
        if !c.errors.is_empty() {
            let _ = write!(errs, " {:?}", c.errors);
        }
        if c.timed_out {
            errs += " (CELL_T)";
        }
        if let Some(f) = &c.failure {
            let _ = write!(errs, " FAILED: {f}");
        }
        t.row(&[
            c.run.to_string(),
            c.target.key().into(),
            alg_key(c.algorithm).into(),
            c.conc.to_string(),
            c.ok.to_string(),
            errs,
            format!("{:.2}", c.elapsed_s),
            f0(c.cps),
            format!(
                "{} / {} / {} / {} / {}",
                f0(c.p50),
                f0(c.p90),
                f0(c.p99),
                f0(c.p999),
                f0(c.max_us)
            ),
            c.per_backend
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" "),
            f4(mm),
            f4(cv),
            format!("{} / {}", f0(c.client_cpu), f0(c.usage.machine_pct)),
            c.kernel
                .iter()
                .map(|(place, m)| {
                    let kv: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    format!("{place}: {}", kv.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; "),
        ]);
    }
    md += &t.to_markdown();

    md += "\n## Counters after the runs\n\n";
    let mut t = Table::new(&[
        "node",
        "flows opened",
        "no backend",
        "untracked (reset)",
        "backend gone",
        "evicted",
        "expired",
        "flow-table entries",
        "dataplane drops",
        "published-port relays: total / connect failed / over limit / active",
    ]);
    for (i, (b, entries)) in r.counters.balance.iter().enumerate() {
        let drops = r.counters.drops.get(i).map_or("?".into(), |(v, total)| {
            if v.is_empty() {
                total.to_string()
            } else {
                format!(
                    "{total} ({})",
                    v.iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        });
        let mesh = r.counters.mesh.get(i).map_or("?".into(), |ports| {
            ports
                .iter()
                .map(|p| {
                    format!(
                        "{} / {} / {} / {}",
                        p.total, p.connect_failed, p.over_limit, p.active
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        t.row(&[
            format!("n{}", i + 1),
            b.flows_opened.to_string(),
            b.no_backend.to_string(),
            b.untracked.to_string(),
            b.backend_gone.to_string(),
            b.evicted.to_string(),
            b.expired.to_string(),
            entries.to_string(),
            drops,
            mesh,
        ]);
    }
    md += &t.to_markdown();
    let open: Vec<String> = r
        .counters
        .open_flows
        .iter()
        .enumerate()
        .flat_map(|(i, vips)| {
            vips.iter().map(move |(vip, tasks)| {
                let t: Vec<String> = tasks.iter().map(|(n, a)| format!("{n} {a}")).collect();
                format!("n{} {vip}: {}", i + 1, t.join(", "))
            })
        })
        .collect();
    let _ = writeln!(
        md,
        "\nFlows each node's balancer still counted open per task after the runs (every \
         connection had closed; least connections and two choices pick by these): {}.",
        open.join("; ")
    );
    if let Some((rss, threads)) = r.counters.haproxy_rss_threads {
        let _ = writeln!(
            md,
            "\nHAProxy after the runs: {rss} KiB resident, {threads} threads."
        );
    }
    let _ = writeln!(
        md,
        "\n## HAProxy configuration\n\n```\n{}```",
        r.haproxy_cfg
    );
    md
}
