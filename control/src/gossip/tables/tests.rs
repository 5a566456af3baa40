#![allow(clippy::unwrap_used)]

use super::*;

const GRACE: Duration = Duration::from_secs(1800);

fn key(network: &str, k: &str) -> Key {
    Key {
        network: network.into(),
        table: "endpoints".into(),
        key: k.into(),
    }
}

fn at(secs: u64) -> Timestamp {
    Timestamp(secs * 1_000_000_000)
}

/// Three nodes: a and b on `blue`, c only on `red`.
fn three() -> (Tables, Tables, Tables) {
    let (mut a, mut b, mut c) = (
        Tables::new("a", GRACE),
        Tables::new("b", GRACE),
        Tables::new("c", GRACE),
    );
    let records = [
        a.join_network("blue"),
        b.join_network("blue"),
        c.join_network("red"),
    ];
    for t in [&mut a, &mut b, &mut c] {
        for r in &records {
            t.apply_attachment(r.clone());
        }
    }
    (a, b, c)
}

#[test]
fn entries_reach_the_networks_nodes_only_and_newer_wins() {
    let (mut a, mut b, mut c) = three();
    let (change, event) = a
        .write(at(1), key("blue", "10.0.0.2"), Some(b"mac1".to_vec()))
        .unwrap();
    assert!(matches!(event, Some(Event::Put { .. })));
    assert_eq!(
        a.peers_of("blue"),
        vec!["b".to_string()],
        "only b is sent blue's changes"
    );
    assert!(b.apply(at(1), change.clone()).event.is_some());
    assert_eq!(b.get(&key("blue", "10.0.0.2")), Some(("a", &b"mac1"[..])));
    assert_eq!(
        c.apply(at(1), change.clone()),
        Applied::default(),
        "c is not on blue and stores nothing"
    );
    assert_eq!(c.stored(), 0);
    // A replay or an older change loses; a newer one wins on every node.
    assert!(!b.apply(at(2), change.clone()).fresh);
    let (newer, _) = a
        .write(at(3), key("blue", "10.0.0.2"), Some(b"mac2".to_vec()))
        .unwrap();
    b.apply(at(3), newer.clone());
    assert_eq!(b.get(&key("blue", "10.0.0.2")).unwrap().1, b"mac2");
    assert_eq!(
        b.apply(at(4), change),
        Applied::default(),
        "the older write arriving late changes nothing"
    );
    assert!(
        c.write(at(5), key("blue", "x"), Some(vec![1])).is_none(),
        "c cannot write to blue"
    );
}

#[test]
fn deletes_are_tombstones_reaped_after_the_grace() {
    let (mut a, mut b, _) = three();
    let (put, _) = a.write(at(1), key("blue", "k"), Some(vec![1])).unwrap();
    b.apply(at(1), put.clone());
    let (delete, event) = a.write(at(2), key("blue", "k"), None).unwrap();
    assert_eq!(
        event,
        Some(Event::Deleted {
            key: key("blue", "k")
        })
    );
    assert_eq!(
        b.apply(at(2), delete).event,
        Some(Event::Deleted {
            key: key("blue", "k")
        })
    );
    // The tombstone stops the stale put from resurrecting the entry.
    assert_eq!(b.apply(at(3), put), Applied::default());
    assert_eq!(b.get(&key("blue", "k")), None);
    assert_eq!(b.stored(), 1, "the tombstone is kept");
    b.reap(at(2 + GRACE.as_secs() - 1), &BTreeMap::new());
    assert_eq!(b.stored(), 1);
    b.reap(at(2 + GRACE.as_secs()), &BTreeMap::new());
    assert_eq!(b.stored(), 0, "reaped after the grace");
}

#[test]
fn a_failed_nodes_entries_are_hidden_and_restored_if_it_returns_in_time() {
    let (mut a, mut b, _) = three();
    let (put, _) = a.write(at(1), key("blue", "k"), Some(vec![7])).unwrap();
    b.apply(at(1), put);
    assert_eq!(
        b.node_failed("a"),
        vec![Event::Deleted {
            key: key("blue", "k")
        }]
    );
    assert_eq!(b.get(&key("blue", "k")), None);
    assert_eq!(
        b.node_recovered("a"),
        vec![Event::Put {
            key: key("blue", "k"),
            owner: "a".into(),
            value: vec![7]
        }]
    );
    assert_eq!(b.get(&key("blue", "k")).unwrap().1, &[7]);
    // Failed for longer than the grace: gone for good.
    b.node_failed("a");
    let failed = BTreeMap::from([("a".to_string(), at(100))]);
    b.reap(at(100 + GRACE.as_secs()), &failed);
    assert!(b.node_recovered("a").is_empty());
    assert_eq!(b.stored(), 0);
}

