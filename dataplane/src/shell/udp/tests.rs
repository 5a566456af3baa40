//! Tests of the overlay socket and its batches, on loopback.

use super::addr::*;
use super::*;

fn loopback() -> OverlaySocket {
    OverlaySocket::bind(None, "127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap()
}

fn recv_all(rx: &mut RecvBatch, sock: &OverlaySocket, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..200 {
        if out.len() >= want {
            break;
        }
        match rx.recv(sock) {
            Ok(k) => {
                for i in 0..k {
                    let (src, b) = rx.get(i);
                    out.push((src, b.to_vec()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sock.wait_readable(20).unwrap();
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    out
}

#[test]
fn sockaddr_roundtrip() {
    for s in [
        "10.1.2.3:4789",
        "[fe80::1%3]:9",
        "[2001:db8::7]:65535",
        "0.0.0.0:0",
    ] {
        let a: SocketAddr = s.parse().unwrap();
        let mut st = zeroed_storage();
        let len = encode_sockaddr(&a, &mut st);
        assert_eq!(decode_sockaddr(&st, len), Some(a), "{s}");
        assert_eq!(decode_sockaddr(&st, len - 1), None);
    }
    assert_eq!(decode_sockaddr(&zeroed_storage(), 128), None);
}

#[test]
fn segments() {
    let v: Vec<_> = split_segments(250, Some(100)).collect();
    assert_eq!(v, vec![0..100, 100..200, 200..250]);
    let v: Vec<_> = split_segments(200, Some(100)).collect();
    assert_eq!(v, vec![0..100, 100..200]);
    assert_eq!(
        split_segments(80, Some(100)).collect::<Vec<_>>(),
        vec![0..80]
    );
    assert_eq!(split_segments(80, None).collect::<Vec<_>>(), vec![0..80]);
    assert_eq!(split_segments(80, Some(0)).collect::<Vec<_>>(), vec![0..80]);
    assert_eq!(split_segments(0, None).count(), 0);
}

#[test]
fn slots_commit_and_push() {
    let mut b = SendBatch::new(2, 64);
    assert_eq!(b.slot_mut().unwrap().len(), 64);
    b.slot_mut().unwrap()[24..27].copy_from_slice(b"abc");
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    b.commit(24..27, dest);
    assert!(b.push(b"xyz", dest));
    assert!(b.is_full());
    assert!(b.slot_mut().is_none());
    assert!(!b.push(b"q", dest));
    b.clear();
    assert!(!b.push(&[0; 65], dest));
    assert!(b.is_empty());
}

#[test]
#[should_panic(expected = "outside")]
fn commit_outside_slot_panics() {
    let mut b = SendBatch::new(1, 16);
    b.commit(0..17, "127.0.0.1:9".parse().unwrap());
}

#[test]
fn requeue_moves_unsent_to_front() {
    let mut b = SendBatch::new(3, 8);
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for d in [b"a", b"b", b"c"] {
        assert!(b.push(d, dest));
    }
    b.requeue_from(2);
    assert_eq!(b.len(), 1);
    assert_eq!(b.queued[0].0..b.queued[0].1, 0..1);
    assert_eq!(&b.bufs[..1], b"c");
}

#[test]
fn loopback_batches_with_headroom() {
    let rx_sock = loopback();
    let tx_sock = loopback();
    let dest = rx_sock.local_addr();
    let mut tx = SendBatch::new(16, 256);
    let mut rx = RecvBatch::new(8, 256);
    let mut sent = 0;
    for i in 0..40u8 {
        if tx.is_full() {
            sent += tx.flush(&tx_sock).unwrap();
        }
        let slot = tx.slot_mut().unwrap();
        slot[24] = i;
        slot[25..25 + usize::from(i)].fill(i);
        tx.commit(24..25 + usize::from(i), dest);
    }
    sent += tx.flush(&tx_sock).unwrap();
    assert_eq!(sent, 40);
    assert_eq!(tx.sent(), 40);
    assert!(tx.is_empty());
    let got = recv_all(&mut rx, &rx_sock, 40);
    assert_eq!(got.len(), 40);
    for (i, (src, bytes)) in got.iter().enumerate() {
        assert_eq!(*src, tx_sock.local_addr());
        assert_eq!(bytes.len(), 1 + i);
        assert!(bytes.iter().all(|&b| usize::from(b) == i));
    }
    assert!(matches!(rx.recv(&rx_sock), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
}

#[test]
fn truncated_datagrams_are_dropped_and_counted() {
    let rx_sock = loopback();
    let tx_sock = loopback();
    tx_sock.send_to(&[1; 100], rx_sock.local_addr()).unwrap();
    tx_sock.send_to(&[2; 10], rx_sock.local_addr()).unwrap();
    let mut rx = RecvBatch::new(4, 50);
    let got = recv_all(&mut rx, &rx_sock, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec![2; 10]);
    assert_eq!(rx.truncated(), 1);
}

#[test]
fn per_datagram_errors_do_not_block_the_rest() {
    let tx_sock = loopback();
    let rx_sock = loopback();
    let mut tx = SendBatch::new(4, 16);
    // An IPv6 destination on an IPv4 socket is refused for that datagram only.
    assert!(tx.push(b"bad", "[::1]:9".parse().unwrap()));
    assert!(tx.push(b"good", rx_sock.local_addr()));
    assert_eq!(tx.flush(&tx_sock).unwrap(), 1);
    assert_eq!(tx.failed(), 1);
    assert!(tx.take_last_error().is_some());
    let mut rx = RecvBatch::new(4, 16);
    let got = recv_all(&mut rx, &rx_sock, 1);
    assert_eq!(got[0].1, b"good");
}

#[test]
fn gro_messages_are_split() {
    let rx_sock = loopback();
    rx_sock.set_gro(true).unwrap();
    let tx_sock = loopback();
    // Send one 1000-byte buffer as ten 100-byte datagrams with UDP GSO; with GRO on the
    // receiver gets them as one message plus the segment size (if the kernel coalesces),
    // and RecvBatch must split it back.
    setsockopt_int(tx_sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 100).unwrap();
    let mut payload = vec![0u8; 1000];
    for (i, chunk) in payload.chunks_mut(100).enumerate() {
        chunk.fill(i as u8);
    }
    payload.truncate(950); // the last datagram is shorter
    tx_sock.send_to(&payload, rx_sock.local_addr()).unwrap();
    let mut rx = RecvBatch::new(4, GRO_SLOT_SIZE);
    assert!(rx_sock.wait_readable(1000).unwrap());
    // Four slots but ten datagrams in one call: they came as one coalesced message.
    assert_eq!(rx.recv(&rx_sock).unwrap(), 10);
    let got: Vec<_> = (0..rx.len())
        .map(|i| (rx.get(i).0, rx.get(i).1.to_vec()))
        .collect();
    assert_eq!(got.len(), 10);
    for (i, (_, bytes)) in got.iter().enumerate() {
        assert_eq!(bytes.len(), if i == 9 { 50 } else { 100 });
        assert!(bytes.iter().all(|&b| usize::from(b) == i));
    }
}

#[test]
fn gso_runs_go_out_as_the_same_datagrams() {
    let rx_sock = loopback();
    let other = loopback();
    let tx_sock = loopback();
    let mut tx = SendBatch::new(32, 256);
    tx.set_gso(true);
    // Ten equal datagrams and a shorter one to rx (one GSO run), then one to `other`,
    // then three more to rx (a second run).
    let mut expect_rx = Vec::new();
    for i in 0..11u8 {
        let d = vec![i; if i == 10 { 40 } else { 100 }];
        assert!(tx.push(&d, rx_sock.local_addr()));
        expect_rx.push(d);
    }
    assert!(tx.push(b"elsewhere", other.local_addr()));
    for i in 20..23u8 {
        let d = vec![i; 100];
        assert!(tx.push(&d, rx_sock.local_addr()));
        expect_rx.push(d);
    }
    assert_eq!(tx.flush(&tx_sock).unwrap(), 15);
    assert!(tx.gso(), "the kernel refused UDP GSO on loopback");
    assert_eq!(tx.gso_messages(), 2);
    // Without GRO the receiver sees every datagram on its own, in order, unchanged.
    let mut rx = RecvBatch::new(32, 256);
    let got: Vec<Vec<u8>> = recv_all(&mut rx, &rx_sock, 14)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert_eq!(got, expect_rx);
    let mut rx2 = RecvBatch::new(4, 256);
    assert_eq!(recv_all(&mut rx2, &other, 1)[0].1, b"elsewhere");
}
