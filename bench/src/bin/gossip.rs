//! The gossip benchmark: shoal's gossip process (`shoal gossip`) next to HashiCorp Serf, the
//! anchor of `shared/anchors/4_serf.sh`: join propagation and SIGKILL → failed at all, for
//! clusters of 8 and 32 agents on loopback in a namespace of their own, interleaved in one run
//! (see `bench::gossip`). Writes `bench/results/gossip.{md,json}`; needs root and `serf`.
//!
//! Run: `cargo build -p bench --release --bin gossip && sudo target/release/gossip`.

fn main() {
    if let Err(e) = bench::gossip::run() {
        eprintln!("gossip: {e}");
        std::process::exit(1);
    }
}
