//! `shoal`: the manager and its command line (see `control::cli`).

fn main() -> std::process::ExitCode {
    control::cli::main()
}
