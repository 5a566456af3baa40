//! The command line, docker-like: `shoal network create`, `shoal service ps`, ...

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    about = "Docker Swarm's networking, in userspace: the manager and its CLI"
)]
pub struct Cli {
    /// The manager's API address.
    #[arg(
        long,
        global = true,
        env = "SHOAL_MANAGER",
        default_value = "127.0.0.1:2377"
    )]
    pub manager: SocketAddr,
    /// The folder with the CLI's credentials that `shoal init` wrote (ca.pem, cli.pem,
    /// cli.key): TLS to the manager. Without it, plain HTTP (a manager run with --insecure).
    #[arg(long, global = true, env = "SHOAL_CERTS")]
    pub certs: Option<PathBuf>,
    /// Output: tables for people, JSON for programs.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Top,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Top {
    /// Runs the manager: its API on --listen, its state in --state.
    Manager {
        #[arg(long, default_value = "127.0.0.1:2377")]
        listen: SocketAddr,
        #[arg(long, default_value = "/var/lib/shoal/manager.redb")]
        state: PathBuf,
        /// Seconds without a word from a node's agent before its tasks are moved.
        #[arg(long = "node-down-after", default_value_t = 55)]
        node_down_after: u64,
        /// Hours between new keys for the encrypted networks.
        #[arg(long = "key-rotation-hours", default_value_t = 12)]
        key_rotation_hours: u64,
        /// Serve plain HTTP without a cluster CA: anyone who reaches the port may do
        /// anything. For tests on loopback only.
        #[arg(long)]
        insecure: bool,
    },
    /// Creates the cluster: its CA, the manager's certificate, the join tokens, and the CLI's
    /// credentials in --certs-out.
    Init {
        #[arg(long, default_value = "/var/lib/shoal/manager.redb")]
        state: PathBuf,
        /// The address agents reach the manager at (on its certificate, with 127.0.0.1).
        #[arg(long, default_value = "127.0.0.1")]
        advertise: Ipv4Addr,
        #[arg(long = "certs-out", default_value = "/var/lib/shoal/cli")]
        certs_out: PathBuf,
        /// Where networks' subnets come from (Docker's --default-addr-pool).
        #[arg(long = "default-addr-pool", default_value = "10.0.0.0/8")]
        pool: String,
        /// The size of a subnet given from the pool.
        #[arg(long = "default-addr-pool-mask-length", default_value_t = 24)]
        mask_length: u8,
    },
    /// Joins the cluster as this node and runs its agent (the same as `agent --token`).
    Join(super::agent::AgentArgs),
    /// Prints a role's join token (`--rotate`: replaces it first).
    JoinToken {
        #[arg(value_enum)]
        role: RoleArg,
        #[arg(long)]
        rotate: bool,
    },
    /// Runs a node's agent: `shoal agent --token T --hostname H --addr A`, or asks the
    /// running one: `shoal agent status`.
    Agent(super::agent::AgentCmd),
    /// Attaches a network namespace (a standalone container's) to an attachable network
    /// through this node's agent: the manager gives the address, the agent the interface,
    /// the resolver at 127.0.0.11 and the routes.
    Attach {
        #[arg(long)]
        network: String,
        /// The namespace: /run/netns/NAME, /proc/PID/ns/net, ...
        #[arg(long)]
        netns: std::path::PathBuf,
        /// The container's id (default: the namespace's file name).
        #[arg(long)]
        container: Option<String>,
        /// Its name on the network (default: the container id).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "eth0")]
        ifname: String,
        #[arg(long, env = "SHOAL_AGENT_SOCKET", default_value = crate::agent::node::api::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
    },
    /// Detaches a container from a network (`--network`), or from all of its networks.
    Detach {
        container: String,
        #[arg(long)]
        network: Option<String>,
        #[arg(long, env = "SHOAL_AGENT_SOCKET", default_value = crate::agent::node::api::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
    },
    /// Lists the containers this node's agent attached.
    Attachments {
        #[arg(long, env = "SHOAL_AGENT_SOCKET", default_value = crate::agent::node::api::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
    },
    /// Runs a standalone gossip member (memberlist's wire protocol: Serf agents are peers).
    /// Prints member and table events, one per line; reads commands on stdin:
    /// `put NET TABLE KEY VALUE`, `delete NET TABLE KEY`, `join-network NET`,
    /// `leave-network NET`. Stops on SIGTERM or SIGINT, leaving the cluster.
    Gossip(super::gossip::Member),
    /// Runs the probe server a task runs by default: an HTTP request gets which task and
    /// node answered and the client's address (`GET /json`: as JSON); any other connection
    /// is echoed. Runs until killed (SIGTERM).
    Whoami {
        /// A port to listen on, on every address (repeat for more).
        #[arg(long = "port", default_values_t = [80u16])]
        ports: Vec<u16>,
        /// The task's name to report; default: the hostname.
        #[arg(long, env = "SHOAL_TASK_NAME")]
        name: Option<String>,
        /// The node's name to report; default: the hostname.
        #[arg(long, env = "SHOAL_NODE")]
        node: Option<String>,
    },
    #[command(subcommand)]
    Node(NodeCmd),
    #[command(subcommand)]
    Network(NetworkCmd),
    #[command(subcommand)]
    Service(ServiceCmd),
    #[command(subcommand)]
    Stack(StackCmd),
    /// A whole multi-node cluster on this host, in network namespaces: up, matrix, exec,
    /// attach, kill, cut, heal, down.
    #[command(subcommand)]
    Lab(crate::lab::LabCmd),
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Registers a node with the manager (until agents join with tokens and certificates).
    Add {
        id: String,
        #[arg(long)]
        hostname: String,
        #[arg(long)]
        addr: Ipv4Addr,
        #[arg(long, value_enum, default_value_t = RoleArg::Worker)]
        role: RoleArg,
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    Ls,
    /// The node as JSON.
    Inspect {
        node: String,
    },
    /// Makes a node a manager.
    Promote {
        node: String,
    },
    /// Makes a node a worker.
    Demote {
        node: String,
    },
    Update {
        node: String,
        #[arg(long, value_enum)]
        availability: Option<AvailabilityArg>,
        #[arg(long = "label-add", value_name = "KEY=VALUE")]
        label_add: Vec<String>,
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Manager,
    Worker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AvailabilityArg {
    Active,
    Pause,
    Drain,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    Create {
        name: String,
        /// Only `overlay` exists in a swarm.
        #[arg(long, default_value = "overlay")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        attachable: bool,
        #[arg(long)]
        internal: bool,
        /// Driver options; `encrypted` seals the network's frames.
        #[arg(long = "opt", value_name = "OPTION")]
        opts: Vec<String>,
    },
    Ls,
    /// The network as JSON, with the services on it.
    Inspect {
        name: String,
    },
    Rm {
        name: String,
    },
    /// A new key for an encrypted network now (received first, then sent with).
    RotateKey {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    Create {
        name: String,
        #[arg(long)]
        replicas: Option<u32>,
        #[arg(long, value_parser = ["replicated", "global"], default_value = "replicated")]
        mode: String,
        /// `NAME` or `name=NAME,alias=A`.
        #[arg(long = "network")]
        networks: Vec<String>,
        /// `[mode=host,]PUBLISHED:TARGET[/udp]`.
        #[arg(long = "publish", short = 'p')]
        publish: Vec<String>,
        #[arg(long = "endpoint-mode", value_parser = ["vip", "dnsrr"], default_value = "vip")]
        endpoint_mode: String,
        #[arg(long = "constraint")]
        constraints: Vec<String>,
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// A health check command, run in the task's namespaces (`sh -c`).
        #[arg(long = "health-cmd")]
        health_cmd: Option<String>,
        #[arg(long = "health-interval-ms", default_value_t = 30_000)]
        health_interval_ms: u64,
        #[arg(long = "health-retries", default_value_t = 3)]
        health_retries: u32,
        /// Return at once instead of following the tasks until the service converges.
        #[arg(long, short = 'd')]
        detach: bool,
        /// The task's program (after `--`); none: the built-in probe server.
        #[arg(last = true)]
        command: Vec<String>,
    },
    Ls,
    /// The service with its VIPs (by network) and ports, as JSON.
    Inspect {
        service: String,
    },
    Ps {
        service: String,
    },
    /// Prints the output of a service's tasks, each line prefixed with its task and node
    /// (Docker's `service logs`). Logs stay on the node that ran the task: this reads the
    /// ones under --state-root on this host (every node of a lab; elsewhere, run it on each
    /// node) and says where the others are.
    Logs {
        service: String,
        /// Only the last N lines of each task.
        #[arg(long)]
        tail: Option<usize>,
        /// The agents' state folders (`<root>/<hostname>/logs/<task>.log`), as `shoal agent
        /// --state-dir` defaults them.
        #[arg(long = "state-root", default_value = "/var/lib/shoal/agent")]
        state_root: std::path::PathBuf,
    },
    /// Changes a service: its tasks are replaced (a scale alone only adds or stops some).
    Update {
        service: String,
        #[arg(long)]
        replicas: Option<u32>,
        #[arg(long = "env-add", value_name = "KEY=VALUE")]
        env_add: Vec<String>,
        #[arg(long = "env-rm", value_name = "KEY")]
        env_rm: Vec<String>,
        #[arg(long = "constraint-add")]
        constraint_add: Vec<String>,
        #[arg(long = "constraint-rm")]
        constraint_rm: Vec<String>,
        #[arg(long = "publish-add")]
        publish_add: Vec<String>,
        /// A target port whose publication goes.
        #[arg(long = "publish-rm")]
        publish_rm: Vec<u16>,
        #[arg(long = "network-add")]
        network_add: Vec<String>,
        #[arg(long = "network-rm")]
        network_rm: Vec<String>,
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// `NAME=REPLICAS`.
    Scale {
        target: String,
        /// Return at once instead of following the tasks until the service converges.
        #[arg(long, short = 'd')]
        detach: bool,
    },
    Rm {
        service: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum StackCmd {
    Deploy {
        #[arg(short = 'c', long = "compose-file")]
        file: PathBuf,
        name: String,
    },
    Ls,
    /// The stack's services.
    Services {
        name: String,
    },
    /// The stack's tasks.
    Ps {
        name: String,
    },
    /// Removes the stack's services, then its networks.
    Rm {
        name: String,
    },
}
