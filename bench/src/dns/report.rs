//! The figures of a run (medians [min..max] over the runs, ratios shoal / unbound, the issue's
//! target) and the files: `dns.md` (tables, machine, date, commands, caveats) and `dns.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ::dns::DnsStats;
use serde_json::{Map, Value, json};

use super::dnsperf::{self, Measured};
use super::servers::{self, Server};
use super::{At80, Config, RunResult};
use crate::{Machine, Summary, Table, fmt_summary, median};

/// Everything one run produced, ready to write.
#[derive(Debug)]
pub(super) struct Report<'a> {
    pub(super) cfg: &'a Config,
    pub(super) machine: &'a Machine,
    pub(super) date: &'a str,
    pub(super) revision: &'a str,
    pub(super) conditions: &'a [String],
    pub(super) runs: &'a BTreeMap<Server, Vec<RunResult>>,
    pub(super) at80: &'a BTreeMap<Server, At80>,
    pub(super) stats: &'a DnsStats,
    pub(super) unbound_rss_kib: Option<u64>,
    pub(super) unbound_conf: &'a str,
    pub(super) dnsperf_version: String,
    pub(super) unbound_version: String,
    pub(super) measured_s: f64,
    pub(super) total_s: f64,
}

/// A figure of a max-rate or fixed-rate run.
type Fig = fn(&Measured) -> f64;

fn qps(m: &Measured) -> f64 {
    m.stats.qps
}
fn lost(m: &Measured) -> f64 {
    m.stats.lost as f64
}
fn server_cpu(m: &Measured) -> f64 {
    m.server_cpu_pct
}
fn client_cpu(m: &Measured) -> f64 {
    m.client_cpu_pct
}
fn us_per_query(m: &Measured) -> f64 {
    m.server_us_per_query()
}
fn avg_latency_us(m: &Measured) -> f64 {
    m.stats.avg_latency_us
}
fn p50(m: &Measured) -> f64 {
    m.stats.latency.map_or(f64::NAN, |p| p.p50)
}
fn p90(m: &Measured) -> f64 {
    m.stats.latency.map_or(f64::NAN, |p| p.p90)
}
fn p99(m: &Measured) -> f64 {
    m.stats.latency.map_or(f64::NAN, |p| p.p99)
}
fn p999(m: &Measured) -> f64 {
    m.stats.latency.map_or(f64::NAN, |p| p.p999)
}

