//! The core, by plain calls: names, scope, types, sizes, refusals.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::records::{
    ContainerRecord, EndpointMode, PortProtocol, PortRecord, Records, ServiceRecord, TaskRecord,
    Update,
};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn task(name: &str, addr: &str, enabled: bool) -> TaskRecord {
    TaskRecord {
        name: name.into(),
        ip: ip(addr),
        enabled,
    }
}

fn service(name: &str, vip: Option<&str>, tasks: Vec<TaskRecord>) -> ServiceRecord {
    ServiceRecord {
        name: name.into(),
        mode: if vip.is_some() {
            EndpointMode::Vip
        } else {
            EndpointMode::Dnsrr
        },
        vip: vip.map(ip),
        aliases: Vec::new(),
        tasks,
        ports: Vec::new(),
    }
}

fn set_network(records: &mut Records, network: &str, internal: bool, ingress: bool) {
    let update = Update::SetNetwork {
        network: network.into(),
        internal,
        ingress,
    };
    records.apply(update).unwrap();
}

fn set_service(records: &mut Records, network: &str, service: ServiceRecord) {
    records
        .apply(Update::SetService {
            network: network.into(),
            service,
        })
        .unwrap();
}

/// front: web (VIP, 2 of 3 tasks enabled, alias www, port 80 published 8080), idle (VIP, no
/// enabled task), box (a container); back: web (another VIP), db (dnsrr); secret: vault;
/// quiet (internal): cache; ingress: web again.
fn fixture() -> Records {
    let mut records = Records::new();
    for (name, internal, ingress) in [
        ("front", false, false),
        ("back", false, false),
        ("secret", false, false),
        ("quiet", true, false),
        ("ingress", false, true),
    ] {
        set_network(&mut records, name, internal, ingress);
    }
    let mut web = service(
        "web",
        Some("10.0.1.2"),
        vec![
            task("web.1.aaa", "10.0.1.3", true),
            task("web.2.bbb", "10.0.1.4", true),
            task("web.3.ccc", "10.0.1.5", false),
        ],
    );
    web.aliases = vec!["www".into()];
    web.ports = vec![PortRecord {
        protocol: PortProtocol::Tcp,
        target: 80,
        published: Some(8080),
    }];
    set_service(&mut records, "front", web);
    set_service(
        &mut records,
        "front",
        service(
            "idle",
            Some("10.0.1.20"),
            vec![task("idle.1.z", "10.0.1.21", false)],
        ),
    );
    let container = ContainerRecord {
        name: "box".into(),
        aliases: vec!["toolbox".into()],
        ip: ip("10.0.1.9"),
    };
    records
        .apply(Update::SetContainer {
            network: "front".into(),
            container,
        })
        .unwrap();
    set_service(
        &mut records,
        "back",
        service(
            "web",
            Some("10.0.2.2"),
            vec![task("web.1.aaa", "10.0.2.3", true)],
        ),
    );
    let mut db = service(
        "db",
        None,
        vec![
            task("db.1.x", "10.0.2.5", true),
            task("db.2.y", "10.0.2.6", true),
        ],
    );
    db.ports = vec![PortRecord {
        protocol: PortProtocol::Tcp,
        target: 5432,
        published: None,
    }];
    set_service(&mut records, "back", db);
    set_service(
        &mut records,
        "secret",
        service(
            "vault",
            Some("10.0.3.2"),
            vec![task("vault.1.v", "10.0.3.3", true)],
        ),
    );
    set_service(
        &mut records,
        "quiet",
        service(
            "cache",
            Some("10.0.4.2"),
            vec![task("cache.1.c", "10.0.4.3", true)],
        ),
    );
    set_service(
        &mut records,
        "ingress",
        service(
            "web",
            Some("10.255.0.5"),
            vec![task("web.1.aaa", "10.255.0.6", true)],
        ),
    );
    records
}

fn scope(networks: &[&str]) -> Scope {
    Scope {
        networks: networks.iter().map(|n| n.to_string()).collect(),
        user_ndots: false,
    }
}

fn query_bytes(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.edns = Some(e);
    }
    m.to_vec().unwrap()
}

struct Asked {
    records: Records,
    scope: Scope,
}

impl Asked {
    fn new(networks: &[&str]) -> Self {
        Self {
            records: fixture(),
            scope: scope(networks),
        }
    }

