//! `shoal-cni`, CNI 1.0 on top of the local API: ADD attaches the container's namespace to
//! the shoal network the config names (its `network` key, else its `name`), DEL detaches it
//! (idempotent), CHECK says whether it is attached, VERSION lists the versions spoken. The
//! decisions are here, sans-IO ([`run`]); `src/bin/shoal-cni.rs` feeds it the environment
//! and stdin and prints what it returns.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{AttachRequest, Attachment, LocalError};

/// The versions this plugin answers in.
pub const SUPPORTED: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// CNI's well-known error codes (the spec's section "Error").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Plugin-specific: the agent refused (a network that is not attachable, ...).
    pub const REFUSED: u32 = 100;
}

/// The network configuration on stdin (the keys shoal reads).
#[derive(Debug, Deserialize)]
struct NetConf {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    /// The shoal network; default: `name`.
    #[serde(default)]
    network: Option<String>,
    /// The agent's socket; default: the agent's default.
    #[serde(default)]
    socket: Option<PathBuf>,
}

/// What the plugin needs from the agent.
pub trait CniAgent {
    fn attach(&self, request: &AttachRequest) -> Result<Attachment, LocalError>;
    fn detach(&self, container: &str, network: Option<&str>)
    -> Result<Vec<Attachment>, LocalError>;
    fn attachments(&self) -> Result<Vec<Attachment>, LocalError>;
}

impl CniAgent for super::api::LocalClient {
    fn attach(&self, request: &AttachRequest) -> Result<Attachment, LocalError> {
        super::api::LocalClient::attach(self, request)
    }
    fn detach(
        &self,
        container: &str,
        network: Option<&str>,
    ) -> Result<Vec<Attachment>, LocalError> {
        super::api::LocalClient::detach(self, container, network)
    }
    fn attachments(&self) -> Result<Vec<Attachment>, LocalError> {
        super::api::LocalClient::attachments(self)
    }
}

/// What to print on stdout, and whether it is a success.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub stdout: Value,
    pub ok: bool,
}

fn error(version: &str, code: u32, msg: impl Into<String>, details: impl Into<String>) -> Outcome {
    Outcome {
        stdout: json!({
            "cniVersion": if version.is_empty() { "1.0.0" } else { version },
            "code": code,
            "msg": msg.into(),
            "details": details.into(),
        }),
        ok: false,
    }
}

fn agent_error(version: &str, e: LocalError) -> Outcome {
    match e {
        LocalError::Refused { status, message } if status < 500 => error(
            version,
            code::REFUSED,
            message,
            format!("the agent refused (HTTP {status})"),
        ),
        other => error(version, code::TRY_AGAIN_LATER, other.to_string(), ""),
    }
}

/// One plugin call. `env` reads a CNI_* variable; `connect` gives the agent for a socket.
pub fn run<A: CniAgent>(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    connect: impl FnOnce(Option<PathBuf>) -> A,
) -> Outcome {
    let command = env("CNI_COMMAND").unwrap_or_default();
    if command == "VERSION" {
        return Outcome {
            stdout: json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED}),
            ok: true,
        };
    }
    let conf: NetConf = match serde_json::from_slice(stdin) {
        Ok(c) => c,
        Err(e) => {
            return error(
                "",
                code::DECODE,
                "the network configuration on stdin is not valid JSON",
                e.to_string(),
            );
        }
    };
    let version = conf.cni_version.clone();
    if !SUPPORTED.contains(&version.as_str()) {
        return error(
            "",
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {version:?} is not supported"),
            format!("supported: {}", SUPPORTED.join(", ")),
        );
    }
    let network = conf.network.clone().unwrap_or_else(|| conf.name.clone());
    if network.is_empty() {
        return error(
            &version,
            code::INVALID_CONFIG,
            "the configuration names no network (give \"network\" or \"name\")",
            "",
        );
    }
    let need = |name: &str| env(name).filter(|v| !v.is_empty());
    let Some(container) = need("CNI_CONTAINERID") else {
        return error(
            &version,
            code::INVALID_ENV,
            "CNI_CONTAINERID is not set",
            "",
        );
    };
    let ifname = need("CNI_IFNAME").unwrap_or_else(|| "eth0".into());
    let agent = connect(conf.socket);
    match command.as_str() {
        "ADD" => {
            let Some(netns) = need("CNI_NETNS") else {
                return error(
                    &version,
                    code::INVALID_ENV,
                    "CNI_NETNS is not set: ADD needs the container's namespace",
                    "",
                );
            };
            let request = AttachRequest {
                container,
                name: None,
                network,
                netns: PathBuf::from(netns),
                ifname: Some(ifname),
            };
            match agent.attach(&request) {
                Ok(a) => Outcome {
                    stdout: add_result(&version, &a),
                    ok: true,
                },
                Err(e) => agent_error(&version, e),
            }
        }
        // Nothing attached is success: DEL may come twice, or after a failed ADD.
        "DEL" => match agent.detach(&container, Some(&network)) {
            Ok(_) => Outcome {
                stdout: Value::Null,
                ok: true,
            },
            Err(e) => agent_error(&version, e),
        },
        "CHECK" => match agent.attachments() {
            Ok(all)
                if all.iter().any(|a| {
                    a.container == container && a.network == network && a.ifname == ifname
                }) =>
            {
                Outcome {
                    stdout: Value::Null,
                    ok: true,
                }
            }
            Ok(_) => error(
                &version,
                code::REFUSED,
                format!("container {container} is not attached to {network} as {ifname}"),
                "",
            ),
            Err(e) => agent_error(&version, e),
        },
        other => error(
            &version,
            code::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION"),
            "",
        ),
    }
}

