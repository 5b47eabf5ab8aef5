//! Codec benchmark: sipshard-net against rsip 0.4 on two realistic requests (plus a REGISTER variant
//! whose Contact rsip can read).
//!
//! `cargo bench -p sipshard-net --bench parse` runs the criterion benchmarks (3 s measurement,
//! 1 s warm-up each). Before them, it checks that both codecs read the same essentials from both
//! messages, and prints how many heap allocations each benchmarked operation makes (counted by a
//! wrapper around the system allocator that costs one relaxed load while counting is off).
//!
//! For instruction counts, set `PARSE_BENCH_INSTR=<op>` (an op name from the allocation table,
//! e.g. `REGISTER/rsip parse`) and run the bench binary under
//! `valgrind --tool=callgrind --toggle-collect='*instr_window*'`: it then runs only that op
//! `PARSE_BENCH_ITERS` times (default 1000) inside `instr_window` and skips criterion.
//! Instructions per op = total Ir / iterations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::TryFrom;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use rsip::prelude::*;
use sipshard_net::{ForwardEdits, Message, response_to};

/// A typical softphone REGISTER (RFC 5626 outbound parameters on the Contact): 525 bytes.
const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.34:5060;rport;branch=z9hG4bK.Vq3Hn8sKdJ\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=8Kp1ZyQ3aW\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: 3f7b2c1e9a5d@192.168.1.34\r\n\
CSeq: 21 REGISTER\r\n\
Contact: <sip:alice@192.168.1.34:5060>;+sip.instance=\"<urn:uuid:6e2f0a0c-3b7d-4d5e-9a1f-0c2d4e6f8a10>\";reg-id=1;expires=3600\r\n\
Expires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, NOTIFY, UPDATE\r\n\
Supported: path, outbound\r\n\
User-Agent: Linphone/5.2.0\r\n\
Content-Length: 0\r\n\
\r\n";

/// [`REGISTER`] without the `+sip.instance` parameter (461 bytes): rsip 0.4 cannot tokenize a
/// Contact whose parameters include a quoted-string value (`+sip.instance="<urn:uuid:…>"`, RFC 5626
/// §4.1), so this variant gives rsip a REGISTER whose Contact it can read.
const REGISTER_PLAIN: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.34:5060;rport;branch=z9hG4bK.Vq3Hn8sKdJ\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=8Kp1ZyQ3aW\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: 3f7b2c1e9a5d@192.168.1.34\r\n\
CSeq: 21 REGISTER\r\n\
Contact: <sip:alice@192.168.1.34:5060>;reg-id=1;expires=3600\r\n\
Expires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, NOTIFY, UPDATE\r\n\
Supported: path, outbound\r\n\
User-Agent: Linphone/5.2.0\r\n\
Content-Length: 0\r\n\
\r\n";

/// An INVITE with an audio+video SDP offer, as it reaches a proxy after a first hop: 1116 bytes
/// (675 of headers, 441 of SDP).
const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;rport;branch=z9hG4bK74bf9.a1c3\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.atlanta.example.com;lr>\r\n\
Record-Route: <sip:p0.atlanta.example.com;lr>\r\n\
From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, INFO, UPDATE\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 441\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 97 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:97 opus/48000/2\r\n\
a=fmtp:97 useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
m=video 51372 RTP/AVP 96 98\r\n\
a=rtpmap:96 H264/90000\r\n\
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n\
a=rtpmap:98 VP8/90000\r\n\
a=sendrecv\r\n";

// ---------------------------------------------------------------------------------------------
// Allocation counting

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------------
// The operations. Each returns something derived from what it read, so nothing is optimised away.

/// (a) Framing only: start line, header lines located and classified, Content-Length checked.
fn sipshard_parse(bytes: &[u8]) -> usize {
    let msg = Message::parse_datagram(bytes).expect("sipshard parses");
    black_box(&msg);
    msg.header_lines().len()
}

