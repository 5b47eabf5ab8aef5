//! `;name=value` parameter lists of URIs and header values (RFC 3261 §19.1.1, §25.1 generic-param).
//!
//! [`Params::parse`] validates the whole list once; iteration afterwards cannot fail and never
//! allocates. Header parameters may have LWS around `;` and `=` (RFC 4475 §3.1.1.1); URI parameters
//! never reach here with whitespace because the URI parser refuses it.

use crate::scan::{PARAM_NAME, PARAM_VALUE, ascii_str, is, is_lws_byte, quoted_string_end};

/// A validated parameter list, as written (starting at its first `;`, or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a [u8],
}

/// One parameter. `value` is as written, quotes included; see [`Param::unquoted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a str,
    pub value: Option<&'a [u8]>,
}

/// The parameter list does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadParams;

impl<'a> Param<'a> {
    /// The value without surrounding quotes (quoted-pairs are left as written).
    pub fn unquoted(&self) -> Option<&'a [u8]> {
        self.value.map(strip_quotes)
    }
}

/// A value as [`Params::get_str`] gives it: quotes removed, ASCII only.
pub(crate) fn value_str(value: Option<&[u8]>) -> Option<&str> {
    value.map(strip_quotes).and_then(ascii_str)
}

pub(crate) fn strip_quotes(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

/// One parameter as positions in its list: the name, the value (quotes included) if any, and
/// where the scan goes on.
#[derive(Clone, Copy)]
struct RawParam {
    name: (usize, usize),
    value: Option<(usize, usize)>,
    next: usize,
}

/// Scans one parameter starting at a `;` at `s[i]` (after optional LWS). Names and unquoted values
/// are checked by byte class; nothing is converted to `str`.
#[inline]
fn scan_param(s: &[u8], mut i: usize) -> Result<RawParam, BadParams> {
    i = skip_lws(s, i);
    if s.get(i) != Some(&b';') {
        return Err(BadParams);
    }
    i = skip_lws(s, i + 1);
    let name_start = i;
    while i < s.len() && is(s[i], PARAM_NAME) {
        i += 1;
    }
    if i == name_start {
        return Err(BadParams);
    }
    let name = (name_start, i);
    let after_name = i;
    i = skip_lws(s, i);
    if s.get(i) != Some(&b'=') {
        return Ok(RawParam {
            name,
            value: None,
            next: after_name,
        });
    }
    i = skip_lws(s, i + 1);
    let value_start = i;
    if s.get(i) == Some(&b'"') {
        i += quoted_string_end(&s[i..]).ok_or(BadParams)?;
    } else {
        while i < s.len() && is(s[i], PARAM_VALUE) {
            i += 1;
        }
    }
    if i == value_start {
        return Err(BadParams);
    }
    Ok(RawParam {
        name,
        value: Some((value_start, i)),
        next: i,
    })
}

#[inline]
fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_lws_byte(s[i]) {
        i += 1;
    }
    i
}

/// The parameters of a validated list, as positions.
fn raw_params(raw: &[u8]) -> impl Iterator<Item = RawParam> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        if skip_lws(raw, i) == raw.len() {
            return None;
        }
        let param = scan_param(raw, i).ok()?;
        i = param.next;
        Some(param)
    })
}

impl<'a> Params<'a> {
    /// Validates `raw`, which must be empty, LWS, or a list of `;param` with nothing after it.
    pub fn parse(raw: &'a [u8]) -> Result<Params<'a>, BadParams> {
        let mut i = 0;
        loop {
            if skip_lws(raw, i) == raw.len() {
                return Ok(Params { raw });
            }
            i = scan_param(raw, i)?.next;
        }
    }

    /// A list the caller has checked against the grammar.
    pub(crate) fn validated(raw: &'a [u8]) -> Params<'a> {
        Params { raw }
    }

    /// The list as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        let raw = self.raw;
        raw_params(raw).map_while(move |p| {
            Some(Param {
                // Names are ASCII by their byte class.
                name: ascii_str(&raw[p.name.0..p.name.1])?,
                value: p.value.map(|(start, end)| &raw[start..end]),
            })
        })
    }

    /// Every parameter as (name, value) bytes, without the `str` conversion of [`Params::iter`].
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let raw = self.raw;
        raw_params(raw).map(move |p| {
            (
                &raw[p.name.0..p.name.1],
                p.value.map(|(start, end)| &raw[start..end]),
            )
        })
    }

    /// Looks a parameter up by name (case-insensitive): `None` if absent, `Some(None)` if present
    /// without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.pairs()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A parameter's value as text, if present, with a value, and ASCII. Quotes are removed.
    pub fn get_str(&self, name: &str) -> Option<&'a str> {
        value_str(self.get(name).flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lws_around_separators_and_quoted_values() {
        let p = Params::parse(b" ;   tag    = 1918181833n ; +sip.instance=\"<urn:uuid:1;2>\";lr")
            .unwrap();
        let all: Vec<_> = p.iter().map(|p| (p.name, p.value)).collect();
        assert_eq!(
            all,
            vec![
                ("tag", Some(&b"1918181833n"[..])),
                ("+sip.instance", Some(&b"\"<urn:uuid:1;2>\""[..])),
                ("lr", None),
            ]
        );
        assert_eq!(p.get_str("+SIP.INSTANCE"), Some("<urn:uuid:1;2>"));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("maddr"), None);
    }

    #[test]
    fn ipv6_values_with_and_without_brackets() {
        let p = Params::parse(b";received=2001:db8::9:255;branch=z9hG4bK").unwrap();
        assert_eq!(p.get_str("received"), Some("2001:db8::9:255"));
        let p = Params::parse(b";received=[2001:db8::9:255]").unwrap();
        assert_eq!(p.get_str("received"), Some("[2001:db8::9:255]"));
    }

    #[test]
    fn empty_names_values_and_stray_text_are_refused() {
        for bad in [&b";;"[..], b";=x", b";a=", b";a=\"open", b"junk", b";a b"] {
            assert_eq!(
                Params::parse(bad),
                Err(BadParams),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
