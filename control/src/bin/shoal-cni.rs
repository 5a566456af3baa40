//! `shoal-cni`: a CNI 1.0 plugin (ADD, DEL, CHECK, VERSION) that attaches containers to
//! shoal's attachable networks through the node's agent (see `control::agent::node::cni`).
//! The network configuration comes on stdin, the call in CNI_* variables; the result or
//! the CNI error goes to stdout.

fn main() -> std::process::ExitCode {
    control::agent::node::cni::main()
}
