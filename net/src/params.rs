//! `;name=value` parameter lists of URIs and header values (RFC 3261 §19.1.1, §25.1 generic-param).
//!
//! [`Params::parse`] validates the whole list once; iteration afterwards cannot fail and never
//! allocates. Header parameters may have LWS around `;` and `=` (RFC 4475 §3.1.1.1); URI parameters
//! never reach here with whitespace because the URI parser refuses it.

use crate::scan::{ascii_str, is_lws_byte, is_token_byte, quoted_string_end};

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

pub(crate) fn strip_quotes(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

fn is_name_byte(b: u8) -> bool {
    is_token_byte(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'$' | b'(' | b')')
}

fn is_value_byte(b: u8) -> bool {
    !is_lws_byte(b) && !b.is_ascii_control() && !matches!(b, b';' | b',' | b'"' | b'<' | b'>')
}

/// Scans one parameter starting at a `;` at `s[i]` (after optional LWS). Returns the parameter and
/// the index after it.
fn scan_param(s: &[u8], mut i: usize) -> Result<(Param<'_>, usize), BadParams> {
    i = skip_lws(s, i);
    if s.get(i) != Some(&b';') {
        return Err(BadParams);
    }
    i = skip_lws(s, i + 1);
    let name_start = i;
    while i < s.len() && is_name_byte(s[i]) {
        i += 1;
    }
    let name = ascii_str(&s[name_start..i])
        .filter(|n| !n.is_empty())
        .ok_or(BadParams)?;
    let after_name = i;
    i = skip_lws(s, i);
    if s.get(i) != Some(&b'=') {
        return Ok((Param { name, value: None }, after_name));
    }
    i = skip_lws(s, i + 1);
    let value_start = i;
    if s.get(i) == Some(&b'"') {
        i += quoted_string_end(&s[i..]).ok_or(BadParams)?;
    } else {
        while i < s.len() && is_value_byte(s[i]) {
            i += 1;
        }
    }
    if i == value_start {
        return Err(BadParams);
    }
    Ok((
        Param {
            name,
            value: Some(&s[value_start..i]),
        },
        i,
    ))
}

fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_lws_byte(s[i]) {
        i += 1;
    }
    i
}

impl<'a> Params<'a> {
    /// Validates `raw`, which must be empty, LWS, or a list of `;param` with nothing after it.
    pub fn parse(raw: &'a [u8]) -> Result<Params<'a>, BadParams> {
        let mut i = 0;
        loop {
            if skip_lws(raw, i) == raw.len() {
                return Ok(Params { raw });
            }
            let (_, next) = scan_param(raw, i)?;
            i = next;
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
        let mut i = 0;
        std::iter::from_fn(move || {
            if skip_lws(raw, i) == raw.len() {
                return None;
            }
            let (param, next) = scan_param(raw, i).ok()?;
            i = next;
            Some(param)
        })
    }

    /// Looks a parameter up by name (case-insensitive): `None` if absent, `Some(None)` if present
    /// without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A parameter's value as text, if present, with a value, and ASCII. Quotes are removed.
    pub fn get_str(&self, name: &str) -> Option<&'a str> {
        self.get(name)
            .flatten()
            .map(strip_quotes)
            .and_then(ascii_str)
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
