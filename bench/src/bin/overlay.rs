//! The overlay benchmark: shoal plain and sealed VXLAN against the underlay and kernel VXLAN,
//! in one run (see `bench::overlay` and `bench/README.md`). Writes `bench/results/overlay.md`
//! and `bench/results/overlay.json`; needs root.
//!
//! Run: `cargo build -p bench --release --bin overlay && sudo target/release/overlay`.

fn main() {
    bench::overlay::run();
}
