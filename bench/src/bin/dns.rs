//! The DNS benchmark (issue 4): shoal's resolver against unbound with the same 1000 names and
//! the same dnsperf query file, in one run, in one namespace (see `bench::dns` and
//! `bench/README.md`). Writes `bench/results/dns.md` and `bench/results/dns.json`; needs root.
//!
//! Run: `cargo build -p bench --release --bin dns && sudo target/release/dns`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match bench::dns::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dns: {e}");
            ExitCode::FAILURE
        }
    }
}
