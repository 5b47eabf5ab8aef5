//! `;name=value` parameter lists of URIs and header values (RFC 3261 §19.1.1, §25.1 generic-param).
//!
//! [`Params::parse`] validates the whole list once and remembers where its first parameters lie;
//! lookups and iteration afterwards cannot fail and never allocate. Header parameters may have LWS around `;` and `=` (RFC 4475 §3.1.1.1); URI parameters
//! never reach here with whitespace because the URI parser refuses it.

use crate::scan::{
    PARAM_NAME, PARAM_VALUE, ascii_str, classes_of, is, is_lws_byte, quoted_string_end,
};

/// A validated parameter list, as written (starting at its first `;`, or empty).
///
/// Validation records where the first few parameters lie, so looking one up compares names
/// instead of scanning the list again; parameters past those (or in lists longer than 255 bytes)
/// are found by scanning.
#[derive(Clone, Copy, Default)]
pub struct Params<'a> {
    raw: &'a [u8],
    /// The first `indexed` parameters, in order.
    slots: [Slot; INDEXED],
    indexed: u8,
    /// Where scanning for the parameters that are not indexed starts; `raw.len()` when every
    /// parameter is indexed.
    rest: u8,
}

/// How many parameters a list remembers the positions of.
const INDEXED: usize = 4;

/// Where one parameter lies in a list of at most 255 bytes. `value_end` is 0 when it has no
/// value (a value never ends at 0: a name precedes it); the value starts after the name, LWS, `=`
/// and LWS.
#[derive(Clone, Copy, Default)]
struct Slot {
    name_start: u8,
    name_end: u8,
    value_end: u8,
}

impl Slot {
    fn name<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[usize::from(self.name_start)..usize::from(self.name_end)]
    }

    fn value<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        if self.value_end == 0 {
            return None;
        }
        let equals = skip_lws(raw, usize::from(self.name_end));
        let start = skip_lws(raw, equals + 1);
        Some(&raw[start..usize::from(self.value_end)])
    }
}

/// Lists compare, and print, as written.
impl PartialEq for Params<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Params<'_> {}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params").field("raw", &self.raw).finish()
    }
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
    i += s[i..]
        .iter()
        .position(|&b| !is(b, PARAM_NAME))
        .unwrap_or(s.len() - i);
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
        i += s[i..]
            .iter()
            .position(|&b| !is(b, PARAM_VALUE))
            .unwrap_or(s.len() - i);
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

// Reading a list that is known to be valid (every `Params` is: built by `Params::parse`, or by the
// URI parser after its own check) needs no second validation: a `;` outside a quoted string always
// starts a parameter, a `"` outside one always starts a quoted value, and after a parameter comes
// only LWS before the next `;`.

/// The parameters of a valid list from `from` on, as positions.
fn raw_params(raw: &[u8], from: usize) -> impl Iterator<Item = RawParam> + '_ {
    let mut i = raw[from..]
        .iter()
        .position(|&b| b == b';')
        .map_or(raw.len(), |semi| from + semi);
    std::iter::from_fn(move || {
        if i >= raw.len() {
            return None;
        }
        let start = skip_lws(raw, i + 1);
        let mut end = start;
        while end < raw.len() && is(raw[end], PARAM_NAME) {
            end += 1;
        }
        let value = value_after_name(raw, end);
        i = skip_lws(raw, value.map_or(end, |(_, value_end)| value_end));
        Some(RawParam {
            name: (start, end),
            value,
            next: i,
        })
    })
}

/// The first parameter of a valid list from `from` on called `name` (ASCII case-insensitive): `None` if absent,
/// `Some(None)` if it has no value. Jumps from one separating `;` to the next, so the values of
/// other parameters are not scanned byte by byte.
fn find_param(raw: &[u8], from: usize, name: &[u8]) -> Option<Option<(usize, usize)>> {
    // No parameter name holds other bytes, so such a name is never found.
    if name.is_empty() || classes_of(name) & PARAM_NAME == 0 {
        return None;
    }
    let mut i = from;
    loop {
        i += memchr::memchr2(b';', b'"', &raw[i..])?;
        if raw[i] == b'"' {
            i += quoted_string_end(&raw[i..])?;
            continue;
        }
        let start = skip_lws(raw, i + 1);
        let end = start + name.len();
        // The whole name, not a prefix of a longer one.
        if raw
            .get(start..end)
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && !raw.get(end).is_some_and(|&b| is(b, PARAM_NAME))
        {
            return Some(value_after_name(raw, end));
        }
        i = start;
    }
}

/// The value (quotes included) of the parameter whose name ends at `i` in a valid list.
fn value_after_name(raw: &[u8], i: usize) -> Option<(usize, usize)> {
    let i = skip_lws(raw, i);
    if raw.get(i) != Some(&b'=') {
        return None;
    }
    let start = skip_lws(raw, i + 1);
    let end = if raw.get(start) == Some(&b'"') {
        start + quoted_string_end(&raw[start..])?
    } else {
        let mut end = start;
        while end < raw.len() && is(raw[end], PARAM_VALUE) {
            end += 1;
        }
        end
    };
    Some((start, end))
}

