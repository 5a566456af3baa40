//! The figures of a run (medians, ratios to HAProxy, per-backend shares, targets) and the
//! files: `mesh.md` ([`markdown`]), `mesh.json` ([`json`]), `mesh.png` ([`plot`]).

mod json;
mod markdown;
mod plot;

use std::collections::BTreeMap;
use std::path::PathBuf;

use dataplane::balance::Algorithm;

use super::disruption::{Computed, EndToEnd};
use super::lab::{SERVICE_TASKS, TASKS, Target};
use super::{ALGORITHMS, Cell, Config, Counters, KEY_CONC, balance_of};
use crate::{Machine, Summary};

/// Everything a report is made of.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub cfg: &'a Config,
    pub machine: &'a Machine,
    pub date: &'a str,
    pub revision: &'a str,
    pub conditions: &'a [String],
    pub cells: &'a [Cell],
    pub end_to_end: &'a EndToEnd,
    pub computed: &'a Computed,
    pub counters: &'a Counters,
    pub haproxy_cfg: &'a str,
    pub haproxy_version: String,
    pub measured_s: f64,
    pub total_s: f64,
}

/// The figures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    pub haproxy_cps: Option<f64>,
    pub vip_cps: Option<f64>,
    pub published_cps: Option<f64>,
    pub direct_cps: Option<f64>,
    pub rr_max_over_mean: Option<f64>,
    pub rr_cv: Option<f64>,
    pub maglev_disruption: f64,
}

impl Key {
    pub(crate) fn over_haproxy(&self, x: Option<f64>) -> Option<f64> {
        Some(x? / self.haproxy_cps?)
    }
}

/// One row of the comparison of distributions: a target and an algorithm at one concurrency.
#[derive(Clone, Debug)]
pub(crate) struct Distribution {
    pub target: Target,
    pub algorithm: Algorithm,
    pub label: String,
    /// Replies per task, summed over the runs.
    pub counts: Vec<(String, usize)>,
}

impl Distribution {
    pub(crate) fn total(&self) -> usize {
        self.counts.iter().map(|(_, c)| c).sum()
    }

    pub(crate) fn shares(&self) -> Vec<f64> {
        let total = self.total().max(1) as f64;
        self.counts.iter().map(|(_, c)| *c as f64 / total).collect()
    }
}

/// `round_robin`, as serde names the algorithm.
pub(crate) fn alg_key(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "round_robin",
        Algorithm::LeastConnections => "least_connections",
        Algorithm::Maglev => "maglev",
        Algorithm::TwoChoices => "two_choices",
    }
}

pub(crate) fn alg_label(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "round robin",
        Algorithm::LeastConnections => "least connections",
        Algorithm::Maglev => "Maglev",
        Algorithm::TwoChoices => "two choices",
    }
}

