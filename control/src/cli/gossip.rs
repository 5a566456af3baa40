//! `shoal gossip`: one gossip member on its own, for operators (join a Serf cluster, watch a
//! network's tables) and for the benchmark and tests, which read its event lines:
//!
//! ```text
//! member joined NAME IP:PORT | member suspected NAME | member failed NAME
//! member left NAME | member recovered NAME
//! entry put NET TABLE KEY VALUE owner=NODE | entry deleted NET TABLE KEY
//! ```

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;

use nix::sys::signal::{SigSet, Signal};

use crate::gossip::membership::Event;
use crate::gossip::netdb::Config;
use crate::gossip::shell::{GossipConfig, GossipNode, Watched};
use crate::gossip::tables::{self, Key};
use crate::gossip::wire::{Key as WireKey, Keyring};

/// What `shoal gossip` was asked to run.
#[derive(clap::Args, Debug)]
pub struct Member {
    /// This member's name: keep it across restarts (a restart is not a new member).
    #[arg(long)]
    pub name: String,
    /// UDP and TCP address to listen on, also the one announced to the others.
    #[arg(long, default_value = "0.0.0.0:7946")]
    pub bind: SocketAddr,
    /// Members to join through (and to re-join after a partition).
    #[arg(long)]
    pub join: Vec<SocketAddr>,
    /// The cluster's key, base64 (16, 24 or 32 bytes), as Serf's `-encrypt`.
    #[arg(long)]
    pub encrypt: Option<String>,
    /// Networks to attach to at start.
    #[arg(long = "network")]
    pub networks: Vec<String>,
    /// Entries to write at start, `NET/TABLE/KEY=VALUE` (on a network given above).
    #[arg(long = "put", value_name = "NET/TABLE/KEY=VALUE")]
    pub puts: Vec<String>,
}

pub fn gossip(member: &Member) -> Result<(), String> {
    let Member {
        name,
        bind,
        join,
        encrypt,
        networks,
        puts,
    } = member;
    let bind = *bind;
    let puts = puts
        .iter()
        .map(|p| parse_put(p))
        .collect::<Result<Vec<_>, _>>()?;
    // SIGTERM and SIGINT are waited for by the main thread: blocked before any thread starts,
    // so every thread inherits the mask and none is killed by them.
    let signals = SigSet::from_iter([Signal::SIGTERM, Signal::SIGINT]);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block SIGTERM/SIGINT: {e}"))?;
    let keyring = encrypt
        .as_deref()
        .map(|text| {
            WireKey::from_base64(text)
                .map(Keyring::new)
                .map_err(|e| format!("--encrypt: {e} (give a base64 key of 16, 24 or 32 bytes)"))
        })
        .transpose()?;
    let node = GossipNode::start(GossipConfig {
        name: name.to_owned(),
        bind,
        keyring,
        config: Config::default(),
    })
    .map_err(|e| format!("cannot listen on {bind} (UDP and TCP): {e}"))?;
    let node = Arc::new(node);
    let events = node.watch();
    let printer = {
        let node = node.clone();
        std::thread::spawn(move || print_events(&node, &events))
    };
    for network in networks {
        node.join_network(network);
    }
    for (key, value) in puts {
        node.write(key, Some(value)).map_err(|e| e.to_string())?;
    }
    if !join.is_empty() {
        let answered = node.join(join);
        if answered == 0 {
            eprintln!("gossip {name}: none of {join:?} answered; retrying in the background");
        }
    }
    {
        let node = node.clone();
        std::thread::spawn(move || read_commands(&node));
    }
    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    eprintln!("gossip {name}: {signal:?}, leaving the cluster");
    node.leave();
    drop(printer);
    Ok(())
}

/// `NET/TABLE/KEY=VALUE` → the key and the value.
fn parse_put(text: &str) -> Result<(Key, Vec<u8>), String> {
    let bad = || format!("--put {text:?}: write NET/TABLE/KEY=VALUE");
    let (path, value) = text.split_once('=').ok_or_else(bad)?;
    let mut parts = path.splitn(3, '/');
    let (Some(network), Some(table), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if [network, table, key].iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    Ok((
        Key {
            network: network.to_owned(),
            table: table.to_owned(),
            key: key.to_owned(),
        },
        value.as_bytes().to_vec(),
    ))
}

fn print_events(node: &GossipNode, events: &mpsc::Receiver<Watched>) {
    let stdout = std::io::stdout();
    for event in events {
        let line = match event {
            Watched::Member(Event::Joined(n)) => {
                let addr = node
                    .members()
                    .into_iter()
                    .find(|m| m.name == n)
                    .map(|m| m.addr.to_string())
                    .unwrap_or_default();
                format!("member joined {n} {addr}")
            }
            Watched::Member(Event::Suspected(n)) => format!("member suspected {n}"),
            Watched::Member(Event::Failed(n)) => format!("member failed {n}"),
            Watched::Member(Event::Left(n)) => format!("member left {n}"),
            Watched::Member(Event::Recovered(n)) => format!("member recovered {n}"),
            Watched::Table(tables::Event::Put { key, owner, value }) => format!(
                "entry put {} {} {} {} owner={owner}",
                key.network,
                key.table,
                key.key,
                String::from_utf8_lossy(&value)
            ),
            Watched::Table(tables::Event::Deleted { key }) => {
                format!("entry deleted {} {} {}", key.network, key.table, key.key)
            }
        };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// Commands on stdin until it closes (a closed stdin does not stop the member).
fn read_commands(node: &GossipNode) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        if let Err(e) = command(node, &line) {
            eprintln!("{e}");
        }
    }
}

fn command(node: &GossipNode, line: &str) -> Result<(), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let key = |network: &str, table: &str, key: &str| Key {
        network: network.to_owned(),
        table: table.to_owned(),
        key: key.to_owned(),
    };
    match words.as_slice() {
        [] => Ok(()),
        ["put", network, table, k, value] => node
            .write(key(network, table, k), Some(value.as_bytes().to_vec()))
            .map_err(|e| e.to_string()),
        ["delete", network, table, k] => node
            .write(key(network, table, k), None)
            .map_err(|e| e.to_string()),
        ["join-network", network] => {
            node.join_network(network);
            Ok(())
        }
        ["leave-network", network] => {
            node.leave_network(network);
            Ok(())
        }
        _ => Err(format!(
            "unknown command {line:?}: put NET TABLE KEY VALUE | delete NET TABLE KEY | \
             join-network NET | leave-network NET"
        )),
    }
}