/// Builds a list's index while its parameters are found in order.
struct Index<'a> {
    params: Params<'a>,
    /// Still taking parameters: the list is short enough and no parameter has been left out.
    open: bool,
}

impl<'a> Index<'a> {
    fn new(raw: &'a [u8]) -> Index<'a> {
        Index {
            params: Params {
                raw,
                ..Params::default()
            },
            // A long list is scanned from its start (`rest` 0).
            open: raw.len() <= usize::from(u8::MAX),
        }
    }

    fn add(&mut self, param: &RawParam) {
        let n = usize::from(self.params.indexed);
        if !self.open || n == INDEXED {
            // This parameter and those after it are scanned for, from `rest`.
            self.open = false;
            return;
        }
        self.params.slots[n] = Slot {
            name_start: param.name.0 as u8,
            name_end: param.name.1 as u8,
            value_end: param.value.map_or(0, |(_, end)| end as u8),
        };
        self.params.indexed += 1;
        self.params.rest = param.next as u8;
    }

    fn finish(mut self) -> Params<'a> {
        if self.open {
            // Every parameter is indexed: nothing is left to scan.
            self.params.rest = self.params.raw.len() as u8;
        }
        self.params
    }
}

impl<'a> Params<'a> {
    /// Validates `raw`, which must be empty, LWS, or a list of `;param` with nothing after it.
    pub fn parse(raw: &'a [u8]) -> Result<Params<'a>, BadParams> {
        let mut index = Index::new(raw);
        let mut i = 0;
        loop {
            if skip_lws(raw, i) == raw.len() {
                return Ok(index.finish());
            }
            let param = scan_param(raw, i)?;
            index.add(&param);
            i = param.next;
        }
    }

    /// A list the caller has checked against the grammar.
    pub(crate) fn validated(raw: &'a [u8]) -> Params<'a> {
        let mut index = Index::new(raw);
        if index.open {
            for param in raw_params(raw, 0).take(INDEXED + 1) {
                index.add(&param);
            }
        }
        index.finish()
    }

    fn slots(&self) -> &[Slot] {
        &self.slots[..usize::from(self.indexed)]
    }

    /// Where the parameters no slot holds start, if there are any.
    fn unindexed(&self) -> Option<usize> {
        let rest = usize::from(self.rest);
        (rest < self.raw.len()).then_some(rest)
    }

    /// The list as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.pairs().next().is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        self.pairs().map_while(|(name, value)| {
            Some(Param {
                // Names are ASCII by their byte class.
                name: ascii_str(name)?,
                value,
            })
        })
    }

    /// Every parameter as (name, value) bytes, without the `str` conversion of [`Params::iter`].
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let raw = self.raw;
        let indexed = self.slots;
        let indexed = indexed
            .into_iter()
            .take(usize::from(self.indexed))
            .map(move |slot| (slot.name(raw), slot.value(raw)));
        let rest = self.unindexed().unwrap_or(raw.len());
        let scanned = raw_params(raw, rest).map(move |p| {
            (
                &raw[p.name.0..p.name.1],
                p.value.map(|(start, end)| &raw[start..end]),
            )
        });
        indexed.chain(scanned)
    }

    /// Looks a parameter up by name (case-insensitive): `None` if absent, `Some(None)` if present
    /// without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        let raw = self.raw;
        for slot in self.slots() {
            if slot.name(raw).eq_ignore_ascii_case(name.as_bytes()) {
                return Some(slot.value(raw));
            }
        }
        let value = find_param(raw, self.unindexed()?, name.as_bytes())?;
        Some(value.map(|(start, end)| &raw[start..end]))
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

    /// Every parameter by a full scan, the way lists were read before they were indexed.
    fn scanned(raw: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while skip_lws(raw, i) != raw.len() {
            let p = scan_param(raw, i).unwrap();
            out.push((&raw[p.name.0..p.name.1], p.value.map(|(a, b)| &raw[a..b])));
            i = p.next;
        }
        out
    }

    #[test]
    fn lookups_agree_with_a_full_scan_past_the_index() {
        let long_value = "v".repeat(300);
        let lists = [
            String::new(),
            ";a".into(),
            ";a=1;b;c=\"x;y\";d=4".into(),
            ";a=1;b;c=\"x;y\";d=4;e=5".into(),
            " ; a = 1 ; b ; c=3;d=4;e=5;a=6;f;E=7 ".into(),
            format!(";a=1;big={long_value};b=2;c;a=9"),
            format!(";big={long_value}"),
            format!(";a;b;c;d;e={long_value};f=1"),
        ];
        for list in &lists {
            let raw = list.as_bytes();
            let all = scanned(raw);
            for uri in [false, true] {
                if uri && (list.contains(' ') || list.contains('"')) {
                    continue;
                }
                let p = if uri {
                    Params::validated(raw)
                } else {
                    Params::parse(raw).unwrap()
                };
                assert_eq!(p.pairs().collect::<Vec<_>>(), all, "{list}");
                assert_eq!(p.is_empty(), all.is_empty());
                for name in [
                    "a", "A", "b", "c", "d", "e", "f", "big", "bi", "x", "a=1", "",
                ] {
                    let expected = all
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                        .map(|(_, v)| *v);
                    assert_eq!(p.get(name), expected, "{list} {name}");
                }
            }
        }
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
