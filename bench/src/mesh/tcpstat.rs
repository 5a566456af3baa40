//! The kernel's TCP counters of a namespace (`/proc/net/netstat` and `/proc/net/snmp`, read by
//! a thread inside it): what explains a stall or an error that the client only sees as time,
//! e.g. SYNs the client had to send again (each costs 1 s), SYNs a task's full accept queue
//! dropped, SYNs a TIME_WAIT refused (PAWS).

use std::collections::BTreeMap;

use dataplane::shell::netns::{NetnsRef, in_netns};

/// The counters kept: (file section, name).
pub(super) const KEPT: [&str; 6] = [
    "TcpExt:TCPSynRetrans",
    "TcpExt:ListenOverflows",
    "TcpExt:ListenDrops",
    "TcpExt:PAWSEstab",
    "Tcp:AttemptFails",
    "Tcp:OutRsts",
];

/// [`KEPT`] counters of namespace `ns` (empty when it cannot be read).
pub(super) fn read(ns: &NetnsRef) -> BTreeMap<String, u64> {
    let text = in_netns(ns, || {
        let mut t = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
        t += &std::fs::read_to_string("/proc/thread-self/net/snmp")?;
        Ok(t)
    })
    .unwrap_or_default();
    parse(&text)
}

/// The [`KEPT`] counters of `/proc/net/netstat` or `/proc/net/snmp` text (a line of names,
/// then a line of values, per section).
fn parse(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.windows(2) {
        let (Some((sec, names)), Some((sec2, values))) =
            (pair[0].split_once(':'), pair[1].split_once(':'))
        else {
            continue;
        };
        let first = names.split_whitespace().next().unwrap_or("0");
        if sec != sec2 || first.parse::<i64>().is_ok() {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            let key = format!("{sec}:{n}");
            if KEPT.contains(&key.as_str())
                && let Ok(v) = v.parse::<u64>()
            {
                out.insert(key, v);
            }
        }
    }
    out
}

/// Sum of [`read`] over namespaces.
pub(super) fn read_all<'a>(
    namespaces: impl Iterator<Item = &'a NetnsRef>,
) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for ns in namespaces {
        for (k, v) in read(ns) {
            *out.entry(k).or_default() += v;
        }
    }
    out
}

/// `after - before`, non-zero entries only.
pub(super) fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, &a)| {
            let d = a.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_names_then_values_per_section() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPSynRetrans\n\
                    TcpExt: 0 3 4 7\n\
                    IpExt: InNoRoutes\n\
                    IpExt: 0\n\
                    Tcp: RtoAlgorithm AttemptFails OutRsts\n\
                    Tcp: 1 2 9\n";
        let m = parse(text);
        assert_eq!(m.get("TcpExt:ListenOverflows"), Some(&3));
        assert_eq!(m.get("TcpExt:ListenDrops"), Some(&4));
        assert_eq!(m.get("TcpExt:TCPSynRetrans"), Some(&7));
        assert_eq!(m.get("Tcp:AttemptFails"), Some(&2));
        assert_eq!(m.get("Tcp:OutRsts"), Some(&9));
        assert_eq!(m.len(), 5);
    }
}
