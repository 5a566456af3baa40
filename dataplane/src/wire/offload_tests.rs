//! Offload tests: every segment and every merged frame is checked against a full
//! recomputation by etherparse, and segmenting then merging gives back the same bytes.

use super::*;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

const MSS: usize = 1000;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// An Ethernet/IPv4/TCP frame as a TSO-capable kernel hands it over: `data` in one frame,
/// with the given flags and TCP timestamps, and a checksum field holding only the partial
/// (pseudo-header) sum.
fn tso_frame(data: &[u8], psh: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0x42, 10, 0, 0, 2], [2, 0x42, 10, 0, 0, 3])
        .ipv4([10, 0, 0, 2], [10, 0, 0, 3], 64)
        .tcp(40000, 5201, 1_000_000, 64000)
        .ack(77)
        .options(&[etherparse::TcpOptionElement::Timestamp(5, 6)])
        .unwrap();
    if psh {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out[14 + 4..14 + 6].copy_from_slice(&100u16.to_be_bytes()); // ip id
    fix_ipv4_checksum(&mut out, 34);
    out
}

fn tso_hdr() -> VnetHdr {
    VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
    }
}

fn segments(frame: &[u8], hdr: &VnetHdr) -> Vec<Vec<u8>> {
    let mut s = TcpSegmenter::new(frame, hdr).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(n) = s.next_into(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// Asserts the IPv4 and TCP checksums of `frame` are right and returns (seq, flags byte,
/// ip id, payload).
fn check(frame: &[u8]) -> (u32, u8, u16, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        panic!("not TCP")
    };
    let th = tcp.to_header();
    let want = th.calc_checksum_ipv4(&h, tcp.payload()).unwrap();
    assert_eq!(th.checksum, want, "TCP checksum");
    (
        th.sequence_number,
        frame[34 + 13],
        h.identification,
        tcp.payload().to_vec(),
    )
}

#[test]
fn the_virtio_header_round_trips() {
    let h = tso_hdr();
    assert_eq!(VnetHdr::parse(&h.emit()), Some(h));
    assert_eq!(VnetHdr::parse(&[0; 9]), None);
    let ecn = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4 | VnetHdr::GSO_ECN,
        ..h
    };
    assert_eq!(ecn.gso(), VnetHdr::GSO_TCPV4);
}

#[test]
fn a_tso_frame_is_cut_into_mss_segments_with_correct_headers() {
    let data = payload(4 * MSS + 123);
    let segs = segments(&tso_frame(&data, true), &tso_hdr());
    assert_eq!(segs.len(), 5);
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let (seq, flags, id, p) = check(s);
        assert_eq!(seq, 1_000_000 + (i * MSS) as u32);
        assert_eq!(id, 100 + i as u16);
        let last = i == segs.len() - 1;
        assert_eq!(flags & TCP_PSH != 0, last, "PSH only on the last segment");
        assert_eq!(p.len(), if last { 123 } else { MSS });
        joined.extend(p);
    }
    assert_eq!(joined, data);
}

#[test]
fn a_buffer_too_small_for_a_segment_gets_nothing() {
    let frame = tso_frame(&payload(3000), false);
    let mut s = TcpSegmenter::new(&frame, &tso_hdr()).unwrap();
    let mut small = vec![0u8; s.max_segment_len() - 1];
    assert_eq!(s.next_into(&mut small), None);
}

#[test]
fn frames_that_are_not_tcp4_are_refused_for_segmentation() {
    let mut udp = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4([1; 4], [2; 4], 9)
        .udp(1, 2)
        .write(&mut udp, &[0; 100])
        .unwrap();
    assert_eq!(
        TcpSegmenter::new(&udp, &tso_hdr()).unwrap_err(),
        OffloadError::NotTcp4
    );
    let udp_gso = VnetHdr {
        gso_type: 5,
        ..tso_hdr()
    };
    assert!(matches!(
        TcpSegmenter::new(&udp, &udp_gso),
        Err(OffloadError::UnsupportedGso(5))
    ));
}

#[test]
fn a_partial_checksum_is_completed() {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 9)
        .udp(1000, 2000)
        .write(&mut frame, b"some datagram payload")
        .unwrap();
    let right = frame[40..42].to_vec();
    let l4_len = (frame.len() - 34) as u16;
    let partial = fold_sum(pseudo_header_sum([10, 0, 0, 1], [10, 0, 0, 2], 17, l4_len));
    frame[40..42].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    complete_checksum(&mut frame, &hdr).unwrap();
    assert_eq!(frame[40..42], right[..]);
    let bad = VnetHdr {
        csum_start: 60000,
        ..hdr
    };
    assert_eq!(
        complete_checksum(&mut frame, &bad),
        Err(OffloadError::BadOffsets)
    );
}

