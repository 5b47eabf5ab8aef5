//! Byte-level scanning shared by every header grammar (RFC 3261 §25.1).
//!
//! Header values are slices of the receive buffer and may still contain line folding: a CRLF (or bare
//! LF) followed by SP/HT. Framing has already guaranteed that every line break inside a value is such a
//! fold, so treating CR and LF as whitespace here *is* RFC 3261's LWS rule (§7.3.1: folded lines are
//! equivalent to a single SP). Nothing here allocates.

/// Byte classes, one bit each in [`CLASSES`], so that a grammar's character test is one load.
pub(crate) const TOKEN: u16 = 1 << 0;
pub(crate) const LWS: u16 = 1 << 1;
/// `user` of a SIP URI, escapes aside: unreserved / `&=+$,;?/`.
pub(crate) const URI_USER: u16 = 1 << 2;
/// `password`: unreserved / `&=+$,`.
pub(crate) const URI_PASSWORD: u16 = 1 << 3;
/// `uri-parameters` with their separators: unreserved / `[]/:&+$` / `;=`.
pub(crate) const URI_PARAM: u16 = 1 << 4;
/// `headers` with their separators: unreserved / `[]/?:+$` / `=&`.
pub(crate) const URI_HEADER: u16 = 1 << 5;
/// Hostname characters: alphanum / `-._` (`_` is outside the grammar but used).
pub(crate) const HOST: u16 = 1 << 6;
/// Digits and `.`: a hostname made of these is an IPv4 address or nothing.
pub(crate) const DIGIT_DOT: u16 = 1 << 7;
/// Scheme characters after the first: alphanum / `+-.`.
pub(crate) const SCHEME: u16 = 1 << 8;
/// The opaque part of a URI sipshard does not interpret: visible ASCII but `<>"`.
pub(crate) const OPAQUE: u16 = 1 << 9;
/// What ends a host in a SIP URI: `:` before a port, `;` before parameters, `?` before headers.
pub(crate) const HOSTPORT_END: u16 = 1 << 12;
/// Visible ASCII (0x21–0x7E).
pub(crate) const GRAPHIC: u16 = 1 << 13;
/// Parameter names: token / `[]/:&$()`.
pub(crate) const PARAM_NAME: u16 = 1 << 10;
/// Unquoted parameter values: anything but LWS, controls and `;,"<>`.
pub(crate) const PARAM_VALUE: u16 = 1 << 11;

/// The class bits of every byte value.
pub(crate) static CLASSES: [u16; 256] = classes();

const fn classes() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut bits = 0;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            bits |= TOKEN;
        }
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            bits |= LWS;
        }
        let unreserved = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        if unreserved || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            bits |= URI_USER;
        }
        if unreserved || matches!(b, b'&' | b'=' | b'+' | b'$' | b',') {
            bits |= URI_PASSWORD;
        }
        if unreserved
            || matches!(
                b,
                b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b';' | b'='
            )
        {
            bits |= URI_PARAM;
        }
        if unreserved
            || matches!(
                b,
                b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
            )
        {
            bits |= URI_HEADER;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            bits |= HOST;
        }
        if b.is_ascii_digit() || b == b'.' {
            bits |= DIGIT_DOT;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') {
            bits |= SCHEME;
        }
        if b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"') {
            bits |= OPAQUE;
        }
        if bits & TOKEN != 0 || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'$' | b'(' | b')') {
            bits |= PARAM_NAME;
        }
        if matches!(b, b':' | b';' | b'?') {
            bits |= HOSTPORT_END;
        }
        if b.is_ascii_graphic() {
            bits |= GRAPHIC;
        }
        if bits & LWS == 0
            && !b.is_ascii_control()
            && !matches!(b, b';' | b',' | b'"' | b'<' | b'>')
        {
            bits |= PARAM_VALUE;
        }
        table[i] = bits;
        i += 1;
    }
    table
}

/// True when `b` is in every class of `class`.
#[inline(always)]
pub(crate) fn is(b: u8, class: u16) -> bool {
    CLASSES[b as usize] & class == class
}

/// The classes every byte of `s` is in (all classes for an empty `s`). Branch-free, so a whole
/// component is checked with one load and one AND per byte.
#[inline]
pub(crate) fn classes_of(s: &[u8]) -> u16 {
    s.iter().fold(u16::MAX, |acc, &b| acc & CLASSES[b as usize])
}

