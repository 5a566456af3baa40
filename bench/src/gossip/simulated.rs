//! The simulated curve (issue 3): for N = 10 … 1,000 nodes of the deterministic simulator
//! (`tests::gossip_sim`, virtual time, 1 % loss, all nodes on one network), the virtual time
//! for one table entry to reach every node and the steady bytes per node per second, as a
//! Markdown table, JSON, and `gossip-sim.png` (gnuplot, when installed). Virtual time needs no
//! anchor: Serf has no tables; the real-process figures above are the comparison.
//!
//! Env: `SIM_SIZES` (default "10 32 100 316 1000"), `SHOAL_SIM_SEED` (default 1).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use tests::gossip_sim::{CurvePoint, curve};

use crate::mesh::have;

const DEFAULT_SIZES: [usize; 5] = [10, 32, 100, 316, 1000];

fn sizes() -> Vec<usize> {
    std::env::var("SIM_SIZES")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_SIZES.to_vec())
}

fn seed() -> u64 {
    std::env::var("SHOAL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Runs the curve and returns (Markdown, JSON); draws `gossip-sim.png` into `dir`.
pub fn section(dir: &Path) -> (String, Value) {
    let (sizes, seed) = (sizes(), seed());
    eprintln!("simulating N = {sizes:?} (seed {seed}) ...");
    let points = curve(&sizes, seed);
    let png = dir.join("gossip-sim.png");
    let plot = plot(&points, &png);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Simulated: a table entry's convergence and the steady traffic, N = 10 … 1,000\n\n\
         The deterministic simulator (`tests/src/gossip_sim/`), seed {seed}: N NetworkDB cores \
         with the default (LAN) timings on a virtual network, 1–10 ms latency, 1 % loss, all \
         on one network. Membership converges, then one node writes one entry; **entry** is \
         the virtual time until every node holds it; **bytes** are everything sent per node per \
         virtual second over a steady 60 s after it (probes, gossip, push/pull, table gossip \
         and bulk syncs), and of that the table layer's share.\n"
    );
    let _ = writeln!(
        md,
        "| N | membership converged, s | entry on every node, s | bytes / node / s | of which tables |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
    for p in &points {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.2} | {:.0} | {:.0} |",
            p.nodes,
            p.membership_converged_s,
            p.entry_converged_s,
            p.bytes_per_node_per_s,
            p.table_bytes_per_node_per_s
        );
    }
    let _ = writeln!(
        md,
        "\n{}",
        match &plot {
            Ok(()) => "![simulated curve](gossip-sim.png)".to_owned(),
            Err(why) => format!("(no plot: {why})"),
        }
    );
    let json = json!({
        "seed": seed,
        "loss": 0.01,
        "points": points.iter().map(|p| json!({
            "nodes": p.nodes,
            "membership_converged_s": p.membership_converged_s,
            "entry_converged_s": p.entry_converged_s,
            "bytes_per_node_per_s": p.bytes_per_node_per_s,
            "table_bytes_per_node_per_s": p.table_bytes_per_node_per_s,
        })).collect::<Vec<_>>(),
    });
    (md, json)
}

fn plot(points: &[CurvePoint], png: &Path) -> Result<(), String> {
    if !have("gnuplot") {
        return Err("gnuplot is not installed (apt-get install -y gnuplot-nox)".into());
    }
    let mut data = String::new();
    for p in points {
        let _ = writeln!(
            data,
            "{} {} {} {}",
            p.nodes, p.entry_converged_s, p.bytes_per_node_per_s, p.table_bytes_per_node_per_s
        );
    }
    let dir = std::env::temp_dir().join(format!("shoal-gossip-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let data_path = dir.join("curve.dat");
    let script = format!(
        r#"set terminal pngcairo size 1100,420 font ",10"
set output "{png}"
set multiplot layout 1,2 title "shoal gossip, simulated (1 % loss, one network of all nodes)"
set logscale x
set xlabel "nodes"
set grid
set key top left
set ylabel "virtual seconds"
set yrange [0:*]
plot "{data}" using 1:2 with linespoints lw 2 title "entry on every node"
set ylabel "bytes per node per second"
plot "{data}" using 1:3 with linespoints lw 2 title "all gossip", "{data}" using 1:4 with linespoints lw 2 title "table layer"
unset multiplot
"#,
        png = png.display(),
        data = data_path.display(),
    );
    // A script file, not `-e`: gnuplot reads a multi-line `-e` argument as one line.
    let script_path = dir.join("curve.gp");
    let result = std::fs::write(&data_path, data)
        .and_then(|()| std::fs::write(&script_path, &script))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let out = Command::new("gnuplot")
                .arg(&script_path)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("gnuplot: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "gnuplot failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
