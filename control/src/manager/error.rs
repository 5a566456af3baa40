//! The manager's refusals. Each names the object, the cause and the fix: they reach the user
//! who asked (`service create` fails with the message), not a log.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::constraint::ConstraintError;
use super::model::Protocol;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists: choose another name or remove it first")]
    Exists { kind: &'static str, name: String },
    #[error(
        "{kind} name {name:?} is not valid: use 1-63 letters, digits, '-' or '_', starting with a letter or digit"
    )]
    BadName { kind: &'static str, name: String },
    #[error(
        "network {network:?}: subnet {subnet} overlaps network subnet {other}: choose another --subnet"
    )]
    SubnetOverlaps {
        network: String,
        subnet: Ipv4Net,
        other: Ipv4Net,
    },
    #[error("network {network:?}: subnet {subnet} is too small: use a /29 or larger")]
    SubnetTooSmall { network: String, subnet: Ipv4Net },
    #[error(
        "network {network:?}: no free /{prefix_len} left in the address pool {pool}: remove unused networks or give --subnet"
    )]
    PoolExhausted {
        network: String,
        pool: Ipv4Net,
        prefix_len: u8,
    },
    #[error(
        "network {network:?} ({subnet}) has no free address ({in_use} in use): recreate it with a larger --subnet, or remove tasks or containers from it"
    )]
    SubnetExhausted {
        network: String,
        subnet: Ipv4Net,
        in_use: usize,
    },
    #[error("no VXLAN network identifier is left: remove unused networks")]
    VnisExhausted,
    #[error(
        "service {service:?}: published port {port}/{protocol:?} is already in use by another service: choose another port"
    )]
    PortInUse {
        service: String,
        port: u16,
        protocol: Protocol,
    },
    #[error(
        "service {service:?}: every port of {low}-{high} is published: remove services or give --publish a port"
    )]
    PortsExhausted {
        service: String,
        low: u16,
        high: u16,
    },
    #[error(
        "service {service:?}: endpoint mode dnsrr cannot publish ports in ingress mode (there is no VIP to balance them): use --publish mode=host,... or --endpoint-mode vip"
    )]
    DnsrrIngress { service: String },
    #[error(
        "network {network:?} is the routing mesh's: services reach it by publishing ports, nothing attaches to it"
    )]
    IngressAttach { network: String },
    #[error(
        "network {network:?} is not attachable: standalone containers may join attachable networks only (create it with --attachable)"
    )]
    NotAttachable { network: String },
    #[error(
        "network {network:?} is used by services {services:?}: remove them or detach them first"
    )]
    NetworkInUse {
        network: String,
        services: Vec<String>,
    },
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error(
        "service {service:?}: a global service has no replicas to scale: it runs one task on every eligible node"
    )]
    ScaleGlobal { service: String },
    #[error("node {node:?} still runs as a manager: demote it first")]
    RemoveManager { node: String },
    #[error(
        "network {network:?} is not encrypted: it has no keys to rotate (create it with --opt encrypted)"
    )]
    NotEncrypted { network: String },
    #[error("address {ip} is not in network {network:?}")]
    NotInNetwork { network: String, ip: Ipv4Addr },
}
