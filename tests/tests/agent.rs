//! Issue 7's acceptance: `shoal agent` composed — real manager and agent processes, each
//! node a network namespace, tasks in their own namespaces with TAPs the agents hold, names
//! answered at 127.0.0.11, VIPs balanced, encrypted overlay between nodes. Needs root.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dataplane::shell::netns::NetnsRef;
use tests::swarm::Swarm;
use tests::traffic::whoami_task;
use tests::wait_until;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal-under-test");

/// Short drains so that scale-downs finish within the test's patience.
const AGENT_FLAGS: &[&str] = &["--drain", "1", "--stop-timeout", "2"];

fn ip(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|_| panic!("{s:?} is not an address"))
}

/// Which task served one HTTP request to `dst` from `ns`, or the error.
fn greeting(ns: &NetnsRef, dst: SocketAddr) -> Result<String, String> {
    whoami_task(ns, dst, Duration::from_secs(3)).map_err(|e| e.to_string())
}

/// Three nodes from `shoal init` / `shoal agent --token`: a service of 3 tasks on an
/// encrypted network runs one task per node; from every task, the service resolves to its
/// VIP, `tasks.web` to the three task addresses, the VIP balances over all three and each
/// task answers on its own address. Scaled to 5 then to 1, DNS and the VIP follow on every
/// node within seconds.
#[test]
fn a_service_on_an_encrypted_network_is_reachable_by_name_and_vip_and_follows_scaling() {
    let mut swarm = Swarm::new("agent-svc", SHOAL, 3, AGENT_FLAGS);
    let (ids, client, _) = web_and_client(&mut swarm, 3, &[]);
    let client = vec![client];
    let nodes: BTreeSet<String> = swarm
        .tasks("web")
        .iter()
        .filter_map(|t| t["node"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "one task per node: {:#?}",
        swarm.tasks("web")
    );

    let check = |swarm: &Swarm, n: usize| {
        let ids = swarm.running("web");
        let names: BTreeSet<String> = swarm
            .tasks("web")
            .iter()
            .filter(|t| t["desired"] == "running")
            .map(|t| format!("web.{}.{}", t["slot"], t["id"].as_str().unwrap_or_default()))
            .collect();
        let task_ips: BTreeSet<String> = swarm
            .tasks("web")
            .iter()
            .filter(|t| t["desired"] == "running")
            .flat_map(|t| {
                t["addresses"]
                    .as_object()
                    .map(|a| {
                        a.values()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(task_ips.len(), n, "task addresses: {task_ips:?}");
        for id in ids.iter().chain(&client) {
            let ns = swarm.task_netns(id);
            // Every web task but itself serves it through the VIP.
            let want: BTreeSet<String> = names
                .iter()
                .filter(|name| !name.ends_with(&format!(".{id}")))
                .cloned()
                .collect();
            // DNS: the VIP for the name, the tasks for tasks.web, on every node.
            let mut vip = Vec::new();
            let dns_ok = wait_until(Duration::from_secs(10), || {
                vip = swarm.dig(&ns, "web");
                let tasks: BTreeSet<String> = swarm.dig(&ns, "tasks.web").into_iter().collect();
                vip.len() == 1 && tasks == task_ips
            });
            assert!(
                dns_ok,
                "task {id}: web → {vip:?}, tasks.web → {:?}, want one VIP and {task_ips:?}\n{}",
                swarm.dig(&ns, "tasks.web"),
                swarm.logs()
            );
            // Each task by its own address, across nodes, over the encrypted network. Each
            // gets seconds, as DNS does: the service table and the peer table are separate
            // gossip entries, so a name can be known a moment before its address's route.
            for task_ip in &task_ips {
                let dst = SocketAddr::from((ip(task_ip), 80));
                let mut answered = Err(String::new());
                let reached = wait_until(Duration::from_secs(10), || {
                    answered = greeting(&ns, dst);
                    answered.as_ref().is_ok_and(|g| !g.is_empty())
                });
                assert!(reached, "task {id}: {dst}: {answered:?}\n{}", swarm.logs());
            }
            // The VIP balances over those tasks (round robin: 2n connections reach all).
            let vip = SocketAddr::from((ip(&vip[0]), 80));
            let mut seen = BTreeSet::new();
            let spread = wait_until(Duration::from_secs(10), || {
                seen = (0..2 * n).filter_map(|_| greeting(&ns, vip).ok()).collect();
                seen == want
            });
            assert!(
                spread,
                "task {id}: the VIP {vip} reached {seen:?}, not {want:?}\n{}",
                swarm.logs()
            );
        }
    };
    check(&swarm, 3);
    println!(
        "3 tasks: names, VIP and task addresses checked from {names:?}",
        names = swarm.running("web")
    );
    assert_eq!(ids.len(), 3);

    swarm.cli_ok(&["service", "scale", "web=5", "-d"]);
    swarm.wait_running("web", 5, Duration::from_secs(30));
    check(&swarm, 5);

    // A key rotation on the encrypted network: every agent takes the new key (receive,
    // then send once all hold it), and the service keeps answering throughout.
    swarm.cli_ok(&["network", "rotate-key", "secret"]);
    let rotated = wait_until(Duration::from_secs(20), || {
        (0..3).all(|i| {
            let out = std::process::Command::new(SHOAL)
                .args(["--format", "json", "agent", "status", "--socket"])
                .arg(swarm.socket(i))
                .output();
            out.ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .is_some_and(|s| {
                    s["networks"].as_array().is_some_and(|nets| {
                        nets.iter().any(|n| {
                            n["name"] == "secret"
                                && n["key_epochs"]
                                    .as_array()
                                    .is_some_and(|e| e.iter().any(|e| e == 2))
                        })
                    })
                })
        })
    });
    assert!(
        rotated,
        "not every agent holds the new key\n{}",
        swarm.logs()
    );
    check(&swarm, 5);

    swarm.cli_ok(&["service", "scale", "web=1", "-d"]);
    swarm.wait_running("web", 1, Duration::from_secs(30));
    // The four stopped ones leave the DNS and the VIP everywhere (drain 1 s, stop ≤ 2 s).
    let settled = wait_until(Duration::from_secs(20), || {
        swarm
            .tasks("web")
            .iter()
            .filter(|t| t["observed"] == "running")
            .count()
            == 1
    });
    assert!(
        settled,
        "scale to 1 did not settle: {:#?}",
        swarm.tasks("web")
    );
    check(&swarm, 1);
}

/// The tasks that answered `count` HTTP requests to `name`'s VIP from `ns` (empty if the name
/// does not resolve to one address).
fn served(swarm: &Swarm, ns: &NetnsRef, name: &str, count: usize) -> BTreeSet<String> {
    let vip = swarm.dig(ns, name);
    let [vip] = vip.as_slice() else {
        return BTreeSet::new();
    };
    let dst = SocketAddr::from((ip(vip), 80));
    (0..count).filter_map(|_| greeting(ns, dst).ok()).collect()
}

/// Waits until `tasks` distinct web tasks serve the VIP from `ns` (2 × `tasks` requests),
/// or fails saying `what` and which ones did.
fn expect_served(swarm: &Swarm, ns: &NetnsRef, tasks: usize, within: Duration, what: &str) {
    let ok = wait_until(within, || {
        served(swarm, ns, "web", 2 * tasks).len() == tasks
    });
    assert!(
        ok,
        "{what}: the VIP served {:?}, not {tasks} tasks\n{}",
        served(swarm, ns, "web", 2 * tasks),
        swarm.logs()
    );
}

/// Starts the agents, then `web` (`replicas`, with `web_flags`) and `client` (1) on an
/// encrypted network `secret`, and waits until they run: web's task ids, the client's
/// task id and its namespace. The client is a vantage point that is not a backend (a task
/// is never balanced to itself: its kernel would drop its own packet).
fn web_and_client(
    swarm: &mut Swarm,
    replicas: usize,
    web_flags: &[&str],
) -> (Vec<String>, String, NetnsRef) {
    swarm.start_agents();
    swarm.cli_ok(&["network", "create", "secret", "--opt", "encrypted"]);
    let replicas_arg = replicas.to_string();
    let mut web = vec![
        "service",
        "create",
        "web",
        "--replicas",
        &replicas_arg,
        "--network",
        "secret",
        "-d",
    ];
    web.extend_from_slice(web_flags);
    swarm.cli_ok(&web);
    swarm.cli_ok(&[
        "service",
        "create",
        "client",
        "--replicas",
        "1",
        "--network",
        "secret",
        "-d",
    ]);
    let web = swarm.wait_running("web", replicas, Duration::from_secs(30));
    let client = swarm.wait_running("client", 1, Duration::from_secs(30));
    let ns = swarm.task_netns(&client[0]);
    (web, client[0].clone(), ns)
}

/// The manager is killed: names, the VIP and its balancing keep working from the state the
/// agents hold; when it is back, a scale applies again.
#[test]
fn services_keep_working_while_the_manager_is_away() {
    let mut swarm = Swarm::new("agent-mgr", SHOAL, 2, AGENT_FLAGS);
    let (_, _, ns) = web_and_client(&mut swarm, 2, &[]);
    let all = |s: &BTreeSet<String>| s.len() == 2;
    assert!(
        wait_until(Duration::from_secs(10), || all(&served(
            &swarm, &ns, "web", 4
        ))),
        "before: {:?}\n{}",
        served(&swarm, &ns, "web", 4),
        swarm.logs()
    );
    swarm.kill_manager();
    // For ten seconds without a manager (agents retrying meanwhile), every check holds.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(2));
        let seen = served(&swarm, &ns, "web", 4);
        assert!(
            all(&seen),
            "manager away: the VIP served {seen:?}\n{}",
            swarm.logs()
        );
        assert_eq!(
            swarm.dig(&ns, "tasks.web").len(),
            2,
            "manager away: tasks.web"
        );
    }
    swarm.start_manager();
    swarm.cli_ok(&["service", "scale", "web=3", "-d"]);
    swarm.wait_running("web", 3, Duration::from_secs(30));
    expect_served(
        &swarm,
        &ns,
        3,
        Duration::from_secs(15),
        "after the manager's return the scale to 3 did not reach the VIP",
    );
}

/// An agent is SIGKILLed: the other nodes drop its task from the VIP and the names once
/// gossip finds it failed; restarted, it takes its node back — the task runs again, once,
/// in one sandbox, served again. Killed again and left down, the manager marks the node
/// down and its task runs elsewhere.
#[test]
fn a_killed_agent_is_dropped_by_the_others_and_comes_back_without_duplicates() {
    let mut swarm = Swarm::with_node_down_after("agent-kill", SHOAL, 3, AGENT_FLAGS, 15);
    let (web, client, ns) = web_and_client(&mut swarm, 3, &[]);
    let client_node = swarm.node_of("client", &client).unwrap_or_default();
    let victim_task = web
        .iter()
        .find(|id| swarm.node_of("web", id).is_some_and(|n| n != client_node))
        .cloned()
        .unwrap_or_else(|| panic!("no web task away from the client's node {client_node}"));
    let victim = swarm.node_of("web", &victim_task).unwrap_or_default();
    let v = swarm
        .nodes
        .iter()
        .position(|n| n.name == victim)
        .unwrap_or(0);
    expect_served(&swarm, &ns, 3, Duration::from_secs(10), "before");

    swarm.kill_agent(v);
    // Gossip finds the node failed (memberlist's timings: several seconds) and hides its
    // entries everywhere: its task leaves the VIP and tasks.web.
    let dropped = wait_until(Duration::from_secs(30), || {
        swarm.dig(&ns, "tasks.web").len() == 2
            && served(&swarm, &ns, "web", 4)
                .iter()
                .all(|t| !t.ends_with(&victim_task))
    });
    assert!(
        dropped,
        "the killed agent's task is still served: tasks.web {:?}, VIP {:?}\n{}",
        swarm.dig(&ns, "tasks.web"),
        served(&swarm, &ns, "web", 4),
        swarm.logs()
    );

    swarm.start_agent(v);
    let back = wait_until(Duration::from_secs(30), || {
        swarm.dig(&ns, "tasks.web").len() == 3 && served(&swarm, &ns, "web", 6).len() == 3
    });
    assert!(
        back,
        "after the restart: tasks.web {:?}, VIP {:?}\n{}",
        swarm.dig(&ns, "tasks.web"),
        served(&swarm, &ns, "web", 6),
        swarm.logs()
    );
    assert_eq!(swarm.running("web").len(), 3, "{:#?}", swarm.tasks("web"));
    // Its task back (or, had the manager given up on the node first, moved): either way one
    // sandbox per task it runs, the old one's processes gone with the old sandbox.
    let on_victim = |swarm: &Swarm| {
        swarm
            .running("web")
            .iter()
            .filter(|id| swarm.node_of("web", id).as_deref() == Some(victim.as_str()))
            .count()
    };
    let sandboxes = swarm.sandboxes_on(&victim);
    assert_eq!(
        sandboxes.len(),
        on_victim(&swarm),
        "node {victim}: one sandbox per task it runs: {sandboxes:?}"
    );

    // Down for good: gossip drops its task again, and once the node is silent for 15 s the
    // manager marks it down and runs its task elsewhere.
    swarm.kill_agent(v);
    let moved = wait_until(Duration::from_secs(45), || {
        swarm.running("web").len() == 3 && on_victim(&swarm) == 0
    });
    assert!(
        moved,
        "the killed node's task was not marked down and replaced: {:#?}\n{}",
        swarm.tasks("web"),
        swarm.logs()
    );
    assert!(
        wait_until(Duration::from_secs(15), || {
            swarm.dig(&ns, "tasks.web").len() == 3 && served(&swarm, &ns, "web", 6).len() == 3
        }),
        "the replacement is not served: tasks.web {:?}, VIP {:?}",
        swarm.dig(&ns, "tasks.web"),
        served(&swarm, &ns, "web", 6)
    );
}

/// Opens a connection from `ns` to `dst` and checks that it echoes (a `shoal whoami`
/// connection that does not start with HTTP is an echo).
fn echo_connection(ns: &NetnsRef, dst: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let stream = dataplane::shell::netns::in_netns(ns, move || {
        std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(3))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    echoes(&stream)?;
    Ok(stream)
}

/// Whether `stream` echoes a line now.
fn echoes(mut stream: &std::net::TcpStream) -> std::io::Result<()> {
    use std::io::{Read, Write};
    stream.write_all(b"ping\n")?;
    let mut back = [0u8; 5];
    stream.read_exact(&mut back)?;
    if &back == b"ping\n" {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("echoed {back:?}")))
    }
}

/// A task failing its health check gets no new connections (and is back when it passes);
/// a task being stopped keeps serving a connection opened before the stop, for the drain
/// time, while new connections go to the others.
#[test]
fn unhealthy_tasks_get_no_new_connections_and_stopping_ones_finish_theirs() {
    let mut swarm = Swarm::new(
        "agent-health",
        SHOAL,
        2,
        &["--drain", "4", "--stop-timeout", "2"],
    );
    let sick = format!("/tmp/{}-sick", swarm.bed.prefix());
    let health = format!("test ! -e {sick}-$(hostname)");
    let health_flags = [
        "--health-cmd",
        &health,
        "--health-interval-ms",
        "300",
        "--health-retries",
        "1",
    ];
    let (web, _, ns) = web_and_client(&mut swarm, 2, &health_flags);
    expect_served(
        &swarm,
        &ns,
        2,
        Duration::from_secs(15),
        "both healthy tasks serve",
    );

    // One task turns unhealthy: only the other gets new connections.
    let sick_file = format!("{sick}-{}", &web[0][..web[0].len().min(12)]);
    std::fs::write(&sick_file, b"").expect("write the sick marker");
    let only_other = |s: &BTreeSet<String>| s.len() == 1 && s.iter().all(|t| t.ends_with(&web[1]));
    let out = wait_until(Duration::from_secs(15), || {
        only_other(&served(&swarm, &ns, "web", 6))
    });
    let _ = std::fs::remove_file(&sick_file);
    assert!(
        out,
        "the unhealthy task {} still gets connections: {:?}\n{}",
        web[0],
        served(&swarm, &ns, "web", 6),
        swarm.logs()
    );
    // Healthy again: back in.
    expect_served(
        &swarm,
        &ns,
        2,
        Duration::from_secs(15),
        "the recovered task is not back",
    );

    // Connections through the VIP to both tasks, then a scale to 1: every one of them
    // still echoes during the drain, and new ones reach the remaining task only.
    let vip = swarm.dig(&ns, "web");
    let dst = SocketAddr::from((ip(&vip[0]), 80));
    let open: Vec<_> = (0..4)
        .map(|_| echo_connection(&ns, dst).expect("a connection through the VIP"))
        .collect();
    swarm.cli_ok(&["service", "scale", "web=1", "-d"]);
    let stopping = wait_until(Duration::from_secs(5), || {
        swarm
            .tasks("web")
            .iter()
            .any(|t| t["desired"] == "shutdown")
    });
    assert!(stopping, "no task is stopping: {:#?}", swarm.tasks("web"));
    std::thread::sleep(Duration::from_secs(1));
    for (i, c) in open.iter().enumerate() {
        assert!(
            echoes(c).is_ok(),
            "connection {i} opened before the stop was cut within the drain\n{}",
            swarm.logs()
        );
    }
    let new = served(&swarm, &ns, "web", 4);
    assert_eq!(
        new.len(),
        1,
        "new connections during the drain reached {new:?}"
    );
}

/// The routing mesh: a port published by a service is served on every node, by the tasks
/// wherever they run, to a client outside the cluster (on the underlay).
#[test]
fn a_published_port_is_served_on_every_node_by_every_task() {
    // Metrics on each node's own loopback (every agent is in its node's namespace).
    let flags: Vec<&str> = AGENT_FLAGS
        .iter()
        .copied()
        .chain(["--metrics-addr", "127.0.0.1:9323"])
        .collect();
    let mut swarm = Swarm::new("agent-mesh", SHOAL, 2, &flags);
    swarm.start_agents();
    swarm.cli_ok(&["network", "create", "public"]);
    swarm.cli_ok(&[
        "service",
        "create",
        "web",
        "--replicas",
        "2",
        "--network",
        "public",
        "--publish",
        "8080:80",
        "-d",
    ]);
    swarm.wait_running("web", 2, Duration::from_secs(30));
    // A task's output is in `service logs`, prefixed with the task and its node.
    swarm.cli_ok(&[
        "service",
        "create",
        "talker",
        "--replicas",
        "1",
        "-d",
        "--",
        "sh",
        "-c",
        "echo hello from $SHOAL_TASK_NAME; exec sleep 600",
    ]);
    swarm.wait_running("talker", 1, Duration::from_secs(30));
    let root = swarm.state_root().display().to_string();
    let mut logs = String::new();
    let said = wait_until(Duration::from_secs(10), || {
        logs = swarm.cli_ok(&["service", "logs", "talker", "--state-root", &root]);
        logs.contains("| hello from talker.1.")
    });
    assert!(said, "service logs talker: {logs:?}");

    let outside = swarm.bed.add_node("outside");
    for node in &swarm.nodes {
        let dst = SocketAddr::from((node.underlay_ip, 8080));
        let mut seen = BTreeSet::new();
        let both = wait_until(Duration::from_secs(15), || {
            seen = (0..4)
                .filter_map(|_| greeting(&outside.ns, dst).ok())
                .collect();
            seen.len() == 2
        });
        assert!(
            both,
            "{dst} (node {}) served by {seen:?}, not both tasks\n{}",
            node.name,
            swarm.logs()
        );
    }

    // What the agent holds, for people and for programs, and its Prometheus metrics.
    let socket = swarm.socket(0).display().to_string();
    let status = std::process::Command::new(SHOAL)
        .args(["agent", "status", "--socket", &socket])
        .output()
        .expect("shoal agent status");
    let text = String::from_utf8_lossy(&status.stdout);
    for section in [
        "MEMBERS",
        "NETWORKS",
        "TASKS",
        "VIPS",
        "PUBLISHED",
        "DROPS",
        "DNS",
    ] {
        assert!(
            text.contains(section),
            "agent status lacks {section}:\n{text}"
        );
    }
    assert!(text.contains("tcp 0.0.0.0:8080"), "{text}");
    let json = std::process::Command::new(SHOAL)
        .args(["--format", "json", "agent", "status", "--socket", &socket])
        .output()
        .expect("shoal agent status --format json");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
    assert_eq!(json["members"][0]["state"], "alive", "{json}");
    assert!(
        json["vips"].as_array().is_some_and(|v| !v.is_empty()),
        "{json}"
    );
    let metrics = dataplane::shell::netns::in_netns(&swarm.nodes[0].ns, || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect("127.0.0.1:9323")?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut body = String::new();
        c.read_to_string(&mut body)?;
        Ok(body)
    })
    .expect("GET /metrics");
    for family in [
        "shoal_gossip_members{state=\"alive\"} 1",
        "shoal_backend_connections_total{",
        "shoal_conntrack_entries ",
        "shoal_dns_queries_total ",
        "shoal_network_packets_total{network=\"ingress\",direction=\"out\"}",
        "shoal_network_bytes_total{network=\"public\",direction=\"in\"}",
    ] {
        assert!(
            metrics.contains(family),
            "metrics lack {family}:\n{metrics}"
        );
    }
}

const CNI: &str = env!("CARGO_BIN_EXE_shoal-cni-under-test");

/// The interfaces of a namespace (`ip -o link`), loopback left out.
fn links(swarm: &Swarm, netns_name: &str) -> Vec<String> {
    let out = swarm.bed.exec_ok(netns_name, &["ip", "-o", "link", "show"]);
    out.lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_owned()))
        .filter(|n| n != "lo")
        .collect()
}