    fn raw(&self, query: &[u8], transport: Transport, seed: u64) -> Outcome {
        let snapshot = self.records.snapshot();
        answer(
            &snapshot,
            &self.scope,
            Ttls::default(),
            query,
            transport,
            &mut StdRng::seed_from_u64(seed),
        )
    }

    /// The parsed reply and its kind; panics if the core did not reply.
    fn reply(&self, name: &str, qtype: RecordType) -> (Message, ReplyKind) {
        match self.raw(&query_bytes(name, qtype, None), Transport::Udp, 1) {
            Outcome::Reply { bytes, kind, .. } => (Message::from_vec(&bytes).unwrap(), kind),
            other => panic!("{name} {qtype}: expected a reply, got {other:?}"),
        }
    }

    fn outcome(&self, name: &str, qtype: RecordType) -> Outcome {
        self.raw(&query_bytes(name, qtype, None), Transport::Udp, 1)
    }
}

fn addrs(reply: &Message) -> Vec<Ipv4Addr> {
    a_records(&reply.answers)
}

fn a_records(records: &[hickory_proto::rr::Record]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
    list.iter().map(|s| ip(s)).collect()
}

#[test]
fn a_service_name_answers_its_vip_with_the_long_ttl() {
    let asked = Asked::new(&["front", "back"]);
    let (reply, kind) = asked.reply("web", RecordType::A);
    assert_eq!(kind, ReplyKind::Answer);
    assert_eq!(
        addrs(&reply),
        ips(&["10.0.1.2"]),
        "front comes first: its VIP wins, no merging"
    );
    assert_eq!(reply.answers[0].ttl, 600);
    assert_eq!(reply.metadata.id, 0x4242);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.recursion_available && reply.metadata.recursion_desired);
    assert_eq!(reply.queries.len(), 1, "the question is echoed");
    let (upper, _) = asked.reply("WeB.", RecordType::A);
    assert_eq!(
        addrs(&upper),
        ips(&["10.0.1.2"]),
        "names are case-insensitive"
    );
    assert_eq!(
        upper.answers[0].name.to_ascii(),
        "WeB.",
        "the owner is the name asked"
    );
}

#[test]
fn tasks_and_aliases_answer_enabled_task_addresses_with_the_short_ttl() {
    let asked = Asked::new(&["front"]);
    for name in ["tasks.web", "tasks.www", "TASKS.WEB"] {
        let (reply, _) = asked.reply(name, RecordType::A);
        assert_eq!(
            addrs(&reply),
            ips(&["10.0.1.3", "10.0.1.4"]),
            "{name}: the disabled task is left out"
        );
        assert!(reply.answers.iter().all(|r| r.ttl == 5), "{name}");
    }
    let cases = [
        ("www", "10.0.1.2", "an alias answers the VIP"),
        ("web.1.aaa", "10.0.1.3", "a task's own name"),
        (
            "web.3.ccc",
            "10.0.1.5",
            "a disabled task keeps its own name",
        ),
        ("box", "10.0.1.9", "a container's name"),
        ("toolbox", "10.0.1.9", "a container's alias"),
    ];
    for (name, want, why) in cases {
        assert_eq!(
            addrs(&asked.reply(name, RecordType::A).0),
            ips(&[want]),
            "{name}: {why}"
        );
    }
}

#[test]
fn dnsrr_answers_every_enabled_task_shuffled() {
    let asked = Asked::new(&["back"]);
    let query = query_bytes("db", RecordType::A, None);
    let mut orders = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let Outcome::Reply { bytes, .. } = asked.raw(&query, Transport::Udp, seed) else {
            panic!()
        };
        let reply = Message::from_vec(&bytes).unwrap();
        let order: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(order.len(), 2);
        orders.insert(order);
    }
    assert_eq!(
        orders.len(),
        2,
        "both orders occur over 32 seeds: the answers are shuffled"
    );
}

