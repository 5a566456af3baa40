//! `stack deploy`'s compose files: the v3 subset that matters for the network (networks with
//! their driver options, services with networks and aliases, ports, deploy mode, replicas,
//! endpoint mode, placement constraints, restart policy, healthcheck, command, environment),
//! turned into specs named `<stack>_<name>` as Docker does. Anything wrong is refused with the
//! file, the line and the field; keys we do not use (volumes, secrets, logging, ...) are
//! accepted and listed as ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::{Location, Spanned};

use super::constraint::Constraint;
use super::model::{
    Attachment, EndpointMode, HealthCheck, NetworkSpec, PortSpec, Protocol, PublishMode,
    RestartCondition, RestartPolicy, ServiceMode, ServiceSpec,
};

/// The label naming the stack a service was deployed with (Docker's
/// `com.docker.stack.namespace`).
pub const STACK_LABEL: &str = "shoal.stack";

/// A stack ready to deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub networks: Vec<NetworkSpec>,
    pub services: Vec<ServiceSpec>,
    /// Keys present in the file that shoal does not act on, with where they are.
    pub ignored: Vec<String>,
}

/// A refusal: `file:line:column: field: what is wrong`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ComposeError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.message
        )
    }
}

/// One `expose` entry: a TCP port (UDP ones are refused: nothing would probe them).
fn expose_port(value: &Scalar) -> Result<u16, String> {
    let text = match value {
        Scalar::Int(n) => n.to_string(),
        Scalar::Text(t) => t.strip_suffix("/tcp").unwrap_or(t).to_owned(),
        Scalar::Bool(b) => b.to_string(),
    };
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?}: write a TCP port, like \"5432\" or 5432"))
}

