//! Differential test: sipshard's codec against rsip 0.4 on every fixture message.
//!
//! For each message of `real/`, `rfc4475/` and `rfc5118/` that both parsers accept (sipshard:
//! `parse_datagram` + `validate`; rsip: `SipMessage::try_from`), the two must agree on the start
//! line, the Request-URI parts, Call-ID, CSeq, From/To tag and URI, the top Via, the body and every
//! header line. Any disagreement fails the test with file, field and both values.
//!
//! rsip is a simpler parser with known gaps. Where it cannot give an answer for a field, the field
//! is skipped *with a recorded reason* (printed in the summary), never silently:
//!
//! - compact header names (`i:`, `v:`, `f:` …) are `Header::Other` to rsip, so its typed lookups
//!   miss them;
//! - line folding and `Name : value` (space before the colon) make rsip reject the whole message;
//! - rsip ignores Content-Length: its body is everything after the first CRLFCRLF (so trailing
//!   datagram bytes stay in it), and with no CRLFCRLF at all it keeps only the first header line;
//! - rsip's parameter grammar takes only `token` values, so quoted values (`+sip.instance="<…>"`)
//!   make its typed parse of the header fail;
//! - rsip's URI user part stops at the first `.`, so `sip:first.last@host` has no user for rsip
//!   (the `user@host` text lands in its host); IPv6 references are split at their first `:`;
//! - rsip has no model of non-SIP URIs (`tel:`, `urn:` …) and only knows the 14 common methods and
//!   seven transports.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rsip::prelude::*;
use sipshard_net::{HeaderName, Host, HostKind, Message, Uri};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

/// Real messages sipshard rejects on purpose (rsip accepts them because it checks far less). Any
/// other real message that sipshard rejects while rsip accepts fails the test.
const JUSTIFIED_REAL_REJECTIONS: [(&str, &str); 2] = [
    (
        "real/pcpp/174-bye.sip",
        "capture cut inside the last header line (`Content-Lengt`, no line end): the header \
         section never ends",
    ),
    (
        "real/suricata-misc/169-resp-401.sip",
        "WWW-Authenticate `realm=\\\"sip.cybercity.dk\\\"`: literal backslashes make the value \
         neither a token nor a quoted-string (RFC 3261 §25.1); a malformed response is dropped",
    ),
];

/// The verdict RFC 4475 / RFC 5118 give a torture message (`EXPECT.tsv`), by fixture path.
fn expected_verdicts() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for set in ["rfc4475", "rfc5118"] {
        let tsv = std::fs::read_to_string(format!("{FIXTURES}/{set}/EXPECT.tsv")).unwrap();
        for line in tsv.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let mut fields = line.split('\t');
            let (name, verdict) = (fields.next().unwrap(), fields.next().unwrap());
            out.insert(format!("{set}/{name}.dat"), verdict.to_string());
        }
    }
    out
}

/// Below this many messages of `real/` accepted by both parsers the comparison proves little.
const MIN_BOTH_REAL: usize = 150;

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if path.extension().is_some_and(|x| x == ext) {
            out.push(path);
        }
    }
}

/// Every message: (corpus name, path relative to the fixtures, bytes).
fn corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let root = Path::new(FIXTURES);
    let mut all = Vec::new();
    for (set, ext) in [("real", "sip"), ("rfc4475", "dat"), ("rfc5118", "dat")] {
        let mut files = Vec::new();
        files_under(&root.join(set), ext, &mut files);
        assert!(!files.is_empty(), "no fixtures under {set}/");
        for path in files {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let bytes = std::fs::read(&path).unwrap();
            all.push((set, rel, bytes));
        }
    }
    all
}

/// Findings for one message.
struct Check<'r> {
    file: &'r str,
    failures: &'r mut Vec<String>,
    skips: &'r mut BTreeMap<String, Vec<String>>,
    compared: &'r mut usize,
}

