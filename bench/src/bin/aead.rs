//! Per-frame AEAD cost: ChaCha20-Poly1305 sealing in place of 64 B and 1400 B frames with
//! ring (what `dataplane::seal` uses) and with RustCrypto's chacha20poly1305 (the anchor: the
//! other mature Rust implementation), plus `KeySet::seal` itself (ring + header + counter).
//!
//! Each figure is the median of several runs in the same process; both implementations must
//! produce byte-identical ciphertext and tag for the same key, nonce, AAD and plaintext.
//! Writes `bench/results/aead.md` and `bench/results/aead.json`. Bounded: well under 20 s in
//! release. Run with `cargo run -p bench --release --bin aead`.
#![allow(clippy::disallowed_methods)] // A benchmark reads the clock; that is its job.

use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};
use dataplane::seal::{KeySet, NetworkKey};
use dataplane::types::{Epoch, SenderId, Vni};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::Serialize;
use std::hint::black_box;
use std::time::{Duration, Instant};

const KEY: [u8; 32] = [0x42; 32];
const SIZES: [usize; 2] = [64, 1400];
const RUNS: usize = 9;
/// Each run seals frames for about this long (after a calibration run).
const RUN_TARGET: Duration = Duration::from_millis(120);
/// Hard stop for the whole program's measuring, whatever the machine.
const BUDGET: Duration = Duration::from_secs(15);

/// One implementation's way of sealing a frame in place; returns the tag.
trait Sealer {
    const NAME: &'static str;
    fn seal(&mut self, counter: u64, aad: &[u8; 24], buf: &mut [u8]) -> [u8; 16];
}

/// The nonce layout of sealed VXLAN: sender id ‖ counter.
fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&7u32.to_be_bytes());
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

struct Ring(LessSafeKey);

impl Sealer for Ring {
    const NAME: &'static str = "ring 0.17";
    fn seal(&mut self, counter: u64, aad: &[u8; 24], buf: &mut [u8]) -> [u8; 16] {
        let nonce = Nonce::assume_unique_for_key(nonce(counter));
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
            .expect("seal");
        tag.as_ref().try_into().expect("16-byte tag")
    }
}

struct RustCrypto(ChaCha20Poly1305);

impl Sealer for RustCrypto {
    const NAME: &'static str = "chacha20poly1305 0.11";
    fn seal(&mut self, counter: u64, aad: &[u8; 24], buf: &mut [u8]) -> [u8; 16] {
        let n = nonce(counter).into();
        let tag = self
            .0
            .encrypt_inout_detached(&n, aad, buf.into())
            .expect("seal");
        tag.into()
    }
}

/// `KeySet::seal`: ring plus writing the header and taking a counter.
struct Shoal(KeySet);

impl Sealer for Shoal {
    const NAME: &'static str = "shoal KeySet::seal (ring)";
    fn seal(&mut self, _counter: u64, _aad: &[u8; 24], buf: &mut [u8]) -> [u8; 16] {
        let mut header = [0u8; 24];
        let mut tag = [0u8; 16];
        let vni = Vni::new(4096).expect("vni");
        self.0.seal(vni, &mut header, buf, &mut tag).expect("seal");
        tag
    }
}

#[derive(Serialize)]
struct Row {
    implementation: &'static str,
    frame_bytes: usize,
    runs: usize,
    frames_per_run: u64,
    median_ns_per_frame: f64,
    min_ns_per_frame: f64,
    max_ns_per_frame: f64,
    gb_per_s: f64,
    /// median ns/frame of this implementation ÷ that of ring, same size.
    ratio_to_ring: f64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    cpu: String,
    avx2: bool,
    note: &'static str,
    identical_output_checked: bool,
    rows: Vec<Row>,
}

/// Times `frames` seals of one `size`-byte frame, in ns per frame.
fn run<S: Sealer>(s: &mut S, size: usize, frames: u64) -> f64 {
    let mut buf = vec![0xa5u8; size];
    let aad = [0x48u8; 24];
    let start = Instant::now();
    for counter in 0..frames {
        // Sealing the previous ciphertext again is as costly as sealing fresh plaintext.
        let tag = s.seal(counter, &aad, black_box(&mut buf));
        black_box(tag);
    }
    start.elapsed().as_nanos() as f64 / frames as f64
}

