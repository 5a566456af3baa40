//! `lab bench`: how connections to a service spread over its tasks — through its published
//! port on every node (from this host) and through its VIP (from a task of another service)
//! — with per-task counts, max/mean, connections per second, and a bar chart (gnuplot). The
//! counting and the chart's script are pure; [`drive`] opens the connections.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dataplane::shell::netns::{NetnsRef, in_netns};
use serde::Serialize;

use crate::cli::render::table;

/// One path's connections and who served them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// `8080@n1`, `vip from api.1`, ...
    pub path: String,
    pub connections: u64,
    /// Task (short name, `api.1`) → connections it served.
    pub per_task: BTreeMap<String, u64>,
    /// Connections that failed or got no `task:` line.
    pub errors: u64,
    pub seconds: f64,
}

impl Distribution {
    /// The busiest task's count over the mean of all tasks' (1.0: perfectly even).
    pub fn max_over_mean(&self, tasks: usize) -> f64 {
        let served: u64 = self.per_task.values().sum();
        let max = self.per_task.values().copied().max().unwrap_or(0);
        if served == 0 || tasks == 0 {
            return 0.0;
        }
        max as f64 / (served as f64 / tasks as f64)
    }

    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.connections as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// `seed_api.2.k8qx…` → `api.2` (the stack's prefix and the task id go).
pub fn short_task(full: &str, stack: Option<&str>) -> String {
    let name = stack
        .and_then(|s| full.strip_prefix(s)?.strip_prefix('_'))
        .unwrap_or(full);
    let mut parts: Vec<&str> = name.split('.').collect();
    if parts.len() >= 3 {
        parts.pop();
    }
    parts.join(".")
}

/// The table: one row per path, one column per task.
pub fn render(results: &[Distribution], tasks: &[String], algorithm: &str) -> String {
    let mut header = vec!["PATH", "CONNS", "CONN/S", "ERRORS"];
    header.extend(tasks.iter().map(String::as_str));
    header.push("MAX/MEAN");
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|d| {
            let mut row = vec![
                d.path.clone(),
                d.connections.to_string(),
                format!("{:.0}", d.per_second()),
                d.errors.to_string(),
            ];
            row.extend(
                tasks
                    .iter()
                    .map(|t| d.per_task.get(t).copied().unwrap_or(0).to_string()),
            );
            row.push(format!("{:.3}", d.max_over_mean(tasks.len())));
            row
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "algorithm: {algorithm}\n{}", table(&header, &rows));
    out
}

/// gnuplot's data (a row per task, a column per path) and the script that draws it as a
/// clustered bar chart into `png`.
pub fn chart(
    results: &[Distribution],
    tasks: &[String],
    title: &str,
    png: &str,
) -> (String, String) {
    let mut data = String::from("task");
    for d in results {
        let _ = write!(data, "\t\"{}\"", d.path);
    }
    data.push('\n');
    for t in tasks {
        let _ = write!(data, "\"{t}\"");
        for d in results {
            let _ = write!(data, "\t{}", d.per_task.get(t).copied().unwrap_or(0));
        }
        data.push('\n');
    }
    let script = format!(
        "set terminal pngcairo size 900,500 noenhanced\n\
         set output '{png}'\n\
         set title \"{title}\"\n\
         set style data histogram\n\
         set style histogram clustered gap 1\n\
         set style fill solid 0.8 border -1\n\
         set ylabel 'connections'\n\
         set key outside right top\n\
         set yrange [0:*]\n\
         plot for [i=2:{}] DATA using i:xtic(1) title columnheader(i)\n",
        results.len() + 1
    );
    (data, script)
}

/// Opens `n` connections to `dst` (`concurrency` at a time, each an HTTP GET to whoami) from
/// namespace `netns` (`None`: this one), for at most `limit`, and counts who served each.
pub fn drive(
    path: &str,
    dst: SocketAddr,
    n: u64,
    concurrency: u64,
    limit: Duration,
    netns: Option<&NetnsRef>,
) -> Distribution {
    #[allow(clippy::disallowed_methods)] // a benchmark's own clock
    let start = Instant::now();
    let workers = concurrency.clamp(1, n.max(1));
    let per_worker = n.div_ceil(workers);
    let answers: Vec<Result<String, ()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let count = per_worker.min(n.saturating_sub(w * per_worker));
                let work = move || -> std::io::Result<Vec<Result<String, ()>>> {
                    Ok((0..count)
                        .map_while(|_| (start.elapsed() <= limit).then(|| ask(dst)))
                        .collect())
                };
                scope.spawn(move || match netns {
                    Some(ns) => in_netns(ns, work).unwrap_or_default(),
                    None => work().unwrap_or_default(),
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut d = Distribution {
        path: path.to_owned(),
        ..Distribution::default()
    };
    for a in answers {
        d.connections += 1;
        match a {
            Ok(task) => *d.per_task.entry(task).or_default() += 1,
            Err(()) => d.errors += 1,
        }
    }
    d.seconds = start.elapsed().as_secs_f64();
    d
}

/// One connection: the `task:` line of whoami's answer.
fn ask(dst: SocketAddr) -> Result<String, ()> {
    let timeout = Duration::from_secs(2);
    let mut c = TcpStream::connect_timeout(&dst, timeout).map_err(|_| ())?;
    c.set_read_timeout(Some(timeout)).map_err(|_| ())?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|_| ())?;
    let mut text = String::new();
    c.read_to_string(&mut text).map_err(|_| ())?;
    text.lines()
        .find_map(|l| l.strip_prefix("task: "))
        .map(str::to_owned)
        .ok_or(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dist(path: &str, counts: &[(&str, u64)]) -> Distribution {
        Distribution {
            path: path.into(),
            connections: counts.iter().map(|c| c.1).sum(),
            per_task: counts.iter().map(|(t, c)| (t.to_string(), *c)).collect(),
            errors: 0,
            seconds: 2.0,
        }
    }

    #[test]
    fn max_over_mean_is_one_when_even_and_counts_idle_tasks() {
        assert_eq!(dist("p", &[("a", 50), ("b", 50)]).max_over_mean(2), 1.0);
        assert_eq!(dist("p", &[("a", 75), ("b", 25)]).max_over_mean(2), 1.5);
        // A task that served nothing still counts in the mean.
        assert_eq!(dist("p", &[("a", 100)]).max_over_mean(2), 2.0);
        assert_eq!(Distribution::default().max_over_mean(2), 0.0);
    }

    #[test]
    fn task_names_lose_their_stack_and_id() {
        assert_eq!(short_task("seed_api.2.k8qxzeuj2r", Some("seed")), "api.2");
        assert_eq!(short_task("web.1.abc", None), "web.1");
        assert_eq!(short_task("seed_probe.n1.abc", Some("seed")), "probe.n1");
    }

    #[test]
    fn the_chart_has_a_row_per_task_and_a_column_per_path() {
        let results = [
            dist("8080@n1", &[("api.1", 3), ("api.2", 1)]),
            dist("vip", &[("api.2", 4)]),
        ];
        let tasks = vec!["api.1".to_owned(), "api.2".to_owned()];
        let (data, script) = chart(&results, &tasks, "api", "/tmp/x.png");
        assert_eq!(
            data,
            "task\t\"8080@n1\"\t\"vip\"\n\"api.1\"\t3\t0\n\"api.2\"\t1\t4\n"
        );
        assert!(script.contains("i=2:3") && script.contains("/tmp/x.png"));
        let text = render(&results, &tasks, "roundrobin");
        assert!(text.contains("1.500") && text.contains("2.000"), "{text}");
    }
}