impl Report<'_> {
    /// The cells of one target, concurrency and algorithm, in run order.
    pub(crate) fn select(&self, target: Target, conc: usize, alg: Algorithm) -> Vec<&Cell> {
        self.cells
            .iter()
            .filter(|c| c.target == target && c.conc == conc && c.algorithm == alg)
            .collect()
    }

    /// The summary of `f` over cells.
    pub(crate) fn summary_of(cells: &[&Cell], f: impl Fn(&Cell) -> f64) -> Option<Summary> {
        Summary::of(&cells.iter().map(|c| f(c)).collect::<Vec<_>>())
    }

    fn median_cps(&self, target: Target) -> Option<f64> {
        Self::summary_of(&self.select(target, KEY_CONC, Algorithm::RoundRobin), |c| {
            c.cps
        })
        .map(|s| s.median)
    }

    pub(crate) fn key(&self) -> Key {
        let rr = self.select(Target::Vip, KEY_CONC, Algorithm::RoundRobin);
        Key {
            haproxy_cps: self.median_cps(Target::Haproxy),
            vip_cps: self.median_cps(Target::Vip),
            published_cps: self.median_cps(Target::Published),
            direct_cps: self.median_cps(Target::Direct),
            rr_max_over_mean: Self::summary_of(&rr, |c| c.balance().0).map(|s| s.median),
            rr_cv: Self::summary_of(&rr, |c| c.balance().1).map(|s| s.median),
            maglev_disruption: self.end_to_end.fraction(),
        }
    }

    /// The distributions compared at `conc`: HAProxy, each VIP algorithm, the published port.
    pub(crate) fn distributions(&self, conc: usize) -> Vec<Distribution> {
        let mut rows = vec![(Target::Haproxy, Algorithm::RoundRobin, "HAProxy roundrobin")];
        for a in ALGORITHMS {
            rows.push((Target::Vip, a, ""));
        }
        rows.push((
            Target::Published,
            Algorithm::RoundRobin,
            "published port (VIP round robin)",
        ));
        rows.into_iter()
            .filter_map(|(target, algorithm, label)| {
                let cells = self.select(target, conc, algorithm);
                if cells.is_empty() {
                    return None;
                }
                let counts = TASKS[..SERVICE_TASKS]
                    .iter()
                    .map(|t| {
                        let n = cells
                            .iter()
                            .map(|c| c.per_backend.get(*t).copied().unwrap_or(0))
                            .sum();
                        (t.to_string(), n)
                    })
                    .collect();
                let label = if label.is_empty() {
                    format!("VIP {}", alg_label(algorithm))
                } else {
                    label.to_string()
                };
                Some(Distribution {
                    target,
                    algorithm,
                    label,
                    counts,
                })
            })
            .collect()
    }

    /// Whether n1's balancer counted, per task, what the clients saw: cells where not.
    pub(crate) fn count_mismatches(&self) -> Vec<String> {
        self.cells
            .iter()
            .filter(|c| matches!(c.target, Target::Vip | Target::Published))
            .filter_map(|c| {
                let seen: BTreeMap<String, u64> = c
                    .per_backend
                    .iter()
                    .map(|(k, v)| (k.clone(), *v as u64))
                    .collect();
                let counted: BTreeMap<String, u64> = c
                    .dataplane_counts
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                (seen != counted).then(|| {
                    format!(
                        "run {} {} {} c={}: replies {seen:?}, balancer {counted:?}",
                        c.run,
                        c.target.key(),
                        alg_key(c.algorithm),
                        c.conc
                    )
                })
            })
            .collect()
    }

    /// Writes the plot, `mesh.md` and `mesh.json`; returns the paths written.
    pub(crate) fn write(&self) -> Result<Vec<PathBuf>, String> {
        std::fs::create_dir_all(&self.cfg.out_dir)
            .map_err(|e| format!("create {}: {e}", self.cfg.out_dir.display()))?;
        let png = self.cfg.out_dir.join("mesh.png");
        let plot = plot::write(self, &png);
        let md = self.cfg.out_dir.join("mesh.md");
        std::fs::write(&md, markdown::render(self, &plot))
            .map_err(|e| format!("write {}: {e}", md.display()))?;
        let js = self.cfg.out_dir.join("mesh.json");
        let text =
            serde_json::to_string_pretty(&json::render(self)).map_err(|e| format!("json: {e}"))?;
        std::fs::write(&js, text + "\n").map_err(|e| format!("write {}: {e}", js.display()))?;
        let mut out = vec![md, js];
        if plot.is_ok() {
            out.push(png);
        }
        Ok(out)
    }

    /// A few lines for the terminal.
    pub(crate) fn summary(&self) -> String {
        let k = self.key();
        let f = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.0}"));
        let r = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.2}"));
        format!(
            "c={KEY_CONC}: HAProxy {} conn/s, VIP {} ({}× HAProxy), published {} ({}×), direct \
             {} ({}×); round robin max/mean {}; Maglev disruption {:.4} (computed {:.4})",
            f(k.haproxy_cps),
            f(k.vip_cps),
            r(k.over_haproxy(k.vip_cps)),
            f(k.published_cps),
            r(k.over_haproxy(k.published_cps)),
            f(k.direct_cps),
            r(k.over_haproxy(k.direct_cps)),
            k.rr_max_over_mean
                .map_or("n/a".into(), |v| format!("{v:.4}")),
            k.maglev_disruption,
            mean(&self.computed.moved)
        )
    }
}

/// Arithmetic mean (NaN when empty).
pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// max/mean and CV of a distribution's counts.
pub(crate) fn dist_balance(d: &Distribution) -> (f64, f64) {
    balance_of(d.counts.iter().map(|(_, c)| *c as f64))
}