/// The plugin's process: the environment and stdin in, the result or error on stdout.
pub fn main() -> std::process::ExitCode {
    use std::io::Read;
    let mut stdin = Vec::new();
    // Bounded: a network configuration is small.
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut stdin);
    let outcome = run(
        |name| std::env::var(name).ok(),
        &stdin,
        |socket| {
            super::api::LocalClient::new(
                socket.unwrap_or_else(|| super::api::DEFAULT_SOCKET.into()),
            )
        },
    );
    if !outcome.stdout.is_null() {
        println!("{}", outcome.stdout);
    }
    if outcome.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The ADD result: the interface, its address and gateway, a default route, the resolver.
fn add_result(version: &str, a: &Attachment) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [{"name": a.ifname, "mac": a.mac, "sandbox": a.netns}],
        "ips": [{"address": a.address, "gateway": a.gateway.to_string(), "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": a.gateway.to_string()}],
        "dns": {"nameservers": [a.dns.to_string()]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::net::Ipv4Addr;

    #[derive(Default)]
    struct Fake {
        attached: RefCell<Vec<Attachment>>,
    }

    impl CniAgent for &Fake {
        fn attach(&self, r: &AttachRequest) -> Result<Attachment, LocalError> {
            if r.network == "private" {
                return Err(LocalError::Refused {
                    status: 409,
                    message: "network \"private\" is not attachable".into(),
                });
            }
            let a = Attachment {
                container: r.container.clone(),
                name: r.container.clone(),
                network: r.network.clone(),
                netns: r.netns.clone(),
                ifname: r.ifname.clone().unwrap_or_default(),
                address: "10.0.3.5/24".into(),
                mac: "02:42:0a:00:03:05".into(),
                gateway: Ipv4Addr::new(10, 0, 3, 1),
                dns: Ipv4Addr::new(127, 0, 0, 11),
                mtu: 1450,
            };
            self.attached.borrow_mut().push(a.clone());
            Ok(a)
        }
        fn detach(&self, c: &str, n: Option<&str>) -> Result<Vec<Attachment>, LocalError> {
            let mut all = self.attached.borrow_mut();
            let (gone, kept) = all
                .drain(..)
                .partition(|a| a.container == c && n.is_none_or(|n| a.network == n));
            *all = kept;
            Ok(gone)
        }
        fn attachments(&self) -> Result<Vec<Attachment>, LocalError> {
            Ok(self.attached.borrow().clone())
        }
    }

    fn call(fake: &Fake, command: &str, conf: &str) -> Outcome {
        let env = |k: &str| {
            match k {
                "CNI_COMMAND" => Some(command),
                "CNI_CONTAINERID" => Some("c1"),
                "CNI_NETNS" => Some("/run/netns/c1"),
                "CNI_IFNAME" => Some("eth0"),
                _ => None,
            }
            .map(str::to_owned)
        };
        run(env, conf.as_bytes(), |_| fake)
    }

    const CONF: &str =
        r#"{"cniVersion":"1.0.0","name":"mynet","type":"shoal-cni","network":"blue"}"#;

    #[test]
    fn add_check_del_del() {
        let fake = Fake::default();
        let added = call(&fake, "ADD", CONF);
        assert!(added.ok, "{:?}", added.stdout);
        assert_eq!(added.stdout["ips"][0]["address"], "10.0.3.5/24");
        assert_eq!(added.stdout["dns"]["nameservers"][0], "127.0.0.11");
        assert_eq!(added.stdout["interfaces"][0]["sandbox"], "/run/netns/c1");
        assert!(call(&fake, "CHECK", CONF).ok);
        assert!(call(&fake, "DEL", CONF).ok);
        assert!(!call(&fake, "CHECK", CONF).ok);
        assert!(call(&fake, "DEL", CONF).ok, "DEL is idempotent");
    }

    #[test]
    fn refusals_and_bad_input_are_cni_errors() {
        let fake = Fake::default();
        let refused = call(&fake, "ADD", r#"{"cniVersion":"1.0.0","name":"private"}"#);
        assert!(!refused.ok);
        assert_eq!(refused.stdout["code"], code::REFUSED);
        assert!(
            refused.stdout["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("not attachable")
        );
        let garbage = call(&fake, "ADD", "{not json");
        assert_eq!(garbage.stdout["code"], code::DECODE);
        let old = call(&fake, "ADD", r#"{"cniVersion":"0.1.0","name":"x"}"#);
        assert_eq!(old.stdout["code"], code::INCOMPATIBLE_VERSION);
        let version = call(&fake, "VERSION", "");
        assert!(version.ok && version.stdout["supportedVersions"].as_array().is_some());
    }
}
