//! Fuzz target `framer`: a TCP connection's byte stream, arriving in chunks, through one
//! `StreamFramer`.
//!
//! Input layout: byte 0 picks how many chunk sizes follow (1–4); each following byte is a chunk
//! size (1–256 bytes), used in turn; the rest is the stream. The connection loop appends each chunk
//! to its buffer and takes frames until `Incomplete`, consuming `len` bytes after `Ping`, `Pong`
//! and `Message`, passing each message to `parse_stream`, and closing on a framing error.
//!
//! Checks that nothing panics or hangs, and that:
//! - a frame's `len` is never 0 and never exceeds the buffer; a `Message` never exceeds the limit;
//! - after `Incomplete` the buffer holds at most the limit (a peer cannot grow it without bound);
//! - the framer's incremental search answers as a fresh framer given the same bytes would;
//! - when `parse_stream` accepts a framed message, it ends exactly where the framer said.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipshard_net::{Frame, Message, StreamFramer};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(rest.len().min(usize::from(first % 4) + 1));
    if sizes.is_empty() {
        return;
    }
    let mut chunk_sizes = sizes.iter().map(|&s| usize::from(s) + 1).cycle();

    let mut framer = StreamFramer::new(MAX);
    let mut buf: Vec<u8> = Vec::new();
    let mut remaining = stream;
    while !remaining.is_empty() {
        let (chunk, tail) = remaining.split_at(remaining.len().min(chunk_sizes.next().unwrap()));
        remaining = tail;
        buf.extend_from_slice(chunk);
        loop {
            let frame = framer.next_frame(&buf);
            assert_eq!(
                frame,
                StreamFramer::new(MAX).next_frame(&buf),
                "stateful != fresh"
            );
            let len = match frame {
                Ok(Frame::Incomplete) => {
                    assert!(buf.len() <= MAX, "Incomplete with {} buffered", buf.len());
                    break;
                }
                Ok(Frame::Ping { len } | Frame::Pong { len }) => len,
                Ok(Frame::Message { len }) => {
                    assert!(len <= MAX, "message of {len} bytes over the limit");
                    assert!(len <= buf.len());
                    if let Ok(msg) = Message::parse_stream(&buf[..len]) {
                        let end = msg.as_bytes().as_ptr_range().end;
                        assert_eq!(
                            end,
                            buf[..len].as_ptr_range().end,
                            "parser and framer disagree"
                        );
                        let _ = msg.validate();
                    }
                    len
                }
                Err(e) => {
                    let _ = e.action();
                    return; // The connection is closed.
                }
            };
            assert!(
                len > 0 && len <= buf.len(),
                "frame of {len} bytes, {} buffered",
                buf.len()
            );
            buf.drain(..len);
        }
    }
});
