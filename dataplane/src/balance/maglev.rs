//! Maglev consistent hashing: a lookup table that maps a flow hash to one of N backends so
//! that (a) every backend owns almost exactly 1/N of the table, (b) removing or adding one
//! backend moves little more than 1/N of the flows, and (c) every node that builds the table
//! for the same set of backends gets the same table, with no coordination.
//!
//! The population algorithm is that of Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, section 3.4: each backend walks its own permutation of
//! the M slots (`offset + j * skip mod M`, M prime) and the backends take turns claiming their
//! next preferred empty slot until the table is full. Maglev favours (a) over (b): a change
//! also moves a few flows between surviving backends, fewer the larger M/N is.
//!
//! One departure from "M = the smallest prime >= 100 N": M comes in power-of-two classes with
//! a floor (see [`table_size`]), because (b) only holds while M stays the same.
//!
//! Pure: no I/O, no clock, no randomness, no allocation on lookup. Hashes come from
//! [`stable_hash`], which is fixed forever so that nodes running different builds agree.

use std::fmt;

/// Tables are never smaller than the smallest prime at or above this (16,411 entries, 32 KiB).
/// Sizes come in power-of-two classes (see [`table_size`]); a floor this high keeps every
/// service with up to 163 backends in one class, so scaling it never changes M (which would
/// remap every flow). It also keeps M/N large for small services, which is what keeps the
/// flows that move on a change close to the ideal 1/N (at M/N = 100 removing one of 10
/// backends moves about 12% of flows rather than 10%; at 16,411 about 10.5%).
pub const MIN_SIZE: usize = 16_384;

/// At most this many distinct backend keys are used; beyond it, the largest keys are left out
/// (the same ones on every node). It bounds memory (M <= 8,388,617 entries, 16 MiB) and lets an
/// entry be a `u16`, with `u16::MAX` free to mark an empty slot while building.
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// Marks a slot no backend has claimed yet; only seen during `build`.
const EMPTY: u16 = u16::MAX;

/// Seeds of the two backend hashes (the paper's h1 for offset, h2 for skip). Part of the
/// wire-visible behaviour: changing either remaps every flow on nodes that run the new code.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// A Maglev lookup table. Backends are identified by a stable 64-bit key (e.g. the backend's
/// IPv4 address as `u64`); [`MaglevTable::lookup`] returns an index into the slice given to
/// [`MaglevTable::build`].
///
/// The table depends only on the *set* of distinct keys, not on their order in the slice: the
/// keys are sorted before the table is filled, and only the final mapping back to the caller's
/// indices uses the caller's order. So every node that builds for the same set of backends
/// sends a given flow hash to the same backend key, whatever order its list arrived in.
///
/// Duplicate keys count once: the key owns one share of the table, and lookups return the
/// smallest index in the caller's slice that holds that key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MaglevTable {
    /// M entries (M prime, or 0 when there are no backends), each a position in `owners`.
    /// `u16` rather than the caller's `usize` halves the cache footprint of the hot table.
    entries: Vec<u16>,
    /// Position in sorted distinct-key order -> index in the caller's slice.
    owners: Vec<usize>,
}

impl fmt::Debug for MaglevTable {
    // The entries are up to millions of numbers; the shape is what is useful in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.entries.len())
            .field("backends", &self.owners.len())
            .finish()
    }
}

/// One backend's walk along its permutation while the table is filled.
struct Walk {
    /// The slot the backend prefers next: `offset + j * skip mod M` for its current `j`.
    next: u64,
    skip: u64,
}

impl MaglevTable {
    /// Builds the lookup table for `backends` (keys, in the caller's order; index i in the
    /// result refers to `backends[i]`). Returns an empty table for no backends.
    ///
    /// The size M is [`table_size`] of the number of distinct keys: a prime at least
    /// `max(MIN_SIZE, 100 * n)`, so each backend owns `floor(M/n)` or `ceil(M/n)` entries,
    /// i.e. within 1% of its fair share.
    pub fn build(backends: &[u64]) -> MaglevTable {
        Self::build_capped(backends, MAX_BACKENDS)
    }

