//! `shoal network ...`.

use super::args::NetworkCmd;
use super::render::table;
use super::{Out, apply, fetch};
use crate::manager::api::ApiClient;
use crate::manager::model::NetworkSpec;
use crate::manager::{Applied, Command, State};

pub(super) fn network(api: &ApiClient, out: &Out, cmd: NetworkCmd) -> Result<(), String> {
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            subnet,
            attachable,
            internal,
            opts,
        } => {
            if driver != "overlay" {
                return Err(format!(
                    "network {name:?}: driver {driver:?} does not exist in a swarm: use --driver overlay"
                ));
            }
            let subnet = subnet
                .map(|s| {
                    s.parse()
                        .map_err(|_| format!("--subnet {s:?}: write an IPv4 CIDR like 10.1.0.0/24"))
                })
                .transpose()?;
            let encrypted = opts
                .iter()
                .any(|o| o == "encrypted" || o == "encrypted=true");
            if let Some(other) = opts.iter().find(|o| !o.starts_with("encrypted")) {
                return Err(format!(
                    "--opt {other:?}: the overlay driver knows only `encrypted`"
                ));
            }
            let spec = NetworkSpec {
                name,
                subnet,
                attachable,
                internal,
                encrypted,
            };
            let applied = apply(api, Command::CreateNetwork(spec))?;
            out.print(&applied, || applied.id.clone().unwrap_or_default());
        }
        NetworkCmd::Ls => {
            let state: State = fetch(api, "/v1/state")?;
            let rows: Vec<Vec<String>> = state
                .networks
                .values()
                .map(|n| {
                    let flags = [
                        (n.ingress, "ingress"),
                        (n.spec.attachable, "attachable"),
                        (n.spec.internal, "internal"),
                        (n.spec.encrypted, "encrypted"),
                    ];
                    let flags: Vec<&str> = flags
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, f)| *f)
                        .collect();
                    vec![
                        n.id.clone(),
                        n.spec.name.clone(),
                        n.subnet.to_string(),
                        n.vni.to_string(),
                        flags.join(","),
                    ]
                })
                .collect();
            out.print(&state.networks, || {
                table(&["ID", "NAME", "SUBNET", "VNI", "OPTIONS"], &rows)
            });
        }
        NetworkCmd::Inspect { name } => {
            let state: State = fetch(api, "/v1/state")?;
            let net = state.network(&name).map_err(|e| e.to_string())?;
            let services: Vec<&str> = state
                .services
                .values()
                .filter(|s| {
                    s.vips.contains_key(&net.id)
                        || s.spec.networks.iter().any(|a| a.network == net.spec.name)
                })
                .map(|s| s.spec.name.as_str())
                .collect();
            let shown = serde_json::json!({ "network": net, "services": services });
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).unwrap_or_default()
            );
        }
        NetworkCmd::RotateKey { name } => {
            let applied: Applied = api
                .post(&format!("/v1/networks/{name}/rotate-key"), &())
                .map_err(|e| e.to_string())?;
            out.print(&applied, || {
                format!("network {name}: a new key goes out (sent with once every node holds it)")
            });
        }
        NetworkCmd::Rm { name } => {
            let applied = apply(
                api,
                Command::RemoveNetwork {
                    network: name.clone(),
                },
            )?;
            out.print(&applied, || name);
        }
    }
    Ok(())
}
