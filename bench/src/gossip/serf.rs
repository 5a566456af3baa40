//! HashiCorp Serf, the anchor (`shared/anchors/serf_bench.py`): its agent's command line, the
//! log lines the harness reads, and the `serf join` / `serf members` commands.

use std::net::SocketAddrV4;

use super::process::Kind;
use crate::first_line_of;

/// Serf's RPC port (the agent's `-rpc-addr`, on the agent's own address).
pub(super) const RPC_PORT: u16 = 7373;

/// `serf agent -node NAME -bind IP:7946 -rpc-addr IP:7373 -log-level info [-join TARGET]`.
pub(super) fn agent_argv(
    name: &str,
    bind: SocketAddrV4,
    join: Option<SocketAddrV4>,
) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "serf".into(),
        "agent".into(),
        "-node".into(),
        name.into(),
        "-bind".into(),
        bind.to_string(),
        "-rpc-addr".into(),
        rpc(bind).to_string(),
        "-log-level".into(),
        "info".into(),
    ];
    if let Some(j) = join {
        v.extend(["-join".into(), j.to_string()]);
    }
    v
}

/// The RPC address of the agent bound to `bind`.
pub(super) fn rpc(bind: SocketAddrV4) -> SocketAddrV4 {
    SocketAddrV4::new(*bind.ip(), RPC_PORT)
}

/// `serf join -rpc-addr NEW_RPC TARGET`: the new agent joins the cluster through `target`.
pub(super) fn join_argv(new: SocketAddrV4, target: SocketAddrV4) -> Vec<String> {
    [
        "serf".to_string(),
        "join".into(),
        "-rpc-addr".into(),
        rpc(new).to_string(),
        target.to_string(),
    ]
    .to_vec()
}

/// `serf members -rpc-addr RPC`: one CLI round trip, the reference for the CLI's own cost.
pub(super) fn members_argv(agent: SocketAddrV4) -> Vec<String> {
    [
        "serf".to_string(),
        "members".into(),
        "-rpc-addr".into(),
        rpc(agent).to_string(),
    ]
    .to_vec()
}

/// The python harness's regexes: `serf: EventMember(Join|Failed|Leave|...): (\S+) ` and
/// `memberlist: Suspect (\S+) has failed`. (Serf's event handlers are coalesced ~1 s by the
/// agent, so the log is read instead.)
pub(super) fn parse(line: &str) -> Option<(Kind, String)> {
    if let Some((_, rest)) = line.split_once("serf: EventMember") {
        let (kind, rest) = rest.split_once(": ")?;
        let kind = match kind {
            "Join" => Kind::Join,
            "Failed" => Kind::Failed,
            "Leave" => Kind::Left,
            _ => return None,
        };
        // `(\S+) `: the name is followed by a space (then the member's address).
        let (name, _) = rest.split_once(' ')?;
        return (!name.is_empty()).then(|| (kind, name.to_string()));
    }
    let (_, rest) = line.split_once("memberlist: Suspect ")?;
    let (name, rest) = rest.split_once(' ')?;
    rest.starts_with("has failed")
        .then(|| (Kind::Suspect, name.to_string()))
}

/// `serf version`'s first line (the Debian build says 0.8.2-dev for package 0.9.4~ds1).
pub(super) fn version() -> String {
    let v = first_line_of(&["serf", "version"]);
    let pkg = first_line_of(&["dpkg-query", "-W", "-f", "${Version}", "serf"]);
    if pkg.is_empty() || pkg.contains("no packages") {
        v
    } else {
        format!("{v} (Debian package {pkg})")
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_serf_log_lines() {
        assert_eq!(
            parse("    2024/05/01 10:00:00 [INFO] serf: EventMemberJoin: n3 127.0.0.13"),
            Some((Kind::Join, "n3".into()))
        );
        assert_eq!(
            parse("    2024/05/01 10:00:09 [INFO] serf: EventMemberFailed: n1 127.0.0.11"),
            Some((Kind::Failed, "n1".into()))
        );
        assert_eq!(
            parse("[INFO] memberlist: Suspect n1 has failed, no acks received"),
            Some((Kind::Suspect, "n1".into()))
        );
        assert_eq!(parse("[INFO] serf: EventMemberUpdate: n1 x"), None);
        assert_eq!(parse("[INFO] agent: joining: [127.0.0.10:7946]"), None);
    }
}
