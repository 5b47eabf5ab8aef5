//! The WebSocket codec (RFC 6455 framing, RFC 7118 handshake): the RFC's own examples, every
//! refusal with its HTTP status or close code, streams split anywhere, and a property round trip.

use proptest::prelude::*;
use sipshard_net::Message;
use sipshard_net::websocket::{
    Event, FrameDecoder, FrameError, MAX_CONTROL_PAYLOAD, Opcode, ResponseError, Role,
    UpgradeError, accept_key, check_upgrade_response, client_key, client_request, encode_close,
    encode_frame, encode_pong, parse_upgrade, upgrade_response,
};

const LIMIT: usize = 64 * 1024;
const HEAD_LIMIT: usize = 8 * 1024;
/// RFC 6455 §1.3.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Feeds `input` whole and collects the events, stopping at the first error.
fn decode_all(role: Role, limit: usize, input: &[u8]) -> Result<Vec<Event>, FrameError> {
    decode_chunks(role, limit, [input])
}

fn decode_chunks<'a>(
    role: Role,
    limit: usize,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Event>, FrameError> {
    let mut decoder = FrameDecoder::new(role, limit);
    let mut events = Vec::new();
    for chunk in chunks {
        let mut rest = chunk;
        while let Some(event) = decoder.next_event(&mut rest)? {
            events.push(event);
        }
        assert!(rest.is_empty());
        assert!(decoder.buffered() <= limit + MAX_CONTROL_PAYLOAD);
    }
    Ok(events)
}

fn text_message(s: &str) -> Event {
    Event::Message {
        text: true,
        payload: s.as_bytes().to_vec(),
    }
}

fn binary(payload: Vec<u8>) -> Event {
    Event::Message {
        text: false,
        payload,
    }
}

fn frame(opcode: Opcode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(opcode, fin, payload, mask, &mut out);
    out
}

const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

// ----- handshake ---------------------------------------------------------------------------------

