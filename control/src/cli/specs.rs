//! Turning command-line words into specs: `--publish`, `--network`, `KEY=VALUE`.

use std::collections::BTreeMap;

use crate::manager::model::{Attachment, PortSpec, Protocol, PublishMode};

/// `[mode=host,]PUBLISHED:TARGET[/udp]` or `TARGET[/udp]`.
pub fn publish(text: &str) -> Result<PortSpec, String> {
    let bad =
        || format!("--publish {text:?}: write [mode=host,]PUBLISHED:TARGET[/udp], e.g. 8080:80");
    let (mode, rest) = match text.split_once(',') {
        Some(("mode=host", rest)) => (PublishMode::Host, rest),
        Some(("mode=ingress", rest)) => (PublishMode::Ingress, rest),
        Some(_) => return Err(bad()),
        None => (PublishMode::Ingress, text),
    };
    let (ports, protocol) = match rest.split_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some(_) => return Err(bad()),
        None => (rest, Protocol::Tcp),
    };
    let number = |s: &str| s.parse::<u16>().map_err(|_| bad());
    let (published, target) = match ports.split_once(':') {
        Some((p, t)) => (Some(number(p)?), number(t)?),
        None => (None, number(ports)?),
    };
    Ok(PortSpec {
        target,
        published,
        protocol,
        mode,
    })
}

/// `NAME` or `name=NAME,alias=A,alias=B`.
pub fn network(text: &str) -> Result<Attachment, String> {
    if !text.contains('=') {
        return Ok(Attachment {
            network: text.to_owned(),
            aliases: Vec::new(),
        });
    }
    let mut attachment = Attachment::default();
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("name", v)) => attachment.network = v.to_owned(),
            Some(("alias", v)) => attachment.aliases.push(v.to_owned()),
            _ => {
                return Err(format!(
                    "--network {text:?}: write NAME or name=NAME,alias=ALIAS"
                ));
            }
        }
    }
    if attachment.network.is_empty() {
        return Err(format!("--network {text:?}: the name= part is missing"));
    }
    Ok(attachment)
}

/// `KEY=VALUE` pairs (`--env`, `--label`).
pub fn pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>, String> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("{flag} {item:?}: write KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn publish_networks_and_pairs_parse_or_say_how_to_write_them() {
        assert_eq!(
            publish("8080:80").unwrap(),
            PortSpec {
                target: 80,
                published: Some(8080),
                ..Default::default()
            }
        );
        assert_eq!(
            publish("mode=host,53:53/udp").unwrap(),
            PortSpec {
                target: 53,
                published: Some(53),
                protocol: Protocol::Udp,
                mode: PublishMode::Host
            }
        );
        assert_eq!(publish("9000").unwrap().published, None);
        for bad in ["80:x", "mode=sideways,80:80", "80:80/sctp", ""] {
            assert!(
                publish(bad).unwrap_err().contains("PUBLISHED:TARGET"),
                "{bad}"
            );
        }
        assert_eq!(network("public").unwrap().network, "public");
        let a = network("name=private,alias=db,alias=pg").unwrap();
        assert_eq!((a.network.as_str(), a.aliases.len()), ("private", 2));
        assert!(network("alias=x").is_err());
        assert_eq!(
            pairs("--env", &["A=1".into(), "B=".into()]).unwrap().len(),
            2
        );
        assert!(pairs("--env", &["=1".into()]).is_err());
    }
}
