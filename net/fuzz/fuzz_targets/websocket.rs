//! Fuzz target `websocket`: a WebSocket connection as the node's server side reads it, the opening
//! handshake then frames, arriving in chunks.
//!
//! Input layout: byte 0 = flags: bits 0–1 pick how many chunk sizes follow (1–4); bit 2 puts a
//! valid RFC 7118 upgrade request in front of the stream, so that the fuzzer can spend its time
//! on frames. Each following byte is a chunk size (1–256 bytes), used in turn; the rest is the
//! stream.
//!
//! The connection loop buffers chunks until `parse_upgrade` answers, then feeds the bytes after
//! the head, and every later chunk, to a `FrameDecoder` (server role) until it fails or the peer
//! closes. Checks that nothing panics or hangs, and that:
//! - a refused handshake is answered with 400, 405, 426 or 431 and `Connection: close`; an
//!   accepted one fits the limit and is answered with 101; an incomplete one is under the limit;
//! - the decoder never holds more than the message limit plus one control payload;
//! - a message is at most the limit, and a text message is UTF-8; a ping's payload is at most 125
//!   bytes; a close code is one that may be sent; an error's close code is 1002, 1007 or 1009;
//! - every event re-encodes (as a masked client frame, in fragments for a message, and as an
//!   unmasked server frame) into bytes that decode to the same event;
//! - the events and the error do not depend on how the stream was cut into chunks: a second
//!   decoder given the frames in one piece yields the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipshard_net::websocket::{
    Event, FrameDecoder, FrameError, MAX_CONTROL_PAYLOAD, Opcode, Role, check_upgrade_response,
    encode_close, encode_frame, encode_pong, parse_upgrade, upgrade_response,
};

const HEAD_LIMIT: usize = 2048;
const MESSAGE_LIMIT: usize = 4096;

const UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (sizes, body) = rest.split_at(rest.len().min(usize::from(flags & 3) + 1));
    if sizes.is_empty() {
        return;
    }
    let mut stream = Vec::with_capacity(UPGRADE.len() + body.len());
    if flags & 4 != 0 {
        stream.extend_from_slice(UPGRADE);
    }
    stream.extend_from_slice(body);
    // The client side of the handshake reads anything without panicking.
    let _ = check_upgrade_response(&stream, "dGhlIHNhbXBsZSBub25jZQ==", HEAD_LIMIT);

    let mut chunk_sizes = sizes.iter().map(|&s| usize::from(s) + 1).cycle();
    let mut head: Vec<u8> = Vec::new();
    let mut frames_start = None;
    let mut decoder = FrameDecoder::new(Role::Server, MESSAGE_LIMIT);
    let mut events = Vec::new();
    let mut outcome = Ok(());
    let mut offset = 0;
    while offset < stream.len() && outcome.is_ok() {
        let size = chunk_sizes.next().unwrap_or(1).min(stream.len() - offset);
        let chunk = &stream[offset..offset + size];
        offset += size;
        let mut input = match frames_start {
            Some(_) => chunk,
            None => {
                head.extend_from_slice(chunk);
                match parse_upgrade(&head, HEAD_LIMIT) {
                    Ok(None) => {
                        assert!(
                            head.len() < HEAD_LIMIT,
                            "{} bytes of head pending",
                            head.len()
                        );
                        continue;
                    }
                    Ok(Some(upgrade)) => {
                        assert!(upgrade.head_len <= head.len().min(HEAD_LIMIT));
                        assert!(upgrade_response(&upgrade).starts_with(b"HTTP/1.1 101 "));
                        // `head` is the stream so far; the frames start after the request head.
                        frames_start = Some(upgrade.head_len);
                        &stream[upgrade.head_len..offset]
                    }
                    Err(error) => {
                        assert!(matches!(error.status(), 400 | 405 | 426 | 431));
                        let response = error.response();
                        assert!(response.starts_with(b"HTTP/1.1 4"));
                        assert!(
                            response.ends_with(b"Connection: close\r\nContent-Length: 0\r\n\r\n")
                        );
                        return;
                    }
                }
            }
        };
        loop {
            match decoder.next_event(&mut input) {
                Ok(Some(event)) => {
                    check_event(&event, sizes);
                    events.push(event);
                }
                Ok(None) => break,
                Err(error) => {
                    assert!(matches!(error.close_code(), 1002 | 1007 | 1009));
                    outcome = Err(error);
                    break;
                }
            }
            assert!(decoder.buffered() <= MESSAGE_LIMIT + MAX_CONTROL_PAYLOAD);
        }
        assert!(
            decoder.buffered() <= MESSAGE_LIMIT + MAX_CONTROL_PAYLOAD,
            "{} bytes held",
            decoder.buffered()
        );
    }
    let Some(start) = frames_start else {
        return;
    };
    // Events after a close are never produced.
    if let Some(close) = events.iter().position(|e| matches!(e, Event::Close { .. })) {
        assert_eq!(close + 1, events.len(), "events after a close");
    }
    // The same frames in one piece, up to where the chunked decoder stopped reading.
    let (whole_events, whole_outcome) = decode_whole(Role::Server, &stream[start..offset]);
    assert_eq!(whole_events, events, "chunking changed the events");
    assert_eq!(whole_outcome, outcome, "chunking changed the error");
});

