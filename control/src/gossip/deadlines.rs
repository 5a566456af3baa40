//! Deadlines by member, kept in time order too: looked up by member (a suspicion confirmed,
//! a recovered node's answer arrives) and by time (the earliest, the overdue ones). After a
//! healed partition a node holds hundreds at once (suspicions, recovered nodes waiting for
//! their bulk sync) and the next deadline is asked for after every message: a scan of them
//! all each time was most of a large cluster's work.

use std::collections::{BTreeMap, BTreeSet};

use dataplane::types::Timestamp;

#[derive(Debug, Default)]
pub struct Deadlines {
    by_node: BTreeMap<String, Timestamp>,
    by_time: BTreeSet<(Timestamp, String)>,
}

impl Deadlines {
    /// `node`'s deadline is `until` (replacing an earlier one).
    pub fn insert(&mut self, node: String, until: Timestamp) {
        self.remove(&node);
        self.by_time.insert((until, node.clone()));
        self.by_node.insert(node, until);
    }

    /// Whether `node` had a deadline; it no longer has.
    pub fn remove(&mut self, node: &str) -> bool {
        match self.by_node.remove(node) {
            Some(until) => self.by_time.remove(&(until, node.to_owned())),
            None => false,
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Timestamp> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// The nodes whose deadline is at or before `now`, their deadlines removed.
    pub fn take_overdue(&mut self, now: Timestamp) -> Vec<String> {
        let mut overdue = Vec::new();
        while let Some((until, _)) = self.by_time.first()
            && *until <= now
        {
            if let Some((_, node)) = self.by_time.pop_first() {
                self.by_node.remove(&node);
                overdue.push(node);
            }
        }
        overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_due_in_order_and_answered_nodes_never_do() {
        let mut r = Deadlines::default();
        r.insert("b".into(), Timestamp(20));
        r.insert("a".into(), Timestamp(10));
        r.insert("c".into(), Timestamp(30));
        r.insert("a".into(), Timestamp(25)); // waits again, later
        assert_eq!(r.next(), Some(Timestamp(20)));
        assert!(r.remove("b"));
        assert!(!r.remove("b"));
        assert_eq!(r.take_overdue(Timestamp(24)), Vec::<String>::new());
        assert_eq!(r.take_overdue(Timestamp(30)), vec!["a", "c"]);
        assert_eq!(r.next(), None);
        assert!(!r.remove("a"));
    }
}
