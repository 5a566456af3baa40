#![allow(clippy::unwrap_used)]
//! The resolver at 127.0.0.11 inside container namespaces, asked by real clients (dig, glibc's
//! getent), forwarding to a stub upstream in its own namespace.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use dns::shell::{Counter, ListenSockets, RESOLVER_ADDR};
use dns::{
    ContainerRecord, DnsConfig, DnsServer, EndpointMode, PortProtocol, PortRecord, Scope,
    ServiceRecord, TaskRecord, Update,
};
use tests::dns_upstream::{StubUpstream, UPSTREAM_ANSWER};
use tests::{Container, Testbed};

/// A host namespace running the resolver, an upstream namespace running the stub, and
/// containers with listeners. Fields drop in order: server and stub before the namespaces.
struct DnsLab {
    server: DnsServer,
    upstream: Option<StubUpstream>,
    containers: BTreeMap<String, Container>,
    tb: Testbed,
}

const FORWARD_TIMEOUT: Duration = Duration::from_millis(700);

impl DnsLab {
    fn new(test: &str) -> Self {
        Self::with_config(test, |_| {})
    }

    fn with_config(test: &str, tune: impl FnOnce(&mut DnsConfig)) -> Self {
        let mut tb = Testbed::new(test);
        tb.add_underlay("10.77.0.0/24".parse().unwrap());
        let host = tb.add_node("host");
        let upstream_node = tb.add_node("upstream");
        let stub_addr = SocketAddr::new(upstream_node.underlay_ip.into(), 53);
        let upstream = StubUpstream::start(&upstream_node.ns, stub_addr).unwrap();
        let mut config = DnsConfig {
            upstreams: Some(vec![stub_addr]),
            forward_timeout: FORWARD_TIMEOUT,
            ..DnsConfig::default()
        };
        tune(&mut config);
        // The resolver's thread is born in the host namespace: forwards leave from there.
        let server = tb
            .run_in(&host.ns, move || DnsServer::start(config))
            .unwrap();
        let lab = Self {
            server,
            upstream: Some(upstream),
            containers: BTreeMap::new(),
            tb,
        };
        lab.load_records();
        lab
    }

    /// front: web (VIP, 2 tasks, alias www, port 80 published 8080) and the container box;
    /// back: db (dnsrr, 2 tasks); quiet (internal): cache.
    fn load_records(&self) {
        for (network, internal) in [("front", false), ("back", false), ("quiet", true)] {
            self.apply(Update::SetNetwork {
                network: network.into(),
                internal,
                ingress: false,
            });
        }
        self.set_service(
            "front",
            web(&[
                ("web.1.aaa", "10.0.1.3", true),
                ("web.2.bbb", "10.0.1.4", true),
            ]),
        );
        let container = ContainerRecord {
            name: "box".into(),
            aliases: vec!["toolbox".into()],
            ip: ip("10.0.1.9"),
        };
        self.apply(Update::SetContainer {
            network: "front".into(),
            container,
        });
        self.set_service(
            "back",
            service(
                "db",
                None,
                &[("db.1.x", "10.0.2.5", true), ("db.2.y", "10.0.2.6", true)],
            ),
        );
        self.set_service(
            "quiet",
            service(
                "cache",
                Some("10.0.4.2"),
                &[("cache.1.c", "10.0.4.3", true)],
            ),
        );
    }

    fn apply(&self, update: Update) {
        self.server.apply(update).unwrap();
    }

    fn set_service(&self, network: &str, service: ServiceRecord) {
        self.apply(Update::SetService {
            network: network.into(),
            service,
        });
    }

    /// A container on `networks` (in lookup order) with its listeners and resolv.conf.
    fn container(&mut self, name: &str, networks: &[&str]) -> String {
        let c = self.tb.add_container(name);
        let sockets = self
            .tb
            .run_in(&c.ns, || ListenSockets::bind(RESOLVER_ADDR))
            .unwrap();
        let scope = Scope {
            networks: networks.iter().map(|n| n.to_string()).collect(),
            user_ndots: false,
        };
        self.server.add_endpoint(name, sockets, scope).unwrap();
        self.tb
            .set_resolv_conf(&c.netns_name, "nameserver 127.0.0.11\noptions ndots:0\n");
        let netns = c.netns_name.clone();
        self.containers.insert(name.into(), c);
        netns
    }