#[test]
fn a_name_qualified_with_a_network_is_looked_up_on_that_network_only() {
    let asked = Asked::new(&["front", "back"]);
    assert_eq!(
        addrs(&asked.reply("web.back", RecordType::A).0),
        ips(&["10.0.2.2"])
    );
    assert_eq!(
        addrs(&asked.reply("tasks.web.back", RecordType::A).0),
        ips(&["10.0.2.3"])
    );
    assert_eq!(
        addrs(&asked.reply("web.front.", RecordType::A).0),
        ips(&["10.0.1.2"])
    );
    assert_eq!(
        addrs(&asked.reply("web.BACK", RecordType::A).0),
        ips(&["10.0.2.2"])
    );
    // Networks the client is not on do not exist for it, qualified or not.
    assert_eq!(asked.outcome("vault", RecordType::A), Outcome::Forward);
    assert_eq!(
        asked.outcome("vault.secret", RecordType::A),
        Outcome::Forward
    );
    assert_eq!(
        asked.outcome("web.ingress", RecordType::A),
        Outcome::Forward
    );
}

#[test]
fn the_ingress_network_registers_no_names() {
    let asked = Asked::new(&["ingress"]);
    assert_eq!(asked.outcome("web", RecordType::A), Outcome::Forward);
    assert_eq!(
        asked.outcome("6.0.255.10.in-addr.arpa", RecordType::PTR),
        Outcome::Forward
    );
}

#[test]
fn a_service_without_enabled_tasks_does_not_resolve() {
    let asked = Asked::new(&["front"]);
    assert_eq!(asked.outcome("idle", RecordType::A), Outcome::Forward);
    assert_eq!(asked.outcome("tasks.idle", RecordType::A), Outcome::Forward);
}

#[test]
fn aaaa_and_other_types_of_a_known_name_are_nodata_not_forwarded() {
    let asked = Asked::new(&["front"]);
    for qtype in [
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::Unknown(65000),
    ] {
        let (reply, kind) = asked.reply("web", qtype);
        assert_eq!(kind, ReplyKind::NoData, "{qtype}");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
    }
    assert_eq!(
        asked.outcome("example.org", RecordType::Unknown(65000)),
        Outcome::Forward
    );
}

fn ptr_of(reply: &Message) -> String {
    match &reply.answers[0].data {
        RData::PTR(p) => p.0.to_ascii(),
        other => panic!("not a PTR: {other:?}"),
    }
}

#[test]
fn ptr_names_tasks_containers_and_vips() {
    let asked = Asked::new(&["front", "back"]);
    let (task, _) = asked.reply("3.1.0.10.in-addr.arpa", RecordType::PTR);
    assert_eq!(ptr_of(&task), "web.1.aaa.front.");
    assert_eq!(task.answers[0].ttl, 5);
    let (vip, _) = asked.reply("2.1.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(ptr_of(&vip), "web.front.");
    assert_eq!(vip.answers[0].ttl, 600);
    assert_eq!(
        ptr_of(&asked.reply("9.1.0.10.in-addr.arpa", RecordType::PTR).0),
        "box.front."
    );
    assert_eq!(
        ptr_of(&asked.reply("2.2.0.10.in-addr.arpa", RecordType::PTR).0),
        "web.back."
    );
    assert_eq!(
        asked.outcome("3.3.0.10.in-addr.arpa", RecordType::PTR),
        Outcome::Forward,
        "vault is on secret"
    );
    assert_eq!(
        asked.outcome("1.0.0.127.in-addr.arpa", RecordType::PTR),
        Outcome::Forward
    );
    assert_eq!(
        asked.outcome("0.10.in-addr.arpa", RecordType::PTR),
        Outcome::Forward,
        "a network, not an address"
    );
}

#[test]
fn srv_gives_the_target_port_and_the_targets_addresses() {
    let asked = Asked::new(&["front", "back"]);
    for name in ["_80._tcp.web", "_8080._tcp.web", "_80._tcp.www"] {
        let (reply, _) = asked.reply(name, RecordType::SRV);
        let RData::SRV(srv) = &reply.answers[0].data else {
            panic!("{name}: not SRV")
        };
        assert_eq!(
            (srv.port, srv.target.to_ascii()),
            (80, "web.front.".to_string()),
            "{name}"
        );
        assert_eq!(a_records(&reply.additionals), ips(&["10.0.1.2"]));
    }
    // dnsrr: one SRV per enabled task, each target one of the task names.
    let (reply, _) = asked.reply("_5432._tcp.db", RecordType::SRV);
    let mut targets: Vec<String> = reply
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => format!("{}:{}", s.target.to_ascii(), s.port),
            _ => panic!(),
        })
        .collect();
    targets.sort();
    assert_eq!(targets, ["db.1.x.back.:5432", "db.2.y.back.:5432"]);
    assert_eq!(
        asked.outcome("_81._tcp.web", RecordType::SRV),
        Outcome::Forward
    );
    assert_eq!(
        asked.outcome("_80._udp.web", RecordType::SRV),
        Outcome::Forward
    );
    // The SRV target resolves through the same resolver.
    assert_eq!(
        addrs(&asked.reply("web.front.", RecordType::A).0),
        ips(&["10.0.1.2"])
    );
}