/// The first `needle` in `s`: a plain loop for short slices, where memchr's set-up costs more
/// than it saves.
#[inline]
pub(crate) fn find_byte(s: &[u8], needle: u8) -> Option<usize> {
    if s.len() < 16 {
        s.iter().position(|&b| b == needle)
    } else {
        memchr::memchr(needle, s)
    }
}

/// `token` characters of RFC 3261 §25.1: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" /
/// "'" / "~".
#[inline(always)]
pub(crate) fn is_token_byte(b: u8) -> bool {
    is(b, TOKEN)
}

/// Whitespace inside a framed header value: SP, HT, and the CR/LF of a fold.
#[inline(always)]
pub(crate) fn is_lws_byte(b: u8) -> bool {
    is(b, LWS)
}

/// True when `s` is a non-empty `token`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_byte(b))
}

pub(crate) fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_lws_byte(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_lws_byte(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Bytes that are ASCII by grammar (tokens, hosts, numbers) as `&str`. The check is cheap and keeps
/// the crate free of `unsafe`.
pub(crate) fn ascii_str(s: &[u8]) -> Option<&str> {
    if s.is_ascii() {
        std::str::from_utf8(s).ok()
    } else {
        None
    }
}

/// Bytes the caller has already checked to be ASCII (a token, a URI) as `&str`: one UTF-8
/// validation, without [`ascii_str`]'s separate ASCII pass.
pub(crate) fn checked_str(s: &[u8]) -> Option<&str> {
    std::str::from_utf8(s).ok()
}

/// Parses an unsigned decimal with no sign, no spaces and at least one digit. Leading zeros are
/// allowed (RFC 4475 §3.1.1.1 uses `0068`); overflow is `None`.
pub(crate) fn parse_decimal_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

pub(crate) fn parse_decimal_u32(s: &[u8]) -> Option<u32> {
    parse_decimal_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// Finds the end of a quoted-string that starts at `s[0] == b'"'`; returns the index just past the
/// closing quote. `quoted-pair` (`\` + any byte except CR/LF) is honoured (§25.1).
pub(crate) fn quoted_string_end(s: &[u8]) -> Option<usize> {
    debug_assert_eq!(s.first(), Some(&b'"'));
    let mut i = 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', &s[i..])?;
        if s[i] == b'"' {
            return Some(i + 1);
        }
        if matches!(s.get(i + 1), None | Some(b'\r') | Some(b'\n')) {
            return None;
        }
        i += 2;
    }
}

/// Splits a header value at top-level commas: commas inside quoted strings or `<...>` do not count.
/// Yields each element with its byte offset in `value` (untrimmed, so offsets stay exact for edits).
/// An unterminated quote or bracket ends the iteration with an `Err` item.
pub(crate) struct CommaSplit<'a> {
    value: &'a [u8],
    pos: usize,
    done: bool,
}

pub(crate) fn comma_split(value: &[u8]) -> CommaSplit<'_> {
    CommaSplit {
        value,
        pos: 0,
        done: false,
    }
}

/// One element of a comma-separated header value: its text and where it lies in the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Element<'a> {
    pub text: &'a [u8],
    pub offset: usize,
}

/// The value has an unterminated quoted string or `<`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unbalanced;

impl<'a> Iterator for CommaSplit<'a> {
    type Item = Result<Element<'a>, Unbalanced>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let v = self.value;
        let mut i = start;
        let mut in_angle = false;
        // Jump from one byte that matters to the next: outside `<...>` a comma, a quote or `<`;
        // inside, a quote or `>` (a `<` inside or a `>` outside changes nothing).
        loop {
            let found = if in_angle {
                memchr::memchr2(b'>', b'"', &v[i..])
            } else {
                memchr::memchr3(b',', b'"', b'<', &v[i..])
            };
            let Some(offset) = found else {
                break;
            };
            i += offset;
            match v[i] {
                b'"' => match quoted_string_end(&v[i..]) {
                    Some(len) => i += len,
                    None => {
                        self.done = true;
                        return Some(Err(Unbalanced));
                    }
                },
                b',' => {
                    self.pos = i + 1;
                    return Some(Ok(Element {
                        text: &v[start..i],
                        offset: start,
                    }));
                }
                b'<' => {
                    in_angle = true;
                    i += 1;
                }
                _ => {
                    in_angle = false;
                    i += 1;
                }
            }
        }
        self.done = true;
        if in_angle {
            return Some(Err(Unbalanced));
        }
        Some(Ok(Element {
            text: &v[start..],
            offset: start,
        }))
    }
}