    /// [`build`](Self::build) with at most `cap` distinct keys (the largest left out), so the
    /// cap's behaviour is testable without filling a table of [`MAX_BACKENDS`].
    fn build_capped(backends: &[u64], cap: usize) -> MaglevTable {
        // Sort (key, caller index) so the fill order depends only on the set of keys; the
        // index breaks ties so that, among duplicates, the smallest caller index comes first
        // and is the one kept by dedup.
        let mut sorted: Vec<(u64, usize)> = backends.iter().copied().zip(0..).collect();
        sorted.sort_unstable();
        sorted.dedup_by_key(|&mut (key, _)| key);
        sorted.truncate(cap.min(MAX_BACKENDS));

        let n = sorted.len();
        let m = table_size(n);
        // m == 0 exactly when there are no backends: an empty table.
        let Some((m64, m_minus_1)) = u64::try_from(m)
            .ok()
            .and_then(|m64| Some((m64, m64.checked_sub(1)?)))
        else {
            return MaglevTable::default();
        };

        let mut walks: Vec<Walk> = sorted
            .iter()
            .map(|&(key, _)| {
                let bytes = key.to_le_bytes(); // fixed byte order: same hash on every platform
                let offset = stable_hash(OFFSET_SEED, &bytes)
                    .checked_rem(m64)
                    .unwrap_or(0);
                // skip in [1, M-1]: with M prime, every such skip is coprime to M, so the walk
                // visits all M slots before repeating. That is why M must be prime.
                let skip = stable_hash(SKIP_SEED, &bytes)
                    .checked_rem(m_minus_1)
                    .unwrap_or(0)
                    .saturating_add(1);
                Walk { next: offset, skip }
            })
            .collect();

        let mut entries = vec![EMPTY; m];
        let mut filled = 0usize;
        'fill: loop {
            let mut placed_this_round = false;
            // Positions stop below EMPTY, and there are at most MAX_BACKENDS == EMPTY walks.
            for (pos, walk) in (0..EMPTY).zip(walks.iter_mut()) {
                // A full walk is M probes and finds every empty slot, so the cap never ends a
                // search early; it only guarantees termination were M ever not prime.
                for _ in 0..m {
                    let slot = walk.next;
                    // next < M and skip < M, so one subtraction reduces mod M: a division per
                    // probe would be most of the build time. Wrapping cannot happen (M < 2^24).
                    walk.next = walk.next.wrapping_add(walk.skip);
                    if walk.next >= m64 {
                        walk.next = walk.next.wrapping_sub(m64);
                    }
                    let Some(entry) = usize::try_from(slot).ok().and_then(|s| entries.get_mut(s))
                    else {
                        continue;
                    };
                    if *entry == EMPTY {
                        *entry = pos;
                        filled = filled.saturating_add(1);
                        placed_this_round = true;
                        break;
                    }
                }
                if filled >= m {
                    break 'fill;
                }
            }
            if !placed_this_round {
                break; // unreachable with M prime; never spin
            }
        }

        MaglevTable {
            entries,
            owners: sorted.into_iter().map(|(_, index)| index).collect(),
        }
    }

    /// The number of table entries M: a prime, or 0 when built for no backends.
    pub fn size(&self) -> usize {
        self.entries.len()
    }

    /// True when built for no backends (every lookup is `None`).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The backend index (into the slice given to `build`) for a flow hash; `None` when built
    /// for no backends. O(1), no allocation.
    ///
    /// `flow_hash` should be well mixed, e.g. [`stable_hash`] of the flow's 5-tuple. A
    /// remainder rather than a multiply-shift picks the slot so that even a poorly mixed hash
    /// (small integers) spreads over the table.
    pub fn lookup(&self, flow_hash: u64) -> Option<usize> {
        let m = u64::try_from(self.entries.len()).ok()?;
        let slot = usize::try_from(flow_hash.checked_rem(m)?).ok()?;
        let pos = *self.entries.get(slot)?;
        self.owners.get(usize::from(pos)).copied()
    }
}

/// The table size for `n` distinct backends: 0 for none, else the smallest prime at or above
/// the smallest power of two at or above `max(MIN_SIZE, 100 * n)`.
///
/// Why power-of-two classes rather than the smallest prime >= 100n: Maglev's minimal
/// disruption holds only while M stays the same. Flows land on slot `hash mod M`, so a new M
/// reshuffles nearly every flow. With M tracking 100n exactly, every scale up or down would
/// change M; with classes, M changes only when n crosses 163, 327, 655, 1310, 2621, ... and at
/// most doubles the memory of the tightest fit. Callers that scale across a boundary should
/// expect one full reshuffle at that moment.
pub fn table_size(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let want = n.min(MAX_BACKENDS).saturating_mul(100).max(MIN_SIZE);
    // want <= 6,553,500, so the power of two (<= 2^23) and the next prime fit any usize >= 32
    // bits; on a smaller target checked_next_power_of_two fails and we fall back to want.
    let class = want.checked_next_power_of_two().unwrap_or(want);
    next_prime(class)
}