#[test]
fn unknown_single_labels_get_an_empty_answer_only_for_ndots_clients() {
    let mut asked = Asked::new(&["front"]);
    assert_eq!(asked.outcome("nosuch", RecordType::A), Outcome::Forward);
    asked.scope.user_ndots = true;
    let (reply, kind) = asked.reply("nosuch", RecordType::A);
    assert_eq!(
        (kind, reply.metadata.response_code, reply.answers.len()),
        (ReplyKind::SearchWalk, ResponseCode::NoError, 0)
    );
    assert_eq!(
        asked.outcome("nosuch.example.org", RecordType::A),
        Outcome::Forward
    );
    assert_eq!(asked.outcome("nosuch", RecordType::MX), Outcome::Forward);
}

#[test]
fn clients_on_internal_networks_only_are_never_forwarded() {
    let asked = Asked::new(&["quiet"]);
    assert_eq!(
        addrs(&asked.reply("cache", RecordType::A).0),
        ips(&["10.0.4.2"])
    );
    let (reply, kind) = asked.reply("example.org", RecordType::A);
    assert_eq!(
        (kind, reply.metadata.response_code),
        (ReplyKind::InternalOnly, ResponseCode::ServFail)
    );
    let mixed = Asked::new(&["quiet", "front"]);
    assert_eq!(
        mixed.outcome("example.org", RecordType::A),
        Outcome::Forward
    );
}

fn big_service(n: u32) -> Records {
    let mut records = Records::new();
    set_network(&mut records, "front", false, false);
    let tasks = (0..n)
        .map(|i| {
            task(
                &format!("big.{i}.t{i}"),
                &format!("10.0.{}.{}", i / 200, i % 200 + 10),
                true,
            )
        })
        .collect();
    set_service(
        &mut records,
        "front",
        service("big", Some("10.0.9.2"), tasks),
    );
    records
}

#[test]
fn large_udp_answers_are_truncated_to_fit_with_tc_and_complete_over_tcp_or_edns() {
    let asked = Asked {
        records: big_service(100),
        scope: scope(&["front"]),
    };
    let cases = [
        (None, Transport::Udp, 512, true),
        (Some(1232), Transport::Udp, 1232, true),
        (Some(4096), Transport::Udp, 4096, false),
        (Some(100), Transport::Udp, 512, true),
        (None, Transport::Tcp, 65535, false),
    ];
    for (edns, transport, limit, cut) in cases {
        let Outcome::Reply {
            bytes, truncated, ..
        } = asked.raw(&query_bytes("tasks.big", RecordType::A, edns), transport, 3)
        else {
            panic!()
        };
        let reply = Message::from_vec(&bytes).unwrap();
        let case = format!("edns {edns:?} over {transport:?}");
        assert!(bytes.len() <= limit, "{case}: {} bytes", bytes.len());
        assert_eq!((truncated, reply.metadata.truncation), (cut, cut), "{case}");
        if cut {
            assert!(
                !reply.answers.is_empty() && reply.answers.len() < 100,
                "{case}: as many as fit"
            );
            assert!(
                bytes.len() + 16 > limit,
                "{case}: one more answer would not fit"
            );
        } else {
            assert_eq!(reply.answers.len(), 100, "{case}");
        }
    }
}

fn header(id: u16, flags: u16, qd: u16) -> Vec<u8> {
    let mut h = Vec::new();
    for word in [id, flags, qd, 0, 0, 0] {
        h.extend_from_slice(&word.to_be_bytes());
    }
    h
}

fn rcode_of(outcome: &Outcome) -> (u16, ResponseCode) {
    let Outcome::Reply { bytes, .. } = outcome else {
        panic!("no reply: {outcome:?}")
    };
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    assert!(bytes[2] & 0x80 != 0, "a reply has QR set");
    (id, ResponseCode::from_low(bytes[3] & 0x0f))
}

