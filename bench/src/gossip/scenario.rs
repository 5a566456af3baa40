//! One run of the scenario for one implementation, as `serf_bench.py` does it, in a namespace
//! of its own:
//!
//! 1. agent i (`n0` .. `n{N-1}`) binds 127.0.0.(10+i):7946, all joining `n0`; wait until every
//!    agent has logged every other one joined (bounded by `CONVERGE_T`); after `SETTLE`, the
//!    agents' RSS;
//! 2. agent `nN` joins through agent N/2: for Serf it is started alone, then `serf join` is
//!    issued on it (as the anchor does); for shoal it is started with `--join`. `join_s`: from
//!    the join command's (Serf) or the process's (shoal) start until all N existing agents
//!    logged it joined;
//! 3. after `SETTLE`, SIGKILL `n1`; `fail_s`: until all N others (the new one included) logged
//!    it failed (bounded by `FAIL_T`).
//!
//! Every agent is killed when the run ends (their `Drop`), then the namespace is deleted.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::process::{Agent, Kind, Parser, run_bounded, wait_all};
use super::shoal::Shoal;
use super::{Config, Impl, serf, shoal};
use crate::median;

/// The gossip port of every agent.
pub(super) const PORT: u16 = 7946;

/// First, median and last of the agents' times, seconds after the cause.
#[derive(Clone, Copy, Debug)]
pub(super) struct Spread {
    pub(super) first: f64,
    pub(super) median: f64,
    /// The last agent: "seen by all".
    pub(super) all: f64,
}

impl Spread {
    fn of(times: &[Instant], t0: Instant) -> Spread {
        let d: Vec<f64> = times
            .iter()
            .map(|t| t.saturating_duration_since(t0).as_secs_f64())
            .collect();
        Spread {
            first: d.iter().copied().fold(f64::INFINITY, f64::min),
            median: median(&d).unwrap_or(f64::NAN),
            all: d.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// What one run measured; what is `None` was not reached (see `error`).
#[derive(Clone, Debug)]
pub(super) struct RunResult {
    pub(super) imp: Impl,
    pub(super) n: usize,
    pub(super) run: usize,
    /// From the first agent's start until every agent saw all N.
    pub(super) converged_s: Option<f64>,
    /// VmRSS of each of the N agents after the cluster converged and settled, KiB.
    pub(super) rss_kib: Vec<u64>,
    /// Serf only: one `serf members` round trip (the CLI's own cost).
    pub(super) cli_roundtrip_s: Option<f64>,
    /// Serf only: when `serf join` returned.
    pub(super) join_cmd_s: Option<f64>,
    /// When the new agent itself logged its join target joined.
    pub(super) new_sees_target_s: Option<f64>,
    pub(super) join: Option<Spread>,
    pub(super) fail: Option<Spread>,
    /// The first "suspect" line about the victim, any agent.
    pub(super) first_suspect_s: Option<f64>,
    /// How many of the others logged the victim suspected.
    pub(super) suspect_agents: usize,
    /// Agents (not the victim) that exited before the end of the run.
    pub(super) died: Vec<String>,
    pub(super) error: Option<String>,
}

impl RunResult {
    fn new(imp: Impl, n: usize, run: usize) -> RunResult {
        RunResult {
            imp,
            n,
            run,
            converged_s: None,
            rss_kib: Vec::new(),
            cli_roundtrip_s: None,
            join_cmd_s: None,
            new_sees_target_s: None,
            join: None,
            fail: None,
            first_suspect_s: None,
            suspect_agents: 0,
            died: Vec::new(),
            error: None,
        }
    }

    /// The median RSS over the agents, KiB.
    pub(super) fn rss_median_kib(&self) -> Option<f64> {
        median(&self.rss_kib.iter().map(|&k| k as f64).collect::<Vec<_>>())
    }

    pub(super) fn rss_max_kib(&self) -> Option<f64> {
        self.rss_kib.iter().max().map(|&k| k as f64)
    }
}

/// How to start an agent of one implementation.
#[derive(Clone, Copy, Debug)]
enum Side<'a> {
    Serf,
    Shoal(&'a Shoal),
}

impl Side<'_> {
    fn argv(self, name: &str, bind: SocketAddrV4, join: Option<SocketAddrV4>) -> Vec<String> {
        match self {
            Side::Serf => serf::agent_argv(name, bind, join),
            Side::Shoal(s) => shoal::agent_argv(&s.bin, name, bind, join),
        }
    }

    fn parser(self) -> Parser {
        match self {
            Side::Serf => serf::parse,
            Side::Shoal(_) => shoal::parse,
        }
    }

    fn spawn(self, ns: &Netns, i: usize, join: Option<SocketAddrV4>) -> Result<Agent, String> {
        let (name, bind) = (name(i), bind(i));
        Agent::spawn(
            &ns.name,
            &name,
            &self.argv(&name, bind, join),
            self.parser(),
        )
    }
}

/// Agent i's name.
pub(super) fn name(i: usize) -> String {
    format!("n{i}")
}

/// Agent i's gossip address: 127.0.0.(10+i):7946.
pub(super) fn bind(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 10 + i as u8), PORT)
}