impl Report<'_> {
    /// `f` of every max-rate (`fixed` false) or fixed-rate run of `s`.
    fn values(&self, s: Server, fixed: bool, f: Fig) -> Vec<f64> {
        self.runs.get(&s).map_or_else(Vec::new, |runs| {
            runs.iter()
                .filter_map(|r| {
                    if fixed {
                        r.fixed.as_ref()
                    } else {
                        r.max.as_ref()
                    }
                })
                .map(f)
                .collect()
        })
    }

    fn med(&self, s: Server, fixed: bool, f: Fig) -> f64 {
        median(&self.values(s, fixed, f)).unwrap_or(f64::NAN)
    }

    fn sum(&self, s: Server, fixed: bool, f: Fig, decimals: usize) -> String {
        fmt_summary(&self.values(s, fixed, f), decimals)
    }

    /// shoal's median ÷ unbound's.
    fn ratio(&self, fixed: bool, f: Fig) -> f64 {
        self.med(Server::Shoal, fixed, f) / self.med(Server::Unbound, fixed, f)
    }

    /// Queries lost in the run at 80 % of `s`'s own peak (`None`: not measured).
    fn lost_at_80(&self, s: Server) -> Option<u64> {
        Some(self.at80.get(&s)?.measured.as_ref()?.stats.lost)
    }

    /// The issue's target: shoal loses no query at 80 % of its own peak.
    fn target_met(&self) -> Option<bool> {
        self.lost_at_80(Server::Shoal).map(|l| l == 0)
    }

    /// The three tables: max rate, fixed rate, 80 % of the peak.
    pub(super) fn results_table(&self) -> String {
        let t = self.cfg.dnsperf_t;
        let mut s =
            format!("### Max rate (dnsperf defaults: 1 client, 100 outstanding), {t} s\n\n");
        let mut max = Table::new(&[
            "server",
            "qps",
            "× unbound",
            "lost / run",
            "avg latency, ms",
            "CPU % server / dnsperf",
            "server CPU µs / query",
        ]);
        for srv in Server::ALL {
            max.row(&[
                srv.label().to_string(),
                format!("**{}**", self.sum(srv, false, qps, 0)),
                format!(
                    "{:.2}",
                    self.med(srv, false, qps) / self.med(Server::Unbound, false, qps)
                ),
                self.sum(srv, false, lost, 0),
                format!("{:.2}", self.med(srv, false, avg_latency_us) / 1000.0),
                format!(
                    "{:.0} / {:.0}",
                    self.med(srv, false, server_cpu),
                    self.med(srv, false, client_cpu)
                ),
                self.sum(srv, false, us_per_query, 1),
            ]);
        }
        s += &max.to_markdown();
        s += &format!(
            "\n### Fixed rate `-Q {}` with `-v`, {t} s: latency of every answer\n\n",
            self.cfg.fixed_qps
        );
        let mut fixed = Table::new(&[
            "server",
            "p50, µs",
            "p90, µs",
            "p99, µs",
            "p99.9, µs",
            "p50 × unbound",
            "p99 × unbound",
            "lost / run",
            "server CPU %",
            "server CPU µs / query",
        ]);
        for srv in Server::ALL {
            fixed.row(&[
                srv.label().to_string(),
                format!("**{}**", self.sum(srv, true, p50, 0)),
                format!("{:.0}", self.med(srv, true, p90)),
                format!("**{}**", self.sum(srv, true, p99, 0)),
                format!("{:.0}", self.med(srv, true, p999)),
                format!(
                    "{:.2}",
                    self.med(srv, true, p50) / self.med(Server::Unbound, true, p50)
                ),
                format!(
                    "{:.2}",
                    self.med(srv, true, p99) / self.med(Server::Unbound, true, p99)
                ),
                self.sum(srv, true, lost, 0),
                self.sum(srv, true, server_cpu, 0),
                self.sum(srv, true, us_per_query, 1),
            ]);
        }
        s += &fixed.to_markdown();
        s += &format!("\n### At 80 % of each server's own median peak, {t} s\n\n");
        let mut at80 = Table::new(&[
            "server",
            "`-Q`",
            "qps reached",
            "sent",
            "lost",
            "server CPU %",
            "notes",
        ]);
        for srv in Server::ALL {
            let Some(a) = self.at80.get(&srv) else {
                continue;
            };
            match &a.measured {
                Some(m) => at80.row(&[
                    srv.label().to_string(),
                    a.rate.to_string(),
                    format!("{:.0}", m.stats.qps),
                    m.stats.sent.to_string(),
                    format!("**{}**", m.stats.lost),
                    format!("{:.0}", m.server_cpu_pct),
                    at80_notes(a.rate, m),
                ]),
                None => at80.row(&[
                    srv.label().to_string(),
                    a.rate.to_string(),
                    "n/a".into(),
                    "n/a".into(),
                    "n/a".into(),
                    "n/a".into(),
                    a.error.clone().unwrap_or_default(),
                ]),
            };
        }
        s += &at80.to_markdown();
        s
    }

    /// shoal's counters on one line, for the terminal.
    pub(super) fn counters_line(&self) -> String {
        let nonzero: Vec<String> = self
            .stats
            .counts
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "shoal stats(): {} (forwarded={})",
            nonzero.join(" "),
            self.stats.counts.get("forwarded").copied().unwrap_or(0)
        )
    }

    fn markdown(&self) -> String {
        let c = self.cfg;
        let mut s =
            String::from("# DNS: shoal's resolver vs. unbound (`bench/src/bin/dns.rs`)\n\n");
        s += &format!(
            "Measured {} in one run of `target/release/dns` ({:.0} s for the measured runs, \
             {:.0} s in all). RUNS={}, DNSPERF_T={} s, FIXED_QPS={}; the servers are interleaved \
             (run 1 of unbound, run 1 of shoal, run 2 of unbound, ...). Median [min..max] over \
             the runs.\n\n",
            self.date, self.measured_s, self.total_s, c.runs, c.dnsperf_t, c.fixed_qps
        );
        s += &format!(
            "Machine: nproc {}, kernel {}, CPU {}, {} MiB. Tools: dnsperf {}; unbound {}.\n\n",
            self.machine.nproc,
            self.machine.kernel,
            self.machine.cpu,
            self.machine.mem_mib,
            self.dnsperf_version.trim_start_matches("Version ").trim(),
            self.unbound_version.trim_start_matches("Version ").trim(),
        );
        s += &format!("Code measured: {}.\n\n", self.revision);
        s += &format!(
            "Load from others (the machine is shared; a build or another benchmark at the same \
             time lowers every figure): {}.\n\n",
            self.conditions.join("; ")
        );
        s += "## Summary\n\n";
        let mut t = Table::new(&["figure", "unbound", "shoal", "shoal / unbound"]);
        let fixed = c.fixed_qps;
        let row = |t: &mut Table, name: String, fixed: bool, f: Fig, d: usize| {
            t.row(&[
                name,
                self.sum(Server::Unbound, fixed, f, d),
                self.sum(Server::Shoal, fixed, f, d),
                format!("**{:.2}**", self.ratio(fixed, f)),
            ]);
        };
        row(&mut t, "max-rate qps".into(), false, qps, 0);
        row(
            &mut t,
            format!("p50 latency at {fixed} qps, µs"),
            true,
            p50,
            0,
        );
        row(
            &mut t,
            format!("p99 latency at {fixed} qps, µs"),
            true,
            p99,
            0,
        );
        row(
            &mut t,
            format!("server CPU µs / query at {fixed} qps"),
            true,
            us_per_query,
            1,
        );
        row(
            &mut t,
            "server CPU µs / query at max rate".into(),
            false,
            us_per_query,
            1,
        );
        let lost80 = |srv| {
            let a = self.at80.get(&srv);
            match (a, self.lost_at_80(srv)) {
                (Some(a), Some(l)) => format!("{l} (at `-Q {}`)", a.rate),
                _ => "n/a".into(),
            }
        };
        t.row(&[
            "lost at 80 % of own peak".to_string(),
            lost80(Server::Unbound),
            lost80(Server::Shoal),
            String::new(),
        ]);
        s += &t.to_markdown();
        s += &format!(
            "\nIssue 4 target, no lost query at 80 % of shoal's peak: **{}**{}.\n\n",
            match self.target_met() {
                Some(true) => "met",
                Some(false) => "not met",
                None => "not measured",
            },
            self.at80
                .get(&Server::Shoal)
                .and_then(|a| Some((a.rate, a.measured.as_ref()?)))
                .map_or(String::new(), |(rate, m)| format!(
                    " ({} lost of {} sent; asked for `-Q {rate}`, dnsperf reached {:.0} qps, \
                     {:.0} %: with at most 100 queries outstanding it sends more slowly \
                     rather than overrun a server that falls behind, see the caveats)",
                    m.stats.lost,
                    m.stats.sent,
                    m.stats.qps,
                    m.stats.qps / rate as f64 * 100.0
                ))
        );
        s += "## Results\n\n";
        s += &self.results_table();
        s += "\nCPU % = share of one core over the run (the machine has nproc of them): unbound's \
              process, shoal's serving thread (`shoal-dns`, the one tokio thread of its \
              `DnsServer`), dnsperf's user + system time over its run time. Server CPU µs / \
              query = server CPU time ÷ answered queries: the cost of a query, independent of \
              the rate. Lost = sent − answered within dnsperf's 5 s timeout; lost queries have \
              no latency (the percentiles are of the answered ones). p99 etc. are medians over \
              runs of each run's percentile.\n\n";
        s += &self.per_run();
        s += &self.counters_section();
        s += &self.setup();
        s += &self.caveats();
        s
    }

    fn per_run(&self) -> String {
        let mut t = Table::new(&[
            "run",
            "server",
            "max qps",
            "lost",
            "CPU % srv / dnsperf",
            "µs / query",
            "fixed: p50 / p90 / p99 / p99.9, µs",
            "lost",
            "CPU % srv",
            "µs / query",
            "errors",
        ]);
        let n = self.runs.values().map(Vec::len).max().unwrap_or(0);
        for i in 0..n {
            for srv in Server::ALL {
                let Some(r) = self.runs.get(&srv).and_then(|v| v.get(i)) else {
                    continue;
                };
                let mut cells = vec![(i + 1).to_string(), srv.key().to_string()];
                match &r.max {
                    Some(m) => cells.extend([
                        format!("{:.0}", m.stats.qps),
                        m.stats.lost.to_string(),
                        format!("{:.0} / {:.0}", m.server_cpu_pct, m.client_cpu_pct),
                        format!("{:.1}", m.server_us_per_query()),
                    ]),
                    None => cells.extend([
                        "n/a".to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]),
                }
                match &r.fixed {
                    Some(m) => cells.extend([
                        m.stats.latency.map_or("n/a".into(), |p| {
                            format!("{:.0} / {:.0} / {:.0} / {:.0}", p.p50, p.p90, p.p99, p.p999)
                        }),
                        m.stats.lost.to_string(),
                        format!("{:.0}", m.server_cpu_pct),
                        format!("{:.1}", m.server_us_per_query()),
                    ]),
                    None => cells.extend([
                        "n/a".to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]),
                }
                cells.push(r.errors.join("; "));
                t.row(&cells);
            }
        }
        format!("## Per-run values\n\n{}\n", t.to_markdown())
    }

    fn counters_section(&self) -> String {
        let mut t = Table::new(&["counter", "value"]);
        for (k, v) in self.stats.counts.iter().filter(|(_, v)| **v > 0) {
            t.row(&[k.to_string(), v.to_string()]);
        }
        let forwarded = self.stats.counts.get("forwarded").copied().unwrap_or(0);
        format!(
            "## shoal's counters after all runs\n\n`DnsServer::stats()`, cumulative (the name \
             check, the dnsperf check pass, every run); only non-zero counters. forwarded = \
             {forwarded}{}.\n\n{}\nunbound's RSS after the runs: {}.\n\n",
            if forwarded == 0 {
                " (as it must: every name asked is local)"
            } else {
                " — **should be 0**: some query was not answered from the tables"
            },
            t.to_markdown(),
            self.unbound_rss_kib
                .map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        )
    }

    fn setup(&self) -> String {
        let c = self.cfg;
        let q = "QUERIES";
        let cmd = |srv: Server, rate: Option<u64>, verbose: bool| {
            dnsperf::argv(
                srv.addr(),
                std::path::Path::new(q),
                c.dnsperf_t,
                rate,
                verbose,
            )
            .join(" ")
        };
        let mut s = String::from("## Setup and commands\n\n");
        s += &format!(
            "One testbed namespace (`tests::Testbed`, `st<pid>_<n>-dns`), loopback only, no \
             other interface: all traffic is on 127.0.0.0/8 inside it.\n\n\
             - unbound on {}:53, started as `unbound -d -c unbound.conf` (below; the \
             configuration of `shared/anchors/3_dns.sh` with `num-threads: 1`), with {} \
             `local-data: \"svc-NNNN.{}. 60 IN A 10.200.x.y\"` records, `svc-0000` → 10.200.0.1 \
             … `svc-0999` → 10.200.3.250.\n\
             - shoal: `dns::DnsServer::start` in this process with no upstreams (nothing can be \
             forwarded), started on a thread inside the namespace so its serving thread lives \
             there; `Update::SetNetwork {{ network: \"{}\" }}`, then per name \
             `Update::SetService` with `name: \"svc-NNNN\"`, `mode: Vip`, the same VIP and one \
             enabled task (10.201.x.y; a VIP without an enabled task does not resolve); one \
             endpoint on `ListenSockets::bind(127.0.0.11:53)` with `Scope {{ networks: \
             [\"{}\"], user_ndots: false }}`. `svc-0000.{}` is service `svc-0000` on network \
             `{}` as Docker's lookup order has it.\n\
             - The query file `QUERIES` (both servers get the same): the {} names, one `<name> \
             A` a line, in a fixed shuffled order (splitmix64 seeded 42; the anchor shuffled \
             with Python's `random.seed(42)`, so the order differs from it). dnsperf loops over \
             it.\n\
             - Checks before measuring (abort otherwise): `dig @ADDR +short -f` of all names on \
             both servers, every answer its VIP; then `dnsperf -s ADDR -d QUERIES -n 1 -l 10`, \
             all answered, 100 % NOERROR.\n\n",
            servers::UNBOUND_ADDR,
            servers::RECORDS,
            servers::NETWORK,
            servers::NETWORK,
            servers::NETWORK,
            servers::NETWORK,
            servers::NETWORK,
            servers::RECORDS,
        );
        s += "Per run and server (each under `timeout -k 5 <DNSPERF_T + 30>`, inside the \
              namespace):\n\n```sh\n";
        for srv in Server::ALL {
            s += &format!("# {}\n", srv.key());
            s += &format!("{}\n", cmd(srv, None, false));
            s += &format!("{}\n", cmd(srv, Some(c.fixed_qps), true));
        }
        s += "```\n\nThen once per server `dnsperf -s ADDR -d QUERIES -l DNSPERF_T -Q <80 % of \
              that server's median max-rate qps>`.\n\n";
        s += "unbound.conf (`include:` holds the records; paths are the run's temporary \
              folder):\n\n```\n";
        s += self.unbound_conf;
        s += "```\n\nRun it again with:\n\n```sh\ncargo build --release -p bench --bin dns\n\
              sudo target/release/dns                                # RUNS=3 DNSPERF_T=20 FIXED_QPS=10000\n\
              sudo RUNS=5 DNSPERF_T=20 target/release/dns            # the anchor's repetitions\n\
              ```\n\n";
        s
    }

    fn caveats(&self) -> String {
        "## Caveats\n\n\
         - 2 shared vCPUs: dnsperf (~1 core at max rate), the server and the kernel's UDP work \
         share them, so max-rate qps is a joint limit of the machine, not of the server alone \
         (`shared/anchors/RESULTS.md` §3: unbound 1 thread, unbound 2 threads and dnsmasq are \
         indistinguishable at max rate there). Server CPU µs / query, at a fixed rate both \
         sustain, is the fairer comparison of the servers' own cost.\n\
         - Noisy VM, shared with other work (builds, other benchmarks; see the load above): \
         run-to-run spread of 10–40 % at max rate is normal here (the anchor's own runs spread \
         40k–77k qps). Compare the two servers within this run, not with figures of other \
         sittings. With RUNS=3 the median is the middle run.\n\
         - Lost queries: dnsperf keeps at most 100 queries outstanding (its default, as in the \
         anchor), also with `-Q`. A server that falls behind makes dnsperf send more slowly \
         (the `-Q` rate is a ceiling, not a promise; see \"qps reached\"), so 100 queries in \
         flight never overflow a socket buffer and \"0 lost\" at 80 % says the server answered \
         everything it was sent at the rate reached, not that it would keep up with an open-loop \
         sender at that rate. A query counts as lost after dnsperf's 5 s timeout.\n\
         - The anchor figures in `shared/anchors/RESULTS.md` §3 are 5 runs of 20 s; with \
         RUNS=3 this is shorter. Latency percentiles at the fixed rate include dnsperf's own \
         scheduling delays, equally for both servers.\n"
            .to_string()
    }

    fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("benchmark".into(), json!("dns"));
        m.insert("date".into(), json!(self.date));
        m.insert("machine".into(), self.machine.to_json());
        m.insert("revision".into(), json!(self.revision));
        m.insert("conditions".into(), json!(self.conditions));
        m.insert("runs".into(), json!(self.cfg.runs));
        m.insert("dnsperf_t_s".into(), json!(self.cfg.dnsperf_t));
        m.insert("fixed_qps".into(), json!(self.cfg.fixed_qps));
        m.insert("records".into(), json!(servers::RECORDS));
        m.insert("measured_s".into(), json!(self.measured_s));
        m.insert("total_s".into(), json!(self.total_s));
        for srv in Server::ALL {
            let k = srv.key();
            m.insert(format!("{k}_qps"), num(self.med(srv, false, qps)));
            m.insert(
                format!("{k}_p50_ms"),
                num(self.med(srv, true, p50) / 1000.0),
            );
            m.insert(
                format!("{k}_p99_ms"),
                num(self.med(srv, true, p99) / 1000.0),
            );
            m.insert(
                format!("{k}_cpu_us_per_query_fixed"),
                num(self.med(srv, true, us_per_query)),
            );
            m.insert(
                format!("{k}_cpu_us_per_query_max"),
                num(self.med(srv, false, us_per_query)),
            );
            m.insert(format!("{k}_lost_at_80pct"), json!(self.lost_at_80(srv)));
            m.insert(
                format!("{k}_rate_at_80pct"),
                json!(self.at80.get(&srv).map(|a| a.rate)),
            );
        }
        m.insert("qps_ratio".into(), num(self.ratio(false, qps)));
        m.insert("p50_ratio".into(), num(self.ratio(true, p50)));
        m.insert("p99_ratio".into(), num(self.ratio(true, p99)));
        m.insert(
            "cpu_per_query_ratio_fixed".into(),
            num(self.ratio(true, us_per_query)),
        );
        m.insert(
            "target_no_loss_at_80pct_of_shoal_peak".into(),
            json!({"met": self.target_met(), "lost": self.lost_at_80(Server::Shoal)}),
        );
        let mut per = Map::new();
        for srv in Server::ALL {
            let sum = |fixed, f: Fig| {
                Summary::of(&self.values(srv, fixed, f)).map_or(Value::Null, |s| s.to_json())
            };
            let runs: Vec<Value> = self.runs.get(&srv).map_or_else(Vec::new, |v| {
                v.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        json!({
                            "run": i + 1,
                            "max_rate": r.max.as_ref().map(measured_json),
                            "fixed_rate": r.fixed.as_ref().map(measured_json),
                            "errors": r.errors,
                        })
                    })
                    .collect()
            });
            let at80 = self.at80.get(&srv).map(|a| {
                json!({
                    "rate": a.rate,
                    "measured": a.measured.as_ref().map(measured_json),
                    "error": a.error,
                })
            });
            per.insert(
                srv.key().into(),
                json!({
                    "label": srv.label(),
                    "addr": srv.addr().to_string(),
                    "max_rate": {
                        "qps": sum(false, qps),
                        "lost": sum(false, lost),
                        "server_cpu_pct": sum(false, server_cpu),
                        "dnsperf_cpu_pct": sum(false, client_cpu),
                        "server_cpu_us_per_query": sum(false, us_per_query),
                    },
                    "fixed_rate": {
                        "p50_us": sum(true, p50),
                        "p90_us": sum(true, p90),
                        "p99_us": sum(true, p99),
                        "p999_us": sum(true, p999),
                        "lost": sum(true, lost),
                        "server_cpu_pct": sum(true, server_cpu),
                        "server_cpu_us_per_query": sum(true, us_per_query),
                    },
                    "at_80pct": at80,
                    "runs": runs,
                }),
            );
        }
        m.insert("servers".into(), Value::Object(per));
        m.insert("shoal_stats".into(), json!(self.stats.counts));
        m.insert("unbound_rss_kib".into(), json!(self.unbound_rss_kib));
        Value::Object(m)
    }

    /// Writes `dns.md` and `dns.json` into the output folder; returns their paths.
    pub(super) fn write(&self) -> Result<(PathBuf, PathBuf), String> {
        let dir = &self.cfg.out_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let md = dir.join("dns.md");
        let js = dir.join("dns.json");
        std::fs::write(&md, self.markdown())
            .map_err(|e| format!("cannot write {}: {e}", md.display()))?;
        let text = serde_json::to_string_pretty(&self.json()).map_err(|e| e.to_string())?;
        std::fs::write(&js, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", js.display()))?;
        Ok((md, js))
    }
}