// ---- the file as written ------------------------------------------------------------------

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    networks: BTreeMap<String, Spanned<Option<RawNetwork>>>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    volumes: Option<IgnoredAny>,
    #[serde(default)]
    secrets: Option<IgnoredAny>,
    #[serde(default)]
    configs: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Text(String),
}

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    driver_opts: BTreeMap<String, Option<Scalar>>,
    #[serde(default)]
    attachable: Option<bool>,
    #[serde(default)]
    internal: Option<bool>,
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    labels: Option<IgnoredAny>,
}

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpam {
    #[serde(default)]
    driver: Option<IgnoredAny>,
    #[serde(default)]
    config: Vec<RawSubnet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    subnet: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawEnv {
    Map(BTreeMap<String, Option<Scalar>>),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawServiceNetworks {
    List(Vec<Spanned<String>>),
    Map(BTreeMap<String, Option<RawServiceNetwork>>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceNetwork {
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(u16),
    Short(String),
    Long(RawLongPort),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLongPort {
    target: u16,
    #[serde(default)]
    published: Option<u16>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    command: Option<StringOrList>,
    #[serde(default)]
    environment: Option<RawEnv>,
    #[serde(default)]
    networks: Option<RawServiceNetworks>,
    #[serde(default)]
    ports: Vec<Spanned<RawPort>>,
    /// `"5432"`, `5432` or `"5432/tcp"`.
    #[serde(default)]
    expose: Vec<Scalar>,
    #[serde(default)]
    deploy: Option<RawDeploy>,
    #[serde(default)]
    healthcheck: Option<Spanned<RawHealth>>,
    #[serde(default)]
    labels: Option<IgnoredAny>,
    #[serde(default)]
    volumes: Option<IgnoredAny>,
    #[serde(default)]
    secrets: Option<IgnoredAny>,
    #[serde(default)]
    configs: Option<IgnoredAny>,
    #[serde(default)]
    logging: Option<IgnoredAny>,
    #[serde(default)]
    hostname: Option<IgnoredAny>,
    #[serde(default)]
    entrypoint: Option<IgnoredAny>,
    #[serde(default)]
    env_file: Option<IgnoredAny>,
    #[serde(default)]
    stop_grace_period: Option<IgnoredAny>,
}

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    replicas: Option<Spanned<u32>>,
    #[serde(default)]
    endpoint_mode: Option<Spanned<String>>,
    #[serde(default)]
    placement: Option<RawPlacement>,
    #[serde(default)]
    restart_policy: Option<RawRestart>,
    #[serde(default)]
    resources: Option<IgnoredAny>,
    #[serde(default)]
    update_config: Option<IgnoredAny>,
    #[serde(default)]
    rollback_config: Option<IgnoredAny>,
    #[serde(default)]
    labels: Option<IgnoredAny>,
}

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    #[serde(default)]
    constraints: Vec<Spanned<String>>,
    #[serde(default)]
    preferences: Option<IgnoredAny>,
    #[serde(default)]
    max_replicas_per_node: Option<IgnoredAny>,
}

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    #[serde(default)]
    condition: Option<Spanned<String>>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    delay: Option<IgnoredAny>,
    #[serde(default)]
    window: Option<IgnoredAny>,
}

// Keys accepted but not acted on are fields too, so deny_unknown_fields lets them
// through (and refuses misspellings); they are never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default)]
    test: Option<StringOrList>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<IgnoredAny>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    start_period: Option<IgnoredAny>,
    #[serde(default)]
    disable: Option<bool>,
}

// ---- from the file to specs ---------------------------------------------------------------

/// Parses `text` (from `file`, for messages) as stack `stack`.
pub fn parse(file: &str, stack: &str, text: &str) -> Result<Stack, ComposeError> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ComposeError {
            file: file.to_owned(),
            line,
            column,
            field: "file".into(),
            message: plain(&e.to_string()),
        }
    })?;
    let mut out = Stack {
        networks: Vec::new(),
        services: Vec::new(),
        ignored: Vec::new(),
    };
    let err = |at: Location, field: String, message: String| ComposeError {
        file: file.to_owned(),
        line: at.line(),
        column: at.column(),
        field,
        message,
    };
    if let Some(v) = &raw.version
        && !v.starts_with('3')
    {
        return Err(err(
            Location::UNKNOWN,
            "version".into(),
            format!("{v:?}: stacks need a version 3 file"),
        ));
    }
    for (name, net) in &raw.networks {
        let field = format!("networks.{name}");
        let spec = match &net.value {
            None => NetworkSpec {
                name: format!("{stack}_{name}"),
                ..Default::default()
            },
            Some(n) => {
                network_spec(stack, name, n).map_err(|m| err(net.referenced, field.clone(), m))?
            }
        };
        out.networks.push(spec);
    }
    let mut needs_default = false;
    for (name, service) in &raw.services {
        let field = format!("services.{name}");
        let at = service.referenced;
        let s = &service.value;
        let mut spec = ServiceSpec {
            name: format!("{stack}_{name}"),
            ..Default::default()
        };
        if let Some(image) = &s.image {
            spec.labels.insert("image".into(), image.clone());
        }
        spec.labels.insert(STACK_LABEL.into(), stack.to_owned());
        spec.command = match &s.command {
            None => Vec::new(),
            Some(StringOrList::One(line)) => vec!["sh".into(), "-c".into(), line.clone()],
            Some(StringOrList::Many(argv)) => argv.clone(),
        };
        spec.expose = s
            .expose
            .iter()
            .map(expose_port)
            .collect::<Result<_, _>>()
            .map_err(|m| err(at, format!("{field}.expose"), m))?;
        spec.env = environment(s.environment.as_ref())
            .map_err(|m| err(at, format!("{field}.environment"), m))?;
        // Every service answers to its short name on its networks, as in `docker stack deploy`.
        let attach = |network: &str, mut aliases: Vec<String>| {
            aliases.insert(0, name.clone());
            Attachment {
                network: format!("{stack}_{network}"),
                aliases,
            }
        };
        match &s.networks {
            None => {
                needs_default = true;
                spec.networks.push(attach("default", Vec::new()));
            }
            Some(RawServiceNetworks::List(list)) => {
                for network in list {
                    if !raw.networks.contains_key(&network.value) {
                        let why = format!(
                            "network {:?} is not declared under the top-level `networks:`",
                            network.value
                        );
                        // Inside an untagged list serde-saphyr knows no location: the service's.
                        let where_ = if network.referenced == Location::UNKNOWN {
                            at
                        } else {
                            network.referenced
                        };
                        return Err(err(where_, format!("{field}.networks"), why));
                    }
                    spec.networks.push(attach(&network.value, Vec::new()));
                }
            }
            Some(RawServiceNetworks::Map(map)) => {
                for (network, options) in map {
                    if !raw.networks.contains_key(network) {
                        let why = format!(
                            "network {network:?} is not declared under the top-level `networks:`"
                        );
                        return Err(err(at, format!("{field}.networks"), why));
                    }
                    let aliases = options
                        .as_ref()
                        .map(|o| o.aliases.clone())
                        .unwrap_or_default();
                    spec.networks.push(attach(network, aliases));
                }
            }
        }
        for port in &s.ports {
            let parsed = port_spec(&port.value)
                .map_err(|m| err(port.referenced, format!("{field}.ports"), m))?;
            spec.ports.push(parsed);
        }
        if let Some(deploy) = &s.deploy {
            apply_deploy(&mut spec, deploy, &field, &err)?;
        }
        if let Some(health) = &s.healthcheck {
            spec.health = health_check(&health.value)
                .map_err(|m| err(health.referenced, format!("{field}.healthcheck"), m))?;
        }
        for (key, present) in [
            ("volumes", s.volumes.is_some()),
            ("secrets", s.secrets.is_some()),
            ("configs", s.configs.is_some()),
            ("logging", s.logging.is_some()),
            ("entrypoint", s.entrypoint.is_some()),
            ("env_file", s.env_file.is_some()),
        ] {
            if present {
                out.ignored
                    .push(format!("{file}:{}: {field}.{key}", at.line()));
            }
        }
        out.services.push(spec);
    }
    if needs_default && !raw.networks.contains_key("default") {
        out.networks.push(NetworkSpec {
            name: format!("{stack}_default"),
            ..Default::default()
        });
    }
    Ok(out)
}

