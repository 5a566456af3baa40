//! `mesh.json`: the keys at the top (`haproxy_cps`, `vip_cps`, `published_cps`,
//! `direct_cps` at concurrency 16, `rr_max_over_mean`, `maglev_disruption`), then every
//! summary and every cell.

use serde_json::{Map, Value, json};

use dataplane::balance::Algorithm;

use super::{Report, alg_key, dist_balance, mean};
use crate::mesh::lab::Target;
use crate::mesh::{ALGORITHMS, Cell, KEY_CONC};

fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

/// median/min/max/n of `f` over cells.
fn summary(cells: &[&Cell], f: impl Fn(&Cell) -> f64) -> Value {
    Report::summary_of(cells, f).map_or(Value::Null, |s| s.to_json())
}

fn cells_json(cells: &[&Cell]) -> Value {
    json!({
        "runs": cells.len(),
        "cps": summary(cells, |c| c.cps),
        "p50_us": summary(cells, |c| c.p50),
        "p99_us": summary(cells, |c| c.p99),
        "p999_us": summary(cells, |c| c.p999),
        "max_over_mean": summary(cells, |c| c.balance().0),
        "cv": summary(cells, |c| c.balance().1),
        "errors": cells.iter().map(|c| c.error_count()).sum::<usize>(),
        "client_cpu_pct": summary(cells, |c| c.client_cpu),
        "machine_busy_pct": summary(cells, |c| c.usage.machine_pct),
    })
}

fn cell_json(c: &Cell) -> Value {
    let (mm, cv) = c.balance();
    json!({
        "run": c.run,
        "target": c.target.key(),
        "algorithm": alg_key(c.algorithm),
        "concurrency": c.conc,
        "ok": c.ok,
        "errors": c.errors,
        "elapsed_s": num(c.elapsed_s),
        "cps": num(c.cps),
        "p50_us": num(c.p50),
        "p90_us": num(c.p90),
        "p99_us": num(c.p99),
        "p999_us": num(c.p999),
        "max_us": num(c.max_us),
        "per_backend": c.per_backend,
        "balancer_per_backend": c.dataplane_counts,
        "max_over_mean": num(mm),
        "cv": num(cv),
        "timed_out": c.timed_out,
        "kernel_tcp": c.kernel,
        "failure": c.failure,
        "cpu_pct": {
            "client": num(c.client_cpu),
            "groups": c.usage.groups.iter().map(|(k, v)| (k.clone(), num(*v))).collect::<Map<_, _>>(),
            "machine_busy": num(c.usage.machine_pct),
        },
    })
}

pub(super) fn render(r: &Report) -> Value {
    let k = r.key();
    let mut targets = Map::new();
    for t in Target::ALL {
        let mut by_conc = Map::new();
        for &c in &r.cfg.concs {
            by_conc.insert(
                format!("c{c}"),
                cells_json(&r.select(t, c, Algorithm::RoundRobin)),
            );
        }
        targets.insert(t.key().into(), Value::Object(by_conc));
    }
    let mut algorithms = Map::new();
    for a in ALGORITHMS {
        let mut by_conc = Map::new();
        for &c in &r.cfg.alg_concs {
            by_conc.insert(format!("c{c}"), cells_json(&r.select(Target::Vip, c, a)));
        }
        algorithms.insert(alg_key(a).into(), Value::Object(by_conc));
    }
    let mut distributions = Map::new();
    for &c in &r.cfg.alg_concs {
        let rows: Vec<Value> = r
            .distributions(c)
            .iter()
            .map(|d| {
                let (mm, cv) = dist_balance(d);
                json!({
                    "target": d.target.key(),
                    "algorithm": alg_key(d.algorithm),
                    "label": d.label,
                    "counts": d.counts.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<Map<_, _>>(),
                    "max_over_mean": num(mm),
                    "cv": num(cv),
                })
            })
            .collect();
        distributions.insert(format!("c{c}"), Value::Array(rows));
    }
    let e = r.end_to_end;
    let c = r.computed;
    let vip_x = k.over_haproxy(k.vip_cps);
    let pub_x = k.over_haproxy(k.published_cps);
    json!({
        "benchmark": "mesh",
        "date": r.date,
        "concurrency": KEY_CONC,
        "haproxy_cps": opt(k.haproxy_cps),
        "vip_cps": opt(k.vip_cps),
        "published_cps": opt(k.published_cps),
        "direct_cps": opt(k.direct_cps),
        "vip_over_haproxy": opt(vip_x),
        "published_over_haproxy": opt(pub_x),
        "direct_over_haproxy": opt(k.over_haproxy(k.direct_cps)),
        "rr_max_over_mean": opt(k.rr_max_over_mean),
        "rr_cv": opt(k.rr_cv),
        "maglev_disruption": num(k.maglev_disruption),
        "maglev_disruption_between_survivors": num(e.survivors_fraction()),
        "maglev_disruption_computed": num(mean(&c.moved)),
        "maglev_disruption_ideal": num(1.0 / c.backends.max(1) as f64),
        "targets": {
            "vip_over_haproxy_ge_1_5": vip_x.map(|x| x >= 1.5),
            "published_over_haproxy_ge_1_0": pub_x.map(|x| x >= 1.0),
            "rr_max_over_mean_le_1_01": k.rr_max_over_mean.map(|x| x <= 1.01),
        },
        "config": {
            "n": r.cfg.n,
            "concs": r.cfg.concs,
            "alg_concs": r.cfg.alg_concs,
            "runs": r.cfg.runs,
            "cell_t_s": r.cfg.cell_t,
            "maglev_flows": r.cfg.maglev_flows,
            "maglev_synthetic": r.cfg.synthetic,
        },
        "machine": r.machine.to_json(),
        "revision": r.revision,
        "conditions": r.conditions,
        "haproxy_version": r.haproxy_version,
        "measured_s": num(r.measured_s),
        "total_s": num(r.total_s),
        "paths": targets,
        "algorithms": algorithms,
        "distributions": distributions,
        "disruption": {
            "end_to_end": {
                "flows": e.flows,
                "removed": e.removed,
                "compared": e.compared,
                "moved": e.moved,
                "moved_between_survivors": e.moved_from_survivors,
                "on_removed": e.on_removed,
                "round2_first_errors": e.round2_first_errors,
                "failed": e.failed,
                "before": e.before,
                "after": e.after,
            },
            "computed": {
                "backends": c.backends,
                "flows": c.flows,
                "moved": c.moved,
                "moved_between_survivors": c.moved_from_survivors,
                "mod_n_moved": c.mod_n_moved,
                "shares": c.shares,
            },
        },
        "counters": {
            "balance": r.counters.balance.iter().map(|(b, entries)| json!({
                "counters": b,
                "conntrack_entries": entries,
            })).collect::<Vec<_>>(),
            "drops": r.counters.drops.iter().map(|(v, total)| json!({
                "total": total,
                "by_reason": v.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "published_port": r.counters.mesh,
            "open_flows_after": r.counters.open_flows.iter().map(|vips| vips.iter().map(|(vip, tasks)| {
                (vip.clone(), tasks.iter().map(|(t, a)| (t.clone(), json!(a))).collect::<Map<_, _>>().into())
            }).collect::<Map<String, Value>>()).collect::<Vec<_>>(),
            "haproxy_rss_kib": r.counters.haproxy_rss_threads.map(|x| x.0),
            "haproxy_threads": r.counters.haproxy_rss_threads.map(|x| x.1),
        },
        "cells": r.cells.iter().map(cell_json).collect::<Vec<_>>(),
    })
}
