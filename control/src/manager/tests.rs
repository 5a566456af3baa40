//! The manager's core by plain calls: commands in, state out.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::ipam::PoolConfig;
use super::model::*;
use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A cluster with nodes n1 (manager), n2, n3 (n3 labelled zone=east).
fn cluster() -> State {
    let mut state = State::init(PoolConfig::default()).unwrap();
    for (i, host) in ["n1", "n2", "n3"].iter().enumerate() {
        let labels = if *host == "n3" {
            BTreeMap::from([("zone".to_string(), "east".to_string())])
        } else {
            BTreeMap::new()
        };
        state
            .apply(Command::AddNode {
                id: format!("id{host}"),
                hostname: host.to_string(),
                role: if i == 0 { Role::Manager } else { Role::Worker },
                addr: Ipv4Addr::new(192, 168, 77, i as u8 + 1),
                labels,
            })
            .unwrap();
    }
    state
        .apply(Command::CreateNetwork(NetworkSpec {
            name: "public".into(),
            ..Default::default()
        }))
        .unwrap();
    state
}

fn replicated(name: &str, replicas: u32) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        mode: ServiceMode::Replicated { replicas },
        networks: vec![Attachment {
            network: "public".into(),
            aliases: vec![],
        }],
        ..Default::default()
    }
}

fn create(state: &mut State, spec: ServiceSpec) -> String {
    state
        .apply(Command::CreateService(spec))
        .unwrap()
        .id
        .unwrap()
}

/// Live tasks per node hostname.
fn placement(state: &State, service: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for task in state.tasks_of(&state.service(service).unwrap().id) {
        if task.is_live() {
            let host = state.nodes[task.node.as_ref().unwrap()].hostname.clone();
            *out.entry(host).or_default() += 1;
        }
    }
    out
}

fn live(state: &State, service: &str) -> Vec<Task> {
    state
        .tasks_of(&state.service(service).unwrap().id)
        .into_iter()
        .filter(|t| t.is_live())
        .cloned()
        .collect()
}

/// Every task the manager asked to stop reports it stopped (what an agent does).
fn agents_stop(state: &mut State) {
    let stopping: Vec<String> = state
        .tasks
        .values()
        .filter(|t| t.desired == TaskState::Shutdown && !t.observed.is_terminal())
        .map(|t| t.id.clone())
        .collect();
    for task in stopping {
        state
            .apply(Command::TaskStatus {
                task,
                observed: TaskState::Shutdown,
                message: String::new(),
            })
            .unwrap();
    }
}