fn decode_whole(role: Role, mut input: &[u8]) -> (Vec<Event>, Result<(), FrameError>) {
    let mut decoder = FrameDecoder::new(role, MESSAGE_LIMIT);
    let mut events = Vec::new();
    loop {
        match decoder.next_event(&mut input) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, Ok(())),
            Err(error) => return (events, Err(error)),
        }
    }
}

/// Checks one event's invariants, and that it re-encodes (masked, from a client; unmasked, from
/// a server) into frames that decode to the same event. `bytes` supplies masks and fragment cuts.
fn check_event(event: &Event, bytes: &[u8]) {
    let mask = |i: usize| -> [u8; 4] {
        std::array::from_fn(|j| bytes.get((i + j) % bytes.len()).copied().unwrap_or(0))
    };
    let mut masked = Vec::new();
    let mut unmasked = Vec::new();
    match event {
        Event::Message { text, payload } => {
            assert!(
                payload.len() <= MESSAGE_LIMIT,
                "message of {} bytes",
                payload.len()
            );
            if *text {
                assert!(
                    std::str::from_utf8(payload).is_ok(),
                    "text message not UTF-8"
                );
            }
            let opcode = if *text { Opcode::Text } else { Opcode::Binary };
            // Fragments cut every `step` bytes, each with its own mask.
            let step = usize::from(bytes[0]) + 1;
            let mut pieces = payload.chunks(step).peekable();
            let mut first = true;
            if pieces.peek().is_none() {
                encode_frame(opcode, true, &[], Some(mask(0)), &mut masked);
            }
            let mut i = 0;
            while let Some(piece) = pieces.next() {
                let op = if first { opcode } else { Opcode::Continuation };
                encode_frame(
                    op,
                    pieces.peek().is_none(),
                    piece,
                    Some(mask(i)),
                    &mut masked,
                );
                first = false;
                i += 1;
            }
            encode_frame(opcode, true, payload, None, &mut unmasked);
        }
        Event::Ping(payload) => {
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
            encode_frame(Opcode::Ping, true, payload, Some(mask(0)), &mut masked);
            encode_frame(Opcode::Ping, true, payload, None, &mut unmasked);
            // The pong answering it carries the same payload.
            let mut pong = Vec::new();
            encode_pong(payload, None, &mut pong);
            let (events, outcome) = decode_whole(Role::Client, &pong);
            assert_eq!(outcome, Ok(()));
            assert_eq!(events, [Event::Pong(payload.clone())]);
        }
        Event::Pong(payload) => {
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
            encode_pong(payload, Some(mask(0)), &mut masked);
            encode_pong(payload, None, &mut unmasked);
        }
        Event::Close { code, reason } => {
            assert!(reason.len() + 2 <= MAX_CONTROL_PAYLOAD);
            match code {
                Some(code) => {
                    assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999));
                    encode_close(*code, reason, Some(mask(0)), &mut masked);
                    encode_close(*code, reason, None, &mut unmasked);
                }
                None => {
                    assert!(reason.is_empty());
                    encode_frame(Opcode::Close, true, &[], Some(mask(0)), &mut masked);
                    encode_frame(Opcode::Close, true, &[], None, &mut unmasked);
                }
            }
        }
    }
    for (role, bytes) in [(Role::Server, &masked), (Role::Client, &unmasked)] {
        let (events, outcome) = decode_whole(role, bytes);
        assert_eq!(outcome, Ok(()), "{role:?} re-decoding failed");
        assert_eq!(
            events.as_slice(),
            std::slice::from_ref(event),
            "{role:?} re-decoding differs"
        );
    }
}