/// The smallest prime >= n (n >= 2), by trial division: at most a few thousand divisions for
/// the sizes used here, once per build.
fn next_prime(n: usize) -> usize {
    let mut candidate = n.max(2);
    while !is_prime(candidate) {
        candidate = match candidate.checked_add(1) {
            Some(c) => c,
            None => return candidate, // unreachable for table sizes
        };
    }
    candidate
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3usize;
    // d <= n / d rather than d * d <= n: no overflow near usize::MAX.
    while d <= n / d {
        if n.is_multiple_of(d) {
            return false;
        }
        d = d.saturating_add(2);
    }
    true
}

/// A deterministic 64-bit hash of `bytes`: the same on every node, process, platform and Rust
/// version (unlike std's `DefaultHasher`, whose algorithm is unspecified and, via
/// `RandomState`, randomly keyed). Used for the backend permutations and by callers for flow
/// 5-tuples.
///
/// FNV-1a 64 over the bytes, started from the FNV offset basis xor a mixed `seed`, then
/// murmur3's fmix64 finalizer because FNV-1a alone leaves the high bits (and so the `mod M`)
/// poorly mixed for short inputs. Every step is a bijection of the running state, so for the
/// same bytes different seeds always give different hashes.
///
/// Not keyed against adversaries: anyone who knows the seed can pick inputs that collide.
pub fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    // Mixing the seed first makes nearby seeds (0, 1, 2) start far apart.
    let mut h = FNV_OFFSET_BASIS ^ fmix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// murmur3's 64-bit finalizer: a bijection with full avalanche.
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// splitmix64: a fixed-seed stream of well-mixed u64s for flow hashes and keys.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    /// Backend keys that look like overlay IPv4 addresses 10.0.0.2, 10.0.0.3, ...
    fn ip_keys(n: u64) -> Vec<u64> {
        (0..n).map(|i| 0x0a00_0002 + i).collect()
    }

    /// The backend key a flow goes to, or None.
    fn key_for(table: &MaglevTable, keys: &[u64], flow: u64) -> Option<u64> {
        table.lookup(flow).map(|i| keys[i])
    }

    /// Fraction of `flows` random flow hashes whose backend key differs between two tables.
    fn moved_fraction(before: (&MaglevTable, &[u64]), after: (&MaglevTable, &[u64])) -> f64 {
        const FLOWS: u32 = 100_000;
        let mut rng = SplitMix(0xd152);
        let mut moved = 0u32;
        for _ in 0..FLOWS {
            let flow = rng.next();
            if key_for(before.0, before.1, flow) != key_for(after.0, after.1, flow) {
                moved += 1;
            }
        }
        f64::from(moved) / f64::from(FLOWS)
    }

    fn entries_per_owner(table: &MaglevTable) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for &e in &table.entries {
            *counts.entry(e).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn same_set_in_any_order_maps_flows_to_the_same_key() {
        let keys = ip_keys(25);
        let mut shuffled = keys.clone();
        shuffled.reverse();
        shuffled.swap(3, 17);
        let a = MaglevTable::build(&keys);
        let b = MaglevTable::build(&keys);
        let c = MaglevTable::build(&shuffled);
        assert_eq!(a, b);
        let mut rng = SplitMix(1);
        for _ in 0..10_000 {
            let flow = rng.next();
            let ka = key_for(&a, &keys, flow);
            assert!(ka.is_some());
            assert_eq!(ka, key_for(&b, &keys, flow));
            assert_eq!(ka, key_for(&c, &shuffled, flow));
        }
    }

    #[test]
    fn ten_backends_own_near_equal_shares_of_the_table() {
        let table = MaglevTable::build(&ip_keys(10));
        let m = table.size();
        let counts = entries_per_owner(&table);
        assert_eq!(
            counts.len(),
            10,
            "every backend owns entries, no slot left empty"
        );
        assert!(!counts.contains_key(&EMPTY));
        let fair = m as f64 / 10.0;
        for (&owner, &count) in &counts {
            let c = count as f64;
            assert!(
                c >= 0.9 * fair && c <= 1.1 * fair,
                "backend {owner}: {count} of {m}"
            );
        }
        // Round-robin filling gives one slot per backend per round: shares differ by <= 1.
        let min = counts.values().min().unwrap();
        let max = counts.values().max().unwrap();
        assert!(max - min <= 1, "min {min} max {max}");
    }

    #[test]
    fn four_backends_get_balanced_flows() {
        let keys = ip_keys(4);
        let table = MaglevTable::build(&keys);
        let mut counts = [0u32; 4];
        let mut rng = SplitMix(4);
        for _ in 0..40_000 {
            counts[table.lookup(rng.next()).unwrap()] += 1;
        }
        let max = f64::from(*counts.iter().max().unwrap());
        let ratio = max / 10_000.0;
        eprintln!("4 backends, 40000 flows: counts {counts:?}, max/mean {ratio:.4}");
        assert!(ratio <= 1.05, "{counts:?}");
    }

    #[test]
    fn removing_one_of_ten_backends_moves_about_a_tenth_of_flows() {
        let keys = ip_keys(10);
        let before = MaglevTable::build(&keys);
        let mut fewer = keys.clone();
        let removed = fewer.remove(3);
        let after = MaglevTable::build(&fewer);
        assert_eq!(
            before.size(),
            after.size(),
            "minimal disruption needs the same M"
        );

        let moved = moved_fraction((&before, &keys), (&after, &fewer));
        eprintln!(
            "10 -> 9 backends: {:.4} of flows moved (ideal 0.1000)",
            moved
        );
        assert!(moved <= 1.1 / 10.0, "{moved}");

        // Flows of the removed backend must all move (checked directly), the rest mostly stay.
        let mut rng = SplitMix(5);
        for _ in 0..10_000 {
            let flow = rng.next();
            assert_ne!(key_for(&after, &fewer, flow), Some(removed));
        }
    }

    #[test]
    fn adding_an_eleventh_backend_moves_about_an_eleventh_of_flows() {
        let keys = ip_keys(10);
        let before = MaglevTable::build(&keys);
        let more = ip_keys(11);
        let after = MaglevTable::build(&more);
        assert_eq!(
            before.size(),
            after.size(),
            "minimal disruption needs the same M"
        );

        let moved = moved_fraction((&before, &keys), (&after, &more));
        eprintln!(
            "10 -> 11 backends: {:.4} of flows moved (ideal {:.4})",
            moved,
            1.0 / 11.0
        );
        assert!(moved <= 1.2 / 11.0, "{moved}");
    }

    #[test]
    fn removing_one_of_a_thousand_backends_moves_few_flows() {
        let keys = ip_keys(1000);
        let before = MaglevTable::build(&keys);
        let mut fewer = keys.clone();
        fewer.remove(500);
        let after = MaglevTable::build(&fewer);
        assert_eq!(before.size(), after.size());
        let moved = moved_fraction((&before, &keys), (&after, &fewer));
        eprintln!(
            "1000 -> 999 backends: {:.5} of flows moved (ideal 0.00100)",
            moved
        );
        // Maglev favours balance over minimal disruption: at M/N ~ 131 some flows of
        // surviving backends move too (about 0.6% here). Bound it at 1%, ten times the ideal.
        assert!(moved <= 0.01, "{moved}");
    }

    #[test]
    fn no_backends_gives_an_empty_table() {
        let table = MaglevTable::build(&[]);
        assert!(table.is_empty());
        assert_eq!(table.size(), 0);
        assert_eq!(table.lookup(0), None);
        assert_eq!(table.lookup(u64::MAX), None);
        assert_eq!(table, MaglevTable::default());
    }

    #[test]
    fn one_backend_takes_every_flow() {
        let table = MaglevTable::build(&[42]);
        assert!(!table.is_empty());
        let mut rng = SplitMix(6);
        for flow in (0..1000)
            .chain((0..1000).map(|_| rng.next()))
            .chain([u64::MAX])
        {
            assert_eq!(table.lookup(flow), Some(0));
        }
    }

    #[test]
    fn table_size_is_a_prime_of_at_least_a_hundred_per_backend() {
        for n in [1, 2, 9, 10, 11, 40, 41, 100, 655, 656, 1000, 5000] {
            let keys = ip_keys(n as u64);
            let table = MaglevTable::build(&keys);
            let m = table.size();
            assert_eq!(m, table_size(n));
            assert!(is_prime(m), "n {n}: {m} is not prime");
            assert!(m >= 100 * n && m >= MIN_SIZE, "n {n}: {m}");
            // Never more than twice the tightest power-of-two class (plus the prime gap).
            assert!(m <= 2 * (100 * n).max(MIN_SIZE) + 1000, "n {n}: {m}");
        }
        // The classes: M changes only at these boundaries.
        assert_eq!(table_size(1), 16_411);
        assert_eq!(table_size(163), 16_411);
        assert_eq!(table_size(164), 32_771);
        assert_eq!(table_size(164), table_size(327));
        assert_eq!(table_size(1000), 131_101);
        assert_eq!(table_size(MAX_BACKENDS), 8_388_617);
        assert_eq!(table_size(usize::MAX), 8_388_617);
        assert_eq!(table_size(0), 0);
    }

    #[test]
    fn is_prime_agrees_with_a_sieve() {
        const N: usize = 10_000;
        let mut composite = vec![false; N];
        for i in 2..N {
            if !composite[i] {
                for j in (i * i..N).step_by(i) {
                    composite[j] = true;
                }
            }
            assert_eq!(is_prime(i), !composite[i], "{i}");
        }
        assert!(!is_prime(0) && !is_prime(1));
        assert_eq!(next_prime(4096), 4099);
        assert_eq!(next_prime(16_384), 16_411);
        assert!(is_prime(8_388_617) && next_prime(1 << 23) == 8_388_617);
    }

    #[test]
    fn duplicate_keys_count_once_and_resolve_to_the_first_index() {
        let table = MaglevTable::build(&[7, 3, 7, 7, 3, 9]);
        let dedup = MaglevTable::build(&[7, 3, 9]);
        assert_eq!(table.size(), dedup.size());
        let mut rng = SplitMix(7);
        for _ in 0..5000 {
            let flow = rng.next();
            let i = table.lookup(flow).unwrap();
            assert!(
                [0, 1, 5].contains(&i),
                "{i}: the first 7, the first 3, the 9"
            );
            assert_eq!(
                Some([7, 3, 9][dedup.lookup(flow).unwrap()]),
                Some([7, 3, 7, 7, 3, 9][i])
            );
        }
        // All duplicates of one key: a one-backend table.
        let same = MaglevTable::build(&[5, 5, 5]);
        assert_eq!(same.lookup(123), Some(0));
    }

    #[test]
    fn keys_beyond_the_cap_are_left_out_the_same_way_on_every_node() {
        // Caller order descending, so the caller indices of kept keys differ from positions.
        let keys: Vec<u64> = (0..15u64).rev().collect();
        let table = MaglevTable::build_capped(&keys, 10);
        let mut shuffled = keys.clone();
        shuffled.rotate_left(4);
        let other = MaglevTable::build_capped(&shuffled, 10);
        let mut rng = SplitMix(8);
        for _ in 0..20_000 {
            let flow = rng.next();
            let key = key_for(&table, &keys, flow).unwrap();
            assert!(key < 10, "the 5 largest keys are dropped: {key}");
            assert_eq!(key_for(&other, &shuffled, flow), Some(key));
        }
    }

    #[test]
    fn extreme_keys_do_not_panic() {
        let table = MaglevTable::build(&[0, u64::MAX, 1, u64::MAX - 1]);
        for flow in [0, 1, u64::MAX, u64::MAX / 2] {
            assert!(table.lookup(flow).is_some());
        }
    }

    #[test]
    fn stable_hash_has_fixed_outputs() {
        // Regression guard: these values are part of cross-node and cross-version agreement.
        // Cross-checked against an independent Python rendering of FNV-1a 64 + fmix64.
        assert_eq!(stable_hash(0, b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(0, b"shoal"), 0xa965_faf8_1fb6_da66);
        assert_eq!(
            stable_hash(OFFSET_SEED, &0x0a00_0002u64.to_le_bytes()),
            0xe61f_a137_360e_7887
        );
    }

    #[test]
    fn stable_hash_differs_by_seed_and_by_input() {
        let tuple = [10, 0, 0, 2, 10, 0, 0, 3, 0x1f, 0x90, 0xc3, 0x50, 6];
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..1000 {
            assert!(
                seen.insert(stable_hash(seed, &tuple)),
                "seed {seed} collided"
            );
        }
        assert_ne!(
            stable_hash(OFFSET_SEED, &tuple),
            stable_hash(SKIP_SEED, &tuple)
        );
        assert_ne!(stable_hash(0, b"a"), stable_hash(0, b"b"));
        assert_ne!(stable_hash(0, b""), stable_hash(0, &[0]));
    }

    #[test]
    fn table_contents_are_fixed() {
        // Regression guard for the whole mapping (hash seeds, sizing, fill order): a change
        // here means nodes running old and new code disagree on where flows go.
        let keys = ip_keys(3);
        let table = MaglevTable::build(&keys);
        assert_eq!(table.size(), 16_411);
        let picks: Vec<usize> = (0..12).map(|f| table.lookup(f).unwrap()).collect();
        // Cross-checked against a literal Python rendering of the paper's pseudocode.
        assert_eq!(picks, vec![1, 1, 0, 2, 2, 1, 1, 2, 1, 2, 0, 1]);
    }
}