#[test]
fn a_bulk_sync_brings_a_joining_node_up_to_date_and_leaving_deletes_ours() {
    let (mut a, mut b, _) = three();
    for i in 0..5 {
        a.write(at(1), key("blue", &format!("k{i}")), Some(vec![i]))
            .unwrap();
    }
    a.write(at(2), key("blue", "k0"), None).unwrap();
    let mut d = Tables::new("d", GRACE);
    let d_joined = d.join_network("blue");
    let events: Vec<Event> = a
        .bulk("blue")
        .into_iter()
        .filter_map(|c| d.apply(at(3), c).event)
        .collect();
    assert_eq!(
        events.len(),
        4,
        "four live entries, the tombstone raises nothing"
    );
    assert_eq!(d.bulk("blue").len(), 5, "the tombstone travels too");
    // a leaves blue: its entries are deleted for the others.
    assert!(b.apply_attachment(d_joined).0, "b learns that d is on blue");
    assert_eq!(b.peers_of("blue"), vec!["a".to_string(), "d".to_string()]);
    let (changes, _, left) = a.leave_network(at(4), "blue");
    assert!(b.apply_attachment(left).0);
    assert_eq!(b.peers_of("blue"), vec!["d".to_string()]);
    assert_eq!(changes.len(), 4);
    for c in changes {
        d.apply(at(4), c);
    }
    assert!((1..5).all(|i| d.get(&key("blue", &format!("k{i}"))).is_none()));
    assert_eq!(a.stored(), 0);
}

#[test]
fn a_restarted_node_outbids_its_stale_entries_and_attachments() {
    let (mut a, mut b, _) = three();
    for i in 0..5 {
        a.write(at(1), key("blue", "k"), Some(vec![i])).unwrap();
    }
    let (old, _) = a.write(at(1), key("blue", "k"), Some(vec![1])).unwrap();
    b.apply(at(1), old.clone());
    // a restarts: a fresh clock, on blue again, with a new value for k and no "gone" key.
    let mut a = Tables::new("a", GRACE);
    let joined = a.join_network("blue");
    let (fresh, _) = a.write(at(2), key("blue", "k"), Some(vec![2])).unwrap();
    assert!(fresh.ltime < old.ltime, "the new life's clock starts low");
    assert!(
        !b.apply(at(2), fresh).fresh,
        "b keeps the stale value for now"
    );
    // A bulk sync from b brings the stale entry back to a, which answers with its value.
    let stale = b
        .bulk("blue")
        .into_iter()
        .find(|c| c.key == key("blue", "k"))
        .unwrap();
    let applied = a.apply(at(3), stale);
    let correction = applied.correction.expect("a corrects its stale entry");
    assert!(correction.ltime > old.ltime);
    assert_eq!(correction.value, Some(vec![2]));
    assert_eq!(
        b.apply(at(3), correction).event,
        Some(Event::Put {
            key: key("blue", "k"),
            owner: "a".into(),
            value: vec![2],
        })
    );
    // A key a no longer has comes back as a tombstone.
    let gone = Change {
        key: key("blue", "gone"),
        owner: "a".into(),
        ltime: 99,
        value: Some(vec![9]),
    };
    let tombstone = a.apply(at(4), gone).correction.unwrap();
    assert_eq!((tombstone.value, tombstone.ltime > 99), (None, true));
    // Its attachment: a stale "left blue" record is outbid by "on blue".
    let stale_leave = Attachment {
        node: "a".into(),
        network: "blue".into(),
        ltime: joined.ltime + 10,
        attached: false,
    };
    let (_, fix) = a.apply_attachment(stale_leave);
    let fix = fix.unwrap();
    assert!(fix.attached && fix.ltime > joined.ltime + 10);
}