/// The largest N the addresses allow (agent N is 127.0.0.(10+N)).
pub(super) const MAX_N: usize = 200;

/// One run. `shoal` is the binary for [`Impl::Shoal`].
pub(super) fn one_run(
    imp: Impl,
    shoal: Option<&Shoal>,
    n: usize,
    run: usize,
    cfg: &Config,
) -> RunResult {
    let mut r = RunResult::new(imp, n, run);
    let side = match (imp, shoal) {
        (Impl::Serf, _) => Side::Serf,
        (Impl::Shoal, Some(s)) => Side::Shoal(s),
        (Impl::Shoal, None) => {
            r.error = Some("no shoal binary".into());
            return r;
        }
    };
    if let Err(e) = steps(side, cfg, &mut r) {
        r.error = Some(e);
    }
    r
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn steps(side: Side, cfg: &Config, r: &mut RunResult) -> Result<(), String> {
    let n = r.n;
    let ns = Netns::create()?;
    // Declared after `ns`, so dropped (every agent killed) before the namespace goes.
    let mut agents: Vec<Agent> = Vec::with_capacity(n + 1);

    // 1. the cluster of N
    let t_start = Instant::now();
    agents.push(side.spawn(&ns, 0, None)?);
    agents[0].wait_bound(&[bind(0)], &[bind(0)], Duration::from_secs(20))?;
    for i in 1..n {
        agents.push(side.spawn(&ns, i, Some(bind(0)))?);
    }
    converge(&mut agents, Duration::from_secs(cfg.converge_t))?;
    r.converged_s = Some(secs(t_start.elapsed()));
    std::thread::sleep(cfg.settle);
    r.rss_kib = agents.iter().filter_map(Agent::rss_kib).collect();

    // 2. the join of agent N through agent N/2
    let target = bind(n / 2);
    let (new, t0) = match side {
        Side::Serf => {
            let t = Instant::now();
            run_bounded(
                &super::process::in_ns(&ns.name, &serf::members_argv(bind(0))),
                Duration::from_secs(10),
            )?
            .ok("serf members")?;
            r.cli_roundtrip_s = Some(secs(t.elapsed()));
            let mut new = side.spawn(&ns, n, None)?;
            let me = new.name.clone();
            new.wait_bound(
                &[bind(n), serf::rpc(bind(n))],
                &[bind(n)],
                Duration::from_secs(20),
            )?;
            wait_all(&[&new], Kind::Join, &me, Duration::from_secs(20))
                .map_err(|_| format!("the new agent {me} did not log itself joined in 20 s"))?;
            std::thread::sleep(Duration::from_millis(500));
            let t0 = Instant::now();
            run_bounded(
                &super::process::in_ns(&ns.name, &serf::join_argv(bind(n), target)),
                Duration::from_secs(20),
            )?
            .ok("serf join")?;
            r.join_cmd_s = Some(secs(t0.elapsed()));
            (new, t0)
        }
        Side::Shoal(_) => {
            let t0 = Instant::now();
            (side.spawn(&ns, n, Some(target))?, t0)
        }
    };
    let new_name = new.name.clone();
    let joined = wait_all(
        &agents.iter().collect::<Vec<_>>(),
        Kind::Join,
        &new_name,
        Duration::from_secs(cfg.join_t),
    );
    r.new_sees_target_s = new
        .seen(Kind::Join, &name(n / 2))
        .map(|t| secs(t.saturating_duration_since(t0)));
    agents.push(new);
    match joined {
        Ok(times) => r.join = Some(Spread::of(&times, t0)),
        Err(missing) => {
            return Err(format!(
                "{new_name}'s join not seen in {} s by {}",
                cfg.join_t,
                missing.join(" ")
            ));
        }
    }
    std::thread::sleep(cfg.settle);
    alive(&mut agents, None, r)?;

    // 3. SIGKILL n1
    let victim = name(1);
    let t0 = Instant::now();
    agents[1].kill();
    let others: Vec<&Agent> = agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, a)| a)
        .collect();
    let failed = wait_all(
        &others,
        Kind::Failed,
        &victim,
        Duration::from_secs(cfg.fail_t),
    );
    let suspects: Vec<f64> = others
        .iter()
        .filter_map(|a| a.seen(Kind::Suspect, &victim))
        .map(|t| secs(t.saturating_duration_since(t0)))
        .collect();
    r.suspect_agents = suspects.len();
    r.first_suspect_s = suspects.iter().copied().reduce(f64::min);
    match failed {
        Ok(times) => r.fail = Some(Spread::of(&times, t0)),
        Err(missing) => {
            let told: Vec<String> = others
                .iter()
                .filter(|a| missing.contains(&a.name))
                .map(|a| format!("{}: {}", a.name, what_was_seen(a, &victim, t0)))
                .collect();
            return Err(format!(
                "{victim}'s failure not seen in {} s by {}; what they logged about {victim} \
                 after the kill: {}",
                cfg.fail_t,
                missing.join(" "),
                told.join("; ")
            ));
        }
    }
    alive(&mut agents, Some(1), r)
}

