//! The simulator's virtual network: addresses, a seeded RNG, latency and loss of packets,
//! partitions and silent (stopped) nodes. It decides only whether and when something
//! arrives; the [`Sim`](super::Sim) moves the bytes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The gossip port every simulated node listens on.
pub const PORT: u16 = 7946;

/// Node `i`'s address: 10.(i/65536).(i/256%256).(i%256):7946.
pub fn addr(i: usize) -> SocketAddr {
    let [_, a, b, c] = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), PORT)
}

/// The node at `addr`, if it is one of the `n` simulated nodes (the inverse of [`addr`]).
pub fn index(addr: SocketAddr, n: usize) -> Option<usize> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let [ten, a, b, c] = ip.octets();
    let i = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    (ten == 10 && addr.port() == PORT && i < n).then_some(i)
}

/// A node's name: zero-padded so that names sort like indices.
pub fn name(i: usize) -> String {
    format!("node-{i:05}")
}

/// xorshift64* seeded through splitmix64: small, fast, and the same on every platform, so a
/// seed replays a run exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

/// splitmix64's mixer: spreads nearby seeds (0, 1, 2 ...) far apart.
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(mix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is negligible for our small `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

/// What every link does to a packet: one-way latency uniform in `[latency_min,
/// latency_max]`, and UDP packets lost with probability `loss` (streams are TCP: delayed,
/// never lost).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    pub loss: f64,
    pub latency_min: Duration,
    pub latency_max: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            loss: 0.01,
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(10),
        }
    }
}

/// Who can reach whom, and the dice for latency and loss.
#[derive(Debug)]
pub struct Network {
    link: Link,
    rng: Rng,
    /// Running (started and not stopped) nodes.
    up: Vec<bool>,
    /// Each node's side while partitioned.
    groups: Option<Vec<usize>>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Network {
    pub fn new(n: usize, link: Link, seed: u64) -> Self {
        Network {
            link,
            rng: Rng::new(seed),
            up: vec![false; n],
            groups: None,
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub fn link(&self) -> Link {
        self.link
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }

    pub fn set_up(&mut self, i: usize, up: bool) {
        self.up[i] = up;
    }

    /// Whether `a` and `b` can talk now: both running, on the same side.
    pub fn reachable(&self, a: usize, b: usize) -> bool {
        self.up[a] && self.up[b] && self.groups.as_ref().is_none_or(|g| g[a] == g[b])
    }

    /// Splits the nodes into `groups`; a node in none of them is cut off from all.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let n = self.up.len();
        // Unlisted nodes get a side of their own (numbered past the groups).
        let mut side: Vec<usize> = (0..n).map(|i| groups.len() + i).collect();
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                side[i] = g;
            }
        }
        self.groups = Some(side);
    }

    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// A one-way latency, in nanoseconds.
    pub fn latency(&mut self) -> u64 {
        let min = nanos(self.link.latency_min);
        let max = nanos(self.link.latency_max).max(min);
        min + self.rng.below(max - min + 1)
    }

    /// Whether this UDP packet is lost.
    pub fn lost(&mut self) -> bool {
        self.link.loss > 0.0 && self.rng.chance(self.link.loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0, 1, 255, 256, 999, 70_000] {
            assert_eq!(index(addr(i), 100_000), Some(i));
        }
        assert_eq!(index(addr(10), 10), None);
    }
}
