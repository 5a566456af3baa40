//! The figures of a run (medians [min..max] over the runs per N and implementation, ratios
//! shoal / Serf) and the files: `gossip.md` and `gossip.json`. The JSON's top level holds the
//! issue's keys `serf_join_s`, `shoal_join_s`, `serf_fail_s`, `shoal_fail_s` (medians at
//! N = 32, or at the largest N measured when 32 was not; `key_n` says which), per-N details
//! under `sizes`, and the simulated curve under `simulated` (`super::simulated`).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use super::scenario::{PORT, RunResult};
use super::shoal::Shoal;
use super::{Config, Impl};
use crate::{Machine, Summary, Table};

/// The N the headline keys are given at.
const KEY_N: usize = 32;

/// The anchor's own figures (`shared/anchors/RESULTS.md` §4: 20 runs per N, another day).
const ANCHOR_NOTE: &str = "The anchor script itself (`4_serf.sh`, 20 runs per N) measured join \
seen by all 0.24 s (N=8) and 0.47 s (N=32; one run of 20 at 41.5 s, when one agent missed the \
join gossip and learned it by push-pull), SIGKILL → failed at all 6.1 s (N=8, min 5.0) and \
8.0 s (N=32, min 7.3), first \"Suspect\" log 2.0 s / 1.6 s, `serf join` returning in 0.016 s, \
RSS per agent 11.8 MiB (N=8) and 13.8 MiB (N=32) (`RESULTS.md` §4). The ratios here are \
against Serf in this run.";

/// Everything a report is made of.
#[derive(Debug)]
pub(super) struct Report<'a> {
    pub(super) cfg: &'a Config,
    pub(super) machine: &'a Machine,
    pub(super) date: &'a str,
    pub(super) revision: &'a str,
    pub(super) conditions: &'a [String],
    pub(super) serf_version: &'a str,
    /// The binary measured, or why shoal was not measured.
    pub(super) shoal: Result<&'a Shoal, &'a String>,
    pub(super) results: &'a [RunResult],
    pub(super) measured_s: f64,
    pub(super) total_s: f64,
}

/// One figure of a run.
#[derive(Clone, Copy, Debug)]
struct Figure {
    key: &'static str,
    label: &'static str,
    decimals: usize,
    /// Only Serf has it (its CLI).
    serf_only: bool,
    of: fn(&RunResult) -> Option<f64>,
}

const JOIN_ALL: Figure = Figure {
    key: "join_s",
    label: "**join seen by all N**, s",
    decimals: 3,
    serf_only: false,
    of: |r| r.join.map(|s| s.all),
};

const FAIL_ALL: Figure = Figure {
    key: "fail_s",
    label: "**SIGKILL → failed at all N others**, s",
    decimals: 2,
    serf_only: false,
    of: |r| r.fail.map(|s| s.all),
};

const RSS: Figure = Figure {
    key: "rss_mib",
    label: "RSS per agent (median of agents), MiB",
    decimals: 1,
    serf_only: false,
    of: |r| r.rss_median_kib().map(|k| k / 1024.0),
};

/// Every figure, in the order of the tables.
const FIGURES: [Figure; 13] = [
    JOIN_ALL,
    Figure {
        key: "join_median_s",
        label: "join, median agent, s",
        decimals: 3,
        serf_only: false,
        of: |r| r.join.map(|s| s.median),
    },
    Figure {
        key: "join_first_s",
        label: "join, first agent, s",
        decimals: 3,
        serf_only: false,
        of: |r| r.join.map(|s| s.first),
    },
    Figure {
        key: "new_sees_target_s",
        label: "new agent logs its target joined, s",
        decimals: 3,
        serf_only: false,
        of: |r| r.new_sees_target_s,
    },
    Figure {
        key: "join_cmd_returned_s",
        label: "`serf join` returns, s",
        decimals: 3,
        serf_only: true,
        of: |r| r.join_cmd_s,
    },
    FAIL_ALL,
    Figure {
        key: "fail_median_s",
        label: "failed, median agent, s",
        decimals: 2,
        serf_only: false,
        of: |r| r.fail.map(|s| s.median),
    },
    Figure {
        key: "fail_first_s",
        label: "failed, first agent, s",
        decimals: 2,
        serf_only: false,
        of: |r| r.fail.map(|s| s.first),
    },
    Figure {
        key: "first_suspect_s",
        label: "first \"suspect\" line, s",
        decimals: 2,
        serf_only: false,
        of: |r| r.first_suspect_s,
    },
    Figure {
        key: "cluster_converged_s",
        label: "cluster of N formed (all saw all), s",
        decimals: 2,
        serf_only: false,
        of: |r| r.converged_s,
    },
    RSS,
    Figure {
        key: "rss_max_mib",
        label: "RSS, largest agent, MiB",
        decimals: 1,
        serf_only: false,
        of: |r| r.rss_max_kib().map(|k| k / 1024.0),
    },
    Figure {
        key: "cli_roundtrip_s",
        label: "`serf members` round trip, s",
        decimals: 3,
        serf_only: true,
        of: |r| r.cli_roundtrip_s,
    },
];

fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

fn fmt_opt(x: Option<f64>, d: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.d$}"))
}

impl Report<'_> {
    /// The runs of one N and implementation, in run order.
    fn runs(&self, n: usize, imp: Impl) -> Vec<&RunResult> {
        self.results
            .iter()
            .filter(|r| r.n == n && r.imp == imp)
            .collect()
    }

    fn summary_of(&self, n: usize, imp: Impl, f: Figure) -> Option<Summary> {
        let v: Vec<f64> = self.runs(n, imp).iter().filter_map(|r| (f.of)(r)).collect();
        Summary::of(&v)
    }

    fn med(&self, n: usize, imp: Impl, f: Figure) -> Option<f64> {
        self.summary_of(n, imp, f).map(|s| s.median)
    }

    /// shoal's median ÷ Serf's.
    fn ratio(&self, n: usize, f: Figure) -> Option<f64> {
        Some(self.med(n, Impl::Shoal, f)? / self.med(n, Impl::Serf, f)?)
    }

    /// N = 32 when measured, else the largest N.
    fn key_n(&self) -> usize {
        if self.cfg.sizes.contains(&KEY_N) {
            KEY_N
        } else {
            self.cfg.sizes.iter().copied().max().unwrap_or(KEY_N)
        }
    }

    /// The N of the runs, in the order asked, without repeats.
    fn sizes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        for &n in &self.cfg.sizes {
            if !v.contains(&n) {
                v.push(n);
            }
        }
        v
    }

    fn cell(&self, n: usize, imp: Impl, f: Figure) -> String {
        if f.serf_only && imp != Impl::Serf {
            return String::new();
        }
        self.summary_of(n, imp, f)
            .map_or("n/a".into(), |s| s.fmt(f.decimals))
    }

    /// Writes `gossip.md` and `gossip.json`.
    pub(super) fn write(&self) -> Result<(PathBuf, PathBuf), String> {
        let dir = &self.cfg.out_dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let simulated = (!self.cfg.skip_simulated).then(|| super::simulated::section(dir));
        let md = dir.join("gossip.md");
        let mut text = self.markdown();
        if let Some((section, _)) = &simulated {
            text += "\n";
            text += section;
        }
        std::fs::write(&md, text).map_err(|e| format!("write {}: {e}", md.display()))?;
        let mut value = self.json();
        if let (Some((_, sim)), Value::Object(m)) = (simulated, &mut value) {
            m.insert("simulated".into(), sim);
        }
        let js = dir.join("gossip.json");
        let text = serde_json::to_string_pretty(&value).map_err(|e| format!("json: {e}"))?;
        std::fs::write(&js, text + "\n").map_err(|e| format!("write {}: {e}", js.display()))?;
        Ok((md, js))
    }

    /// A few lines for the terminal.
    pub(super) fn summary(&self) -> String {
        let mut s = String::new();
        for n in self.sizes() {
            let _ = write!(s, "N={n}:");
            for f in [JOIN_ALL, FAIL_ALL, RSS] {
                let _ = write!(
                    s,
                    " {} Serf {} shoal {} (×{});",
                    f.key,
                    self.cell(n, Impl::Serf, f),
                    self.cell(n, Impl::Shoal, f),
                    fmt_opt(self.ratio(n, f), 2)
                );
            }
            s.push('\n');
        }
        if let Err(e) = self.shoal {
            let _ = writeln!(s, "shoal not measured: {e}");
        }
        s.trim_end().to_string()
    }

    fn markdown(&self) -> String {
        let c = self.cfg;
        let mut md = String::from(
            "# Gossip: shoal's membership vs. HashiCorp Serf (`bench/src/bin/gossip.rs`)\n\n",
        );
        let _ = writeln!(
            md,
            "Measured {} in one run of `target/release/gossip` ({:.0} s for the measured runs, \
             {:.0} s in all). SIZES={:?}, RUNS={}, SETTLE={} s; the implementations are \
             interleaved (Serf run 1, shoal run 1, Serf run 2, ...), each run a fresh cluster in \
             a fresh namespace. Median [min..max] over the runs; lower is better everywhere.\n",
            self.date,
            self.measured_s,
            self.total_s,
            c.sizes,
            c.runs,
            c.settle.as_secs()
        );
        let m = self.machine;
        let _ = writeln!(
            md,
            "Machine: nproc {}, kernel {}, CPU {}, {} MiB.\n",
            m.nproc, m.kernel, m.cpu, m.mem_mib
        );
        let _ = writeln!(md, "Serf: `{}`.\n", self.serf_version);
        match self.shoal {
            Ok(s) => {
                let _ = writeln!(
                    md,
                    "shoal: `{}` ({}), binary written {}{}.\n",
                    s.bin.display(),
                    if s.version.is_empty() {
                        "no version"
                    } else {
                        &s.version
                    },
                    s.built,
                    if s.build_note.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", s.build_note)
                    }
                );
            }
            Err(e) => {
                let _ = writeln!(
                    md,
                    "**shoal was not measured**: {}. Only the Serf side below.\n",
                    e.trim_end_matches('.')
                );
            }
        }
        let _ = writeln!(md, "Code measured: {}.\n", self.revision);
        let _ = writeln!(
            md,
            "Load from others (the machine is shared; a build or another benchmark at the same \
             time slows every agent): {}.\n",
            self.conditions.join("; ")
        );
        md += &self.summary_section();
        md += &self.scenario_section();
        for n in self.sizes() {
            md += &self.size_section(n);
        }
        md += &self.per_run();
        md += &self.failures();
        let _ = writeln!(md, "## The anchor's own figures\n\n{ANCHOR_NOTE}\n");
        md += &self.caveats();
        md
    }

    fn summary_section(&self) -> String {
        let mut s = String::from("## Summary\n\n");
        let mut t = Table::new(&["N", "figure", "Serf", "shoal", "shoal / Serf"]);
        for n in self.sizes() {
            for f in [JOIN_ALL, FAIL_ALL, RSS] {
                t.row(&[
                    n.to_string(),
                    f.label.to_string(),
                    self.cell(n, Impl::Serf, f),
                    self.cell(n, Impl::Shoal, f),
                    fmt_opt(self.ratio(n, f), 2),
                ]);
            }
        }
        s += &t.to_markdown();
        s += "\nJoin: for Serf, from issuing `serf join` on the running new agent (its CLI \
              round trip, process start + RPC, ~16 ms, is included, as in the anchor); for \
              shoal, from starting the new agent's process with `--join` (process start + \
              join, the counterpart of Serf's CLI round trip). Ratios are of medians.\n\n";
        s
    }

    fn scenario_section(&self) -> String {
        let c = self.cfg;
        format!(
            "## Scenario\n\n\
             The anchor's (`shared/anchors/serf_bench.py`, `RESULTS.md` §4), for both \
             implementations. Per run, in a new namespace `bgos-<pid>-<k>` with only loopback \
             (up):\n\n\
             1. agent *i* (`n<i>`) binds 127.0.0.(10+*i*):{PORT}, started with `ip netns exec`; \
             `n0` first, the others once `n0` listens, all joining `n0`; wait until every agent \
             has logged every other one joined (at most {} s); after {} s, each agent's VmRSS;\n\
             2. the new agent `n<N>` (127.0.0.(10+N)) joins through `n<N/2>`; **join** = until \
             all N existing agents logged it joined (at most {} s);\n\
             3. after {} s, SIGKILL `n1` (by its pid); **fail** = until all N others, the new \
             one included, logged it failed (at most {} s);\n\
             4. every agent is SIGKILLed by pid, the namespace deleted; 1 s pause.\n\n\
             Times are taken when each agent's output line arrives on this program's pipe \
             (stdout and stderr of the agent, one reader thread per agent, stamped with a \
             monotonic clock), the first such line per agent.\n\n\
             Serf (default LAN profile, no encryption):\n\n```\n\
             serf agent -node nI -bind 127.0.0.X:{PORT} -rpc-addr 127.0.0.X:7373 -log-level info \
             [-join 127.0.0.10:{PORT}]\n\
             serf join -rpc-addr NEW:7373 TARGET:{PORT}     # on the new agent, started without \
             -join, once it runs (+0.5 s)\n\
             # join seen: `serf: EventMemberJoin: <name> `; failure: `serf: EventMemberFailed: \
             <name> `;\n\
             # suspect: `memberlist: Suspect <name> has failed`\n```\n\n\
             shoal (its defaults, no encryption):\n\n```\n\
             shoal gossip --name nI --bind 127.0.0.X:{PORT} [--join 127.0.0.10:{PORT}]\n\
             shoal gossip --name nN --bind NEW:{PORT} --join TARGET:{PORT}    # the new agent\n\
             # join seen: `member joined <name> IP:PORT`; failure: `member failed <name>`;\n\
             # suspect: `member suspected <name>`\n```\n\n\
             Run it again with:\n\n```sh\n\
             cargo build --release -p bench --bin gossip\n\
             sudo target/release/gossip                    # SIZES=\"8 32\" RUNS=5, builds shoal first\n\
             sudo RUNS=1 SIZES=8 target/release/gossip     # a quick check\n\
             sudo SHOAL_BUILD=0 target/release/gossip      # measure target/release/shoal as it is\n\
             sudo IMPLS=shoal SIM=0 target/release/gossip  # shoal alone, no simulated curve\n\
             ```\n\n",
            c.converge_t,
            c.settle.as_secs(),
            c.join_t,
            c.settle.as_secs(),
            c.fail_t
        )
    }

    fn size_section(&self, n: usize) -> String {
        let mut t = Table::new(&["figure", "Serf", "shoal", "shoal / Serf"]);
        for f in FIGURES {
            t.row(&[
                f.label.to_string(),
                self.cell(n, Impl::Serf, f),
                self.cell(n, Impl::Shoal, f),
                if f.serf_only {
                    String::new()
                } else {
                    fmt_opt(self.ratio(n, f), 2)
                },
            ]);
        }
        let counts = |imp: Impl| {
            let runs = self.runs(n, imp);
            if runs.is_empty() {
                return format!("{} not measured", imp.label());
            }
            let ok = runs.iter().filter(|r| r.error.is_none()).count();
            let sus: Vec<String> = runs
                .iter()
                .filter(|r| r.fail.is_some())
                .map(|r| r.suspect_agents.to_string())
                .collect();
            format!(
                "{} {ok} of {} runs complete, agents logging \"suspect\" per run: [{}]",
                imp.label(),
                runs.len(),
                sus.join(", ")
            )
        };
        format!(
            "## N = {n}\n\n{}\n{}; {}.\n\n",
            t.to_markdown(),
            counts(Impl::Serf),
            counts(Impl::Shoal)
        )
    }

    fn per_run(&self) -> String {
        let mut t = Table::new(&[
            "N",
            "run",
            "impl",
            "formed, s",
            "RSS median / max, MiB",
            "join all / median / first, s",
            "`serf join` returned, s",
            "fail all / median / first, s",
            "first suspect, s (agents)",
            "notes",
        ]);
        for r in self.results {
            let mib = |k: Option<f64>| fmt_opt(k.map(|k| k / 1024.0), 1);
            let mut notes = Vec::new();
            if !r.died.is_empty() {
                notes.push(format!("exited early: {}", r.died.join(" ")));
            }
            if let Some(e) = &r.error {
                notes.push(format!("FAILED: {}", e.lines().next().unwrap_or_default()));
            }
            t.row(&[
                r.n.to_string(),
                r.run.to_string(),
                r.imp.key().to_string(),
                fmt_opt(r.converged_s, 2),
                format!("{} / {}", mib(r.rss_median_kib()), mib(r.rss_max_kib())),
                r.join.map_or("–".into(), |s| {
                    format!("{:.3} / {:.3} / {:.3}", s.all, s.median, s.first)
                }),
                fmt_opt(r.join_cmd_s, 3),
                r.fail.map_or("–".into(), |s| {
                    format!("{:.2} / {:.2} / {:.2}", s.all, s.median, s.first)
                }),
                r.first_suspect_s
                    .map_or("–".into(), |v| format!("{v:.2} ({})", r.suspect_agents)),
                notes.join("; "),
            ]);
        }
        format!("## Per-run values\n\n{}\n", t.to_markdown())
    }

    fn failures(&self) -> String {
        let failed: Vec<&RunResult> = self.results.iter().filter(|r| r.error.is_some()).collect();
        if failed.is_empty() {
            return String::new();
        }
        let mut s = String::from("## Failed runs\n\n");
        for r in failed {
            let _ = writeln!(
                s,
                "N={} run {} {}:\n\n```\n{}\n```\n",
                r.n,
                r.run,
                r.imp.key(),
                r.error.as_deref().unwrap_or_default().trim_end()
            );
        }
        s
    }

    fn caveats(&self) -> String {
        "## Caveats\n\n\
         - Join start differs by necessity: Serf's anchor issues `serf join` on an agent \
         already running, so its time includes the CLI's process start and RPC (~16 ms; \
         see the `serf members` round trip above) but not the agent's start; shoal's new \
         agent is started with `--join`, so its time includes the process start and the \
         join itself. Both are \"from the command until everyone knows\".\n\
         - \"Suspect\" lines do not mean the same: memberlist logs `Suspect <name> has failed` \
         only on the agent whose own probe timed out; shoal prints `member suspected` wherever \
         the suspicion is learned. The first suspect time compares; the count of agents does \
         not.\n\
         - Gossip is probabilistic: an agent that misses a gossip wave learns the news only at \
         the next push-pull (30 s in Serf's LAN profile), which shows up as a single slow run \
         (the anchor had one 41.5 s join in 20 runs at N=32). Medians hide that; the [min..max] \
         and the per-run table show it. A few runs cannot tell a tail. shoal's joins do not \
         wait on gossip alone: a push/pull that introduces members tells them directly that \
         the node is alive (up to 32 of them).\n\
         - Failure detection is dominated by the protocol's timers (Serf LAN: probe every 1 s, \
         500 ms probe timeout, suspicion timeout 4 × max(1, log10 N) s at its floor), and \
         shoal keeps them all. It differs in two ways. (1) The SIGKILLed agent's host is alive, \
         so a probe of it comes back as an ICMP port unreachable; shoal takes that as the \
         direct probe's answer and asks the relays at once, its relays nack at once for the \
         same reason, and the probe concludes when every relay has nacked: the first suspicion \
         comes within milliseconds of the first probe of the victim instead of a probe \
         interval later. A host that goes silent (power, cable) sends no ICMP, and there shoal \
         waits the interval as memberlist does: this scenario measures a crashed process, \
         not a lost host. (2) A member that hears of a new suspicion probes the suspect next \
         (about 6 members do, whatever N), so the confirmations that bring the suspicion \
         timeout to its floor arrive within a probe interval; memberlist waits for its rounds \
         to reach the suspect, which makes its slow runs.\n\
         - The rest is luck in both: which probe round reaches the victim first.\n\
         - Up to 33 agents share the machine's CPUs with this program and whatever else runs \
         (see the load above); a busy machine delays log lines and probes alike.\n\
         - RSS is VmRSS of each agent process after the cluster formed and settled; Serf is a \
         Go program with its RPC server and event machinery, shoal's gossip command a Rust \
         process.\n"
            .to_string()
    }

    /// The figures of one N and implementation, as JSON.
    fn side_json(&self, n: usize, imp: Impl) -> Value {
        let runs = self.runs(n, imp);
        let mut m = Map::new();
        m.insert("runs".into(), json!(runs.len()));
        m.insert(
            "complete".into(),
            json!(runs.iter().filter(|r| r.error.is_none()).count()),
        );
        for f in FIGURES {
            if f.serf_only && imp != Impl::Serf {
                continue;
            }
            m.insert(
                f.key.into(),
                self.summary_of(n, imp, f)
                    .map_or(Value::Null, |s| s.to_json()),
            );
        }
        m.insert(
            "per_run".into(),
            Value::Array(runs.iter().map(|r| run_json(r)).collect()),
        );
        Value::Object(m)
    }

    fn json(&self) -> Value {
        let k = self.key_n();
        let mut m = Map::new();
        m.insert("benchmark".into(), json!("gossip"));
        m.insert("date".into(), json!(self.date));
        m.insert("machine".into(), self.machine.to_json());
        m.insert("revision".into(), json!(self.revision));
        m.insert("conditions".into(), json!(self.conditions));
        m.insert("sizes_run".into(), json!(self.cfg.sizes));
        m.insert("runs".into(), json!(self.cfg.runs));
        m.insert("settle_s".into(), json!(self.cfg.settle.as_secs()));
        m.insert("measured_s".into(), num(self.measured_s));
        m.insert("total_s".into(), num(self.total_s));
        m.insert("key_n".into(), json!(k));
        m.insert("serf_join_s".into(), opt(self.med(k, Impl::Serf, JOIN_ALL)));
        m.insert(
            "shoal_join_s".into(),
            opt(self.med(k, Impl::Shoal, JOIN_ALL)),
        );
        m.insert("serf_fail_s".into(), opt(self.med(k, Impl::Serf, FAIL_ALL)));
        m.insert(
            "shoal_fail_s".into(),
            opt(self.med(k, Impl::Shoal, FAIL_ALL)),
        );
        m.insert("join_ratio".into(), opt(self.ratio(k, JOIN_ALL)));
        m.insert("fail_ratio".into(), opt(self.ratio(k, FAIL_ALL)));
        m.insert("serf_version".into(), json!(self.serf_version));
        m.insert(
            "shoal".into(),
            match self.shoal {
                Ok(s) => json!({
                    "measured": true,
                    "bin": s.bin.display().to_string(),
                    "version": s.version,
                    "built": s.built,
                    "build_note": s.build_note,
                }),
                Err(e) => json!({"measured": false, "error": e}),
            },
        );
        let mut sizes = Map::new();
        for n in self.sizes() {
            let mut ratios = Map::new();
            for f in FIGURES.iter().filter(|f| !f.serf_only) {
                ratios.insert(f.key.into(), opt(self.ratio(n, *f)));
            }
            sizes.insert(
                n.to_string(),
                json!({
                    "serf": self.side_json(n, Impl::Serf),
                    "shoal": self.side_json(n, Impl::Shoal),
                    "shoal_over_serf": ratios,
                }),
            );
        }
        m.insert("sizes".into(), Value::Object(sizes));
        m.insert(
            "anchor".into(),
            json!({
                "source": "shared/anchors/RESULTS.md §4 (20 runs per N)",
                "8": {"join_s": 0.24, "fail_s": 6.1, "rss_mib": 11.8},
                "32": {"join_s": 0.47, "fail_s": 8.0, "rss_mib": 13.8},
            }),
        );
        Value::Object(m)
    }
}

fn run_json(r: &RunResult) -> Value {
    let spread = |s: Option<super::scenario::Spread>| {
        s.map_or(
            Value::Null,
            |s| json!({"all": num(s.all), "median": num(s.median), "first": num(s.first)}),
        )
    };
    json!({
        "run": r.run,
        "cluster_converged_s": opt(r.converged_s),
        "rss_kib": r.rss_kib,
        "cli_roundtrip_s": opt(r.cli_roundtrip_s),
        "join_cmd_returned_s": opt(r.join_cmd_s),
        "new_sees_target_s": opt(r.new_sees_target_s),
        "join_s": spread(r.join),
        "fail_s": spread(r.fail),
        "first_suspect_s": opt(r.first_suspect_s),
        "suspect_agents": r.suspect_agents,
        "exited_early": r.died,
        "error": r.error,
    })
}