/// The events `a` logged about `member` since `t0` (first of each kind), e.g. "suspect 1.79 s".
fn what_was_seen(a: &Agent, member: &str, t0: Instant) -> String {
    let seen: Vec<String> = [Kind::Suspect, Kind::Failed, Kind::Left, Kind::Recovered]
        .into_iter()
        .filter_map(|k| {
            let t = a.seen(k, member)?;
            (t >= t0).then(|| format!("{k:?} {:.2} s", secs(t - t0)))
        })
        .collect();
    if seen.is_empty() {
        "nothing".into()
    } else {
        seen.join(", ")
    }
}

/// Waits until every agent logged every other one joined, failing early when one exits.
fn converge(agents: &mut [Agent], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
    loop {
        let missing: Vec<String> = agents
            .iter()
            .flat_map(|a| {
                names
                    .iter()
                    .filter(move |b| **b != a.name && a.seen(Kind::Join, b).is_none())
                    .map(move |b| format!("{}→{b}", a.name))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for a in agents.iter_mut() {
            if let Some(st) = a.exited() {
                return Err(format!("while the cluster formed, {}", a.died(st)));
            }
        }
        if Instant::now() >= deadline {
            let shown: Vec<&str> = missing.iter().take(12).map(String::as_str).collect();
            return Err(format!(
                "cluster of {} not formed in {timeout:?}: {} pairs missing ({}{}); last lines \
                 of {}:\n{}",
                agents.len(),
                missing.len(),
                shown.join(" "),
                if missing.len() > shown.len() {
                    " ..."
                } else {
                    ""
                },
                agents[0].name,
                agents[0].tail(10)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Notes the agents (but `skip`) that exited; `Err` if one did.
fn alive(agents: &mut [Agent], skip: Option<usize>, r: &mut RunResult) -> Result<(), String> {
    let mut first = None;
    for (i, a) in agents.iter_mut().enumerate() {
        if Some(i) == skip {
            continue;
        }
        if let Some(st) = a.exited() {
            r.died.push(a.name.clone());
            first.get_or_insert_with(|| a.died(st));
        }
    }
    first.map_or(Ok(()), Err)
}