impl Check<'_> {
    fn eq<T: PartialEq + Debug>(&mut self, field: &str, sipshard: T, rsip: T) {
        *self.compared += 1;
        if sipshard != rsip {
            self.failures.push(format!(
                "{}: {field}: sipshard {sipshard:?} != rsip {rsip:?}",
                self.file
            ));
        }
    }

    fn fail(&mut self, field: &str, what: String) {
        self.failures
            .push(format!("{}: {field}: {what}", self.file));
    }

    /// A field rsip cannot answer for a known reason.
    fn skip(&mut self, field: &str, reason: &str) {
        self.skips
            .entry(format!("{field}: {reason}"))
            .or_default()
            .push(self.file.to_string());
    }
}

/// The header line sipshard found for a typed name (the first one).
fn first_line<'a>(m: &Message<'a>, name: HeaderName) -> Option<sipshard_net::Header<'a>> {
    m.headers().find(|h| h.name == name)
}

/// True when sipshard found this header only under its compact name, which rsip does not map.
fn only_compact(m: &Message<'_>, name: HeaderName) -> bool {
    first_line(m, name).is_some_and(|h| h.name_bytes.len() == 1)
}

/// Compares a SIP URI's user, host and port with rsip's parse of the same text.
fn compare_uri(c: &mut Check<'_>, field: &str, ours: &Uri<'_>, theirs: &rsip::Uri) {
    let Some(ours) = ours.as_sip() else {
        c.skip(field, "non-SIP URI scheme (rsip has no model for it)");
        return;
    };
    if ours.user.is_some_and(|u| u.contains('.')) && theirs.auth.is_none() {
        // rsip's userinfo tokenizer stops at the first '.', so it reads `a.b@host` as a host.
        c.skip(
            field,
            "user part contains '.' (rsip reads user@host as the host)",
        );
        return;
    }
    if ours.password.is_some() {
        c.skip(
            &format!("{field} user"),
            "URI has a password (rsip splits userinfo differently)",
        );
    } else {
        c.eq(&format!("{field} user"), ours.user, theirs.user());
    }
    compare_host(c, field, &ours.host, theirs.host());
    c.eq(
        &format!("{field} port"),
        ours.port,
        theirs.port().map(|p| *p.value()),
    );
}

fn compare_host(c: &mut Check<'_>, field: &str, ours: &Host<'_>, theirs: &rsip::Host) {
    let field = format!("{field} host");
    match (ours.kind, theirs) {
        (HostKind::Ipv4(a), rsip::Host::IpAddr(b)) => c.eq(&field, IpAddr::V4(a), *b),
        (HostKind::Ipv6(Some(a)), rsip::Host::IpAddr(b)) => c.eq(&field, IpAddr::V6(a), *b),
        (HostKind::Ipv6(_), _) => {
            c.skip(&field, "IPv6 reference (rsip splits it at its first ':')")
        }
        (HostKind::Domain, rsip::Host::Domain(d)) => c.eq(&field, ours.text, d.value()),
        (kind, other) => c.fail(
            &field,
            format!("sipshard {:?} ({kind:?}) vs rsip {other:?}", ours.text),
        ),
    }
}

fn compare_name_addr(
    c: &mut Check<'_>,
    field: &str,
    ours: &sipshard_net::NameAddr<'_>,
    their_tag: Option<&str>,
    their_uri: &rsip::Uri,
) {
    c.eq(&format!("{field} tag"), ours.tag(), their_tag);
    compare_uri(c, &format!("{field} URI"), &ours.uri, their_uri);
}

/// rsip's value of one header line (its `Display` is `Name: value`).
fn rsip_header(h: &rsip::Header) -> (Option<String>, String) {
    match h {
        rsip::Header::Other(name, value) => (Some(name.clone()), value.clone()),
        other => {
            let text = other.to_string();
            let (_, value) = text.split_once(": ").unwrap_or(("", &text));
            (None, value.to_string())
        }
    }
}