/// serde-saphyr's message, on one line, without its own location prefix (ours says it).
fn plain(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

fn network_spec(stack: &str, name: &str, n: &RawNetwork) -> Result<NetworkSpec, String> {
    if let Some(driver) = &n.driver
        && driver != "overlay"
    {
        return Err(format!(
            "driver {driver:?}: stacks run on overlay networks only (driver: overlay)"
        ));
    }
    let mut spec = NetworkSpec {
        name: format!("{stack}_{name}"),
        ..Default::default()
    };
    // Docker turns encryption on when the option is present, whatever its value, unless it
    // says false.
    spec.encrypted = match n.driver_opts.get("encrypted") {
        None => false,
        Some(Some(Scalar::Bool(b))) => *b,
        Some(Some(Scalar::Text(t))) => !t.eq_ignore_ascii_case("false"),
        Some(Some(Scalar::Int(i))) => *i != 0,
        Some(None) => true,
    };
    spec.attachable = n.attachable.unwrap_or(false);
    spec.internal = n.internal.unwrap_or(false);
    if let Some(ipam) = &n.ipam {
        match ipam.config.as_slice() {
            [] => {}
            [one] => {
                spec.subnet = Some(one.subnet.value.parse().map_err(|_| {
                    format!(
                        "ipam subnet {:?} is not an IPv4 CIDR like 10.1.0.0/24",
                        one.subnet.value
                    )
                })?)
            }
            _ => return Err("one ipam subnet per network is supported".into()),
        }
    }
    Ok(spec)
}

fn environment(env: Option<&RawEnv>) -> Result<BTreeMap<String, String>, String> {
    let scalar = |v: &Option<Scalar>| match v {
        None => String::new(),
        Some(Scalar::Bool(b)) => b.to_string(),
        Some(Scalar::Int(i)) => i.to_string(),
        Some(Scalar::Text(t)) => t.clone(),
    };
    match env {
        None => Ok(BTreeMap::new()),
        Some(RawEnv::Map(map)) => Ok(map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect()),
        Some(RawEnv::List(list)) => list
            .iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => Err(format!("{item:?}: write environment entries as KEY=value")),
            })
            .collect(),
    }
}

