//! The connection-distribution benchmark (issue 6): short connections through shoal's VIP,
//! its routing mesh's published port, HAProxy in front of the same tasks, and one task
//! directly, in one run (see `bench::mesh` and `bench/README.md`). Writes
//! `bench/results/mesh.{md,json,png}`; needs root and `haproxy` (`gnuplot` for the plot).
//!
//! Run: `cargo build -p bench --release --bin mesh && sudo target/release/mesh`.

fn main() {
    if let Err(e) = bench::mesh::run() {
        eprintln!("mesh: {e}");
        std::process::exit(1);
    }
}
