//! What the simulator does with a node's outputs: packets onto the lossy virtual network,
//! push/pull and bulk-sync streams as reliable two-way exchanges, events into the records;
//! and the deliveries at the far end. Bytes are counted here (see [`stats`](super::stats)).

use std::net::SocketAddr;

use control::gossip::membership;
use control::gossip::netdb::{NetMessage, Output};
use control::gossip::tables;
use control::gossip::wire::{Message, PushPull, StreamMessage, encode, encode_stream};
use dataplane::types::Timestamp;

use super::Sim;
use super::events::Event;
use super::network::{addr, index};
use super::stats::{Failure, TableBytes, Watched, add_table_bytes};

impl Sim {
    /// Carries out what node `i` asked for, and records what it reported.
    pub(super) fn dispatch(&mut self, i: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, messages } => self.send_packet(i, to, messages),
                Output::PushPull { to, join } => self.open_push_pull(i, to, join),
                Output::Stream { to, payload } => {
                    if let Some(j) = self.route(to) {
                        self.send_stream(i, j, payload, false);
                    }
                }
                Output::Member(event) => self.member_event(i, event),
                Output::Table(event) => self.table_event(i, event),
            }
        }
    }

    fn route(&mut self, to: SocketAddr) -> Option<usize> {
        let j = index(to, self.nodes.len());
        if j.is_none() {
            self.unroutable += 1;
        }
        j
    }

    fn member_event(&mut self, i: usize, event: membership::Event) {
        self.nodes[i].stats.member_event(&event);
        match event {
            membership::Event::Failed(node) => self.failures.push(Failure {
                observer: i,
                node,
                at: Timestamp(self.now),
            }),
            membership::Event::Suspected(node) => self.suspicions.push(Failure {
                observer: i,
                node,
                at: Timestamp(self.now),
            }),
            _ => {}
        }
    }

    fn table_event(&mut self, i: usize, event: tables::Event) {
        self.nodes[i].stats.table_event(&event);
        if self.watching.is_empty() {
            return;
        }
        let key = match &event {
            tables::Event::Put { key, .. } | tables::Event::Deleted { key } => key,
        };
        if self.watching.contains(key) {
            self.watched.push(Watched {
                node: i,
                at: Timestamp(self.now),
                event,
            });
        }
    }

    fn send_packet(&mut self, i: usize, to: SocketAddr, messages: Vec<Message>) {
        let Some(j) = self.route(to) else {
            return;
        };
        let stats = &mut self.nodes[i].stats;
        stats.packets_sent += 1;
        if self.count_all_bytes {
            stats.bytes_sent += packet_len(&messages);
        }
        let table = table_bytes_of_packet(&messages);
        add_table_bytes(&mut stats.table_bytes_sent, &table);
        if !self.net.reachable(i, j) || self.net.lost() {
            return;
        }
        let at = self.now + self.net.latency();
        self.queue.push(
            at,
            Event::Packet {
                from: i,
                to: j,
                messages,
                table,
            },
        );
    }

    pub(super) fn deliver_packet(
        &mut self,
        from: usize,
        to: usize,
        messages: Vec<Message>,
        table: &TableBytes,
    ) {
        if !self.net.reachable(from, to) {
            return;
        }
        let stats = &mut self.nodes[to].stats;
        stats.packets_received += 1;
        if self.count_all_bytes {
            stats.bytes_received += packet_len(&messages);
        }
        add_table_bytes(&mut stats.table_bytes_received, table);
        let now = Timestamp(self.now);
        for message in messages {
            let out = self.nodes[to].db.handle(now, addr(from), message);
            self.dispatch(to, out);
        }
        self.reschedule(to, false);
    }

    /// The initiator's half of a push/pull; its state is taken now, as the shell does
    /// before it writes. Nothing is built for a peer that cannot be reached.
    fn open_push_pull(&mut self, i: usize, to: SocketAddr, join: bool) {
        let Some(j) = self.route(to) else {
            return;
        };
        if !self.net.reachable(i, j) {
            return;
        }
        let (nodes, user_state) = self.nodes[i].db.push_pull_state();
        let state = PushPull {
            join,
            nodes,
            user_state,
        };
        self.send_push_pull(i, j, state, false);
    }

    fn send_push_pull(&mut self, from: usize, to: usize, state: PushPull, answer: bool) {
        let state = if self.count_all_bytes {
            let message = StreamMessage::PushPull(state);
            self.nodes[from].stats.bytes_sent += encode_stream(&message).len() as u64;
            let StreamMessage::PushPull(state) = message else {
                unreachable!("built as a push/pull just above")
            };
            state
        } else {
            state
        };
        let at = self.now + self.net.latency();
        self.queue.push(
            at,
            Event::PushPull {
                from,
                to,
                state,
                answer,
            },
        );
    }

    pub(super) fn deliver_push_pull(
        &mut self,
        from: usize,
        to: usize,
        state: PushPull,
        answer: bool,
    ) {
        if !self.net.reachable(from, to) {
            return;
        }
        if self.count_all_bytes {
            let message = StreamMessage::PushPull(state.clone());
            self.nodes[to].stats.bytes_received += encode_stream(&message).len() as u64;
        }
        let now = Timestamp(self.now);
        if !answer {
            // The peer writes its own state, then merges the initiator's (as the shell does).
            let (nodes, user_state) = self.nodes[to].db.push_pull_state();
            let reply = PushPull {
                join: false,
                nodes,
                user_state,
            };
            self.send_push_pull(to, from, reply, true);
        }
        let out = self.nodes[to]
            .db
            .merge_push_pull(now, state.nodes, &state.user_state);
        self.dispatch(to, out);
        self.reschedule(to, false);
    }

    fn send_stream(&mut self, from: usize, to: usize, payload: Vec<u8>, answer: bool) {
        if !self.net.reachable(from, to) {
            return;
        }
        let table = table_bytes_of_stream(&payload);
        let stats = &mut self.nodes[from].stats;
        if self.count_all_bytes {
            stats.bytes_sent += payload.len() as u64;
        }
        add_table_bytes(&mut stats.table_bytes_sent, &table);
        let at = self.now + self.net.latency();
        self.queue.push(
            at,
            Event::Stream {
                from,
                to,
                payload,
                table,
                answer,
            },
        );
    }

    pub(super) fn deliver_stream(
        &mut self,
        from: usize,
        to: usize,
        payload: &[u8],
        table: &TableBytes,
        answer: bool,
    ) {
        if !self.net.reachable(from, to) {
            return;
        }
        let stats = &mut self.nodes[to].stats;
        if self.count_all_bytes {
            stats.bytes_received += payload.len() as u64;
        }
        add_table_bytes(&mut stats.table_bytes_received, table);
        let (reply, out) = self.nodes[to]
            .db
            .handle_stream(Timestamp(self.now), payload);
        self.dispatch(to, out);
        // An answer is the end of the exchange: nothing goes back for it.
        if let Some(reply) = reply.filter(|_| !answer) {
            self.send_stream(to, from, reply, true);
        }
        self.reschedule(to, false);
    }
}