/// `80`, `"8080:80"`, `"8080:80/udp"`, or the long form.
fn port_spec(port: &RawPort) -> Result<PortSpec, String> {
    let protocol = |p: Option<&str>| match p {
        None | Some("tcp") => Ok(Protocol::Tcp),
        Some("udp") => Ok(Protocol::Udp),
        Some(other) => Err(format!("protocol {other:?}: tcp or udp")),
    };
    match port {
        RawPort::Number(target) => Ok(PortSpec {
            target: *target,
            ..Default::default()
        }),
        RawPort::Short(text) => {
            let (ports, proto) = match text.split_once('/') {
                Some((ports, proto)) => (ports, Some(proto)),
                None => (text.as_str(), None),
            };
            let number = |s: &str| {
                s.parse::<u16>().map_err(|_| format!("{text:?}: write ports as PUBLISHED:TARGET[/udp], e.g. \"8080:80\" (ranges and host addresses are not supported)"))
            };
            let (published, target) = match ports.split(':').collect::<Vec<_>>().as_slice() {
                [target] => (None, number(target)?),
                [published, target] => (Some(number(published)?), number(target)?),
                _ => {
                    return Err(format!(
                        "{text:?}: write ports as PUBLISHED:TARGET[/udp]; host addresses are not supported"
                    ));
                }
            };
            Ok(PortSpec {
                target,
                published,
                protocol: protocol(proto)?,
                mode: PublishMode::Ingress,
            })
        }
        RawPort::Long(long) => Ok(PortSpec {
            target: long.target,
            published: long.published,
            protocol: protocol(long.protocol.as_deref())?,
            mode: match long.mode.as_deref() {
                None | Some("ingress") => PublishMode::Ingress,
                Some("host") => PublishMode::Host,
                Some(other) => return Err(format!("mode {other:?}: ingress or host")),
            },
        }),
    }
}

fn apply_deploy(
    spec: &mut ServiceSpec,
    deploy: &RawDeploy,
    field: &str,
    err: &impl Fn(Location, String, String) -> ComposeError,
) -> Result<(), ComposeError> {
    let replicas = deploy.replicas.as_ref().map(|r| r.value);
    spec.mode = match deploy
        .mode
        .as_ref()
        .map(|m| (m.value.as_str(), m.referenced))
    {
        None | Some(("replicated", _)) => ServiceMode::Replicated {
            replicas: replicas.unwrap_or(1),
        },
        Some(("global", at)) => {
            if replicas.is_some() {
                return Err(err(
                    at,
                    format!("{field}.deploy.replicas"),
                    "a global service runs one task per node: remove replicas".into(),
                ));
            }
            ServiceMode::Global
        }
        Some((other, at)) => {
            return Err(err(
                at,
                format!("{field}.deploy.mode"),
                format!("{other:?}: replicated or global"),
            ));
        }
    };
    if let Some(mode) = &deploy.endpoint_mode {
        spec.endpoint_mode = match mode.value.as_str() {
            "vip" => EndpointMode::Vip,
            "dnsrr" => EndpointMode::Dnsrr,
            other => {
                return Err(err(
                    mode.referenced,
                    format!("{field}.deploy.endpoint_mode"),
                    format!("{other:?}: vip or dnsrr"),
                ));
            }
        };
    }
    if let Some(placement) = &deploy.placement {
        for c in &placement.constraints {
            let parsed: Constraint =
                c.value
                    .parse()
                    .map_err(|e: super::constraint::ConstraintError| {
                        err(
                            c.referenced,
                            format!("{field}.deploy.placement.constraints"),
                            e.to_string(),
                        )
                    })?;
            spec.constraints.push(parsed);
        }
    }
    if let Some(restart) = &deploy.restart_policy {
        let condition = match restart.condition.as_ref() {
            None => RestartCondition::Any,
            Some(c) => match c.value.as_str() {
                "none" => RestartCondition::None,
                "on-failure" => RestartCondition::OnFailure,
                "any" => RestartCondition::Any,
                other => {
                    return Err(err(
                        c.referenced,
                        format!("{field}.deploy.restart_policy.condition"),
                        format!("{other:?}: none, on-failure or any"),
                    ));
                }
            },
        };
        spec.restart = RestartPolicy {
            condition,
            max_attempts: restart.max_attempts,
        };
    }
    Ok(())
}

fn health_check(h: &RawHealth) -> Result<Option<HealthCheck>, String> {
    if h.disable == Some(true) {
        return Ok(None);
    }
    let interval_ms = match &h.interval {
        None => 30_000,
        Some(text) => duration_ms(text).ok_or_else(|| {
            format!("interval {text:?}: write a duration like 30s, 1m30s or 500ms")
        })?,
    };
    let retries = h.retries.unwrap_or(3);
    let command = match &h.test {
        None => return Err("a healthcheck needs a test".into()),
        Some(StringOrList::One(line)) => vec!["sh".into(), "-c".into(), line.clone()],
        Some(StringOrList::Many(argv)) => match argv.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, [line])) if kind == "CMD-SHELL" => vec!["sh".into(), "-c".into(), line.clone()],
            Some((kind, [])) if kind == "NONE" => return Ok(None),
            _ => return Err("test: write [\"CMD\", program, args...], [\"CMD-SHELL\", \"command\"] or a command string".into()),
        },
    };
    Ok(Some(HealthCheck::Command {
        command,
        interval_ms,
        retries,
    }))
}