fn request(lines: &[&str]) -> Vec<u8> {
    let mut out = String::from("GET /ws HTTP/1.1\r\n");
    for line in lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

const GOOD: &[&str] = &[
    "Host: sip.example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Origin: http://www.example.com",
    "Sec-WebSocket-Protocol: sip",
    "Sec-WebSocket-Version: 13",
];

/// GOOD with the line starting with `name` replaced by `line` (or removed if `line` is empty).
fn good_but(name: &str, line: &str) -> Vec<u8> {
    let lines: Vec<&str> = GOOD
        .iter()
        .map(|l| if l.starts_with(name) { line } else { l })
        .filter(|l| !l.is_empty())
        .collect();
    request(&lines)
}

fn status_of(response: &[u8]) -> &str {
    std::str::from_utf8(&response[9..12]).unwrap()
}

#[test]
fn rfc6455_accept_key_example() {
    assert_eq!(accept_key(KEY.as_bytes()), ACCEPT);
}

#[test]
fn rfc7118_handshake_is_accepted_and_answered() {
    let mut buf = request(GOOD);
    let head_len = buf.len();
    buf.extend_from_slice(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    let upgrade = parse_upgrade(&buf, HEAD_LIMIT).unwrap().unwrap();
    assert_eq!(upgrade.head_len, head_len);
    assert_eq!(upgrade.accept, ACCEPT);
    let response = String::from_utf8(upgrade_response(&upgrade)).unwrap();
    assert_eq!(
        response,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    );
    // The client accepts it.
    let consumed = check_upgrade_response(response.as_bytes(), KEY, HEAD_LIMIT).unwrap();
    assert_eq!(consumed, Some(response.len()));
    // The bytes after the head are frames.
    let events = decode_all(Role::Server, LIMIT, &buf[upgrade.head_len..]).unwrap();
    assert_eq!(events, [text_message("Hello")]);
}

#[test]
fn handshake_tokens_are_lists_and_case_insensitive() {
    let buf = request(&[
        "host: a",
        "UPGRADE: WebSocket",
        "connection: keep-alive, upgrade",
        "sec-websocket-key:   dGhlIHNhbXBsZSBub25jZQ==  ",
        "Sec-WebSocket-Protocol: chat",
        "Sec-WebSocket-Protocol: msrp, sip",
        "sec-websocket-version: 13",
        "Content-Length: 0",
    ]);
    let upgrade = parse_upgrade(&buf, HEAD_LIMIT).unwrap().unwrap();
    assert_eq!(upgrade.accept, ACCEPT);
}

#[test]
fn an_incomplete_head_waits_at_every_length() {
    let buf = request(GOOD);
    for len in 0..buf.len() {
        assert_eq!(parse_upgrade(&buf[..len], HEAD_LIMIT), Ok(None), "at {len}");
    }
    assert!(parse_upgrade(&buf, HEAD_LIMIT).unwrap().is_some());
}

#[test]
fn every_handshake_refusal_has_its_status() {
    let cases: Vec<(Vec<u8>, UpgradeError, &str)> = vec![
        (
            b"GET /ws HTTP/1.1\r\nHost a\r\n\r\n".to_vec(),
            UpgradeError::Malformed,
            "400",
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            UpgradeError::Malformed,
            "400",
        ),
        (
            String::from_utf8(request(GOOD))
                .unwrap()
                .replacen("GET", "POST", 1)
                .into_bytes(),
            UpgradeError::NotGet,
            "405",
        ),
        (
            String::from_utf8(request(GOOD))
                .unwrap()
                .replacen("HTTP/1.1", "HTTP/1.0", 1)
                .into_bytes(),
            UpgradeError::NotHttp11,
            "400",
        ),
        (good_but("Host", ""), UpgradeError::NoHost, "400"),
        (good_but("Upgrade", ""), UpgradeError::NotWebSocket, "426"),
        (
            good_but("Upgrade", "Upgrade: h2c"),
            UpgradeError::NotWebSocket,
            "426",
        ),
        (
            good_but("Connection", "Connection: keep-alive"),
            UpgradeError::NoConnectionUpgrade,
            "400",
        ),
        (
            good_but("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
            UpgradeError::UnsupportedVersion,
            "426",
        ),
        (
            good_but("Sec-WebSocket-Version", ""),
            UpgradeError::UnsupportedVersion,
            "426",
        ),
        (
            good_but("Sec-WebSocket-Key", ""),
            UpgradeError::BadKey,
            "400",
        ),
        (
            good_but("Sec-WebSocket-Key", "Sec-WebSocket-Key: c2hvcnQ="),
            UpgradeError::BadKey,
            "400",
        ),
        (
            good_but(
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!!",
            ),
            UpgradeError::BadKey,
            "400",
        ),
        (
            request(&[GOOD, &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="]].concat()),
            UpgradeError::BadKey,
            "400",
        ),
        (
            good_but("Sec-WebSocket-Protocol", ""),
            UpgradeError::NoSipProtocol,
            "400",
        ),
        (
            good_but(
                "Sec-WebSocket-Protocol",
                "Sec-WebSocket-Protocol: sips, SIP",
            ),
            UpgradeError::NoSipProtocol,
            "400",
        ),
        (
            request(&[GOOD, &["Content-Length: 5"]].concat()),
            UpgradeError::UnexpectedBody,
            "400",
        ),
        (
            request(&[GOOD, &["Transfer-Encoding: chunked"]].concat()),
            UpgradeError::UnexpectedBody,
            "400",
        ),
        (
            request(&[GOOD, &["X: y"; 64][..]].concat()),
            UpgradeError::TooLarge,
            "431",
        ),
    ];
    for (input, error, status) in cases {
        let text = String::from_utf8_lossy(&input).into_owned();
        assert_eq!(parse_upgrade(&input, HEAD_LIMIT), Err(error), "{text}");
        let response = error.response();
        assert_eq!(status_of(&response), status, "{text}");
        assert_eq!(error.status().to_string(), status);
        let response = String::from_utf8(response).unwrap();
        assert!(response.ends_with("\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
        if status == "426" {
            assert!(
                response.contains("\r\nSec-WebSocket-Version: 13\r\n"),
                "{response}"
            );
        }
        if status == "405" {
            assert!(response.contains("\r\nAllow: GET\r\n"), "{response}");
        }
    }
}

#[test]
fn a_head_over_the_limit_is_refused_as_soon_as_that_is_certain() {
    let buf = request(GOOD);
    // Complete but too long.
    assert_eq!(
        parse_upgrade(&buf, buf.len() - 1),
        Err(UpgradeError::TooLarge)
    );
    assert!(parse_upgrade(&buf, buf.len()).unwrap().is_some());
    // Incomplete, and already as long as the limit.
    let partial = &buf[..100];
    assert_eq!(parse_upgrade(partial, 101), Ok(None));
    assert_eq!(parse_upgrade(partial, 100), Err(UpgradeError::TooLarge));
    let response = String::from_utf8(UpgradeError::TooLarge.response()).unwrap();
    assert!(response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
}

// ----- handshake, client side --------------------------------------------------------------------

#[test]
fn client_request_is_accepted_by_the_server_and_the_answer_by_the_client() {
    let key = client_key(*b"the sample nonce");
    assert_eq!(key, KEY);
    let request = client_request("sip.example.com:8080", "/sip", &key);
    let text = String::from_utf8(request.clone()).unwrap();
    assert!(text.starts_with("GET /sip HTTP/1.1\r\nHost: sip.example.com:8080\r\n"));
    let upgrade = parse_upgrade(&request, HEAD_LIMIT).unwrap().unwrap();
    assert_eq!(upgrade.head_len, request.len());
    let mut response = upgrade_response(&upgrade);
    let head_len = response.len();
    response.extend_from_slice(b"\x81\x05Hello");
    for len in 0..head_len {
        assert_eq!(
            check_upgrade_response(&response[..len], &key, HEAD_LIMIT),
            Ok(None)
        );
    }
    assert_eq!(
        check_upgrade_response(&response, &key, HEAD_LIMIT),
        Ok(Some(head_len))
    );
    let events = decode_all(Role::Client, LIMIT, &response[head_len..]).unwrap();
    assert_eq!(events, [text_message("Hello")]);
}

#[test]
fn every_upgrade_response_refusal() {
    let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n";
    let cases = [
        (
            good.replace("101 Switching Protocols", "400 Bad Request"),
            ResponseError::Refused(400),
        ),
        ("HTTP/1.1 10 x\r\n\r\n".to_owned(), ResponseError::Malformed),
        (
            good.replace("Upgrade: websocket\r\n", ""),
            ResponseError::NotWebSocket,
        ),
        (
            good.replace("Connection: Upgrade", "Connection: close"),
            ResponseError::NotWebSocket,
        ),
        (
            good.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAA"),
            ResponseError::BadAccept,
        ),
        (
            good.replace("Sec-WebSocket-Protocol: sip\r\n", ""),
            ResponseError::NoSipProtocol,
        ),
        (
            good.replace("Protocol: sip", "Protocol: chat"),
            ResponseError::NoSipProtocol,
        ),
        (
            good.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            ),
            ResponseError::UnexpectedExtension,
        ),
    ];
    for (response, error) in cases {
        assert_eq!(
            check_upgrade_response(response.as_bytes(), KEY, HEAD_LIMIT),
            Err(error),
            "{response}"
        );
    }
    assert_eq!(
        check_upgrade_response(good.as_bytes(), KEY, good.len() - 1),
        Err(ResponseError::TooLarge)
    );
    assert_eq!(
        check_upgrade_response(good.as_bytes(), "x3JJHMbDL1EzLkh9GBhXDw==", HEAD_LIMIT),
        Err(ResponseError::BadAccept)
    );
}

// ----- frames: RFC 6455 §5.7 examples ------------------------------------------------------------

#[test]
fn rfc6455_unmasked_hello() {
    let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        decode_all(Role::Client, LIMIT, &bytes),
        Ok(vec![text_message("Hello")])
    );
    assert_eq!(frame(Opcode::Text, true, b"Hello", None), bytes);
    // A server refuses it: client frames must be masked.
    assert_eq!(
        decode_all(Role::Server, LIMIT, &bytes),
        Err(FrameError::Unmasked)
    );
}

#[test]
fn rfc6455_masked_hello() {
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        decode_all(Role::Server, LIMIT, &bytes),
        Ok(vec![text_message("Hello")])
    );
    assert_eq!(frame(Opcode::Text, true, b"Hello", MASK), bytes);
    assert_eq!(
        decode_all(Role::Client, LIMIT, &bytes),
        Err(FrameError::Masked)
    );
}

#[test]
fn rfc6455_fragmented_hello() {
    let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    assert_eq!(
        decode_all(Role::Client, LIMIT, &bytes),
        Ok(vec![text_message("Hello")])
    );
    let mut encoded = frame(Opcode::Text, false, b"Hel", None);
    encoded.extend(frame(Opcode::Continuation, true, b"lo", None));
    assert_eq!(encoded, bytes);
}

#[test]
fn rfc6455_ping_and_pong() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let events = decode_all(Role::Client, LIMIT, &ping).unwrap();
    assert_eq!(events, [Event::Ping(b"Hello".to_vec())]);
    // The masked pong answering it.
    let mut pong = Vec::new();
    encode_pong(b"Hello", MASK, &mut pong);
    assert_eq!(
        pong,
        [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
    assert_eq!(
        decode_all(Role::Server, LIMIT, &pong),
        Ok(vec![Event::Pong(b"Hello".to_vec())])
    );
}

#[test]
fn rfc6455_256_byte_and_64_kib_lengths() {
    let payload = vec![0xAB; 256];
    let bytes = frame(Opcode::Binary, true, &payload, None);
    assert_eq!(&bytes[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(bytes.len(), 4 + 256);
    assert_eq!(
        decode_all(Role::Client, LIMIT, &bytes),
        Ok(vec![binary(payload)])
    );

    let payload = vec![0xCD; 65536];
    let bytes = frame(Opcode::Binary, true, &payload, None);
    assert_eq!(
        &bytes[..10],
        [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(bytes.len(), 10 + 65536);
    assert_eq!(
        decode_all(Role::Client, 65536, &bytes),
        Ok(vec![binary(payload)])
    );
    // One byte over the limit: refused from the header alone.
    assert_eq!(
        decode_all(Role::Client, 65535, &bytes[..10]),
        Err(FrameError::TooBig)
    );
}

// ----- frames: refusals --------------------------------------------------------------------------

#[test]
fn every_frame_error_has_its_close_code() {
    let cases: Vec<(Vec<u8>, FrameError, u16)> = vec![
        (vec![0xC1, 0x00], FrameError::ReservedBits, 1002),
        (vec![0x91, 0x00], FrameError::ReservedBits, 1002),
        (vec![0xA1, 0x00], FrameError::ReservedBits, 1002),
        (vec![0x83, 0x00], FrameError::UnknownOpcode(3), 1002),
        (vec![0x8B, 0x00], FrameError::UnknownOpcode(0xB), 1002),
        (vec![0x09, 0x00], FrameError::FragmentedControl, 1002),
        (
            vec![0x89, 0x7E, 0x00, 0x7E],
            FrameError::ControlTooLong,
            1002,
        ),
        (vec![0x88, 0x7F], FrameError::ControlTooLong, 1002),
        (vec![0x80, 0x00], FrameError::UnexpectedContinuation, 1002),
        (
            vec![0x01, 0x00, 0x81, 0x00],
            FrameError::ExpectedContinuation,
            1002,
        ),
        (
            vec![0x02, 0x00, 0x82, 0x00],
            FrameError::ExpectedContinuation,
            1002,
        ),
        (vec![0x82, 0x7E, 0x00, 0x7D], FrameError::BadLength, 1002),
        (
            vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF],
            FrameError::BadLength,
            1002,
        ),
        (
            vec![0x82, 0x7F, 0x80, 0, 0, 0, 0, 1, 0, 0],
            FrameError::BadLength,
            1002,
        ),
        (
            vec![0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            FrameError::TooBig,
            1009,
        ),
        (vec![0x81, 0x02, 0xC3, 0x28], FrameError::InvalidUtf8, 1007),
        // Invalid UTF-8 only once reassembled is still caught (é split across frames is fine).
        (
            vec![0x01, 0x01, 0xC3, 0x80, 0x01, 0x28],
            FrameError::InvalidUtf8,
            1007,
        ),
        (vec![0x88, 0x01, 0x03], FrameError::BadClose, 1002),
        (vec![0x88, 0x02, 0x03, 0xE7], FrameError::BadClose, 1002), // 999
        (vec![0x88, 0x02, 0x03, 0xEC], FrameError::BadClose, 1002), // 1004
        (vec![0x88, 0x02, 0x03, 0xED], FrameError::BadClose, 1002), // 1005
        (vec![0x88, 0x02, 0x03, 0xEE], FrameError::BadClose, 1002), // 1006
        (vec![0x88, 0x02, 0x03, 0xF7], FrameError::BadClose, 1002), // 1015
        (vec![0x88, 0x02, 0x0B, 0xB7], FrameError::BadClose, 1002), // 2999
        (vec![0x88, 0x02, 0x13, 0x88], FrameError::BadClose, 1002), // 5000
        (
            vec![0x88, 0x03, 0x03, 0xE8, 0xFF],
            FrameError::InvalidUtf8,
            1007,
        ),
    ];
    for (bytes, error, code) in cases {
        assert_eq!(error.close_code(), code);
        assert_eq!(
            decode_all(Role::Client, LIMIT, &bytes),
            Err(error),
            "client {bytes:02x?}"
        );
        let masked = mask_all(&bytes);
        assert_eq!(
            decode_all(Role::Server, LIMIT, &masked),
            Err(error),
            "server {masked:02x?}"
        );
    }
}

/// Rewrites each frame of an unmasked stream (as the cases above are written) as masked with a
/// zero mask, so the payload stays the same. A frame cut inside its header gets the mask bit only.
fn mask_all(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 2 {
        out.extend_from_slice(&[rest[0], rest[1] | 0x80]);
        let (header, len) = match rest[1] & 0x7F {
            126 if rest.len() >= 4 => (4, usize::from(u16::from_be_bytes([rest[2], rest[3]]))),
            127 if rest.len() >= 10 => (10, usize::MAX),
            126 | 127 => {
                out.extend_from_slice(&rest[2..]);
                return out;
            }
            short => (2, usize::from(short)),
        };
        out.extend_from_slice(&rest[2..header]);
        out.extend_from_slice(&[0; 4]);
        let end = header.saturating_add(len).min(rest.len());
        out.extend_from_slice(&rest[header..end]);
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    out
}

#[test]
fn the_decoder_stays_failed() {
    let mut decoder = FrameDecoder::new(Role::Server, LIMIT);
    let mut input: &[u8] = &[0x81, 0x05, b'H'];
    assert_eq!(decoder.next_event(&mut input), Err(FrameError::Unmasked));
    let more = frame(Opcode::Text, true, b"x", MASK);
    let mut input: &[u8] = &more;
    assert_eq!(decoder.next_event(&mut input), Err(FrameError::Unmasked));
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn a_message_over_the_limit_is_refused_before_its_payload_arrives() {
    // Fragments adding up past the limit: the third header says so.
    let mut bytes = frame(Opcode::Binary, false, &[1; 40], MASK);
    bytes.extend(frame(Opcode::Continuation, false, &[2; 40], MASK));
    let third = frame(Opcode::Continuation, true, &[3; 21], MASK);
    bytes.extend_from_slice(&third[..6]);
    assert_eq!(
        decode_all(Role::Server, 100, &bytes),
        Err(FrameError::TooBig)
    );
    // Exactly the limit passes.
    let mut bytes = frame(Opcode::Binary, false, &[1; 40], MASK);
    bytes.extend(frame(Opcode::Continuation, false, &[2; 40], MASK));
    bytes.extend(frame(Opcode::Continuation, true, &[3; 20], MASK));
    let events = decode_all(Role::Server, 100, &bytes).unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn memory_stays_within_the_limit_while_fragments_grow_a_message() {
    // 777 one-byte fragments with a ping before each: a doubling Vec would reach 1024 bytes.
    let mut bytes = frame(Opcode::Binary, false, &[0], MASK);
    for i in 1..777u32 {
        bytes.extend(frame(Opcode::Ping, true, &[7; 125], MASK));
        bytes.extend(frame(Opcode::Continuation, i == 776, &[i as u8], MASK));
    }
    let mut decoder = FrameDecoder::new(Role::Server, 777);
    let mut pings = 0;
    for chunk in bytes.chunks(3) {
        let mut rest = chunk;
        while let Some(event) = decoder.next_event(&mut rest).unwrap() {
            match event {
                Event::Ping(_) => pings += 1,
                Event::Message { payload, .. } => assert_eq!(payload.len(), 777),
                other => panic!("{other:?}"),
            }
            assert!(decoder.buffered() <= 777 + MAX_CONTROL_PAYLOAD);
        }
        assert!(
            decoder.buffered() <= 777 + MAX_CONTROL_PAYLOAD,
            "{}",
            decoder.buffered()
        );
    }
    assert_eq!(pings, 776);
}

#[test]
fn control_frames_between_fragments_and_empty_frames() {
    let mut bytes = frame(Opcode::Text, false, b"", MASK);
    bytes.extend(frame(Opcode::Continuation, false, b"INV", MASK));
    bytes.extend(frame(Opcode::Ping, true, b"", MASK));
    bytes.extend(frame(Opcode::Continuation, false, b"ITE", MASK));
    bytes.extend(frame(Opcode::Pong, true, b"p", MASK));
    bytes.extend(frame(Opcode::Continuation, true, b"", MASK));
    bytes.extend(frame(Opcode::Binary, true, b"", MASK));
    let events = decode_all(Role::Server, LIMIT, &bytes).unwrap();
    assert_eq!(
        events,
        [
            Event::Ping(Vec::new()),
            Event::Pong(b"p".to_vec()),
            text_message("INVITE"),
            binary(Vec::new()),
        ]
    );
}

#[test]
fn close_frames_and_what_follows_them() {
    let mut bytes = Vec::new();
    encode_close(1001, "going away", MASK, &mut bytes);
    bytes.extend(frame(Opcode::Text, true, b"ignored", MASK));
    bytes.extend_from_slice(b"\xFF\xFF garbage after the close");
    assert_eq!(
        decode_all(Role::Server, LIMIT, &bytes),
        Ok(vec![Event::Close {
            code: Some(1001),
            reason: "going away".to_owned()
        }])
    );
    // An empty close has no code; private codes are allowed.
    assert_eq!(
        decode_all(Role::Client, LIMIT, &[0x88, 0x00]),
        Ok(vec![Event::Close {
            code: None,
            reason: String::new()
        }])
    );
    assert_eq!(
        decode_all(Role::Client, LIMIT, &[0x88, 0x02, 0x0F, 0xA0]),
        Ok(vec![Event::Close {
            code: Some(4000),
            reason: String::new()
        }])
    );
}

#[test]
fn encode_close_cuts_the_reason_at_a_character_boundary() {
    let reason = "é".repeat(100); // 200 bytes
    let mut bytes = Vec::new();
    encode_close(1000, &reason, None, &mut bytes);
    assert_eq!(bytes[1], 2 + 122, "123 bytes would split a character");
    let events = decode_all(Role::Client, LIMIT, &bytes).unwrap();
    assert_eq!(
        events,
        [Event::Close {
            code: Some(1000),
            reason: "é".repeat(61)
        }]
    );
}

// ----- streams split anywhere --------------------------------------------------------------------

/// A stream with every kind of frame: masked, fragmented, with control frames in between, and
/// all three length encodings.
fn mixed_stream() -> (Vec<u8>, Vec<Event>) {
    let long = vec![b'x'; 300];
    let longer: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = frame(Opcode::Text, true, b"Hello", MASK);
    bytes.extend(frame(
        Opcode::Text,
        false,
        "Hé".as_bytes(),
        Some([1, 2, 3, 4]),
    ));
    bytes.extend(frame(
        Opcode::Ping,
        true,
        b"are you there",
        Some([5, 6, 7, 8]),
    ));
    bytes.extend(frame(
        Opcode::Continuation,
        true,
        "llo wörld".as_bytes(),
        Some([9, 9, 9, 9]),
    ));
    bytes.extend(frame(Opcode::Binary, true, &long, Some([0xFF, 0, 0xFF, 0])));
    bytes.extend(frame(
        Opcode::Binary,
        true,
        &longer,
        Some([0xde, 0xad, 0xbe, 0xef]),
    ));
    encode_close(1000, "bye", Some([1, 1, 1, 1]), &mut bytes);
    let events = vec![
        text_message("Hello"),
        Event::Ping(b"are you there".to_vec()),
        text_message("Héllo wörld"),
        binary(long),
        binary(longer),
        Event::Close {
            code: Some(1000),
            reason: "bye".to_owned(),
        },
    ];
    (bytes, events)
}

#[test]
fn a_stream_split_at_every_byte_decodes_the_same() {
    let (bytes, expected) = mixed_stream();
    assert_eq!(
        decode_all(Role::Server, 100_000, &bytes).as_ref(),
        Ok(&expected)
    );
    // The first 400 bytes hold the short frames and the headers of the long ones: split there at
    // every position, and the rest at a stride.
    for split in (0..400).chain((400..bytes.len()).step_by(97)) {
        let (a, b) = bytes.split_at(split);
        assert_eq!(
            decode_chunks(Role::Server, 100_000, [a, b]).as_ref(),
            Ok(&expected),
            "split at {split}"
        );
    }
}

#[test]
fn a_stream_fed_one_byte_at_a_time_decodes_the_same() {
    let (bytes, expected) = mixed_stream();
    assert_eq!(
        decode_chunks(Role::Server, 100_000, bytes.chunks(1)).as_ref(),
        Ok(&expected)
    );
}

// ----- SIP over WebSocket ------------------------------------------------------------------------

#[test]
fn a_sip_register_through_client_encoding_and_server_decoding() {
    let register = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf\r\n\
        From: sip:alice@example.com;tag=65bnmj.34asd\r\n\
        To: sip:alice@example.com\r\n\
        Call-ID: aiuy7k9njasd\r\n\
        CSeq: 1 REGISTER\r\n\
        Max-Forwards: 70\r\n\
        Supported: path, outbound, gruu\r\n\
        Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>;reg-id=1\
        ;+sip.instance=\"<urn:uuid:f81-7dec-14a06cf1>\"\r\n\
        Content-Length: 0\r\n\r\n";
    // The client side: handshake, then the REGISTER in two masked text fragments.
    let key = client_key([7; 16]);
    let mut wire = client_request("example.com", "/", &key);
    let (a, b) = register.as_bytes().split_at(100);
    encode_frame(
        Opcode::Text,
        false,
        a,
        Some([0x12, 0x34, 0x56, 0x78]),
        &mut wire,
    );
    encode_frame(
        Opcode::Continuation,
        true,
        b,
        Some([0x9a, 0xbc, 0xde, 0xf0]),
        &mut wire,
    );

    // The server side, reading in 50-byte chunks.
    let mut buffered = Vec::new();
    let mut decoder = FrameDecoder::new(Role::Server, LIMIT);
    let mut upgraded = false;
    let mut messages = Vec::new();
    for chunk in wire.chunks(50) {
        let mut rest: &[u8] = chunk;
        if !upgraded {
            buffered.extend_from_slice(chunk);
            let Some(upgrade) = parse_upgrade(&buffered, HEAD_LIMIT).unwrap() else {
                continue;
            };
            let response = upgrade_response(&upgrade);
            assert_eq!(
                check_upgrade_response(&response, &key, HEAD_LIMIT),
                Ok(Some(response.len()))
            );
            upgraded = true;
            rest = &chunk[chunk.len() - (buffered.len() - upgrade.head_len)..];
        }
        while let Some(event) = decoder.next_event(&mut rest).unwrap() {
            messages.push(event);
        }
    }
    let [
        Event::Message {
            text: true,
            payload,
        },
    ] = messages.as_slice()
    else {
        panic!("{messages:?}");
    };
    assert_eq!(payload, register.as_bytes());
    let message = Message::parse_stream(payload).unwrap();
    message.validate().unwrap();
    assert_eq!(message.as_bytes(), register.as_bytes());
}

// ----- property: encoding then decoding ----------------------------------------------------------

/// One message as the sender writes it: its kind, its payload, where it is cut into fragments,
/// and the mask of each fragment; and whether a ping goes between its first two fragments.
#[derive(Debug, Clone)]
struct Sent {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    masks: Vec<[u8; 4]>,
    ping: bool,
}

fn sent() -> impl Strategy<Value = Sent> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 60_000..70_000),
    ];
    (
        any::<bool>(),
        payload,
        proptest::collection::vec(any::<usize>(), 0..4),
        proptest::collection::vec(any::<[u8; 4]>(), 5),
        any::<bool>(),
    )
        .prop_map(|(text, payload, cuts, masks, ping)| {
            let payload = if text {
                // Valid UTF-8 of about the same length (replacement characters take 3 bytes).
                let mut s = String::from_utf8_lossy(&payload).into_owned();
                let mut cut = s.len().min(payload.len());
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.into_bytes()
            } else {
                payload
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (payload.len() + 1)).collect();
            cuts.sort_unstable();
            Sent {
                text,
                payload,
                cuts,
                masks,
                ping,
            }
        })
}

fn encode_sent(messages: &[Sent], masked: bool) -> (Vec<u8>, Vec<Event>) {
    let mut wire = Vec::new();
    let mut events = Vec::new();
    for m in messages {
        let mut bounds = vec![0];
        bounds.extend(&m.cuts);
        bounds.push(m.payload.len());
        let fragments = bounds.len() - 1;
        for (i, pair) in bounds.windows(2).enumerate() {
            let opcode = match (i, m.text) {
                (0, true) => Opcode::Text,
                (0, false) => Opcode::Binary,
                _ => Opcode::Continuation,
            };
            let mask = masked.then_some(m.masks[i]);
            encode_frame(
                opcode,
                i + 1 == fragments,
                &m.payload[pair[0]..pair[1]],
                mask,
                &mut wire,
            );
            if i == 0 && m.ping && fragments > 1 {
                encode_frame(Opcode::Ping, true, &m.masks[4], mask, &mut wire);
                events.push(Event::Ping(m.masks[4].to_vec()));
            }
        }
        events.push(Event::Message {
            text: m.text,
            payload: m.payload.clone(),
        });
    }
    (wire, events)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encoded_messages_decode_the_same_in_any_chunks(
        messages in proptest::collection::vec(sent(), 1..5),
        chunk in 1usize..5000,
        client_to_server in any::<bool>(),
    ) {
        let (wire, expected) = encode_sent(&messages, client_to_server);
        let role = if client_to_server { Role::Server } else { Role::Client };
        let decoded = decode_chunks(role, 70_000, wire.chunks(chunk));
        prop_assert_eq!(decoded, Ok(expected));
    }
}
