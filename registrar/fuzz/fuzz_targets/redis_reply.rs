//! Fuzz target `redis_reply`: hostile replies to the registrar's Redis scripts, through
//! `redis_data::decode_register` and `decode_lookup` (the reply tree, then each stored binding's
//! JSON through the hand-written reader), and what decoded into a `BindingStore`.
//!
//! Input layout: byte 0 picks the shape (low 2 bits), the rest fills it:
//! - 0: any reply tree, from the byte decoder below;
//! - 1: a lookup reply `[server time, [items…]]`: 8 bytes of time, then reply trees;
//! - 2: a register reply `[time, changed, [outcomes…], evicted, [items…]]`: 8 bytes of time,
//!   a changed flag byte, an evicted byte, an outcome count byte and that many reply trees, then
//!   reply trees as items;
//! - 3: a lookup reply of field/value pairs: each a length-prefixed field and a length-prefixed
//!   value (the JSON), both bulk strings.
//!
//! Reply trees: a tag byte (mod 7) then 0: nil; 1: an integer from 8 bytes; 2: an integer from
//! 1 byte; 3: bulk, 4: status, 5: error, each a 2-byte little-endian length then that many bytes;
//! 6: an array of (next byte mod 16) trees, at most 4 levels deep.
//!
//! Checks that nothing panics (decoding is documented as total), and that:
//! - the JSON reader agrees with serde_json: every value serde_json accepts (nested at most 8
//!   levels, the reader's limit) is JSON to the reader, and every value the reader accepts is JSON
//!   to serde_json once its numbers are replaced by `0` (the reader reads numbers leniently: any
//!   text Rust's `f64` parser takes);
//! - decoded bindings come in lookup order (q descending); each echo has at least 1 s left;
//! - `BindingStore::load` of them keeps the store's invariants and lists the live ones in the
//!   same order, the first `max_contacts_per_aor` of them; loading nothing forgets the AOR.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sipshard_registrar::redis_data::{
    DecodeError, Reply, StoredBinding, decode_lookup, decode_register,
};
use sipshard_registrar::{Aor, BindingStore, ContactEcho, Domains, RegistrarConfig};

const MAX_DEPTH: usize = 4;
/// The store's `max_contacts_per_aor`: it keeps the first this many live bindings it loads.
const MAX_CONTACTS: usize = 4;
/// The reader's nesting limit (`MAX_JSON_DEPTH` in redis_data.rs).
const JSON_DEPTH: usize = 8;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    // Far enough from the clock's origin that server times before `now` stay representable.
    *BASE.get_or_init(|| Instant::now() + Duration::from_secs(1 << 20))
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let head = self.take(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    fn sized(&mut self) -> &'a [u8] {
        let lo = self.byte().unwrap_or(0);
        let hi = self.byte().unwrap_or(0);
        self.take(usize::from(u16::from_le_bytes([lo, hi])))
    }

    fn tree(&mut self, depth: usize) -> Option<Reply> {
        let tag = self.byte()? % 7;
        Some(match tag {
            0 => Reply::Nil,
            1 => Reply::Int(self.u64() as i64),
            2 => Reply::Int(i64::from(self.byte().unwrap_or(0))),
            3 => Reply::Bulk(self.sized().to_vec()),
            4 => Reply::Status(String::from_utf8_lossy(self.sized()).into_owned()),
            5 => Reply::Error(String::from_utf8_lossy(self.sized()).into_owned()),
            _ => {
                let n = self.byte().unwrap_or(0) % 16;
                let mut items = Vec::new();
                if depth < MAX_DEPTH {
                    for _ in 0..n {
                        match self.tree(depth + 1) {
                            Some(item) => items.push(item),
                            None => break,
                        }
                    }
                }
                Reply::Array(items)
            }
        })
    }

    fn trees(&mut self) -> Vec<Reply> {
        let mut items = Vec::new();
        while let Some(item) = self.tree(1) {
            items.push(item);
        }
        items
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Bytes(rest);
    let now = base();
    let reply = match mode & 3 {
        0 => match input.tree(0) {
            Some(reply) => reply,
            None => return,
        },
        1 => {
            let time = Reply::Int(input.u64() as i64);
            Reply::Array(vec![time, Reply::Array(input.trees())])
        }
        2 => {
            let time = Reply::Int(input.u64() as i64);
            let changed = Reply::Int(i64::from(input.byte().unwrap_or(0) % 3));
            let evicted = Reply::Int(i64::from(input.byte().unwrap_or(0)));
            let n = input.byte().unwrap_or(0) % 8;
            let outcomes = (0..n).filter_map(|_| input.tree(2)).collect();
            let items = input.trees();
            Reply::Array(vec![
                time,
                changed,
                Reply::Array(outcomes),
                evicted,
                Reply::Array(items),
            ])
        }
        _ => {
            let time = input.u64() as i64;
            let mut items = Vec::new();
            while !input.0.is_empty() {
                let field = input.sized().to_vec();
                let value = input.sized().to_vec();
                items.push(Reply::Bulk(field));
                items.push(Reply::Bulk(value));
            }
            Reply::Array(vec![Reply::Int(time), Reply::Array(items)])
        }
    };

    if let Ok(decoded) = decode_lookup(&reply, now) {
        check_bindings(&decoded.bindings, now);
    }
    if let Ok(decoded) = decode_register(&reply, now) {
        check_bindings(&decoded.bindings, now);
    }
    // Every item that is a field/value pair of bulk strings, on its own: the JSON reader.
    if let Reply::Array(top) = &reply {
        for items in top {
            if let (Reply::Array(items), Some(Reply::Int(time))) = (items, top.first()) {
                for pair in items.chunks_exact(2) {
                    if let [Reply::Bulk(field), Reply::Bulk(value)] = pair {
                        json_agrees(*time, field, value, now);
                    }
                }
            }
        }
    }
});