#[test]
fn segments_merge_back_into_the_original_stream() {
    let data = payload(40 * MSS + 17);
    let segs = segments(&tso_frame(&data, true), &tso_hdr());
    let mut c = TcpCoalescer::new();
    for s in &segs {
        assert!(c.push(s));
    }
    let (hdr, merged) = c.take().map(|(h, f)| (h, f.to_vec())).unwrap();
    assert!(c.is_empty());
    assert_eq!(
        (hdr.gso(), usize::from(hdr.gso_size)),
        (VnetHdr::GSO_TCPV4, MSS)
    );
    assert_eq!(hdr.flags, VnetHdr::F_NEEDS_CSUM);
    // What the receiving kernel does with it: finish the checksum, then it must verify.
    let mut merged = merged;
    complete_checksum(&mut merged, &hdr).unwrap();
    let (seq, flags, _, p) = check(&merged);
    assert_eq!((seq, p), (1_000_000, data));
    assert!(flags & TCP_PSH != 0, "the PSH of the last segment is kept");
    // And segmenting the merged frame gives the same segments' payloads again.
    let again = segments(&merged, &hdr);
    assert_eq!(again.len(), segs.len());
    for (a, b) in again.iter().zip(&segs) {
        assert_eq!(check(a).3, check(b).3);
    }
}

#[test]
fn a_single_segment_goes_out_unchanged_and_marked_verified() {
    let segs = segments(&tso_frame(&payload(500), false), &tso_hdr());
    let mut c = TcpCoalescer::new();
    assert!(c.push(&segs[0]));
    let (hdr, frame) = c.take().unwrap();
    assert_eq!(hdr.flags, VnetHdr::F_DATA_VALID);
    assert_eq!(hdr.gso(), VnetHdr::GSO_NONE);
    assert_eq!(frame, &segs[0][..]);
    assert_eq!(c.take(), None);
}

#[test]
fn what_must_not_merge_does_not() {
    let segs = segments(&tso_frame(&payload(4 * MSS), false), &tso_hdr());
    let fresh = |first: &[u8]| {
        let mut c = TcpCoalescer::new();
        assert!(c.push(first));
        c
    };
    // Out of order.
    assert!(!fresh(&segs[0]).push(&segs[2]));
    // Another flow (a different source port).
    let mut other = segs[1].clone();
    other[34] ^= 1;
    assert!(!fresh(&segs[0]).push(&other));
    // A corrupted payload byte: the checksum fails, it is passed on alone.
    let mut corrupt = segs[1].clone();
    corrupt[100] ^= 0xff;
    assert!(!fresh(&segs[0]).push(&corrupt));
    assert!(!TcpCoalescer::new().push(&corrupt));
    // After a short segment, nothing joins.
    let short = segments(&tso_frame(&payload(MSS + 10), false), &tso_hdr());
    let mut c = fresh(&short[0]);
    assert!(c.push(&short[1]));
    let next = segments(&tso_frame(&payload(3 * MSS), false), &tso_hdr());
    assert!(!c.push(&next[0]));
    // A bad IPv4 header checksum, or different reserved/AE bits, do not merge either.
    let mut bad_ip = segs[1].clone();
    bad_ip[14 + 8] ^= 1; // TTL
    assert!(!fresh(&segs[0]).push(&bad_ip));
    let mut ae = segs[1].clone();
    let old_word = [ae[34 + 12], ae[34 + 13]];
    ae[34 + 12] |= 0x01;
    let c = u16::from_be_bytes([ae[34 + 16], ae[34 + 17]]);
    let c = crate::wire::checksum::ones_complement_update(c, &old_word, &ae[34 + 12..34 + 14]);
    ae[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
    assert!(TcpCoalescer::new().push(&ae), "a valid segment on its own");
    assert!(!fresh(&segs[0]).push(&ae));
    // A SYN or FIN never merges; nor does a pure ACK without data.
    let mut syn = segs[0].clone();
    syn[34 + 13] |= 0x02;
    assert!(!TcpCoalescer::new().push(&syn));
    let ack = segments(&tso_frame(&[], false), &tso_hdr());
    assert_eq!(ack.len(), 1);
    assert!(!TcpCoalescer::new().push(&ack[0]));
}

proptest::proptest! {
    /// The 8-bytes-at-a-time sum agrees with the plain 16-bit definition (RFC 1071), for any
    /// bytes, any length, chained at any even split point.
    #[test]
    fn the_wide_checksum_sum_agrees_with_rfc_1071(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        split in 0usize..1500,
    ) {
        let naive = |d: &[u8]| -> u64 {
            d.chunks(2).map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum()
        };
        let fold = |mut x: u64| { while x > 0xffff { x = (x & 0xffff) + (x >> 16); } x };
        proptest::prop_assert_eq!(fold(sum(0, &data)), fold(naive(&data)));
        let at = (split * 2).min(data.len() & !1);
        let chained = sum(sum(7, &data[..at]), &data[at..]);
        proptest::prop_assert_eq!(fold(chained), fold(naive(&data) + 7));
    }
}

#[test]
fn a_tiny_segment_size_is_refused() {
    let frame = tso_frame(&payload(3000), false);
    let tiny = VnetHdr {
        gso_size: 1,
        ..tso_hdr()
    };
    assert_eq!(
        TcpSegmenter::new(&frame, &tiny).unwrap_err(),
        OffloadError::TinySegments(1)
    );
}