/// Calibrates, then runs `RUNS` times (fewer if the budget is spent); returns the row.
fn measure<S: Sealer>(s: &mut S, size: usize, deadline: Instant) -> Row {
    let probe = run(s, size, 2_000);
    let frames = ((RUN_TARGET.as_nanos() as f64 / probe) as u64).clamp(1_000, 5_000_000);
    let mut samples = Vec::with_capacity(RUNS);
    while samples.len() < RUNS && (samples.is_empty() || Instant::now() < deadline) {
        samples.push(run(s, size, frames));
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    Row {
        implementation: S::NAME,
        frame_bytes: size,
        runs: samples.len(),
        frames_per_run: frames,
        median_ns_per_frame: median,
        min_ns_per_frame: samples[0],
        max_ns_per_frame: samples[samples.len() - 1],
        gb_per_s: size as f64 / median,
        ratio_to_ring: f64::NAN,
    }
}

/// Both implementations, same inputs, same bytes out (ciphertext and tag).
fn assert_identical(ring: &mut Ring, rc: &mut RustCrypto) {
    for size in SIZES.into_iter().chain([0, 1, 63, 65, 1500, 9000]) {
        let plain: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        let aad = [0x48u8; 24];
        let (mut a, mut b) = (plain.clone(), plain);
        let ta = ring.seal(0xfeed, &aad, &mut a);
        let tb = rc.seal(0xfeed, &aad, &mut b);
        assert_eq!(a, b, "ciphertext differs at {size} B");
        assert_eq!(ta, tb, "tag differs at {size} B");
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn markdown(r: &Report) -> String {
    let mut md = String::from("# AEAD: ChaCha20-Poly1305 seal in place, per frame\n\n");
    md.push_str(&format!(
        "CPU: {} (AVX2: {}). {}\n\nBoth implementations produced byte-identical ciphertext \
         and tag for the same key, nonce, AAD and plaintext: {}.\n\n",
        r.cpu, r.avx2, r.note, r.identical_output_checked
    ));
    md.push_str(
        "| implementation | frame | median ns/frame | min–max ns | GB/s | × ring | runs × frames |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &r.rows {
        md.push_str(&format!(
            "| {} | {} B | {:.1} | {:.1}–{:.1} | {:.3} | {:.2} | {} × {} |\n",
            row.implementation,
            row.frame_bytes,
            row.median_ns_per_frame,
            row.min_ns_per_frame,
            row.max_ns_per_frame,
            row.gb_per_s,
            row.ratio_to_ring,
            row.runs,
            row.frames_per_run
        ));
    }
    md.push_str(
        "\n`× ring` is the median ns/frame divided by ring's at the same size (above 1: slower \
         than ring). GB/s counts frame payload bytes (10^9 bytes per second). Regenerate with \
         `cargo run -p bench --release --bin aead`.\n",
    );
    md
}

fn main() -> std::io::Result<()> {
    let started = Instant::now();
    let deadline = started + BUDGET;
    let mut ring = Ring(LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &KEY).expect("key"),
    ));
    let mut rc = RustCrypto(ChaCha20Poly1305::new(&KEY.into()));
    let mut shoal = {
        let mut ks = KeySet::new(SenderId(7), 0);
        ks.install(Epoch(1), NetworkKey(KEY));
        ks.set_tx(Epoch(1)).expect("tx");
        Shoal(ks)
    };
    assert_identical(&mut ring, &mut rc);

    let mut rows = Vec::new();
    for size in SIZES {
        let base = measure(&mut ring, size, deadline);
        let ring_ns = base.median_ns_per_frame;
        rows.push(base);
        rows.push(measure(&mut rc, size, deadline));
        rows.push(measure(&mut shoal, size, deadline));
        for row in rows.iter_mut().filter(|r| r.frame_bytes == size) {
            row.ratio_to_ring = row.median_ns_per_frame / ring_ns;
        }
    }

    let report = Report {
        benchmark: "aead",
        cpu: cpu_model(),
        avx2: avx2(),
        note: "Single thread, release build, on a machine shared with other work: compare \
               rows of the same run, not absolute figures across runs.",
        identical_output_checked: true,
        rows,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let md = markdown(&report);
    std::fs::write(dir.join("aead.md"), &md)?;
    let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("aead.json"), json + "\n")?;
    print!("{md}");
    println!("\n({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
