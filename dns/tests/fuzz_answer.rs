#![allow(clippy::unwrap_used)]
//! Fuzzing the answer path (proptest on stable): whatever bytes arrive, the core never panics,
//! never answers a response, and every reply it makes carries the query's id, QR set, and
//! parses back as DNS within the transport's size limit.

use std::net::Ipv4Addr;

use hickory_proto::op::Message;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use dns::{
    EndpointMode, Outcome, Records, Scope, ServiceRecord, TaskRecord, Transport, Ttls, Update,
};

fn records() -> Records {
    let mut records = Records::new();
    records
        .apply(Update::SetNetwork {
            network: "front".into(),
            internal: false,
            ingress: false,
        })
        .unwrap();
    let tasks = (0..60u8)
        .map(|i| TaskRecord {
            name: format!("web.{i}.t{i}"),
            ip: Ipv4Addr::new(10, 0, 1, i + 10),
            enabled: true,
        })
        .collect();
    let web = ServiceRecord {
        name: "web".into(),
        mode: EndpointMode::Vip,
        vip: Some(Ipv4Addr::new(10, 0, 1, 2)),
        aliases: vec!["www".into()],
        tasks,
        ports: Vec::new(),
    };
    records
        .apply(Update::SetService {
            network: "front".into(),
            service: web,
        })
        .unwrap();
    records
}

/// A well-formed query for one of a few names and types, as bytes to mutate.
fn base_query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

fn check(records: &Records, query: &[u8], transport: Transport, seed: u64) {
    let snapshot = records.snapshot();
    let scope = Scope {
        networks: vec!["front".into()],
        user_ndots: seed.is_multiple_of(2),
    };
    let outcome = dns::answer(
        &snapshot,
        &scope,
        Ttls::default(),
        query,
        transport,
        &mut StdRng::seed_from_u64(seed),
    );
    let Outcome::Reply { bytes, .. } = outcome else {
        return;
    };
    assert!(
        query.len() >= 12 && query[2] & 0x80 == 0,
        "replied to a non-query"
    );
    assert_eq!(bytes[..2], query[..2], "the reply carries the query's id");
    assert!(bytes[2] & 0x80 != 0, "QR set");
    let limit = match transport {
        Transport::Udp => 4096,
        Transport::Tcp => 65535,
    };
    assert!(bytes.len() <= limit);
    Message::from_vec(&bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), tcp: bool, seed: u64) {
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        check(&records(), &bytes, transport, seed);
    }

    #[test]
    fn mutated_queries_never_panic(
        which in 0usize..6,
        edns: bool,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
        seed: u64,
    ) {
        let names = [("web", 1u16), ("tasks.web", 1), ("www.front", 28), ("2.1.0.10.in-addr.arpa", 12), ("_80._tcp.web", 33), ("nosuch", 255)];
        let (name, qtype) = names[which];
        let mut q = base_query(name, qtype, edns);
        for (at, value) in flips {
            let at = at % q.len();
            q[at] = value;
        }
        q.truncate(q.len() - cut % 4);
        check(&records(), &q, Transport::Udp, seed);
    }
}