    fn netns(&self, container: &str) -> &str {
        &self.containers[container].netns_name
    }

    /// `dig @127.0.0.11 <args>` in the container; one try of 3 s, so nothing waits long.
    fn dig(&self, container: &str, args: &[&str]) -> String {
        let mut argv = vec!["dig", "@127.0.0.11", "+time=3", "+tries=1"];
        argv.extend_from_slice(args);
        let out = self.tb.exec(self.netns(container), &argv);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sorted `+short` lines of a query.
    fn short(&self, container: &str, args: &[&str]) -> Vec<String> {
        let mut argv = vec!["+short"];
        argv.extend_from_slice(args);
        let mut lines: Vec<String> = self
            .dig(container, &argv)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    fn status(&self, container: &str, args: &[&str]) -> String {
        status_of(&self.dig(container, args))
    }

    fn stats(&self) -> dns::DnsStats {
        self.server.stats()
    }
}

/// The `status:` of dig's header line, or dig's own complaint when there was no reply.
fn status_of(out: &str) -> String {
    match out.split("status: ").nth(1) {
        Some(rest) => rest.split(',').next().unwrap_or("").to_owned(),
        None => format!("no reply: {out}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn service(name: &str, vip: Option<&str>, tasks: &[(&str, &str, bool)]) -> ServiceRecord {
    ServiceRecord {
        name: name.into(),
        mode: if vip.is_some() {
            EndpointMode::Vip
        } else {
            EndpointMode::Dnsrr
        },
        vip: vip.map(ip),
        aliases: Vec::new(),
        tasks: tasks
            .iter()
            .map(|(n, a, e)| TaskRecord {
                name: (*n).into(),
                ip: ip(a),
                enabled: *e,
            })
            .collect(),
        ports: Vec::new(),
    }
}

fn web(tasks: &[(&str, &str, bool)]) -> ServiceRecord {
    let mut web = service("web", Some("10.0.1.2"), tasks);
    web.aliases = vec!["www".into()];
    web.ports = vec![PortRecord {
        protocol: PortProtocol::Tcp,
        target: 80,
        published: Some(8080),
    }];
    web
}

fn lines(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn dig_and_getent_resolve_the_names_of_the_containers_networks_only() {
    let mut lab = DnsLab::new("dns_names");
    lab.container("c1", &["front"]);
    lab.container("c2", &["front", "back"]);

    assert_eq!(lab.short("c1", &["web"]), lines(&["10.0.1.2"]));
    assert_eq!(
        lab.short("c1", &["WWW"]),
        lines(&["10.0.1.2"]),
        "alias, any case"
    );
    assert_eq!(
        lab.short("c1", &["tasks.web"]),
        lines(&["10.0.1.3", "10.0.1.4"])
    );
    assert_eq!(lab.short("c1", &["web.2.bbb"]), lines(&["10.0.1.4"]));
    assert_eq!(lab.short("c1", &["toolbox"]), lines(&["10.0.1.9"]));
    assert_eq!(lab.short("c1", &["web.front"]), lines(&["10.0.1.2"]));
    assert_eq!(
        lab.short("c1", &["-x", "10.0.1.3"]),
        lines(&["web.1.aaa.front."])
    );
    assert_eq!(
        lab.short("c1", &["-x", "10.0.1.2"]),
        lines(&["web.front."]),
        "PTR of a VIP"
    );
    assert_eq!(
        lab.short("c1", &["SRV", "_8080._tcp.web"]),
        lines(&["0 0 80 web.front."])
    );
    let aaaa = lab.dig("c1", &["AAAA", "web"]);
    assert_eq!(status_of(&aaaa), "NOERROR", "{aaaa}");
    assert!(
        aaaa.contains("ANSWER: 0,"),
        "AAAA of a known name is empty: {aaaa}"
    );

    // db lives on back: c1 is not there, so the name goes upstream, which does not know it.
    assert_eq!(lab.status("c1", &["db"]), "NXDOMAIN");
    assert_eq!(lab.status("c1", &["db.back"]), "NXDOMAIN");
    // c2 is on both networks and sees both sets.
    assert_eq!(lab.short("c2", &["db"]), lines(&["10.0.2.5", "10.0.2.6"]));
    assert_eq!(lab.short("c2", &["web"]), lines(&["10.0.1.2"]));
    // Names the tables do not hold are forwarded.
    assert_eq!(
        lab.short("c1", &["api.example.test"]),
        lines(&[&UPSTREAM_ANSWER.to_string()])
    );
    assert_eq!(
        lab.short("c1", &["+tcp", "api.example.test"]),
        lines(&[&UPSTREAM_ANSWER.to_string()]),
        "TCP forward"
    );

    // glibc's stub resolver, through the container's resolv.conf. (gethostbyname: getaddrinfo
    // would want a non-loopback address first, AI_ADDRCONFIG, and these containers have none.)
    let getent = lab.tb.exec_ok(lab.netns("c2"), &["getent", "hosts", "web"]);
    assert_eq!(
        getent.split_whitespace().next(),
        Some("10.0.1.2"),
        "{getent}"
    );
    let getent = lab
        .tb
        .exec_ok(lab.netns("c2"), &["getent", "hosts", "tasks.db"]);
    assert!(
        getent.contains("10.0.2.5") && getent.contains("10.0.2.6"),
        "{getent}"
    );
    let getent = lab.tb.exec(lab.netns("c1"), &["getent", "hosts", "db"]);
    assert_eq!(
        getent.status.code(),
        Some(2),
        "c1 cannot resolve db: {getent:?}"
    );

    let stats = lab.stats();
    assert!(stats.get(Counter::Answered) >= 12, "{stats:?}");
    assert!(
        stats.get(Counter::Forwarded) >= 4 && stats.get(Counter::ForwardAnswered) >= 4,
        "{stats:?}"
    );
}

#[test]
#[allow(clippy::disallowed_methods)] // tests may read the clock
fn forwarding_tries_the_next_upstream_and_ends_in_servfail_not_a_hang() {
    // A first upstream that never answers (an underlay address nobody holds), then the stub.
    let mut lab = DnsLab::with_config("dns_forward", |config| {
        let live = config.upstreams.as_ref().unwrap()[0];
        config.upstreams = Some(vec!["10.77.0.250:53".parse().unwrap(), live]);
    });
    lab.container("c1", &["front"]);
    let started = std::time::Instant::now();
    assert_eq!(
        lab.short("c1", &["api.example.test"]),
        lines(&[&UPSTREAM_ANSWER.to_string()])
    );
    assert!(
        started.elapsed() >= FORWARD_TIMEOUT,
        "the dead upstream was tried first"
    );
    // SERVFAIL upstream: the next (dead) upstream cannot help either: SERVFAIL to the client.
    assert_eq!(lab.status("c1", &["servfail.example.test"]), "SERVFAIL");

    // With the upstream stopped, the client gets SERVFAIL within the forward timeouts.
    lab.upstream = None;
    let started = std::time::Instant::now();
    assert_eq!(lab.status("c1", &["api.example.test"]), "SERVFAIL");
    let took = started.elapsed();
    assert!(
        took < FORWARD_TIMEOUT * 2 + Duration::from_millis(900),
        "SERVFAIL took {took:?}"
    );
    assert!(lab.stats().get(Counter::ForwardFailed) >= 2);
    // Local names do not depend on the upstream.
    assert_eq!(lab.short("c1", &["web"]), lines(&["10.0.1.2"]));
}

#[test]
fn containers_on_internal_networks_only_never_reach_the_upstream() {
    let mut lab = DnsLab::new("dns_internal");
    lab.container("inside", &["quiet"]);
    assert_eq!(lab.short("inside", &["cache"]), lines(&["10.0.4.2"]));
    assert_eq!(lab.status("inside", &["api.example.test"]), "SERVFAIL");
    assert_eq!(
        lab.upstream.as_ref().unwrap().queries(),
        0,
        "nothing was forwarded"
    );
    assert_eq!(lab.stats().get(Counter::InternalOnly), 1);
}

#[test]
fn a_hundred_tasks_are_truncated_over_udp_and_whole_over_tcp() {
    let mut lab = DnsLab::new("dns_truncate");
    let names: Vec<(String, String)> = (0..100)
        .map(|i| (format!("big.{}.t{i}", i + 1), format!("10.0.1.{}", 100 + i)))
        .collect();
    let tasks: Vec<(&str, &str, bool)> = names
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str(), true))
        .collect();
    lab.set_service("front", service("big", Some("10.0.1.99"), &tasks));
    lab.container("c1", &["front"]);
    // +ignore: keep the truncated UDP reply instead of retrying over TCP; no EDNS: 512 bytes.
    let udp = lab.dig("c1", &["+ignore", "+noedns", "tasks.big"]);
    assert!(
        udp.contains(" tc ") || udp.contains(" tc;"),
        "TC is set: {udp}"
    );
    let answers = udp.lines().filter(|l| l.contains("\tA\t")).count();
    assert!(
        answers > 0 && answers < 100,
        "as many as fit in 512 bytes: {answers}"
    );
    let tcp = lab.short("c1", &["+tcp", "tasks.big"]);
    assert_eq!(tcp.len(), 100, "all 100 over TCP");
    // dig's default: UDP, see TC, retry over TCP on its own.
    assert_eq!(lab.short("c1", &["+noedns", "tasks.big"]).len(), 100);
    assert!(lab.stats().get(Counter::Truncated) >= 2);
}

#[test]
fn records_change_live_without_a_restart() {
    let mut lab = DnsLab::new("dns_live");
    lab.container("c1", &["front"]);
    assert_eq!(
        lab.short("c1", &["tasks.web"]),
        lines(&["10.0.1.3", "10.0.1.4"])
    );
    // A task turns unhealthy: out of tasks.web with the next update.
    lab.set_service(
        "front",
        web(&[
            ("web.1.aaa", "10.0.1.3", false),
            ("web.2.bbb", "10.0.1.4", true),
        ]),
    );
    assert_eq!(lab.short("c1", &["tasks.web"]), lines(&["10.0.1.4"]));
    // Scaled to three.
    lab.set_service(
        "front",
        web(&[
            ("web.1.aaa", "10.0.1.3", true),
            ("web.2.bbb", "10.0.1.4", true),
            ("web.3.ccc", "10.0.1.5", true),
        ]),
    );
    assert_eq!(
        lab.short("c1", &["tasks.web"]),
        lines(&["10.0.1.3", "10.0.1.4", "10.0.1.5"])
    );
    // Scaled to zero: the VIP name stops resolving (the upstream says NXDOMAIN).
    lab.set_service("front", web(&[]));
    assert_eq!(lab.status("c1", &["web"]), "NXDOMAIN");
    // The container joins back: its scope changes while its listeners stay.
    assert!(lab.server.set_scope(
        "c1",
        Scope {
            networks: vec!["back".into()],
            user_ndots: false
        }
    ));
    assert_eq!(lab.short("c1", &["db"]), lines(&["10.0.2.5", "10.0.2.6"]));
}

#[test]
fn listeners_come_and_go_with_their_endpoint() {
    let mut lab = DnsLab::new("dns_listeners");
    let netns = lab.container("c1", &["front"]);
    assert_eq!(lab.short("c1", &["web"]), lines(&["10.0.1.2"]));
    // Serving the same endpoint twice is refused with its name.
    let c = lab.containers["c1"].clone();
    let err = tests::testbed::Testbed::run_in(&lab.tb, &c.ns, || {
        ListenSockets::bind("127.0.0.12:53".parse().unwrap())
    })
    .map(|sockets| {
        lab.server
            .add_endpoint("c1", sockets, Scope::default())
            .unwrap_err()
    })
    .unwrap();
    assert!(err.to_string().contains("\"c1\""), "{err}");

    assert!(lab.server.remove_endpoint("c1"));
    assert!(!lab.server.remove_endpoint("c1"));
    let gone = lab.tb.exec(
        &netns,
        &["dig", "@127.0.0.11", "+time=1", "+tries=1", "web"],
    );
    assert!(!gone.status.success(), "nobody listens any more");
    // The port is free again: a new endpoint binds it at once.
    let sockets = lab
        .tb
        .run_in(&c.ns, || ListenSockets::bind(RESOLVER_ADDR))
        .unwrap();
    lab.server
        .add_endpoint(
            "c1",
            sockets,
            Scope {
                networks: vec!["front".into()],
                user_ndots: false,
            },
        )
        .unwrap();
    assert_eq!(lab.short("c1", &["web"]), lines(&["10.0.1.2"]));
    assert_eq!(lab.server.endpoints(), vec!["c1".to_string()]);
}

/// Sends raw datagrams from inside the container and returns what came back for each.
fn exchange_raw(
    lab: &DnsLab,
    container: &str,
    datagrams: Vec<Vec<u8>>,
    wait: Duration,
) -> Vec<Option<Vec<u8>>> {
    let ns = lab.containers[container].ns.clone();
    lab.tb
        .run_in(&ns, move || {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.connect(RESOLVER_ADDR)?;
            socket.set_read_timeout(Some(wait))?;
            let mut replies = Vec::new();
            for datagram in datagrams {
                socket.send(&datagram)?;
                let mut buf = [0u8; 4096];
                replies.push(socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec()));
            }
            Ok(replies)
        })
        .unwrap()
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = vec![(id >> 8) as u8, id as u8, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn rcode(reply: &Option<Vec<u8>>) -> Option<u8> {
    reply.as_ref().map(|r| r[3] & 0x0f)
}

#[test]
fn bad_input_is_answered_with_an_error_or_dropped_and_the_resolver_goes_on() {
    let mut lab = DnsLab::with_config("dns_bad_input", |config| config.max_forwards = 4);
    lab.container("c1", &["front"]);
    let mut garbage = vec![
        vec![],           // empty
        vec![0xde, 0xad], // shorter than a header
        vec![0xff; 700],  // noise with QR set: a "response"
        {
            let mut q = query(1, "web");
            q.truncate(q.len() - 3);
            q
        }, // cut question
        {
            let mut q = query(2, "web");
            q.truncate(12);
            q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            q
        }, // pointer loop
        {
            let mut q = query(3, "x");
            q.truncate(12);
            q.push(64);
            q.extend_from_slice(&[b'a'; 64]);
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
            q
        }, // label > 63
        {
            let mut q = query(4, "web");
            q[2] = 0x01 | (5 << 3);
            q
        }, // opcode UPDATE
        {
            let mut q = query(5, "web");
            let n = q.len();
            q[n - 1] = 3;
            q
        }, // class CH
    ];
    garbage.push(query(6, "web")); // a good query after all that
    let replies = exchange_raw(&lab, "c1", garbage, Duration::from_millis(300));
    let codes: Vec<Option<u8>> = replies.iter().map(rcode).collect();
    // FORMERR=1, NOTIMP=4; nothing for what is not a query.
    assert_eq!(
        codes,
        vec![
            None,
            None,
            None,
            Some(1),
            Some(1),
            Some(1),
            Some(4),
            Some(4),
            Some(0)
        ]
    );

    // A flood beyond the forward cap: the upstream never answers `silent`, four forwards stay
    // in flight, the rest are REFUSED (5) at once.
    let flood: Vec<Vec<u8>> = (0..20)
        .map(|i| query(100 + i, "silent.example.test"))
        .collect();
    let replies = exchange_raw(&lab, "c1", flood, Duration::from_millis(50));
    let refused = replies.iter().filter(|r| rcode(r) == Some(5)).count();
    assert!(refused >= 15, "{refused} of 20 refused");
    let stats = lab.stats();
    assert!(stats.get(Counter::ForwardCapRefused) >= 15, "{stats:?}");
    assert_eq!(stats.get(Counter::FormErr), 3);
    assert_eq!(stats.get(Counter::NotImp), 2);
    // Still serving.
    assert_eq!(lab.short("c1", &["web"]), lines(&["10.0.1.2"]));
}