#[test]
fn malformed_and_unsupported_queries_get_an_error_or_nothing() {
    let asked = Asked::new(&["front"]);
    let udp = |q: &[u8]| asked.raw(q, Transport::Udp, 0);
    assert_eq!(udp(&[]), Outcome::Ignore);
    assert_eq!(
        udp(&[0x12, 0x34, 0x01]),
        Outcome::Ignore,
        "shorter than a header"
    );
    let mut response = query_bytes("web", RecordType::A, None);
    response[2] |= 0x80;
    assert_eq!(
        udp(&response),
        Outcome::Ignore,
        "responses are never answered"
    );
    // A question that runs past the end.
    let mut cut = query_bytes("web", RecordType::A, None);
    cut.truncate(cut.len() - 3);
    assert_eq!(rcode_of(&udp(&cut)), (0x4242, ResponseCode::FormErr));
    // A compression pointer that points at itself.
    let mut looped = header(7, 0x0100, 1);
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode_of(&udp(&looped)), (7, ResponseCode::FormErr));
    // A label longer than 63 bytes.
    let mut long = header(8, 0x0100, 1);
    long.push(64);
    long.extend_from_slice(&[b'a'; 64]);
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode_of(&udp(&long)), (8, ResponseCode::FormErr));
    // No question, or two.
    assert_eq!(
        rcode_of(&udp(&header(9, 0x0100, 0))),
        (9, ResponseCode::FormErr)
    );
    let mut two = Message::new(10, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("web").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("www").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        rcode_of(&udp(&two.to_vec().unwrap())),
        (10, ResponseCode::FormErr)
    );
    // Opcodes other than QUERY, classes other than IN.
    let mut notify = query_bytes("web", RecordType::A, None);
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    assert_eq!(rcode_of(&udp(&notify)), (0x4242, ResponseCode::NotImp));
    let mut chaos = Message::new(11, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("version.bind").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    assert_eq!(
        rcode_of(&udp(&chaos.to_vec().unwrap())),
        (11, ResponseCode::NotImp)
    );
}

#[test]
fn updates_change_the_answers_at_once() {
    let mut records = fixture();
    let view = |records: &Records, name: &str| {
        let asked = Asked {
            records: Records::new(),
            scope: scope(&["front"]),
        };
        let snapshot = records.snapshot();
        let q = query_bytes(name, RecordType::A, None);
        match answer(
            &snapshot,
            &asked.scope,
            Ttls::default(),
            &q,
            Transport::Udp,
            &mut StdRng::seed_from_u64(0),
        ) {
            Outcome::Reply { bytes, .. } => addrs(&Message::from_vec(&bytes).unwrap()),
            Outcome::Forward | Outcome::Ignore => Vec::new(),
        }
    };
    assert_eq!(view(&records, "tasks.web"), ips(&["10.0.1.3", "10.0.1.4"]));
    // Scale up by one and disable another.
    let web = records.network("front").unwrap().services["web"].clone();
    let mut scaled = web.clone();
    scaled.tasks[0].enabled = false;
    scaled.tasks.push(task("web.4.ddd", "10.0.1.6", true));
    set_service(&mut records, "front", scaled);
    assert_eq!(view(&records, "tasks.web"), ips(&["10.0.1.4", "10.0.1.6"]));
    // Scale to zero: the name stops resolving; the service removed: nothing is left.
    let mut none = web;
    none.tasks.iter_mut().for_each(|t| t.enabled = false);
    set_service(&mut records, "front", none);
    assert_eq!(view(&records, "web"), Vec::<Ipv4Addr>::new());
    records
        .apply(Update::RemoveService {
            network: "front".into(),
            service: "web".into(),
        })
        .unwrap();
    assert_eq!(view(&records, "web.1.aaa"), Vec::<Ipv4Addr>::new());
    assert_eq!(view(&records, "box"), ips(&["10.0.1.9"]));
    records
        .apply(Update::RemoveContainer {
            network: "front".into(),
            container: "box".into(),
        })
        .unwrap();
    assert_eq!(view(&records, "box"), Vec::<Ipv4Addr>::new());
    records
        .apply(Update::RemoveNetwork {
            network: "front".into(),
        })
        .unwrap();
    assert!(records.network("front").is_none());
}