/// What to say beside a run at 80 %: the share of the requested rate dnsperf reached when it
/// fell short, and response codes other than NOERROR.
fn at80_notes(rate: u64, m: &Measured) -> String {
    let mut notes = Vec::new();
    let reached = m.stats.qps / rate as f64 * 100.0;
    if reached < 99.0 {
        notes.push(format!("reached {reached:.0} % of the requested rate"));
    }
    if m.stats.noerror_pct < 100.0 {
        notes.push(format!("response codes {}", m.stats.rcodes));
    }
    notes.join("; ")
}

/// A number, or null when it is not one (NaN, infinite).
fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn measured_json(m: &Measured) -> Value {
    let st = &m.stats;
    json!({
        "qps": num(st.qps),
        "sent": st.sent,
        "completed": st.completed,
        "lost": st.lost,
        "response_codes": st.rcodes,
        "noerror_pct": num(st.noerror_pct),
        "run_s": num(st.run_s),
        "avg_latency_us": num(st.avg_latency_us),
        "latency_us": st.latency.map(|p| json!({
            "p50": num(p.p50), "p90": num(p.p90), "p99": num(p.p99), "p999": num(p.p999),
            "answers": p.n,
        })),
        "server_cpu_pct": num(m.server_cpu_pct),
        "dnsperf_cpu_pct": num(m.client_cpu_pct),
        "server_cpu_us_per_query": num(m.server_us_per_query()),
        "wall_s": num(m.wall_s),
    })
}