/// Runs `shoal-cni` as a container runtime would: the configuration on stdin, the call in
/// CNI_* variables. Its exit status and its stdout as JSON (`Null` when empty).
fn cni(
    command: &str,
    container: &str,
    netns: &str,
    ifname: &str,
    conf: &str,
) -> (bool, serde_json::Value) {
    use std::io::Write;
    let mut child = std::process::Command::new(CNI)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run shoal-cni");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.as_bytes());
    }
    let out = child.wait_with_output().expect("shoal-cni ends");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json)
}

/// Standalone namespaces attached with `shoal attach` and with `shoal-cni ADD` resolve and
/// reach a service of an attachable network; a network that is not attachable is refused
/// with a message naming it and leaves no interface and no record; DEL (and detach) removes
/// everything, and a second DEL is fine.
#[test]
fn standalone_containers_attach_to_attachable_networks_only() {
    let mut swarm = Swarm::new("agent-attach", SHOAL, 2, AGENT_FLAGS);
    swarm.start_agents();
    swarm.cli_ok(&[
        "network",
        "create",
        "shared",
        "--attachable",
        "--opt",
        "encrypted",
    ]);
    swarm.cli_ok(&["network", "create", "private"]);
    swarm.cli_ok(&[
        "service",
        "create",
        "web",
        "--replicas",
        "2",
        "--network",
        "shared",
        "-d",
    ]);
    swarm.wait_running("web", 2, Duration::from_secs(30));
    let c1 = swarm.bed.add_container("c1");
    let c2 = swarm.bed.add_container("c2");
    let socket1 = swarm.socket(1).display().to_string();
    let socket0 = swarm.socket(0).display().to_string();
    let path = |c: &tests::Container| c.ns.path().display().to_string();

    // shoal attach, through node 1's agent.
    let attach = |network: &str, ifname: &str| {
        std::process::Command::new(SHOAL)
            .args([
                "attach",
                "--network",
                network,
                "--netns",
                &path(&c1),
                "--ifname",
                ifname,
                "--socket",
                &socket1,
            ])
            .output()
            .expect("run shoal attach")
    };
    let out = attach("shared", "eth0");
    assert!(
        out.status.success(),
        "shoal attach: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        swarm.logs()
    );
    assert!(
        wait_until(Duration::from_secs(15), || served(&swarm, &c1.ns, "web", 4)
            .len()
            == 2),
        "c1 (shoal attach) does not reach both web tasks by name: {:?}\n{}",
        served(&swarm, &c1.ns, "web", 4),
        swarm.logs()
    );
    let refused = attach("private", "eth1");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("private") && said.contains("attachable"),
        "attaching to a private network: {said}"
    );
    assert_eq!(
        links(&swarm, &c1.netns_name),
        ["eth0"],
        "nothing left of the refusal"
    );

    // shoal-cni, through node 0's agent.
    let conf = |network: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{network}","type":"shoal-cni","socket":"{socket0}"}}"#
        )
    };
    let (ok, result) = cni("ADD", "c2", &path(&c2), "eth0", &conf("shared"));
    assert!(ok, "CNI ADD: {result}\n{}", swarm.logs());
    assert_eq!(result["dns"]["nameservers"][0], "127.0.0.11", "{result}");
    assert!(
        result["ips"][0]["address"]
            .as_str()
            .is_some_and(|a| a.ends_with("/24")),
        "{result}"
    );
    assert!(
        wait_until(Duration::from_secs(15), || served(&swarm, &c2.ns, "web", 4)
            .len()
            == 2),
        "c2 (CNI) does not reach both web tasks by name: {:?}",
        served(&swarm, &c2.ns, "web", 4)
    );
    assert!(
        cni("CHECK", "c2", &path(&c2), "eth0", &conf("shared")).0,
        "CNI CHECK after ADD"
    );
    let (ok, refusal) = cni("ADD", "c2", &path(&c2), "eth1", &conf("private"));
    assert!(!ok, "CNI ADD to a private network succeeded: {refusal}");
    assert_eq!(refusal["code"], 100, "{refusal}");
    assert!(
        refusal["msg"]
            .as_str()
            .is_some_and(|m| m.contains("private") && m.contains("attachable")),
        "{refusal}"
    );
    assert_eq!(
        links(&swarm, &c2.netns_name),
        ["eth0"],
        "nothing left of the refusal"
    );

    let (ok, _) = cni("DEL", "c2", &path(&c2), "eth0", &conf("shared"));
    assert!(ok, "CNI DEL");
    assert!(
        links(&swarm, &c2.netns_name).is_empty(),
        "DEL left an interface"
    );
    assert!(
        !cni("CHECK", "c2", &path(&c2), "eth0", &conf("shared")).0,
        "CHECK after DEL"
    );
    assert!(
        cni("DEL", "c2", &path(&c2), "eth0", &conf("shared")).0,
        "a second DEL"
    );
    let detached = std::process::Command::new(SHOAL)
        // `shoal attach` named the container after its namespace file.
        .args(["detach", &c1.netns_name, "--socket", &socket1])
        .output()
        .expect("run shoal detach");
    assert!(detached.status.success());
    assert!(
        links(&swarm, &c1.netns_name).is_empty(),
        "detach left an interface"
    );
}
