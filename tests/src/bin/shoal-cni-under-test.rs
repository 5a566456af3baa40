//! `shoal-cni`, built inside this package so that its netns tests can run it as a container
//! runtime would (`env!("CARGO_BIN_EXE_shoal-cni-under-test")`).

fn main() -> std::process::ExitCode {
    control::agent::node::cni::main()
}