/// Decodes `%HH` escapes of a URI component, one byte at a time, without allocating. Used to compare
/// URI components per RFC 3261 §19.1.4 ("escaped characters are equivalent to their unescaped form").
/// A `%` not followed by two hex digits stands for itself (the URI parser has already rejected those
/// in SIP URIs).
pub(crate) fn unescaped(s: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *s.get(i)?;
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|&c| hex_value(c)),
                s.get(i + 2).and_then(|&c| hex_value(c)),
            ) {
                i += 3;
                return Some(h << 4 | l);
            }
        }
        i += 1;
        Some(b)
    })
}

pub(crate) fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[u8]) -> Vec<Result<&[u8], Unbalanced>> {
        comma_split(v).map(|r| r.map(|e| e.text)).collect()
    }

    #[test]
    fn comma_split_respects_quotes_and_brackets() {
        assert_eq!(
            texts(br#""a, b" <sip:x@y;p=1,2>, <sip:z>"#),
            vec![Ok(&br#""a, b" <sip:x@y;p=1,2>"#[..]), Ok(&b" <sip:z>"[..])]
        );
        assert_eq!(
            texts(br#"<a,"b>",c>,d"#),
            vec![Ok(&br#"<a,"b>",c>"#[..]), Ok(&b"d"[..])]
        );
        assert_eq!(
            texts(b"a>b,<c<d>,e"),
            vec![Ok(&b"a>b"[..]), Ok(&b"<c<d>"[..]), Ok(&b"e"[..])]
        );
        assert_eq!(texts(b""), vec![Ok(&b""[..])]);
        assert_eq!(texts(b"a,"), vec![Ok(&b"a"[..]), Ok(&b""[..])]);
        assert_eq!(texts(b"\"open, x"), vec![Err(Unbalanced)]);
        assert_eq!(texts(b"<sip:a, b"), vec![Err(Unbalanced)]);
    }

    #[test]
    fn quoted_pairs_do_not_end_a_quoted_string() {
        assert_eq!(quoted_string_end(br#""a\"b" rest"#), Some(6));
        assert_eq!(quoted_string_end(br#""a\"#), None);
    }

    #[test]
    fn decimals_allow_leading_zeros_and_refuse_overflow() {
        assert_eq!(parse_decimal_u32(b"0068"), Some(68));
        assert_eq!(parse_decimal_u32(b"4294967296"), None);
        assert_eq!(parse_decimal_u32(b"-1"), None);
        assert_eq!(parse_decimal_u32(b""), None);
    }

    #[test]
    fn class_table_matches_the_grammar() {
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            let token = alnum || b"-.!%*_+`'~".contains(&b);
            let lws = b" \t\r\n".contains(&b);
            let unreserved = alnum || b"-_.!~*'()".contains(&b);
            let expected = [
                (TOKEN, token),
                (LWS, lws),
                (URI_USER, unreserved || b"&=+$,;?/".contains(&b)),
                (URI_PASSWORD, unreserved || b"&=+$,".contains(&b)),
                (URI_PARAM, unreserved || b"[]/:&+$;=".contains(&b)),
                (URI_HEADER, unreserved || b"[]/?:+$=&".contains(&b)),
                (HOST, alnum || b"-._".contains(&b)),
                (DIGIT_DOT, b.is_ascii_digit() || b == b'.'),
                (SCHEME, alnum || b"+-.".contains(&b)),
                (OPAQUE, b.is_ascii_graphic() && !b"<>\"".contains(&b)),
                (PARAM_NAME, token || b"[]/:&$()".contains(&b)),
                (
                    PARAM_VALUE,
                    !lws && !b.is_ascii_control() && !b";,\"<>".contains(&b),
                ),
                (HOSTPORT_END, b":;?".contains(&b)),
                (GRAPHIC, b.is_ascii_graphic()),
            ];
            for (class, member) in expected {
                assert_eq!(is(b, class), member, "byte {b:#04x}, class {class:#06x}");
            }
        }
    }

    #[test]
    fn unescaping_is_single_pass() {
        let once: Vec<u8> = unescaped(b"value%2541%41").collect();
        assert_eq!(once, b"value%41A");
    }
}