#[test]
fn init_creates_the_ingress_network_and_networks_get_subnets_vnis_and_gateways() {
    let state = cluster();
    let ingress = state.network("ingress").unwrap();
    assert!(ingress.ingress && !ingress.spec.attachable);
    assert_eq!(
        (ingress.subnet.to_string(), ingress.vni),
        ("10.0.0.0/24".to_string(), 4096)
    );
    let public = state.network("public").unwrap();
    assert_eq!(
        (public.subnet.to_string(), public.gateway, public.vni),
        ("10.0.1.0/24".to_string(), ip("10.0.1.1"), 4097)
    );
    // Every node got an ingress address for its sandbox.
    let ingress_ips: Vec<Ipv4Addr> = state
        .nodes
        .values()
        .map(|n| n.ingress_ip.unwrap())
        .collect();
    assert_eq!(
        ingress_ips,
        vec![ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")]
    );
}

#[test]
fn a_replicated_service_spreads_gets_vips_addresses_and_a_published_port() {
    let mut state = cluster();
    let mut spec = replicated("web", 3);
    spec.ports = vec![
        PortSpec {
            target: 80,
            published: Some(8080),
            ..Default::default()
        },
        PortSpec {
            target: 9000,
            ..Default::default()
        },
    ];
    create(&mut state, spec);
    let web = state.service("web").unwrap().clone();
    assert_eq!(
        web.vips.len(),
        2,
        "a VIP on public and one on ingress: {:?}",
        web.vips
    );
    assert_eq!(
        web.ports
            .iter()
            .map(|p| p.published.unwrap())
            .collect::<Vec<_>>(),
        vec![8080, 30000]
    );
    assert_eq!(
        placement(&state, "web"),
        BTreeMap::from([("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 1)])
    );
    for task in live(&state, "web") {
        assert_eq!(task.addresses.len(), 2, "public and ingress");
        assert_eq!(task.observed, TaskState::Assigned);
        assert!(
            task.name("web")
                .starts_with(&format!("web.{}.", task.slot.unwrap()))
        );
    }
    // Scaled to 5: 2/2/1; down to 2: three stop and give their addresses back once stopped.
    state
        .apply(Command::ScaleService {
            service: "web".into(),
            replicas: 5,
        })
        .unwrap();
    let counts: Vec<usize> = placement(&state, "web").into_values().collect();
    assert_eq!(counts.iter().sum::<usize>(), 5);
    assert!(counts.iter().all(|&c| (1..=2).contains(&c)), "{counts:?}");
    state
        .apply(Command::ScaleService {
            service: "web".into(),
            replicas: 2,
        })
        .unwrap();
    assert_eq!(
        live(&state, "web")
            .iter()
            .map(|t| t.slot.unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    agents_stop(&mut state);
    let public = state.network("public").unwrap().id.clone();
    let with_address = state
        .tasks
        .values()
        .filter(|t| t.addresses.contains_key(&public))
        .count();
    assert_eq!(with_address, 2, "stopped tasks gave their addresses back");
}

#[test]
fn drain_moves_tasks_pause_keeps_them_and_a_node_that_stays_down_loses_them() {
    let mut state = cluster();
    create(&mut state, replicated("web", 3));
    state
        .apply(Command::UpdateNode {
            node: "n2".into(),
            availability: Some(Availability::Pause),
            role: None,
            labels_add: BTreeMap::new(),
            labels_rm: vec![],
        })
        .unwrap();
    assert_eq!(
        placement(&state, "web").get("n2"),
        Some(&1),
        "pause keeps what runs"
    );
    state
        .apply(Command::ScaleService {
            service: "web".into(),
            replicas: 4,
        })
        .unwrap();
    assert_eq!(
        placement(&state, "web").get("n2"),
        Some(&1),
        "and takes nothing new"
    );
    state
        .apply(Command::UpdateNode {
            node: "n1".into(),
            availability: Some(Availability::Drain),
            role: None,
            labels_add: BTreeMap::new(),
            labels_rm: vec![],
        })
        .unwrap();
    assert_eq!(
        placement(&state, "web"),
        BTreeMap::from([("n2".into(), 1), ("n3".into(), 3)]),
        "drained: n1's tasks moved"
    );
    state
        .apply(Command::NodeStatus {
            node: "n3".into(),
            status: NodeStatus::Down,
        })
        .unwrap();
    let web = live(&state, "web");
    assert_eq!(web.len(), 4);
    let pending: Vec<&Task> = web.iter().filter(|t| t.node.is_none()).collect();
    assert_eq!(
        pending.len(),
        3,
        "n1 drains, n2 pauses, n3 is down: nowhere to go"
    );
    assert!(
        pending[0].message.contains("1 down, 2 paused or drained"),
        "{}",
        pending[0].message
    );
    // n3 back: the pending tasks land there.
    state
        .apply(Command::NodeStatus {
            node: "n3".into(),
            status: NodeStatus::Ready,
        })
        .unwrap();
    assert_eq!(
        placement(&state, "web"),
        BTreeMap::from([("n2".into(), 1), ("n3".into(), 3)])
    );
}

#[test]
fn constraints_and_global_services_place_only_where_allowed() {
    let mut state = cluster();
    let mut east = replicated("east", 2);
    east.constraints = vec!["node.labels.zone==east".parse().unwrap()];
    create(&mut state, east);
    assert_eq!(
        placement(&state, "east"),
        BTreeMap::from([("n3".into(), 2)])
    );
    let mut agent = replicated("agent", 0);
    agent.mode = ServiceMode::Global;
    agent.constraints = vec!["node.role!=manager".parse().unwrap()];
    create(&mut state, agent);
    assert_eq!(
        placement(&state, "agent"),
        BTreeMap::from([("n2".into(), 1), ("n3".into(), 1)])
    );
    assert!(
        live(&state, "agent")
            .iter()
            .all(|t| t.slot.is_none() && t.name("agent").contains(t.node.as_ref().unwrap()))
    );
    state
        .apply(Command::AddNode {
            id: "idn4".into(),
            hostname: "n4".into(),
            role: Role::Worker,
            addr: ip("192.168.77.4"),
            labels: BTreeMap::new(),
        })
        .unwrap();
    assert_eq!(
        placement(&state, "agent").get("n4"),
        Some(&1),
        "a new node gets the global task"
    );
    assert_eq!(
        state
            .apply(Command::ScaleService {
                service: "agent".into(),
                replicas: 3
            })
            .unwrap_err(),
        ManagerError::ScaleGlobal {
            service: "agent".into()
        }
    );
    // A constraint nobody meets: pending, with the reason.
    let mut nowhere = replicated("nowhere", 1);
    nowhere.constraints = vec!["node.hostname==n9".parse().unwrap()];
    create(&mut state, nowhere);
    let task = &live(&state, "nowhere")[0];
    assert!(
        task.node.is_none() && task.message.contains("not matching the constraints"),
        "{}",
        task.message
    );
}

#[test]
fn failed_tasks_restart_by_policy() {
    let mut state = cluster();
    let mut spec = replicated("job", 1);
    spec.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        max_attempts: Some(1),
    };
    create(&mut state, spec);
    let fail = |state: &mut State| {
        let task = live(state, "job")[0].id.clone();
        state
            .apply(Command::TaskStatus {
                task,
                observed: TaskState::Failed,
                message: "exit 1".into(),
            })
            .unwrap();
    };
    fail(&mut state);
    let again = live(&state, "job");
    assert_eq!(
        (again.len(), again[0].restarts, again[0].slot),
        (1, 1, Some(1)),
        "restarted once"
    );
    fail(&mut state);
    assert!(
        live(&state, "job").is_empty(),
        "max_attempts reached: it stays failed"
    );
    // On-failure does not restart what completed.
    let mut spec = replicated("once", 1);
    spec.restart.condition = RestartCondition::OnFailure;
    create(&mut state, spec);
    let task = live(&state, "once")[0].id.clone();
    state
        .apply(Command::TaskStatus {
            task,
            observed: TaskState::Complete,
            message: String::new(),
        })
        .unwrap();
    assert!(live(&state, "once").is_empty());
}

#[test]
fn refusals_name_the_object_the_cause_and_the_fix_and_change_nothing() {
    let mut state = cluster();
    create(&mut state, replicated("web", 1));
    let before = state.clone();
    let refusals = [
        (
            Command::CreateService(replicated("web", 1)),
            "already exists",
        ),
        (
            Command::CreateNetwork(NetworkSpec {
                name: "public".into(),
                ..Default::default()
            }),
            "already exists",
        ),
        (
            Command::CreateService(ServiceSpec {
                endpoint_mode: EndpointMode::Dnsrr,
                ports: vec![PortSpec {
                    target: 80,
                    ..Default::default()
                }],
                ..replicated("rr", 1)
            }),
            "mode=host",
        ),
        (
            Command::CreateService(ServiceSpec {
                networks: vec![Attachment {
                    network: "ingress".into(),
                    aliases: vec![],
                }],
                ..replicated("in", 1)
            }),
            "routing mesh",
        ),
        (
            Command::AttachContainer {
                network: "public".into(),
                name: "box".into(),
                node: "n2".into(),
            },
            "--attachable",
        ),
        (
            Command::AttachContainer {
                network: "ingress".into(),
                name: "box".into(),
                node: "n2".into(),
            },
            "routing mesh",
        ),
        (Command::CreateService(replicated("-bad", 1)), "not valid"),
        (
            Command::CreateService(ServiceSpec {
                networks: vec![Attachment {
                    network: "nope".into(),
                    aliases: vec![],
                }],
                ..replicated("x", 1)
            }),
            "not found",
        ),
        (
            Command::RemoveNetwork {
                network: "public".into(),
            },
            "used by services [\"web\"]",
        ),
        (Command::RemoveNode { node: "n1".into() }, "demote it first"),
        (
            Command::CreateNetwork(NetworkSpec {
                name: "clash".into(),
                subnet: Some("10.0.1.128/25".parse().unwrap()),
                ..Default::default()
            }),
            "overlaps",
        ),
    ];
    for (command, says) in refusals {
        let err = state.apply(command.clone()).unwrap_err().to_string();
        assert!(err.contains(says), "{command:?}: {err}");
        assert_eq!(state, before, "{command:?} changed the state");
    }
    // A published port in use.
    let mut a = replicated("a", 1);
    a.ports = vec![PortSpec {
        target: 80,
        published: Some(8080),
        ..Default::default()
    }];
    create(&mut state, a.clone());
    a.name = "b".into();
    let err = state
        .apply(Command::CreateService(a))
        .unwrap_err()
        .to_string();
    assert!(err.contains("8080") && err.contains("\"b\""), "{err}");
}

#[test]
fn an_exhausted_subnet_fails_the_request_that_caused_it() {
    let mut state = cluster();
    let small = NetworkSpec {
        name: "small".into(),
        subnet: Some("10.9.0.0/29".parse().unwrap()),
        ..Default::default()
    };
    state.apply(Command::CreateNetwork(small)).unwrap();
    // 6 host addresses: the gateway, a VIP, leaves 4 for tasks.
    let mut spec = replicated("big", 4);
    spec.networks = vec![Attachment {
        network: "small".into(),
        aliases: vec![],
    }];
    create(&mut state, spec);
    let revision = state.revision;
    let err = state
        .apply(Command::ScaleService {
            service: "big".into(),
            replicas: 5,
        })
        .unwrap_err();
    assert!(
        matches!(err, ManagerError::SubnetExhausted { ref network, .. } if network == "small"),
        "{err}"
    );
    assert!(err.to_string().contains("larger --subnet"), "{err}");
    assert_eq!(state.revision, revision, "nothing changed");
    assert_eq!(live(&state, "big").len(), 4);
}

#[test]
fn attachable_networks_take_standalone_containers() {
    let mut state = cluster();
    let spec = NetworkSpec {
        name: "shared".into(),
        attachable: true,
        ..Default::default()
    };
    state.apply(Command::CreateNetwork(spec)).unwrap();
    let applied = state
        .apply(Command::AttachContainer {
            network: "shared".into(),
            name: "box".into(),
            node: "n2".into(),
        })
        .unwrap();
    assert_eq!(applied.address, Some(ip("10.0.2.2")));
    let err = state
        .apply(Command::RemoveNetwork {
            network: "shared".into(),
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("box"), "{err}");
    state
        .apply(Command::DetachContainer {
            container: applied.id.unwrap(),
        })
        .unwrap();
    state
        .apply(Command::RemoveNetwork {
            network: "shared".into(),
        })
        .unwrap();
}

#[test]
fn removing_a_service_frees_its_vips_and_ports_and_its_tasks_stop() {
    let mut state = cluster();
    let mut spec = replicated("web", 2);
    spec.ports = vec![PortSpec {
        target: 80,
        published: Some(8080),
        ..Default::default()
    }];
    create(&mut state, spec.clone());
    state
        .apply(Command::RemoveService {
            service: "web".into(),
        })
        .unwrap();
    assert!(
        state
            .tasks
            .values()
            .all(|t| t.desired == TaskState::Shutdown)
    );
    agents_stop(&mut state);
    assert!(
        state.tasks.is_empty(),
        "stopped tasks of a removed service are forgotten"
    );
    create(&mut state, spec);
    assert_eq!(
        state.service("web").unwrap().ports[0].published,
        Some(8080),
        "the port is free again"
    );
}

#[test]
fn updating_a_spec_replaces_the_tasks_and_revisions_count_every_change() {
    let mut state = cluster();
    create(&mut state, replicated("web", 2));
    let before: Vec<String> = live(&state, "web").iter().map(|t| t.id.clone()).collect();
    let mut spec = replicated("web", 2);
    spec.env = BTreeMap::from([("MODE".into(), "blue".into())]);
    let revision = state.revision;
    state
        .apply(Command::UpdateService {
            service: "web".into(),
            spec,
        })
        .unwrap();
    assert_eq!(state.revision, revision + 1);
    let after: Vec<String> = live(&state, "web").iter().map(|t| t.id.clone()).collect();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "new tasks for the new spec"
    );
    assert_eq!(state.service("web").unwrap().version, 2);
}

#[test]
fn the_state_round_trips_through_json_for_the_store() {
    let mut state = cluster();
    let mut spec = replicated("web", 3);
    spec.constraints = vec!["node.role!=manager".parse().unwrap()];
    create(&mut state, spec);
    let json = serde_json::to_string(&state).unwrap();
    let back: State = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    // Ids are unique and stable for the same history.
    let ids: std::collections::BTreeSet<&String> = state.tasks.keys().collect();
    assert_eq!(ids.len(), state.tasks.len());
    assert_eq!(
        cluster().network("public").unwrap().id,
        state.network("public").unwrap().id
    );
}

fn encrypted_cluster() -> State {
    let mut state = cluster();
    let spec = NetworkSpec {
        name: "secret".into(),
        encrypted: true,
        ..Default::default()
    };
    state.apply(Command::CreateNetwork(spec)).unwrap();
    let mut db = replicated("db", 1);
    db.networks = vec![Attachment {
        network: "secret".into(),
        aliases: vec![],
    }];
    db.constraints = vec!["node.hostname==n2".parse().unwrap()];
    create(&mut state, db);
    let mut api = replicated("api", 1);
    api.networks = vec![Attachment {
        network: "secret".into(),
        aliases: vec![],
    }];
    api.constraints = vec!["node.hostname==n3".parse().unwrap()];
    create(&mut state, api);
    state
}

fn keys_of(state: &State, node: &str) -> Option<super::keys::KeySet> {
    let id = state.node(node).unwrap().id.clone();
    let view = state.node_view(&id);
    view.networks
        .into_iter()
        .find(|n| n.name == "secret")
        .and_then(|n| n.keys)
}

fn ack(state: &mut State, node: &str, epoch: u32) {
    state
        .apply(Command::KeyAck {
            node: node.into(),
            network: "secret".into(),
            epoch,
        })
        .unwrap();
}

#[test]
fn a_key_rotation_goes_rx_first_then_tx_and_reaches_only_attached_nodes() {
    use super::keys::KeyBytes;
    let mut state = encrypted_cluster();
    let rotate = |state: &mut State, byte: u8| {
        state
            .apply(Command::RotateKey {
                network: "secret".into(),
                key: KeyBytes([byte; 32]),
            })
            .unwrap();
    };
    rotate(&mut state, 1);
    // n2 and n3 run tasks on secret; n1 does not and never sees its keys.
    assert!(keys_of(&state, "n1").is_none());
    let n2 = keys_of(&state, "n2").unwrap();
    assert_eq!(
        (n2.epochs.len(), n2.tx),
        (1, None),
        "installed for receiving only"
    );
    ack(&mut state, "n2", 1);
    assert_eq!(
        keys_of(&state, "n3").unwrap().tx,
        None,
        "n3 has not acknowledged yet"
    );
    ack(&mut state, "n3", 1);
    assert_eq!(
        keys_of(&state, "n3").unwrap().tx,
        Some(1),
        "every attached node holds it: send with it"
    );
    // Second and third rotations: the new key is received first, then sent with; the key before
    // the previous one is dropped.
    rotate(&mut state, 2);
    let view = keys_of(&state, "n2").unwrap();
    assert_eq!(
        (
            view.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
            view.tx
        ),
        (vec![1, 2], Some(1))
    );
    ack(&mut state, "n2", 2);
    ack(&mut state, "n3", 2);
    assert_eq!(keys_of(&state, "n2").unwrap().tx, Some(2));
    rotate(&mut state, 3);
    ack(&mut state, "n2", 3);
    ack(&mut state, "n3", 3);
    let view = keys_of(&state, "n3").unwrap();
    assert_eq!(
        (
            view.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
            view.tx
        ),
        (vec![2, 3], Some(3))
    );
    // Plain networks have no keys to rotate.
    let err = state
        .apply(Command::RotateKey {
            network: "public".into(),
            key: KeyBytes([9; 32]),
        })
        .unwrap_err();
    assert!(err.to_string().contains("not encrypted"), "{err}");
    assert!(
        !format!("{:?}", view.epochs[0].key).contains('3'),
        "Debug hides key bytes"
    );
}

#[test]
fn a_node_view_holds_its_tasks_its_networks_and_the_services_on_them() {
    let state = encrypted_cluster();
    let n2 = state.node("n2").unwrap().id.clone();
    let view = state.node_view(&n2);
    let names: Vec<&str> = view.networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(
        names.contains(&"ingress") && names.contains(&"secret"),
        "{names:?}"
    );
    assert_eq!(view.tasks.len(), 1);
    assert!(view.tasks[0].name.starts_with("db.1."));
    let services: Vec<&str> = view.services.iter().map(|s| s.spec.name.as_str()).collect();
    assert!(
        services.contains(&"db") && services.contains(&"api"),
        "api shares secret with n2's task: {services:?}"
    );
    let api = view.services.iter().find(|s| s.spec.name == "api").unwrap();
    assert_eq!(api.endpoints.len(), 1);
    assert_eq!(
        api.endpoints[0].node_addr,
        ip("192.168.77.3"),
        "where to send its frames"
    );
    assert!(!view.services.iter().any(|s| s.spec.name == "web"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = Command> {
        let name = prop_oneof![
            Just("a"),
            Just("b"),
            Just("web"),
            Just("public"),
            Just("-x")
        ];
        let node = prop_oneof![Just("n1"), Just("n2"), Just("n3"), Just("n9")];
        prop_oneof![
            (name.clone(), any::<bool>(), prop::option::of(0u8..4)).prop_map(
                |(n, encrypted, sub)| {
                    let subnet =
                        sub.map(|s| format!("10.{}.0.0/{}", 50 + s, 22 + s * 2).parse().unwrap());
                    Command::CreateNetwork(NetworkSpec {
                        name: n.into(),
                        encrypted,
                        subnet,
                        ..Default::default()
                    })
                }
            ),
            (
                name.clone(),
                0u32..6,
                prop::option::of(prop_oneof![Just(8080u16), Just(9000)]),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(n, replicas, published, global, dnsrr)| {
                    let mut spec = replicated(n, replicas);
                    if global {
                        spec.mode = ServiceMode::Global;
                    }
                    if dnsrr {
                        spec.endpoint_mode = EndpointMode::Dnsrr;
                    }
                    spec.ports = published
                        .map(|p| PortSpec {
                            target: 80,
                            published: Some(p),
                            ..Default::default()
                        })
                        .into_iter()
                        .collect();
                    Command::CreateService(spec)
                }),
            (name.clone(), 0u32..8).prop_map(|(n, replicas)| Command::ScaleService {
                service: n.into(),
                replicas
            }),
            name.clone()
                .prop_map(|n| Command::RemoveService { service: n.into() }),
            name.clone()
                .prop_map(|n| Command::RemoveNetwork { network: n.into() }),
            (node.clone(), any::<bool>()).prop_map(|(n, down)| Command::NodeStatus {
                node: n.into(),
                status: if down {
                    NodeStatus::Down
                } else {
                    NodeStatus::Ready
                },
            }),
            (node, 0u8..3).prop_map(|(n, a)| Command::UpdateNode {
                node: n.into(),
                availability: Some(
                    [
                        Availability::Active,
                        Availability::Pause,
                        Availability::Drain
                    ][a as usize]
                ),
                role: None,
                labels_add: BTreeMap::new(),
                labels_rm: vec![],
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever the commands, applying them never panics, a refused one changes nothing,
        /// and the state stays consistent: no address given twice on a network, no published
        /// port held by two services, every live replicated slot within its replicas.
        #[test]
        fn any_command_sequence_keeps_the_state_consistent(commands in prop::collection::vec(command(), 1..40)) {
            let mut state = cluster();
            for command in commands {
                let before = state.clone();
                match state.apply(command) {
                    Ok(applied) => prop_assert_eq!(applied.revision, before.revision + 1),
                    Err(_) => prop_assert_eq!(&state, &before),
                }
                let mut taken = std::collections::BTreeSet::new();
                for task in state.tasks.values() {
                    for (network, ip) in &task.addresses {
                        prop_assert!(taken.insert((network.clone(), *ip)), "{ip} given twice on {network}");
                    }
                }
                for service in state.services.values() {
                    for ip in service.vips.iter() {
                        prop_assert!(taken.insert((ip.0.clone(), *ip.1)), "VIP {} also a task's", ip.1);
                    }
                    if let ServiceMode::Replicated { replicas } = service.spec.mode {
                        let live = state.tasks_of(&service.id).into_iter().filter(|t| t.is_live()).count();
                        prop_assert!(live <= replicas as usize, "{} live tasks for {replicas} replicas", live);
                    }
                }
                let mut ports = std::collections::BTreeSet::new();
                for service in state.services.values() {
                    for port in &service.ports {
                        prop_assert!(ports.insert((port.protocol, port.published)), "port {:?} twice", port.published);
                    }
                }
            }
        }
    }
}