#[test]
fn bad_updates_are_refused_with_the_object_named() {
    let mut records = fixture();
    let err = records
        .apply(Update::SetService {
            network: "nowhere".into(),
            service: service("x", None, Vec::new()),
        })
        .unwrap_err();
    assert_eq!(
        err,
        crate::records::UpdateError::UnknownNetwork("nowhere".into())
    );
    assert!(err.to_string().contains("set_network"), "{err}");
    for bad in ["", "a..b", "has space", &"x".repeat(64)] {
        let err = records.apply(Update::SetService {
            network: "front".into(),
            service: service(bad, None, Vec::new()),
        });
        assert!(
            matches!(err, Err(crate::records::UpdateError::BadName { .. })),
            "{bad:?}: {err:?}"
        );
    }
    // Updates arrive as JSON from the agent.
    let json =
        r#"{"op":"set_container","network":"front","container":{"name":"probe","ip":"10.0.1.77"}}"#;
    let update: Update = serde_json::from_str(json).unwrap();
    records.apply(update).unwrap();
    assert!(
        records
            .network("front")
            .unwrap()
            .containers
            .contains_key("probe")
    );
}

#[test]
fn the_fast_path_answers_exactly_as_the_general_path() {
    let mut records = fixture();
    let big = big_service(100).network("front").unwrap().services["big"].clone();
    set_service(&mut records, "front", big);
    let snapshot = records.snapshot();
    let scope = scope(&["front", "back"]);
    let mut taken = 0;
    for name in [
        "web",
        "WWW.",
        "tasks.web",
        "web.1.aaa",
        "toolbox",
        "db",
        "web.back",
        "tasks.big",
        "nosuch",
        "_80._tcp.web",
    ] {
        for edns in [None, Some(100), Some(1232), Some(4096), Some(65000)] {
            for transport in [Transport::Udp, Transport::Tcp] {
                let query = query_bytes(name, RecordType::A, edns);
                let fast = fast::answer(
                    &snapshot,
                    &scope,
                    Ttls::default(),
                    &query,
                    transport,
                    &mut StdRng::seed_from_u64(9),
                );
                let general = general(
                    &snapshot,
                    &scope,
                    Ttls::default(),
                    &query,
                    transport,
                    &mut StdRng::seed_from_u64(9),
                );
                let Some((bytes, truncated)) = fast else {
                    continue;
                };
                taken += 1;
                let Outcome::Reply {
                    bytes: want,
                    truncated: want_tc,
                    ..
                } = general
                else {
                    panic!("{name} {edns:?}: the general path did not answer: {general:?}")
                };
                assert_eq!(
                    (bytes, truncated),
                    (want, want_tc),
                    "{name} edns {edns:?} over {transport:?}"
                );
            }
        }
    }
    assert_eq!(
        taken,
        8 * 5 * 2,
        "the fast path takes every A query for a held name"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, ..Default::default() })]

    /// Whatever a mutated query looks like, when the fast path takes it, the general path
    /// gives the same bytes.
    #[test]
    fn the_fast_path_never_disagrees_with_the_general_path(
        which in 0usize..4,
        edns in proptest::option::of(0u16..5000),
        flips in proptest::collection::vec((0usize..64, proptest::prelude::any::<u8>()), 0..4),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let names = ["web", "tasks.web", "db.back", "Toolbox"];
        let mut query = query_bytes(names[which], RecordType::A, edns);
        for (at, value) in flips {
            let at = at % query.len();
            query[at] = value;
        }
        let records = fixture();
        let snapshot = records.snapshot();
        let scope = scope(&["front", "back"]);
        let fast = fast::answer(&snapshot, &scope, Ttls::default(), &query, Transport::Udp, &mut StdRng::seed_from_u64(seed));
        if let Some((bytes, truncated)) = fast {
            let general = general(&snapshot, &scope, Ttls::default(), &query, Transport::Udp, &mut StdRng::seed_from_u64(seed));
            let Outcome::Reply { bytes: want, truncated: want_tc, .. } = general else {
                panic!("general path: {general:?} for {query:?}")
            };
            proptest::prop_assert_eq!((bytes, truncated), (want, want_tc));
        }
    }
}
