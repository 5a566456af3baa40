#![allow(clippy::unwrap_used)]
//! Five real gossip processes (`shoal gossip`), each in its own network namespace on one
//! underlay bridge: their table entries converge on every member of the network (and never
//! reach the member that is not on it); a node whose link goes down is declared failed by
//! the others and its entries are hidden; when the link comes back (well before the reap
//! time) it is a member again and its entries show again.

use std::time::Duration;

use tests::testbed::{Testbed, UNDERLAY_IF, wait_until};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal-under-test");
const NODES: usize = 5;
/// Within memberlist's default detection time for five members (suspicion 4–24 s, shrunk
/// by the others' confirmations), with room for a loaded CI machine.
const DETECTION: Duration = Duration::from_secs(45);

struct Members {
    bed: Testbed,
    pids: Vec<u32>,
    netns: Vec<String>,
}

impl Members {
    /// n0…n3 on `blue`, n4 on `red`; everyone writes its own address to `peers` of its
    /// network and joins through n0.
    fn start(test: &str) -> Members {
        let mut bed = Testbed::new(test);
        let nodes: Vec<_> = (0..NODES).map(|i| bed.add_node(&format!("n{i}"))).collect();
        let seed = format!("{}:7946", nodes[0].underlay_ip);
        let mut pids = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let network = if i == NODES - 1 { "red" } else { "blue" };
            let name = format!("n{i}");
            let bind = format!("{}:7946", node.underlay_ip);
            let put = format!("{network}/peers/{name}={}", node.underlay_ip);
            let mut argv = vec![
                SHOAL,
                "gossip",
                "--name",
                &name,
                "--bind",
                &bind,
                "--network",
                network,
                "--put",
                &put,
            ];
            if i > 0 {
                argv.extend(["--join", &seed]);
            }
            pids.push(bed.spawn(&node.netns_name, &argv).unwrap());
        }
        let netns = nodes.iter().map(|n| n.netns_name.clone()).collect();
        Members { bed, pids, netns }
    }

    fn log(&self, i: usize) -> String {
        self.bed.log_of(self.pids[i]).unwrap_or_default()
    }

    /// How many lines of node `i`'s log are exactly `line` (or start with it).
    fn count(&self, i: usize, line: &str) -> usize {
        self.log(i).lines().filter(|l| l.starts_with(line)).count()
    }

    /// Waits until every node in `nodes` logged `line` at least `times` times.
    fn wait_all(&self, nodes: &[usize], line: &str, times: usize, within: Duration) {
        let ok = wait_until(within, || {
            nodes.iter().all(|&i| self.count(i, line) >= times)
        });
        assert!(
            ok,
            "not every one of {nodes:?} logged {line:?} {times} time(s) within {within:?}:\n{}",
            self.dump()
        );
    }

    fn dump(&self) -> String {
        (0..NODES)
            .map(|i| format!("--- n{i}\n{}", self.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn link(&self, i: usize, state: &str) {
        self.bed
            .exec_ok(&self.netns[i], &["ip", "link", "set", UNDERLAY_IF, state]);
    }
}

#[test]
fn entries_converge_and_a_cut_off_node_is_failed_hidden_then_restored() {
    let m = Members::start("gossip_five_processes");
    let blue = [0, 1, 2, 3];
    // Everyone is a member of everyone.
    for i in 0..NODES {
        let others: Vec<usize> = (0..NODES).filter(|&j| j != i).collect();
        for j in &others {
            m.wait_all(&[i], &format!("member joined n{j} "), 1, DETECTION);
        }
    }
    // Blue's entries reach every blue node; red's node n4 gets none of them, and its own
    // red entry reaches nobody else.
    for writer in blue {
        m.wait_all(
            &blue,
            &format!("entry put blue peers n{writer} "),
            1,
            DETECTION,
        );
    }
    assert_eq!(
        m.count(4, "entry put blue"),
        0,
        "n4 is not on blue:\n{}",
        m.dump()
    );
    assert!(
        blue.iter().all(|&i| m.count(i, "entry put red") == 0),
        "red's entry stays on red:\n{}",
        m.dump()
    );

    // n3's link goes down: the others declare it failed and hide its entry.
    m.link(3, "down");
    let rest = [0, 1, 2];
    m.wait_all(&rest, "member failed n3", 1, DETECTION);
    m.wait_all(&[0, 1, 2], "entry deleted blue peers n3", 1, DETECTION);
    assert!(
        rest.iter()
            .all(|&i| m.count(i, "entry deleted blue peers n0") == 0),
        "only n3's entry is hidden:\n{}",
        m.dump()
    );

    // The link comes back well before the reap time (30 min): n3 is a member again and its
    // entry shows again on every blue node.
    m.link(3, "up");
    m.wait_all(&rest, "member recovered n3", 1, DETECTION);
    m.wait_all(&rest, "entry put blue peers n3 ", 2, DETECTION);
    assert!(
        (0..NODES).all(|i| m.count(i, "member failed n3") <= 1),
        "one failure, not a flapping member:\n{}",
        m.dump()
    );
}
