//! The agent's idle memory: a `shoal agent` holding 100 local endpoints and 1,000 remote
//! peer entries, beside a HashiCorp Serf agent alone (the anchor), in one run (see
//! `bench::agent`). Writes `bench/results/agent.{md,json}`; needs root and `serf`.
//!
//! Run: `cargo build --release -p control -p bench && sudo target/release/agent`.

fn main() {
    if let Err(e) = bench::agent::run() {
        eprintln!("agent: {e}");
        std::process::exit(1);
    }
}