/// A packet's size as memberlist frames it: one message alone, or a compound (type, count,
/// a 2-byte length per part) of several. No label, encryption or checksum.
fn packet_len(messages: &[Message]) -> u64 {
    let body: usize = messages.iter().map(|m| encode(m).len()).sum();
    let framing = if messages.len() > 1 {
        2 + 2 * messages.len()
    } else {
        0
    };
    (body + framing) as u64
}

/// The table data in a packet: each user message's encoded size, attributed to the networks
/// its table message carries data of.
fn table_bytes_of_packet(messages: &[Message]) -> TableBytes {
    let mut out = TableBytes::new();
    for message in messages {
        let Message::User(payload) = message else {
            continue;
        };
        let Ok(decoded) = NetMessage::decode(payload) else {
            continue;
        };
        let networks = decoded.networks();
        if networks.is_empty() {
            continue;
        }
        let len = encode(message).len() as u64;
        out.extend(networks.into_iter().map(|n| (n.to_owned(), len)));
    }
    out
}

/// The table data in a stream (a bulk sync): its size, attributed to each of its networks.
fn table_bytes_of_stream(payload: &[u8]) -> TableBytes {
    match NetMessage::decode(payload) {
        Ok(decoded) => decoded
            .networks()
            .into_iter()
            .map(|n| (n.to_owned(), payload.len() as u64))
            .collect(),
        Err(_) => TableBytes::new(),
    }
}
