//! `overlay.json`: the headline figures (`<path>_gbps`, `<path>_rtt_us`, ...), ratios, targets,
//! every run's raw values, the counters and the profiles.

use super::{Report, json_object};
use crate::Summary;
use crate::overlay::counters::stats_rows;
use crate::overlay::measure::RunResult;
use crate::overlay::paths::Kind;
use crate::overlay::profile::Profile;
use serde_json::{Map, Value, json};

impl Report<'_> {
    pub(super) fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("date".into(), json!(self.date));
        m.insert("machine".into(), self.machine.to_json());
        m.insert(
            "config".into(),
            json!({
                "runs": self.cfg.runs,
                "iperf_t_s": self.cfg.iperf_t,
                "sockperf_t_s": self.cfg.sockperf_t,
                "veth_path": "underlay (veth+bridge) between two testbed nodes",
            }),
        );
        m.insert("measured_s".into(), json!(self.measured_s));
        m.insert("conditions".into(), json!(self.conditions));
        m.insert("revision".into(), json!(self.revision));
        m.insert("total_s".into(), json!(self.total_s));
        for k in Kind::ALL {
            let key = k.key();
            m.insert(format!("{key}_gbps"), json!(self.med(k, |r| r.gbps)));
            m.insert(format!("{key}_rtt_us"), json!(self.med(k, |r| r.rtt_p50)));
            m.insert(
                format!("{key}_rtt_p99_us"),
                json!(self.med(k, |r| r.rtt_p99)),
            );
        }
        for k in [Kind::Veth, Kind::Plain, Kind::Sealed] {
            let key = k.key();
            m.insert(
                format!("{key}_gbps_ratio_to_kernel_vxlan"),
                json!(self.ratio_gbps(k)),
            );
            m.insert(
                format!("{key}_rtt_ratio_to_kernel_vxlan"),
                json!(self.ratio_rtt(k)),
            );
        }
        let targets = self.targets().into_iter().map(
            |(name, v, need, ok)| json!({"target": name, "ratio": v, "needed": need, "met": ok}),
        );
        m.insert("targets".into(), Value::Array(targets.collect()));
        m.insert("paths".into(), self.paths_json());
        m.insert("dataplane_counters".into(), self.counters_json());
        m.insert(
            "profiles".into(),
            Value::Array(self.profiles.iter().map(Profile::to_json).collect()),
        );
        Value::Object(m)
    }

    /// Per path: where it runs, summaries of the main figures and every run.
    fn paths_json(&self) -> Value {
        let mut paths = Map::new();
        for p in self.paths {
            let k = p.kind;
            let sum = |f: fn(&RunResult) -> f64| {
                Summary::of(&self.values(k, f)).map_or(Value::Null, |s| s.to_json())
            };
            let runs: Vec<Value> = self.results.get(&k).map_or_else(Vec::new, |v| {
                v.iter()
                    .enumerate()
                    .map(|(i, r)| r.to_json(i + 1))
                    .collect()
            });
            paths.insert(
                k.key().into(),
                json!({
                    "label": k.label(),
                    "client": p.client_name,
                    "server": p.server_name,
                    "dst": p.dst.to_string(),
                    "inner_mtu": p.mtu,
                    "gbps": sum(|r| r.gbps),
                    "retransmits": sum(|r| r.retransmits),
                    "rtt_p50_us": sum(|r| r.rtt_p50),
                    "rtt_p99_us": sum(|r| r.rtt_p99),
                    "runs": runs,
                }),
            );
        }
        Value::Object(paths)
    }

    /// Per shoal path: each node's dataplane counters and the kernel's around them.
    fn counters_json(&self) -> Value {
        let mut counters = Map::new();
        for (k, stats) in &self.counters.dataplane {
            let nodes: Vec<Value> = stats
                .iter()
                .map(|st| json_object(&stats_rows(st)))
                .collect();
            let around: Map<String, Value> = self
                .counters
                .kernel
                .get(k)
                .map(|kd| {
                    kd.iter()
                        .map(|(what, vals)| (what.clone(), json_object(vals)))
                        .collect()
                })
                .unwrap_or_default();
            counters.insert(
                k.key().into(),
                json!({"nodes": nodes, "kernel": Value::Object(around)}),
            );
        }
        Value::Object(counters)
    }
}