/// (b) What a proxy or registrar reads from every request.
fn sipshard_essentials(bytes: &[u8]) -> usize {
    let msg = Message::parse_datagram(bytes).expect("sipshard parses");
    let via = msg.top_via().expect("Via");
    black_box(via.branch());
    let from = msg.from().expect("From");
    black_box(from.tag());
    let to = msg.to().expect("To");
    black_box(&to.uri);
    black_box(msg.call_id().expect("Call-ID"));
    let cseq = msg.cseq().expect("CSeq");
    black_box((cseq.seq, cseq.method));
    black_box(msg.max_forwards().expect("Max-Forwards"));
    let mut n = 0;
    if msg.method() == Some(sipshard_net::Method::Register) {
        for contact in msg.contacts() {
            let contact = contact.expect("Contact");
            let address = contact.address().expect("not *");
            black_box((&address.uri, contact.expires_s()));
            n += 1;
        }
    }
    n
}

/// (c) Full validation: every header sipshard has a typed view for is parsed.
fn sipshard_validate(bytes: &[u8]) -> usize {
    let msg = Message::parse_datagram(bytes).expect("sipshard parses");
    msg.validate().expect("valid");
    msg.header_lines().len()
}

/// (d) rsip's parse: every header line into an owned `Header` enum value (a `String` each).
fn rsip_parse(bytes: &[u8]) -> usize {
    let msg = rsip::SipMessage::try_from(bytes).expect("rsip parses");
    let n = msg.headers().iter().count();
    black_box(&msg);
    n
}

/// (e) The same essentials as (b) through rsip's typed headers (`typed()` clones the untyped
/// header's `String` and tokenizes it: rsip's documented way to read a header). On [`REGISTER`]
/// rsip's Contact conversion fails (quoted parameter value); the error is consumed, not unwrapped,
/// so that case measures the attempt.
fn rsip_essentials(bytes: &[u8]) -> usize {
    let msg = rsip::SipMessage::try_from(bytes).expect("rsip parses");
    let via = msg.via_header().expect("Via").typed().expect("typed Via");
    black_box(via.branch());
    let from = msg
        .from_header()
        .expect("From")
        .typed()
        .expect("typed From");
    black_box(from.tag());
    let to = msg.to_header().expect("To").typed().expect("typed To");
    black_box(&to.uri);
    black_box(msg.call_id_header().expect("Call-ID").value());
    let cseq = msg
        .cseq_header()
        .expect("CSeq")
        .typed()
        .expect("typed CSeq");
    black_box((cseq.seq, &cseq.method));
    black_box(
        msg.max_forwards_header()
            .expect("Max-Forwards")
            .num()
            .expect("number"),
    );
    let mut n = 0;
    if let rsip::SipMessage::Request(req) = &msg {
        if req.method == rsip::Method::Register {
            for contact in msg.contact_headers() {
                match contact.typed() {
                    Ok(contact) => {
                        black_box((&contact.uri, contact.expires()));
                        n += 1;
                    }
                    Err(e) => {
                        black_box(e);
                    }
                }
            }
        }
    }
    n
}

/// (f) A 200 OK built from the parsed request (Via, From, To + tag, Call-ID, CSeq copied).
fn sipshard_response(msg: &Message<'_>, out: &mut Vec<u8>) -> usize {
    response_to(out, msg, 200, "OK", Some("a6c85cf")).finish(None, b"");
    out.len()
}

/// (g) The forwarding edits of RFC 3261 §16.6, spliced into a reused buffer.
fn sipshard_forward(msg: &Message<'_>, out: &mut Vec<u8>) -> usize {
    ForwardEdits::new(msg)
        .push_via("SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKsh4rd.7f3a9c21e0")
        .decrement_max_forwards()
        .prepend_record_route("<sip:203.0.113.10:5060;lr>")
        .write(out);
    out.len()
}

