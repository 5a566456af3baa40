//! `mesh.png` with gnuplot: per-backend shares of the connections at concurrency 16 for
//! HAProxy, each VIP algorithm and the published port (left), and the median connections/s of
//! each target at each concurrency (right). The data and script go to a temporary directory,
//! removed afterwards.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use dataplane::balance::Algorithm;

use super::Report;
use crate::mesh::lab::Target;
use crate::mesh::{KEY_CONC, have};

/// Draws the plot into `png`: `Ok` with what it shows, or `Err` with why there is none.
pub(super) fn write(r: &Report, png: &Path) -> Result<String, String> {
    if !have("gnuplot") {
        return Err("gnuplot is not installed (apt-get install -y gnuplot-nox)".into());
    }
    let dists = r.distributions(KEY_CONC);
    if dists.is_empty() {
        return Err(format!("no cells at concurrency {KEY_CONC}"));
    }
    let dir = std::env::temp_dir().join(format!("shoal-mesh-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = draw(r, &dists, &dir, png);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn draw(
    r: &Report,
    dists: &[super::Distribution],
    dir: &Path,
    png: &Path,
) -> Result<String, String> {
    let mut shares = String::new();
    let mut top: f64 = 30.0;
    for d in dists {
        let _ = write!(shares, "{}", d.label);
        for s in d.shares() {
            let _ = write!(shares, "\t{:.3}", 100.0 * s);
            top = top.max(100.0 * s + 5.0);
        }
        shares.push('\n');
    }
    let mut cps = String::new();
    for t in Target::ALL {
        let _ = write!(cps, "{}", t.key());
        for &c in &r.cfg.concs {
            let cells = r.select(t, c, Algorithm::RoundRobin);
            let m = Report::summary_of(&cells, |x| x.cps).map_or(0.0, |s| s.median);
            let _ = write!(cps, "\t{m:.0}");
        }
        cps.push('\n');
    }
    let shares_path = dir.join("shares.tsv");
    let cps_path = dir.join("cps.tsv");
    std::fs::write(&shares_path, shares).map_err(|e| e.to_string())?;
    std::fs::write(&cps_path, cps).map_err(|e| e.to_string())?;

    let tasks: Vec<String> = dists[0].counts.iter().map(|(t, _)| t.clone()).collect();
    let ideal = 100.0 / tasks.len().max(1) as f64;
    let node_of = ["n1", "n2", "n3", "n3"];
    let share_cols: Vec<String> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let using = if i == 0 {
                format!("'{}' using 2:xtic(1)", shares_path.display())
            } else {
                format!("'' using {}", i + 2)
            };
            format!(
                "{using} title '{t} ({})'",
                node_of.get(i).copied().unwrap_or("?")
            )
        })
        .collect();
    let cps_cols: Vec<String> = r
        .cfg
        .concs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let using = if i == 0 {
                format!("'{}' using 2:xtic(1)", cps_path.display())
            } else {
                format!("'' using {}", i + 2)
            };
            format!("{using} title 'concurrency {c}'")
        })
        .collect();
    let script = format!(
        r#"set terminal pngcairo size 1400,560 font "sans,10"
set output '{png}'
set datafile separator "\t"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set xtics noenhanced rotate by 20 right
set key noenhanced top left
set multiplot layout 1,2 title "shoal mesh benchmark, {date}: N={n} connections per cell, {runs} runs"
set title "Per-backend share of connections at concurrency {conc} (summed over runs)"
set ylabel "share of connections (%)"
set yrange [0:{top:.0}]
set arrow 1 from graph 0, first {ideal} to graph 1, first {ideal} nohead dt 2 lw 1.5 lc rgb "black"
plot {share_plot}
unset arrow 1
set title "Connections/s (median over runs; round robin)"
set ylabel "connections/s"
set yrange [0:*]
plot {cps_plot}
unset multiplot
"#,
        png = png.display(),
        date = r.date,
        n = r.cfg.n,
        runs = r.cfg.runs,
        conc = KEY_CONC,
        share_plot = share_cols.join(", "),
        cps_plot = cps_cols.join(", "),
    );
    let script_path = dir.join("mesh.gp");
    std::fs::write(&script_path, script).map_err(|e| e.to_string())?;
    let out = Command::new("gnuplot")
        .arg(&script_path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("gnuplot: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gnuplot failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(format!(
        "left: each task's share of the connections at concurrency {KEY_CONC} (dashed: the \
         ideal {ideal:.0} %); right: median connections/s per target and concurrency"
    ))
}
