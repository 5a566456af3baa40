//! The results of a run: the figures derived from it (medians, ratios to kernel VXLAN, targets)
//! and writing `overlay.md` and `overlay.json`; the text itself is in `markdown` and `json`.

mod json;
mod markdown;

use super::Config;
use super::counters::Counters;
use super::measure::RunResult;
use super::paths::{KernelSetup, Kind, PathDef};
use super::profile::Profile;
use crate::{Machine, median};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;

/// Targets against kernel VXLAN.
const PLAIN_GBPS_TARGET: f64 = 0.8;
const SEALED_GBPS_TARGET: f64 = 0.5;
const RTT_TARGET: f64 = 1.5;

/// Everything a run found, for the report.
#[derive(Debug)]
pub(super) struct Report<'a> {
    pub(super) cfg: &'a Config,
    pub(super) machine: &'a Machine,
    pub(super) date: &'a str,
    pub(super) paths: &'a [PathDef],
    pub(super) results: &'a BTreeMap<Kind, Vec<RunResult>>,
    pub(super) counters: &'a Counters,
    pub(super) profiles: &'a [Profile],
    pub(super) kernel_setup: &'a KernelSetup,
    pub(super) revision: &'a str,
    pub(super) conditions: &'a [String],
    pub(super) measured_s: f64,
    pub(super) total_s: f64,
}

/// A target: (what, measured ratio, what is needed, met).
type Target = (String, f64, String, bool);

impl Report<'_> {
    /// Writes `overlay.md` and `overlay.json` into the configured directory; returns their paths.
    pub(super) fn write(&self) -> (PathBuf, PathBuf) {
        let dir = &self.cfg.out_dir;
        std::fs::create_dir_all(dir).expect("results directory");
        let md = self.markdown();
        let js = self.json();
        let md_path = dir.join("overlay.md");
        let js_path = dir.join("overlay.json");
        std::fs::write(&md_path, &md).expect("write overlay.md");
        std::fs::write(
            &js_path,
            serde_json::to_string_pretty(&js).expect("json") + "\n",
        )
        .expect("write overlay.json");
        (md_path, js_path)
    }

    /// One figure of every run of a path.
    fn values(&self, kind: Kind, f: impl Fn(&RunResult) -> f64) -> Vec<f64> {
        self.results
            .get(&kind)
            .map(|v| v.iter().map(f).collect())
            .unwrap_or_default()
    }

    /// The median of one figure over the runs of a path (NaN if none).
    fn med(&self, kind: Kind, f: impl Fn(&RunResult) -> f64) -> f64 {
        median(&self.values(kind, f)).unwrap_or(f64::NAN)
    }

    fn ratio_gbps(&self, kind: Kind) -> f64 {
        self.med(kind, |r| r.gbps) / self.med(Kind::KernelVxlan, |r| r.gbps)
    }

    fn ratio_rtt(&self, kind: Kind) -> f64 {
        self.med(kind, |r| r.rtt_p50) / self.med(Kind::KernelVxlan, |r| r.rtt_p50)
    }

    fn targets(&self) -> Vec<Target> {
        let throughput = |kind: Kind, need: f64| {
            let v = self.ratio_gbps(kind);
            let name = format!("{} throughput ≥ {need}× kernel VXLAN", kind.key());
            (name, v, format!("≥ {need}"), v >= need)
        };
        let rtt = |kind: Kind| {
            let (v, need) = (self.ratio_rtt(kind), RTT_TARGET);
            let name = format!("{} RTT p50 ≤ {need}× kernel VXLAN", kind.key());
            (name, v, format!("≤ {need}"), v <= need)
        };
        vec![
            throughput(Kind::Plain, PLAIN_GBPS_TARGET),
            throughput(Kind::Sealed, SEALED_GBPS_TARGET),
            rtt(Kind::Plain),
            rtt(Kind::Sealed),
        ]
    }
}

/// `name value, name value, ...`, each value as `value` writes it.
fn joined<'a, K: Display + 'a, V: 'a>(
    items: impl IntoIterator<Item = &'a (K, V)>,
    value: impl Fn(&V) -> String,
) -> String {
    items
        .into_iter()
        .map(|(k, v)| format!("{k} {}", value(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name 12.3%, ...`.
pub(super) fn percents<'a, K: Display + 'a>(
    items: impl IntoIterator<Item = &'a (K, f64)>,
) -> String {
    joined(items, |v| format!("{v:.1}%"))
}

/// `name 123, ...`.
pub(super) fn counts<'a, K: Display + 'a>(items: impl IntoIterator<Item = &'a (K, u64)>) -> String {
    joined(items, u64::to_string)
}

/// `{"name": value, ...}`.
pub(super) fn json_object<'a, K: Display + 'a, V: Serialize + 'a>(
    items: impl IntoIterator<Item = &'a (K, V)>,
) -> Value {
    Value::Object(
        items
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// Two CPU shares, `12 / 34`.
fn two_cpus(a: f64, b: f64) -> String {
    format!("{a:.0} / {b:.0}")
}

/// The dataplane threads' CPU shares of a path, `–` for a path without a dataplane.
fn dataplane_cpus(kind: Kind, dp_cpu: [f64; 2]) -> String {
    if kind.is_shoal() {
        two_cpus(dp_cpu[0], dp_cpu[1])
    } else {
        "–".into()
    }
}