fn check_bindings(bindings: &[StoredBinding], now: Instant) {
    let q = |b: &StoredBinding| b.q_millis.unwrap_or(1000);
    assert!(
        bindings.windows(2).all(|w| q(&w[0]) >= q(&w[1])),
        "decoded bindings not in q order"
    );
    for b in bindings {
        let echo = ContactEcho::of_stored(b, now);
        assert!(echo.expires_s >= 1);
        let _ = echo.to_string();
    }
    let mut store = BindingStore::new(RegistrarConfig {
        domains: Domains::Any,
        max_expires_s: 7_200,
        min_expires_s: 60,
        default_expires_s: 3_600,
        max_contacts_per_aor: MAX_CONTACTS,
        max_aors_per_shard: 4,
    });
    let aor = Aor::parse("sip:alice@example.com").expect("valid AOR");
    // Twice: into an empty store, then over what the first load left.
    for _ in 0..2 {
        if store.load(&aor, bindings, now).is_err() {
            return;
        }
        store.check_invariants().expect("invariants after load");
        let live: Vec<(&str, Instant)> = bindings
            .iter()
            .filter(|b| now < b.expires_at)
            .take(MAX_CONTACTS)
            .map(|b| (&*b.uri, b.expires_at))
            .collect();
        let listed: Vec<(&str, Instant)> = store
            .lookup(&aor, now)
            .map(|b| (&*b.uri, b.expires_at))
            .collect();
        assert_eq!(
            live, listed,
            "the store does not list what it loaded, in order"
        );
        for b in store.lookup(&aor, now) {
            let _ = b.next_hop();
        }
    }
    let later = now + Duration::from_secs(1 << 20);
    store.expire(later);
    store.check_invariants().expect("invariants after expire");
    store.load(&aor, &[], now).expect("loading nothing");
    assert!(store.is_empty() && !store.holds(&aor));
    store
        .check_invariants()
        .expect("invariants after forgetting");
}

/// One field/value pair on its own, to see whether the reader took the value for JSON, compared
/// with serde_json.
fn json_agrees(time: i64, field: &[u8], value: &[u8], now: Instant) {
    let reply = Reply::Array(vec![
        Reply::Int(time.max(0)),
        Reply::Array(vec![
            Reply::Bulk(field.to_vec()),
            Reply::Bulk(value.to_vec()),
        ]),
    ]);
    let reader_json = !matches!(
        decode_lookup(&reply, now),
        Err(DecodeError::Binding {
            problem: "not JSON",
            ..
        })
    );
    match serde_json::from_slice::<serde_json::Value>(value) {
        Ok(v) if depth(&v) <= JSON_DEPTH => assert!(
            reader_json,
            "serde_json reads it but the reader does not: {:?}",
            String::from_utf8_lossy(value)
        ),
        Ok(_) => assert!(!reader_json, "nested deeper than the limit but accepted"),
        Err(_) if reader_json => {
            let normalized = numbers_as_zero(value);
            assert!(
                serde_json::from_slice::<serde_json::Value>(&normalized).is_ok(),
                "the reader accepts what is not JSON: {:?}",
                String::from_utf8_lossy(value)
            );
        }
        Err(_) => {}
    }
}

/// Nesting levels below a value: 0 for a scalar or an empty container.
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(items) => items.iter().map(|i| 1 + depth(i)).max().unwrap_or(0),
        serde_json::Value::Object(m) => m.values().map(|i| 1 + depth(i)).max().unwrap_or(0),
        _ => 0,
    }
}

/// `text` with every number token outside strings (as the reader delimits them: a `-` or digit
/// and then `-+.eE0-9`) that Rust's `f64` parser accepts replaced by `0`.
fn numbers_as_zero(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while i < text.len() {
        let c = text[i];
        if in_string {
            out.push(c);
            if c == b'\\' {
                if let Some(&next) = text.get(i + 1) {
                    out.push(next);
                    i += 1;
                }
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
        } else if c == b'-' || c.is_ascii_digit() {
            let end = i + text[i..]
                .iter()
                .take_while(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                .count();
            let token = &text[i..end];
            let is_number = std::str::from_utf8(token)
                .ok()
                .is_some_and(|t| t.parse::<f64>().is_ok());
            if is_number {
                out.push(b'0');
            } else {
                out.extend_from_slice(token);
            }
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}