type BytesOp = fn(&[u8]) -> usize;
type MessageOp = fn(&Message<'_>, &mut Vec<u8>) -> usize;

/// (name, bytes, whether the writer benchmarks run on it).
const CASES: [(&str, &[u8], bool); 3] = [
    ("REGISTER", REGISTER, true),
    ("REGISTER-plain", REGISTER_PLAIN, false),
    ("INVITE", INVITE, true),
];

const BYTES_OPS: [(&str, BytesOp); 5] = [
    ("sipshard parse", sipshard_parse),
    ("sipshard parse+essentials", sipshard_essentials),
    ("sipshard parse+validate", sipshard_validate),
    ("rsip parse", rsip_parse),
    ("rsip parse+essentials", rsip_essentials),
];

const MESSAGE_OPS: [(&str, MessageOp); 2] = [
    ("sipshard response_to 200", sipshard_response),
    ("sipshard ForwardEdits", sipshard_forward),
];

// ---------------------------------------------------------------------------------------------
// Checks, allocation counts and the instruction-count window

/// Both codecs read the same values from both messages, and the sizes are as documented.
fn check_messages() {
    assert_eq!(REGISTER.len(), 525);
    assert_eq!(REGISTER_PLAIN.len(), 461);
    assert_eq!(INVITE.len(), 1116);
    for (name, bytes, _) in CASES {
        let msg = Message::parse_datagram(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        msg.validate()
            .unwrap_or_else(|e| panic!("{name} validate: {e:?}"));
        assert_eq!(
            msg.as_bytes().len(),
            bytes.len(),
            "{name}: whole message kept"
        );
        let rs = rsip::SipMessage::try_from(bytes).unwrap_or_else(|e| panic!("{name} rsip: {e:?}"));
        assert_eq!(rs.body().len(), msg.body().len(), "{name}: body");

        let branch = msg.top_via().unwrap().branch().unwrap();
        let rs_via = rs.via_header().unwrap().typed().unwrap();
        assert_eq!(
            rs_via.branch().unwrap().to_string(),
            branch,
            "{name}: branch"
        );
        let from_tag = msg.from().unwrap().tag().unwrap();
        let rs_from = rs.from_header().unwrap().typed().unwrap();
        assert_eq!(
            rs_from.tag().unwrap().to_string(),
            from_tag,
            "{name}: From tag"
        );
        let to_uri = msg.to().unwrap().uri.as_str();
        let rs_to = rs.to_header().unwrap().typed().unwrap();
        assert_eq!(rs_to.uri.to_string(), to_uri, "{name}: To URI");
        assert_eq!(
            rs.call_id_header().unwrap().value(),
            msg.call_id().unwrap(),
            "{name}: Call-ID"
        );
        let cseq = msg.cseq().unwrap();
        assert_eq!(
            rs.cseq_header().unwrap().typed().unwrap().seq,
            cseq.seq,
            "{name}: CSeq"
        );
        assert_eq!(
            rs.max_forwards_header().unwrap().num().unwrap(),
            u32::from(msg.max_forwards().unwrap().unwrap()),
            "{name}: Max-Forwards"
        );
        if name.starts_with("REGISTER") {
            let c = msg.contacts().next().unwrap().unwrap();
            assert_eq!(c.expires_s(), Some(3600));
            assert_eq!(c.reg_id(), Some(1));
            assert_eq!(sipshard_essentials(bytes), 1);
            match rs.contact_header().unwrap().typed() {
                Ok(rs_c) => {
                    assert_eq!(name, "REGISTER-plain");
                    assert_eq!(
                        rs_c.expires().unwrap().to_string(),
                        "3600",
                        "{name}: expires"
                    );
                    let uri = c.address().unwrap().uri.as_str();
                    assert_eq!(rs_c.uri.to_string(), uri, "{name}: Contact");
                    assert_eq!(rsip_essentials(bytes), 1);
                }
                Err(e) => {
                    // rsip 0.4 refuses the quoted +sip.instance value; sipshard reads it.
                    assert_eq!(name, "REGISTER", "{e:?}");
                    assert!(c.instance().is_some());
                    assert_eq!(rsip_essentials(bytes), 0);
                }
            }
        }

        // The writers produce messages that parse and validate.
        let mut out = Vec::new();
        sipshard_response(&msg, &mut out);
        let resp = Message::parse_datagram(&out).unwrap();
        resp.validate().unwrap();
        assert_eq!(resp.to().unwrap().tag(), Some("a6c85cf"));
        sipshard_forward(&msg, &mut out);
        let fwd = Message::parse_datagram(&out).unwrap();
        fwd.validate().unwrap();
        assert_eq!(fwd.max_forwards().unwrap(), Some(69));
        assert_eq!(fwd.vias().count(), 2);
    }
}

fn count_allocs(f: impl FnOnce()) -> u64 {
    ALLOCS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::Relaxed)
}

/// Heap allocations (alloc + realloc) per operation, measured on the second call so that a
/// reused output buffer has reached its size.
fn print_allocations() {
    println!("heap allocations per operation (alloc + realloc):");
    let mut out = Vec::new();
    for (case, bytes, writers) in CASES {
        for (op, f) in BYTES_OPS {
            black_box(f(bytes));
            let n = count_allocs(|| {
                black_box(f(black_box(bytes)));
            });
            println!("  {case}/{op}: {n}");
        }
        if !writers {
            continue;
        }
        let msg = Message::parse_datagram(bytes).unwrap();
        for (op, f) in MESSAGE_OPS {
            black_box(f(&msg, &mut out));
            let n = count_allocs(|| {
                black_box(f(black_box(&msg), &mut out));
            });
            println!("  {case}/{op}: {n}");
        }
    }
}

/// The only code callgrind measures with `--toggle-collect='*instr_window*'`.
#[inline(never)]
fn instr_window(iters: u64, mut f: impl FnMut()) {
    for _ in 0..iters {
        f();
    }
}

/// Runs one op `iters` times in [`instr_window`]; returns false for an unknown name.
fn run_for_instructions(target: &str, iters: u64) -> bool {
    let mut out = Vec::new();
    for (case, bytes, writers) in CASES {
        for (op, f) in BYTES_OPS {
            if target == format!("{case}/{op}") {
                black_box(f(bytes));
                instr_window(iters, || {
                    black_box(f(black_box(bytes)));
                });
                return true;
            }
        }
        if !writers {
            continue;
        }
        let msg = Message::parse_datagram(bytes).unwrap();
        for (op, f) in MESSAGE_OPS {
            if target == format!("{case}/{op}") {
                black_box(f(&msg, &mut out));
                instr_window(iters, || {
                    black_box(f(black_box(&msg), &mut out));
                });
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Criterion

fn bench_all(c: &mut Criterion) {
    for (case, bytes, writers) in CASES {
        let mut group = c.benchmark_group(case);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        // Each closure names its function directly (a fn item, statically dispatched).
        group.bench_function("sipshard parse", |b| {
            b.iter(|| sipshard_parse(black_box(bytes)))
        });
        group.bench_function("sipshard parse+essentials", |b| {
            b.iter(|| sipshard_essentials(black_box(bytes)))
        });
        group.bench_function("sipshard parse+validate", |b| {
            b.iter(|| sipshard_validate(black_box(bytes)))
        });
        group.bench_function("rsip parse", |b| b.iter(|| rsip_parse(black_box(bytes))));
        group.bench_function("rsip parse+essentials", |b| {
            b.iter(|| rsip_essentials(black_box(bytes)))
        });
        if !writers {
            group.finish();
            continue;
        }
        let msg = Message::parse_datagram(bytes).unwrap();
        let mut out = Vec::with_capacity(2048);
        group.bench_function("sipshard response_to 200", |b| {
            b.iter(|| sipshard_response(black_box(&msg), &mut out))
        });
        group.bench_function("sipshard ForwardEdits", |b| {
            b.iter(|| sipshard_forward(black_box(&msg), &mut out))
        });
        group.finish();
    }
}

fn main() {
    check_messages();
    if let Ok(target) = std::env::var("PARSE_BENCH_INSTR") {
        let iters = std::env::var("PARSE_BENCH_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        assert!(
            run_for_instructions(&target, iters),
            "unknown op {target:?}"
        );
        return;
    }
    print_allocations();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    bench_all(&mut c);
    c.final_summary();
}
