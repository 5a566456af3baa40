//! The news queue: each item is about one node; newer news about a node replaces what was
//! queued about it; each is sent a bounded number of times, the least sent first.

use crate::gossip::wire::Message;

#[derive(Debug, Default)]
pub struct Broadcasts {
    items: Vec<(String, Message, u32)>,
}

impl Broadcasts {
    pub fn queue(&mut self, about: &str, message: Message) {
        self.items.retain(|(name, _, _)| name != about);
        self.items.push((about.to_owned(), message, 0));
    }

    /// Up to `max` items for one packet, counting their sends; items sent `limit` times go.
    pub fn take(&mut self, max: usize, limit: u32) -> Vec<Message> {
        self.items.sort_by_key(|(_, _, sent)| *sent);
        let mut out = Vec::new();
        for (_, message, sent) in self.items.iter_mut().take(max) {
            out.push(message.clone());
            *sent += 1;
        }
        self.items.retain(|(_, _, sent)| *sent < limit);
        out
    }
}