fn compare(c: &mut Check<'_>, bytes: &[u8], ours: &Message<'_>, theirs: &rsip::SipMessage) {
    let headers = theirs.headers();

    // rsip cuts the header section at the first CRLFCRLF; with none it keeps only the first header
    // line and calls the rest the body, so nothing after the start line is comparable.
    if !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        c.skip(
            "all headers and body",
            "no CRLFCRLF (datagram ends the headers; rsip keeps only the first header line)",
        );
        return;
    }

    // Start line.
    match (ours.method(), theirs) {
        (Some(method), rsip::SipMessage::Request(req)) => {
            c.eq(
                "method",
                method.as_str().to_string(),
                req.method.to_string(),
            );
            compare_uri(c, "Request-URI", ours.request_uri().unwrap(), &req.uri);
        }
        (None, rsip::SipMessage::Response(resp)) => {
            c.eq("status", ours.status(), Some(resp.status_code.code()));
        }
        (m, _) => {
            c.fail(
                "kind",
                format!(
                    "sipshard method {m:?} but rsip says request={}",
                    theirs.is_request()
                ),
            );
            return;
        }
    }

    // Every header line, in order: count, names of unknown headers, values.
    let ours_headers: Vec<_> = ours.headers().collect();
    c.eq("header count", ours_headers.len(), headers.iter().count());
    for (i, (o, t)) in ours_headers.iter().zip(headers.iter()).enumerate() {
        let (their_name, their_value) = rsip_header(t);
        if let Some(name) = their_name {
            c.eq(
                &format!("header #{i} name"),
                String::from_utf8_lossy(o.name_bytes).into_owned(),
                name,
            );
        }
        // rsip keeps trailing whitespace; sipshard trims it.
        c.eq(
            &format!("header #{i} value"),
            String::from_utf8_lossy(o.value).into_owned(),
            their_value.trim_end_matches([' ', '\t']).to_string(),
        );
    }

    // Call-ID.
    match theirs.call_id_header() {
        Ok(id) => c.eq(
            "Call-ID",
            ours.call_id().ok(),
            Some(id.value().trim_end_matches([' ', '\t'])),
        ),
        Err(_) if only_compact(ours, HeaderName::CallId) => {
            c.skip("Call-ID", "compact header name (rsip does not map it)")
        }
        Err(e) => c.fail("Call-ID", format!("rsip: {e:?}")),
    }

    // CSeq.
    match theirs.cseq_header().map(|h| h.typed()) {
        Ok(Ok(cseq)) => {
            let o = ours.cseq().unwrap();
            c.eq("CSeq number", o.seq, cseq.seq);
            c.eq(
                "CSeq method",
                o.method.as_str().to_string(),
                cseq.method.to_string(),
            );
        }
        Ok(Err(e)) => c.fail("CSeq", format!("rsip typed parse failed: {e:?}")),
        Err(e) => c.fail("CSeq", format!("rsip: {e:?}")),
    }

    // From and To.
    let from = ours.from().unwrap();
    match theirs.from_header().map(|h| h.typed()) {
        Ok(Ok(t)) => compare_name_addr(c, "From", &from, t.tag().map(|t| t.value()), &t.uri),
        Ok(Err(_)) => rsip_typed_refused(c, "From", &from, &text(ours.value(HeaderName::From))),
        Err(_) if only_compact(ours, HeaderName::From) => {
            c.skip("From", "compact header name (rsip does not map it)")
        }
        Err(e) => c.fail("From", format!("rsip: {e:?}")),
    }
    let to = ours.to().unwrap();
    match theirs.to_header().map(|h| h.typed()) {
        Ok(Ok(t)) => compare_name_addr(c, "To", &to, t.tag().map(|t| t.value()), &t.uri),
        Ok(Err(_)) => rsip_typed_refused(c, "To", &to, &text(ours.value(HeaderName::To))),
        Err(_) if only_compact(ours, HeaderName::To) => {
            c.skip("To", "compact header name (rsip does not map it)")
        }
        Err(e) => c.fail("To", format!("rsip: {e:?}")),
    }

    // Top Via.
    let via = ours.top_via().unwrap();
    match theirs.via_header().map(|h| h.typed()) {
        Ok(Ok(t)) => {
            c.eq(
                "top Via branch",
                via.branch(),
                t.branch().map(|b| b.value()),
            );
            c.eq(
                "top Via transport",
                via.transport.to_ascii_uppercase(),
                t.transport.to_string(),
            );
            compare_host(c, "top Via sent-by", &via.host, t.uri.host());
            c.eq(
                "top Via sent-by port",
                via.port,
                t.uri.port().map(|p| *p.value()),
            );
        }
        Ok(Err(e)) => {
            let known = ["UDP", "TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"];
            if !known.iter().any(|k| via.transport.eq_ignore_ascii_case(k)) {
                c.skip("top Via", "transport rsip does not know")
            } else if via.host.text.starts_with('[') {
                c.skip("top Via", "IPv6 sent-by (rsip splits it at its first ':')")
            } else if via.params.iter().any(|p| {
                p.value
                    .is_some_and(|v| !v.iter().all(|&b| is_token_byte(b)))
            }) {
                c.skip(
                    "top Via",
                    "parameter value that is not a token (rsip takes tokens only)",
                )
            } else {
                c.fail("top Via", format!("rsip typed parse failed: {e:?}"))
            }
        }
        Err(_) if only_compact(ours, HeaderName::Via) => {
            c.skip("top Via", "compact header name (rsip does not map it)")
        }
        Err(e) => c.fail("top Via", format!("rsip: {e:?}")),
    }

    // Content-Length and body.
    match headers.iter().find_map(|h| match h {
        rsip::Header::ContentLength(l) => Some(l),
        _ => None,
    }) {
        Some(l) => c.eq("Content-Length", ours.content_length(), l.length().ok()),
        None if only_compact(ours, HeaderName::ContentLength) => c.skip(
            "Content-Length",
            "compact header name (rsip does not map it)",
        ),
        None => c.eq("Content-Length", ours.content_length(), None),
    }
    let (ours_body, their_body) = (ours.body(), theirs.body().as_slice());
    if ours_body.len() < their_body.len() && their_body.starts_with(ours_body) {
        // Bytes past Content-Length are not part of the message (RFC 3261 §18.3); rsip keeps them.
        c.skip(
            "body",
            "datagram bytes past Content-Length (rsip ignores Content-Length)",
        );
    } else {
        c.eq("body length", ours_body.len(), their_body.len());
        c.eq("body", ours_body, their_body);
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// rsip's typed From/To parse failed: accept that only for the value shapes it is known not to
/// handle, otherwise it is a disagreement (sipshard accepted a value rsip could not read).
fn rsip_typed_refused(
    c: &mut Check<'_>,
    field: &str,
    ours: &sipshard_net::NameAddr<'_>,
    raw: &str,
) {
    let not_token = |v: Option<&[u8]>| v.is_some_and(|v| !v.iter().all(|&b| is_token_byte(b)));
    let sip = ours.uri.as_sip();
    if ours.params.iter().any(|p| not_token(p.value))
        || sip.is_some_and(|u| u.params.iter().any(|p| not_token(p.value)))
    {
        c.skip(
            field,
            "parameter value that is not a token (rsip takes tokens only)",
        );
    } else if sip.is_none() {
        c.skip(field, "non-SIP URI scheme (rsip has no model for it)");
    } else if sip.is_some_and(|u| u.host.text.starts_with('[')) {
        c.skip(field, "IPv6 reference (rsip splits it at its first ':')");
    } else {
        c.fail(
            field,
            format!("rsip's typed parse refused a value sipshard accepted: {raw:?}"),
        );
    }
}

#[test]
fn sipshard_and_rsip_agree_on_every_fixture_both_accept() {
    let corpus = corpus();
    let verdicts = expected_verdicts();
    let mut failures = Vec::new();
    let mut skips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut compared = 0usize;
    // Per corpus: [both, only sipshard, only rsip, neither].
    let mut counts: BTreeMap<&str, [Vec<String>; 4]> = BTreeMap::new();

    for (set, file, bytes) in &corpus {
        let ours = Message::parse_datagram(bytes).and_then(|m| m.validate().map(|()| m));
        let theirs = rsip::SipMessage::try_from(&bytes[..]);
        let slot = match (&ours, &theirs) {
            (Ok(_), Ok(_)) => 0,
            (Ok(_), Err(_)) => 1,
            (Err(_), Ok(_)) => 2,
            (Err(_), Err(_)) => 3,
        };
        let entry = counts.entry(set).or_default();
        let why = match (&ours, &theirs) {
            (Ok(_), Err(e)) => format!("{file} (rsip: {})", short(&format!("{e:?}"))),
            (Err(e), Ok(_)) => format!("{file} (sipshard: {e})"),
            _ => file.clone(),
        };
        entry[slot].push(why);
        if let Err(e) = &ours {
            // sipshard refuses a message: every real one must be listed with its reason above;
            // a torture message that rsip takes must be one the RFCs call invalid.
            let justified = match *set {
                "real" => JUSTIFIED_REAL_REJECTIONS.iter().any(|(f, _)| f == file),
                _ => theirs.is_err() || verdicts.get(file).is_some_and(|v| v == "invalid"),
            };
            if !justified {
                failures.push(format!(
                    "{file}: acceptance: sipshard rejects it ({e}), rsip {}, and no RFC verdict \
                     or listed reason justifies that",
                    if theirs.is_ok() {
                        "accepts it"
                    } else {
                        "rejects it too"
                    }
                ));
            }
        }
        if let (Ok(ours), Ok(theirs)) = (&ours, &theirs) {
            let mut check = Check {
                file,
                failures: &mut failures,
                skips: &mut skips,
                compared: &mut compared,
            };
            compare(&mut check, bytes, ours, theirs);
        }
    }

    eprintln!(
        "differential sipshard vs rsip 0.4 ({} messages):",
        corpus.len()
    );
    for (set, [both, ours, theirs, neither]) in &counts {
        eprintln!(
            "  {set:8} both accepted {:3}, only sipshard {:3}, only rsip {:3}, neither {:3}",
            both.len(),
            ours.len(),
            theirs.len(),
            neither.len()
        );
        for f in theirs {
            eprintln!("      only rsip: {f}");
        }
        if std::env::var_os("DIFF_VERBOSE").is_some() {
            for f in ours {
                eprintln!("      only sipshard: {f}");
            }
        }
    }
    for (file, reason) in JUSTIFIED_REAL_REJECTIONS {
        // Slots 2 and 3 hold what sipshard rejected.
        let rejected = counts["real"][2..]
            .iter()
            .flatten()
            .any(|f| f.split(' ').next() == Some(file));
        let state = if rejected {
            "rejected"
        } else {
            "no longer rejected: drop it from the list"
        };
        eprintln!("  listed real rejection ({state}): {file}: {reason}");
    }
    eprintln!("  {compared} field comparisons; fields skipped (rsip cannot answer):");
    for (reason, files) in &skips {
        eprintln!("    {:3} x {reason}", files.len());
    }

    let both_real = counts.get("real").map_or(0, |c| c[0].len());
    assert!(
        both_real >= MIN_BOTH_REAL,
        "only {both_real} real messages accepted by both parsers (want >= {MIN_BOTH_REAL})"
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn text(v: Option<&[u8]>) -> String {
    String::from_utf8_lossy(v.unwrap_or_default()).into_owned()
}

fn short(s: &str) -> String {
    s.chars().take(90).collect()
}
