//! The `shoal` command line, built inside this package so that its netns tests can run it as
//! real processes (`env!("CARGO_BIN_EXE_shoal-under-test")`: cargo builds a package's own
//! binaries before its integration tests, not those of its dependencies).

fn main() -> std::process::ExitCode {
    control::cli::main()
}