/// `1h2m3s`, `500ms`, `30s`.
fn duration_ms(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (factor, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.chars().next()? {
                'h' => (3_600_000, 1),
                'm' => (60_000, 1),
                's' => (1_000, 1),
                _ => return None,
            }
        };
        total = total.checked_add(number.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

impl Stack {
    /// The commands that create it: networks first, then services.
    pub fn commands(&self) -> Vec<super::command::Command> {
        use super::command::Command;
        let networks = self.networks.iter().cloned().map(Command::CreateNetwork);
        networks
            .chain(self.services.iter().cloned().map(Command::CreateService))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manager::ipam::PoolConfig;
    use crate::manager::state::State;

    /// The seed stack of issue 5.
    const SEED: &str = r#"version: '3.7'
networks:
  public:  { driver: overlay, driver_opts: { encrypted: 'true' } }
  private: { driver: overlay, driver_opts: { encrypted: 'true' }, attachable: true }
services:
  postgres:
    image: postgres:9.6.6
    networks: [private]
    deploy: { replicas: 1 }
  api:
    image: example/api
    networks: [public, private]
    ports: ['8080:80']
    deploy: { replicas: 2, restart_policy: { condition: on-failure, max_attempts: 10, delay: 5s } }
  echo:
    image: example/echo
    ports: ['8000:8000']
"#;

    #[test]
    fn expose_takes_tcp_ports_in_every_spelling_and_names_a_bad_one() {
        let file = "services:\n  db:\n    expose: ['5432', 8080, '9000/tcp']\n";
        let stack = parse("x.yml", "x", file).unwrap();
        assert_eq!(stack.services[0].expose, vec![5432, 8080, 9000]);
        let bad = "services:\n  db:\n    expose: ['53/udp']\n";
        let e = parse("x.yml", "x", bad).unwrap_err();
        assert_eq!(e.field, "services.db.expose");
        assert!(e.message.contains("53/udp"), "{e}");
    }

    #[test]
    fn the_seed_stack_deploys_with_its_networks_services_and_vips() {
        let stack = parse("seed.yml", "seed", SEED).unwrap();
        let names: Vec<&str> = stack.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["seed_private", "seed_public", "seed_default"]);
        assert!(stack.networks[0].encrypted && stack.networks[0].attachable);
        assert!(stack.networks[1].encrypted && !stack.networks[1].attachable);
        let api = stack
            .services
            .iter()
            .find(|s| s.name == "seed_api")
            .unwrap();
        assert_eq!(api.mode, ServiceMode::Replicated { replicas: 2 });
        assert_eq!(
            api.ports,
            vec![PortSpec {
                target: 80,
                published: Some(8080),
                ..Default::default()
            }]
        );
        assert_eq!(
            api.restart,
            RestartPolicy {
                condition: RestartCondition::OnFailure,
                max_attempts: Some(10)
            }
        );
        assert_eq!(
            api.networks[0].aliases,
            vec!["api".to_string()],
            "the short name is an alias"
        );
        assert_eq!(
            api.labels.get("image").map(String::as_str),
            Some("example/api")
        );
        let echo = stack
            .services
            .iter()
            .find(|s| s.name == "seed_echo")
            .unwrap();
        assert_eq!(
            echo.networks[0].network, "seed_default",
            "no networks: the stack's default one"
        );

        let mut state = State::init(PoolConfig::default()).unwrap();
        for (i, host) in ["n1", "n2", "n3"].iter().enumerate() {
            let addr = std::net::Ipv4Addr::new(192, 168, 77, i as u8 + 1);
            let node = crate::manager::Command::AddNode {
                id: format!("id{host}"),
                hostname: host.to_string(),
                role: Default::default(),
                addr,
                labels: BTreeMap::new(),
            };
            state.apply(node).unwrap();
        }
        for command in stack.commands() {
            state.apply(command).unwrap();
        }
        let api = state.service("seed_api").unwrap();
        let vip_networks: Vec<String> = api
            .vips
            .keys()
            .map(|id| state.networks[id].spec.name.clone())
            .collect();
        assert_eq!(
            vip_networks.len(),
            3,
            "public, private and ingress: {vip_networks:?}"
        );
        assert!(vip_networks.contains(&"ingress".to_string()));
        assert_eq!(state.tasks_of(&api.id).len(), 2);
        assert_eq!(
            state.service("seed_echo").unwrap().ports[0].published,
            Some(8000)
        );
        assert_eq!(
            state.service("seed_postgres").unwrap().vips.len(),
            1,
            "private only: it publishes nothing"
        );
    }

    fn refused(text: &str) -> String {
        parse("stack.yml", "s", text).unwrap_err().to_string()
    }

    #[test]
    fn an_invalid_file_is_refused_with_file_line_and_field() {
        let cases = [
            (
                "services:\n  web:\n    imag: nginx\n",
                "stack.yml:3:",
                "imag",
            ),
            (
                "services:\n  web:\n    ports: ['80:abc']\n",
                "stack.yml:3:",
                "services.web.ports",
            ),
            (
                "services:\n  web:\n    networks: [nowhere]\n",
                "stack.yml:3:",
                "not declared",
            ),
            (
                "services:\n  web:\n    deploy:\n      mode: global\n      replicas: 2\n",
                "stack.yml:4:",
                "one task per node",
            ),
            (
                "services:\n  web:\n    deploy:\n      placement:\n        constraints: ['node.color==red']\n",
                "stack.yml:5:",
                "unknown attribute",
            ),
            (
                "services:\n  web:\n    deploy:\n      endpoint_mode: roundrobin\n",
                "stack.yml:4:",
                "vip or dnsrr",
            ),
            (
                "networks:\n  n: { driver: bridge }\nservices: {}\n",
                "stack.yml:2:",
                "overlay networks only",
            ),
            (
                "services:\n  web:\n    healthcheck:\n      test: ['CMD']\n",
                "stack.yml:4:",
                "healthcheck",
            ),
            ("services: [1, 2]\n", "stack.yml:1:", "file"),
            ("version: '2'\nservices: {}\n", "version", "version 3"),
        ];
        for (text, at, says) in cases {
            let err = refused(text);
            assert!(err.contains(at) && err.contains(says), "{text:?} -> {err}");
        }
    }

    #[test]
    fn ports_environment_healthchecks_and_ignored_keys() {
        let text = r#"
services:
  dns:
    command: ['server', '--port', '53']
    environment: ['MODE=fast', 'EMPTY=']
    ports:
      - 53
      - '5353:53/udp'
      - { target: 9000, published: 9001, protocol: tcp, mode: host }
    healthcheck: { test: ['CMD-SHELL', 'probe'], interval: 1m30s, retries: 2 }
    volumes: ['data:/data']
"#;
        let stack = parse("s.yml", "x", text).unwrap();
        let dns = &stack.services[0];
        assert_eq!(dns.command, vec!["server", "--port", "53"]);
        assert_eq!(dns.env.get("MODE").map(String::as_str), Some("fast"));
        assert_eq!(
            dns.ports[1],
            PortSpec {
                target: 53,
                published: Some(5353),
                protocol: Protocol::Udp,
                mode: PublishMode::Ingress
            }
        );
        assert_eq!(dns.ports[2].mode, PublishMode::Host);
        assert_eq!(
            dns.health,
            Some(HealthCheck::Command {
                command: vec!["sh".into(), "-c".into(), "probe".into()],
                interval_ms: 90_000,
                retries: 2
            })
        );
        assert_eq!(
            stack.ignored,
            vec!["s.yml:4: services.dns.volumes".to_string()]
        );
        assert_eq!(duration_ms("1h2m3s500ms"), Some(3_723_500));
        assert_eq!(duration_ms("5x"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        /// Whatever the text, the parser answers (a stack or an error with a location), never
        /// panics.
        #[test]
        fn arbitrary_text_never_panics(text in "[a-z:\\[\\]{}'\"\\-0-9 \n.=/]{0,200}") {
            let _ = parse("f.yml", "s", &text);
        }

        #[test]
        fn mutated_seed_files_never_panic(at in 0usize..600, byte in proptest::prelude::any::<u8>()) {
            let mut bytes = SEED.as_bytes().to_vec();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = parse("f.yml", "s", text);
            }
        }
    }
}
