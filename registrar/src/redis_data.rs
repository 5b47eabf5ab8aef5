//! The Redis data layout of the HA registrar: keys, fields, values, the Lua scripts, the calls
//! that run them and the decoding of their replies. Sans-IO: values in, values out.
//!
//! # Why this shape
//!
//! Several nodes write the same AORs, and a client replays its unacknowledged writes after a
//! failover. So a REGISTER is applied by one Lua script on the master, atomically, with the
//! RFC 3261 §10.3 ordering rules and expiry evaluated there ([`REGISTER_SCRIPT`]): whatever
//! order writes from several nodes arrive in, and however often one is replayed, the hash ends as
//! the rules say. Time is the server's `TIME`, so a node whose clock is off cannot expire anyone
//! early (the NTP warning of Flexisip's HA guide).
//!
//! # Layout (version 1)
//!
//! - Key: one hash per AOR, `sipshard:reg:{<canonical AOR>}` ([`aor_key`]); the braces make the
//!   AOR the Redis Cluster hash tag. The key expires (`PEXPIREAT`) with its last binding.
//! - Field: the contact key ([`contact_key`]): `inst:<+sip.instance, lowercase>` plus
//!   `;reg-id=<n>` when outbound applies (RFC 5626), else `uri:<the URI in canonical form>`.
//!   The script matches contacts by the rules of [`crate::Binding::matches`] (instance and reg-id,
//!   else §19.1.4 on the match form `m`), not by field name; the field is renamed when a matching
//!   contact brings another key.
//! - Value: a JSON object (`cjson` in the script): `uri`, `echo` (the Contact value to echo),
//!   `q` (thousandths), `inst`, `rid`, `path` (list), `src` (`t` transport token, `r` remote and
//!   `l` local address, `c` connection id as a decimal string, `n` the node id that holds the
//!   connection), `vms` (Via matched the source), `ua`, `m` (match form: `b` canonical scheme,
//!   userinfo, host, port and headers; `p` parameters), and, written by the script: `v` (1),
//!   `cid`, `cseq`, `reg`/`upd`/`exp` (registered, updated, expires: server milliseconds since
//!   the epoch), `ord` (the contact's index in its REGISTER, to order bindings updated in the
//!   same millisecond). Absent optional values are left out (a JSON `null` is not `nil` in Lua).
//!   Integers that may exceed 2^53 (connection ids) are strings: Lua numbers are doubles.
//! - Channel: every call that changes a hash publishes the AOR on [`CHANGES_CHANNEL`], so other
//!   nodes drop or refresh their cached copy (the HA client subscribes to it on the master, see
//!   [`crate::redis_thread::CacheChange`]).
//!
//! # Calls
//!
//! [`register_call`] turns a [`RegisterRequest`] into a [`ScriptCall`] of [`REGISTER_SCRIPT`];
//! [`lookup_call`] reads an AOR's live bindings with [`LOOKUP_SCRIPT`], which writes nothing and
//! so runs on a replica (`EVALSHA_RO`) while no master is known. [`decode_register`] and
//! [`decode_lookup`] turn the replies into [`StoredBinding`]s whose times are `Instant`s on the
//! caller's clock, anchored at the server time the reply carries. Decoding is total: a malformed
//! reply is a [`DecodeError`], never a panic.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipshard_net::{HostKind, Transport, Uri};

use crate::{Aor, RegisterError, RegisterRequest, RegistrarConfig, RequestContact, Source};

/// Version of the layout the scripts read and write; passed as the first argument so that a
/// script of another version refuses the call instead of misreading it.
pub const LAYOUT_VERSION: &str = "1";
/// Prefix of every AOR hash.
pub const KEY_PREFIX: &str = "sipshard:reg:";
/// The channel the register script publishes a changed AOR on.
pub const CHANGES_CHANNEL: &str = "sipshard:reg-changes";

/// A Lua script of the layout, run with `EVALSHA` (`EVALSHA_RO` if read-only) and `sha1`. A
/// promoted replica or a restarted server has an empty script cache: the HA client loads every
/// script (`SCRIPT LOAD`) on each new master connection before its first call, and on `NOSCRIPT`
/// loads them again on that connection and resends the call (see [`crate::ha`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    pub name: &'static str,
    pub source: &'static str,
    /// Lowercase hex SHA-1 of `source`, as `SCRIPT LOAD` answers (checked by a test).
    pub sha1: &'static str,
    /// The script writes nothing (`#!lua flags=no-writes`): run it with `EVALSHA_RO`/`EVAL_RO`,
    /// on a replica if need be.
    pub read_only: bool,
}

/// Applies one REGISTER to one AOR (`scripts/register.lua`).
pub static REGISTER_SCRIPT: Script = Script {
    name: "register.lua",
    source: include_str!("scripts/register.lua"),
    sha1: "08ad1805f14e489d34f40317a7b7cd8398c8172b",
    read_only: false,
};

/// The live bindings of one AOR, read-only (`scripts/lookup.lua`).
pub static LOOKUP_SCRIPT: Script = Script {
    name: "lookup.lua",
    source: include_str!("scripts/lookup.lua"),
    sha1: "09a31f801da8e49d1d513f0b1c6924b01496df8c",
    read_only: true,
};

/// One script invocation: the HA client carries it as an opaque write (or read) and sends
/// what [`ScriptCall::evalsha`] spells; [`ScriptCall::eval`], with the source, is for tools and
/// tests (the client never falls back to it: it reloads the script on `NOSCRIPT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCall {
    pub script: &'static Script,
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
}

impl ScriptCall {
    /// `EVALSHA sha1 numkeys keys… args…` (`EVALSHA_RO` for a read-only script).
    pub fn evalsha(&self) -> Vec<Vec<u8>> {
        let command = if self.script.read_only {
            "EVALSHA_RO"
        } else {
            "EVALSHA"
        };
        self.command(command, self.script.sha1)
    }

    /// `EVAL source numkeys keys… args…` (`EVAL_RO` for a read-only script).
    pub fn eval(&self) -> Vec<Vec<u8>> {
        let command = if self.script.read_only {
            "EVAL_RO"
        } else {
            "EVAL"
        };
        self.command(command, self.script.source)
    }

    fn command(&self, command: &str, script: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(3 + self.keys.len() + self.args.len());
        out.push(command.into());
        out.push(script.into());
        out.push(self.keys.len().to_string().into_bytes());
        out.extend(self.keys.iter().cloned());
        out.extend(self.args.iter().cloned());
        out
    }
}

/// The hash holding `aor`'s bindings: `sipshard:reg:{<aor>}`.
pub fn aor_key(aor: &Aor) -> Vec<u8> {
    format!("{KEY_PREFIX}{{{}}}", aor.as_str()).into_bytes()
}

/// The call of [`REGISTER_SCRIPT`] that applies `req` (its contacts with their granted
/// intervals, or `*`). `node` names this node in the stored source, so that only the node holding
/// a binding's connection uses the connection id.
///
/// Refuses what [`crate::BindingStore::register`] refuses before looking at bindings: an interval
/// below the minimum (423). A fetch needs no write: use [`lookup_call`].
pub fn register_call(
    req: &RegisterRequest,
    cfg: &RegistrarConfig,
    node: &str,
) -> Result<ScriptCall, RegisterError> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(6 + 3 * req.contacts.len());
    args.push(LAYOUT_VERSION.into());
    args.push(req.aor.as_str().into());
    args.push(req.call_id.as_bytes().into());
    args.push(req.cseq.to_string().into_bytes());
    args.push(if req.star {
        b"1".to_vec()
    } else {
        b"0".to_vec()
    });
    args.push(cfg.max_contacts_per_aor.max(1).to_string().into_bytes());
    for contact in &req.contacts {
        let granted_s = cfg.granted_expires_s(contact.expires_s.or(req.expires_s))?;
        args.push(contact_key(contact).into_bytes());
        args.push(granted_s.to_string().into_bytes());
        args.push(contact_payload(req, contact, node).into_bytes());
    }
    Ok(ScriptCall {
        script: &REGISTER_SCRIPT,
        keys: vec![aor_key(&req.aor)],
        args,
    })
}

/// The call of [`LOOKUP_SCRIPT`] that reads `aor`'s live bindings.
pub fn lookup_call(aor: &Aor) -> ScriptCall {
    ScriptCall {
        script: &LOOKUP_SCRIPT,
        keys: vec![aor_key(aor)],
        args: vec![LAYOUT_VERSION.into()],
    }
}

/// The field of a contact's binding (see the module documentation).
pub fn contact_key(contact: &RequestContact) -> String {
    match &contact.instance {
        Some(instance) => {
            let mut key = format!("inst:{}", instance.to_ascii_lowercase());
            if let Some(reg_id) = contact.reg_id {
                key.push_str(&format!(";reg-id={reg_id}"));
            }
            key
        }
        None => {
            let (base, params) = match_form(&contact.uri);
            let mut key = format!("uri:{base}");
            for (name, value) in params {
                key.push(';');
                key.push_str(&name);
                if let Some(value) = value {
                    key.push('=');
                    key.push_str(&value);
                }
            }
            key
        }
    }
}

/// A contact's binding as JSON, without what the script adds (see the module documentation).
fn contact_payload(req: &RegisterRequest, contact: &RequestContact, node: &str) -> String {
    let mut o = JsonObject::new();
    o.str("uri", &contact.uri);
    o.str("echo", &contact.echo_value);
    if let Some(q) = contact.q_millis {
        o.num("q", q.into());
    }
    if let Some(instance) = &contact.instance {
        o.str("inst", instance);
    }
    if let Some(reg_id) = contact.reg_id {
        o.num("rid", reg_id.into());
    }
    if !req.path.is_empty() {
        let mut list = String::from("[");
        for (i, hop) in req.path.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            push_json_str(&mut list, hop);
        }
        list.push(']');
        o.raw("path", &list);
    }
    let mut src = JsonObject::new();
    src.str("t", req.source.transport.via_token());
    src.str("r", &req.source.remote.to_string());
    src.str("l", &req.source.local.to_string());
    if let Some(connection) = req.source.connection {
        src.str("c", &connection.to_string());
    }
    src.str("n", node);
    o.raw("src", &src.finish());
    o.raw(
        "vms",
        if req.via_matches_source {
            "true"
        } else {
            "false"
        },
    );
    if let Some(ua) = &req.user_agent {
        o.str("ua", ua);
    }
    let (base, params) = match_form(&contact.uri);
    let mut p = JsonObject::new();
    for (name, value) in &params {
        match value {
            Some(value) => p.str(name, value),
            None => p.raw(name, "true"),
        }
    }
    let mut m = JsonObject::new();
    m.str("b", &base);
    m.raw("p", &p.finish());
    o.raw("m", &m.finish());
    o.finish()
}

/// The URI in a form where RFC 3261 §19.1.4 equivalence is plain comparison, except for
/// parameters, which §19.1.4 compares only when both URIs have them (but `user`, `ttl`,
/// `method`, `maddr` and `transport` always): the base (scheme, user and password unescaped and
/// re-escaped canonically, host lowercase or the address, port, headers sorted) and the
/// parameters (names lowercase, values lowercase and canonical; first occurrence of a name, as
/// the codec compares them), sorted by name.
fn match_form(uri: &str) -> (String, Vec<(String, Option<String>)>) {
    let sip = match Uri::parse(uri) {
        Ok(Uri::Sip(sip)) => sip,
        Ok(Uri::Other(other)) => {
            return (
                format!("{}:{}", other.scheme.to_ascii_lowercase(), other.opaque),
                Vec::new(),
            );
        }
        // Contacts were parsed before they were stored; keep the text if one is not.
        Err(_) => return (format!("raw:{uri}"), Vec::new()),
    };
    let mut base = String::from(if sip.secure { "sips:" } else { "sip:" });
    if let Some(user) = sip.user {
        push_canonical(&mut base, user.as_bytes(), false);
        if let Some(password) = sip.password {
            base.push(':');
            push_canonical(&mut base, password.as_bytes(), false);
        }
        base.push('@');
    }
    match sip.host.kind {
        HostKind::Ipv4(ip) => base.push_str(&ip.to_string()),
        HostKind::Ipv6(Some(ip)) => base.push_str(&format!("[{ip}]")),
        HostKind::Ipv6(None) | HostKind::Domain => {
            base.push_str(&sip.host.text.to_ascii_lowercase())
        }
    }
    if let Some(port) = sip.port {
        base.push_str(&format!(":{port}"));
    }
    let mut headers: Vec<String> = sip
        .headers
        .split('&')
        .filter(|h| !h.is_empty())
        .map(|h| {
            let (name, value) = h.split_once('=').unwrap_or((h, ""));
            let mut text = String::new();
            push_canonical(&mut text, name.as_bytes(), true);
            text.push('=');
            push_canonical(&mut text, value.as_bytes(), false);
            text
        })
        .collect();
    headers.sort();
    headers.dedup();
    if !headers.is_empty() {
        base.push('?');
        base.push_str(&headers.join("&"));
    }
    let mut params: Vec<(String, Option<String>)> = Vec::new();
    for param in sip.params.iter() {
        let name = param.name.to_ascii_lowercase();
        if params.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let value = param.value.map(|v| {
            let mut text = String::new();
            push_canonical(&mut text, v, true);
            text
        });
        params.push((name, value));
    }
    params.sort();
    (base, params)
}

/// Appends `text` with escapes decoded and then every byte outside `A-Za-z0-9-_.!~*'()` escaped
/// as `%HH`: equal outputs exactly when the unescaped bytes are equal (lowercased first with
/// `lowercase`).
fn push_canonical(out: &mut String, text: &[u8], lowercase: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut i = 0;
    while i < text.len() {
        let mut b = text[i];
        i += 1;
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                text.get(i).copied().and_then(hex),
                text.get(i + 1).copied().and_then(hex),
            ) {
                b = (h << 4 | l) as u8;
                i += 2;
            }
        }
        if lowercase {
            b = b.to_ascii_lowercase();
        }
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// A reply, RESP2-shaped, as the Redis thread hands it over (the HA client's type).
pub use crate::ha::Reply;

/// What the register script did with one contact (or with `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactOutcome {
    Added,
    Refreshed,
    /// Interval 0 (or `*`) removed bindings.
    Removed,
    /// Interval 0 (or `*`) and nothing to remove.
    Absent,
    /// Left alone: a matching binding carries this Call-ID with a CSeq at least the request's
    /// (§10.3 step 7; a replayed or reordered request). For `*`, at least one binding was kept.
    Stale,
}

/// The register script's reply, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterReply {
    /// The server's `TIME` when the script ran, in milliseconds since the epoch.
    pub server_time_ms: u64,
    /// The hash changed (and the AOR was published).
    pub changed: bool,
    /// One per contact of the request, in order; one for `*`.
    pub outcomes: Vec<ContactOutcome>,
    /// Bindings dropped to stay within max contacts.
    pub evicted: u32,
    /// Every live binding of the AOR after the call, in lookup order.
    pub bindings: Vec<StoredBinding>,
}

/// The lookup script's reply, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupReply {
    pub server_time_ms: u64,
    /// The live bindings, in lookup order.
    pub bindings: Vec<StoredBinding>,
}

/// One binding as stored in Redis, owned, with its times on the caller's clock: what the owner
/// shard's cache loads. The fields mean what [`crate::Binding`]'s do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinding {
    /// The hash field (the contact key).
    pub field: Box<str>,
    pub uri: Box<str>,
    pub echo_value: Box<str>,
    pub q_millis: Option<u16>,
    pub instance: Option<Box<str>>,
    pub reg_id: Option<u32>,
    pub call_id: Box<str>,
    pub cseq: u32,
    pub path: Vec<Box<str>>,
    /// Where the REGISTER came from. `connection` is meaningful only on `node`.
    pub source: Source,
    /// The node that received the REGISTER (and holds its connection, if any).
    pub node: Box<str>,
    pub via_matches_source: bool,
    pub user_agent: Option<Box<str>>,
    pub registered_at: Instant,
    pub updated_at: Instant,
    pub expires_at: Instant,
}

/// A reply that is not what the script returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Redis answered an error (`NOSCRIPT`, `READONLY`, `NOREPLICAS`, the script's own…).
    Redis(String),
    /// The reply does not have the script's shape.
    Shape(&'static str),
    /// A stored binding cannot be read.
    Binding {
        field: String,
        problem: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Redis(e) => write!(f, "Redis error: {e}"),
            DecodeError::Shape(what) => write!(f, "unexpected script reply: {what}"),
            DecodeError::Binding { field, problem } => {
                write!(f, "stored binding {field:?}: {problem}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the register script's reply; `now` is the caller's clock when the reply arrived.
pub fn decode_register(reply: &Reply, now: Instant) -> Result<RegisterReply, DecodeError> {
    let [time, changed, outcomes, evicted, bindings] = array::<5>(reply)?;
    let server_time_ms = int(time, "server time")?;
    let changed = match int(changed, "changed flag")? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError::Shape("changed flag not 0 or 1")),
    };
    let Reply::Array(outcomes) = outcomes else {
        return Err(DecodeError::Shape("outcomes not an array"));
    };
    let outcomes = outcomes
        .iter()
        .map(|o| match o {
            Reply::Bulk(b) => match b.as_slice() {
                b"added" => Ok(ContactOutcome::Added),
                b"refreshed" => Ok(ContactOutcome::Refreshed),
                b"removed" => Ok(ContactOutcome::Removed),
                b"absent" => Ok(ContactOutcome::Absent),
                b"stale" => Ok(ContactOutcome::Stale),
                _ => Err(DecodeError::Shape("unknown contact outcome")),
            },
            _ => Err(DecodeError::Shape("contact outcome not a string")),
        })
        .collect::<Result<_, _>>()?;
    let evicted = u32::try_from(int(evicted, "evicted count")?)
        .map_err(|_| DecodeError::Shape("evicted count out of range"))?;
    Ok(RegisterReply {
        server_time_ms,
        changed,
        outcomes,
        evicted,
        bindings: decode_bindings(bindings, now, server_time_ms)?,
    })
}

/// Decodes the lookup script's reply; `now` is the caller's clock when the reply arrived.
pub fn decode_lookup(reply: &Reply, now: Instant) -> Result<LookupReply, DecodeError> {
    let [time, bindings] = array::<2>(reply)?;
    let server_time_ms = int(time, "server time")?;
    Ok(LookupReply {
        server_time_ms,
        bindings: decode_bindings(bindings, now, server_time_ms)?,
    })
}

fn array<const N: usize>(reply: &Reply) -> Result<&[Reply; N], DecodeError> {
    match reply {
        Reply::Array(items) => <&[Reply; N]>::try_from(items.as_slice())
            .map_err(|_| DecodeError::Shape("wrong number of elements")),
        Reply::Error(e) => Err(DecodeError::Redis(e.clone())),
        _ => Err(DecodeError::Shape("not an array")),
    }
}

fn int(reply: &Reply, what: &'static str) -> Result<u64, DecodeError> {
    match reply {
        Reply::Int(n) => u64::try_from(*n).map_err(|_| DecodeError::Shape(what)),
        _ => Err(DecodeError::Shape(what)),
    }
}

/// `field, JSON, field, JSON…` into bindings in lookup order: q descending, then most recently
/// updated first (as [`crate::BindingStore::lookup`]).
fn decode_bindings(
    flat: &Reply,
    now: Instant,
    server_time_ms: u64,
) -> Result<Vec<StoredBinding>, DecodeError> {
    let Reply::Array(flat) = flat else {
        return Err(DecodeError::Shape("bindings not an array"));
    };
    if flat.len() % 2 != 0 {
        return Err(DecodeError::Shape("bindings not in field/value pairs"));
    }
    let mut decoded = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks_exact(2) {
        let (Reply::Bulk(field), Reply::Bulk(value)) = (&pair[0], &pair[1]) else {
            return Err(DecodeError::Shape("binding field or value not a string"));
        };
        let field = String::from_utf8_lossy(field).into_owned();
        match decode_binding(&field, value, now, server_time_ms) {
            Ok(b) => decoded.push(b),
            Err(problem) => return Err(DecodeError::Binding { field, problem }),
        }
    }
    decoded.sort_by(|(a, a_upd, a_ord), (b, b_upd, b_ord)| {
        b.q_millis
            .unwrap_or(1000)
            .cmp(&a.q_millis.unwrap_or(1000))
            .then(b_upd.cmp(a_upd))
            .then(b_ord.cmp(a_ord))
            .then(a.field.cmp(&b.field))
    });
    Ok(decoded.into_iter().map(|(b, _, _)| b).collect())
}

/// One stored value, with its `upd` and `ord` for ordering.
fn decode_binding(
    field: &str,
    value: &[u8],
    now: Instant,
    server_time_ms: u64,
) -> Result<(StoredBinding, u64, u64), &'static str> {
    let json = Json::parse(value).ok_or("not JSON")?;
    let o = Obj(json.as_object().ok_or("not a JSON object")?);
    if o.u64("v")? != 1 {
        return Err("not layout 1");
    }
    let src = Obj(o
        .get("src")
        .and_then(Json::as_object)
        .ok_or("src missing")?);
    let transport = Transport::from_token(src.str("t")?).ok_or("unknown transport")?;
    let addr = |name| -> Result<SocketAddr, &'static str> {
        src.str(name)?.parse().map_err(|_| "bad address in src")
    };
    let connection = match src.opt_str("c")? {
        Some(c) => Some(c.parse::<u64>().map_err(|_| "bad connection id")?),
        None => None,
    };
    let path = match o.get("path") {
        None => Vec::new(),
        Some(Json::Arr(hops)) => hops
            .iter()
            .map(|h| h.as_str().map(Into::into).ok_or("path hop not a string"))
            .collect::<Result<_, _>>()?,
        // cjson writes an empty Lua table as an object.
        Some(Json::Obj(entries)) if entries.is_empty() => Vec::new(),
        Some(_) => return Err("path not a list"),
    };
    let at = |ms: u64| server_instant(now, server_time_ms, ms);
    let updated_ms = o.u64("upd")?;
    let binding = StoredBinding {
        field: field.into(),
        uri: o.str("uri")?.into(),
        echo_value: o.str("echo")?.into(),
        q_millis: o.opt_u64("q")?.map(narrow).transpose()?,
        instance: o.opt_str("inst")?.map(Into::into),
        reg_id: o.opt_u64("rid")?.map(narrow).transpose()?,
        call_id: o.str("cid")?.into(),
        cseq: narrow(o.u64("cseq")?)?,
        path,
        source: Source {
            transport,
            remote: addr("r")?,
            local: addr("l")?,
            connection,
        },
        node: src.str("n")?.into(),
        via_matches_source: match o.get("vms") {
            Some(Json::Bool(b)) => *b,
            _ => return Err("vms missing"),
        },
        user_agent: o.opt_str("ua")?.map(Into::into),
        registered_at: at(o.u64("reg")?),
        updated_at: at(updated_ms),
        expires_at: at(o.u64("exp")?),
    };
    Ok((binding, updated_ms, o.u64("ord")?))
}

fn narrow<T: TryFrom<u64>>(n: u64) -> Result<T, &'static str> {
    T::try_from(n).map_err(|_| "number out of range")
}

/// The `Instant` on the caller's clock of server time `at_ms`, given that the server's time was
/// `server_now_ms` at the caller's `now` (one reply's round trip is the error). A time too far
/// back for `Instant` (before boot, on some platforms) becomes `now`: only `registered_at` can be
/// that old, and it is informational.
fn server_instant(now: Instant, server_now_ms: u64, at_ms: u64) -> Instant {
    if at_ms >= server_now_ms {
        let ahead = Duration::from_millis(at_ms - server_now_ms);
        // Intervals are bounded far below the range of `Instant`; saturate all the same.
        now.checked_add(ahead)
            .unwrap_or(now + Duration::from_secs(u64::from(u32::MAX)))
    } else {
        now.checked_sub(Duration::from_millis(server_now_ms - at_ms))
            .unwrap_or(now)
    }
}

/// A JSON object being written: `{"name":value,…}`.
struct JsonObject(String);

impl JsonObject {
    fn new() -> JsonObject {
        JsonObject(String::from("{"))
    }

    fn key(&mut self, name: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_json_str(&mut self.0, name);
        self.0.push(':');
    }

    fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        push_json_str(&mut self.0, value);
    }

    fn num(&mut self, name: &str, value: u64) {
        self.key(name);
        self.0.push_str(&value.to_string());
    }

    /// `value` is JSON already.
    fn raw(&mut self, name: &str, value: &str) {
        self.key(name);
        self.0.push_str(value);
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A parsed JSON value: just what reading the stored bindings needs (numbers kept as text, read
/// as integers on demand).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Nesting deeper than this is refused (the layout nests three levels), so a hostile value
/// cannot exhaust the stack.
const MAX_JSON_DEPTH: usize = 8;

impl Json {
    /// The value of `text`, or `None` if it is not exactly one JSON value (RFC 8259; surrounding
    /// whitespace allowed).
    fn parse(text: &[u8]) -> Option<Json> {
        let mut p = JsonParser { b: text, i: 0 };
        let value = p.value(0)?;
        p.ws();
        (p.i == text.len()).then_some(value)
    }

    fn as_object(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Obj(entries) => Some(entries),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer, written as one or (by cjson's `%.14g`) with a fraction or an
    /// exponent that still makes it whole.
    fn as_u64(&self) -> Option<u64> {
        let Json::Num(text) = self else { return None };
        if let Ok(n) = text.parse::<u64>() {
            return Some(n);
        }
        let f = text.parse::<f64>().ok()?;
        // 2^64 as f64; whole values below it convert exactly.
        let whole = f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f);
        whole.then_some(f as u64)
    }
}

/// Reads the members of a stored object; a repeated name counts by its first occurrence.
struct Obj<'a>(&'a [(String, Json)]);

impl<'a> Obj<'a> {
    fn get(&self, name: &str) -> Option<&'a Json> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn str(&self, name: &'static str) -> Result<&'a str, &'static str> {
        self.opt_str(name)?.ok_or("a required string is missing")
    }

    fn opt_str(&self, name: &'static str) -> Result<Option<&'a str>, &'static str> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or("a member is not a string"),
        }
    }

    fn u64(&self, name: &'static str) -> Result<u64, &'static str> {
        self.opt_u64(name)?.ok_or("a required number is missing")
    }

    fn opt_u64(&self, name: &'static str) -> Result<Option<u64>, &'static str> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or("a member is not a whole number"),
        }
    }
}

struct JsonParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let found = self.b.get(self.i) == Some(&c);
        if found {
            self.i += 1;
        }
        found
    }

    fn literal(&mut self, word: &[u8], value: Json) -> Option<Json> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| {
            self.i = end;
            value
        })
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_JSON_DEPTH {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut entries = Vec::new();
                if self.eat(b'}') {
                    return Some(Json::Obj(entries));
                }
                loop {
                    self.ws();
                    let name = self.string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    entries.push((name, self.value(depth + 1)?));
                    if self.eat(b'}') {
                        return Some(Json::Obj(entries));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Json::Arr(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Json::Str),
            b't' => self.literal(b"true", Json::Bool(true)),
            b'f' => self.literal(b"false", Json::Bool(false)),
            b'n' => self.literal(b"null", Json::Null),
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
                // Validated by the float grammar (a superset check is enough here: the text
                // is only ever read back as a number).
                text.parse::<f64>().ok()?;
                Some(Json::Num(text.to_owned()))
            }
            _ => None,
        }
    }

    /// A string at `self.i` (which must be `"`), escapes decoded; the bytes must be UTF-8.
    fn string(&mut self) -> Option<String> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    let simple = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                            continue;
                        }
                        _ => return None,
                    };
                    out.push(simple);
                }
                0x00..=0x1f => return None,
                c => out.push(c),
            }
        }
    }

    /// After `\u`: four hex digits, or a surrogate pair written as two escapes.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xd800..0xdc00).contains(&first) {
            return char::from_u32(first);
        }
        if self.b.get(self.i..self.i.checked_add(2)?)? != b"\\u" {
            return None;
        }
        self.i += 2;
        let second = self.hex4()?;
        if !(0xdc00..0xe000).contains(&second) {
            return None;
        }
        char::from_u32(0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i.checked_add(4)?)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Domains, Transport};

    fn config() -> RegistrarConfig {
        RegistrarConfig {
            domains: Domains::list(["example.com"]).unwrap(),
            max_expires_s: 7200,
            min_expires_s: 60,
            default_expires_s: 3600,
            max_contacts_per_aor: 4,
            max_aors_per_shard: 1024,
        }
    }

    fn contact(uri: &str) -> RequestContact {
        RequestContact {
            uri: uri.into(),
            echo_value: format!("<{uri}>").into(),
            q_millis: None,
            expires_s: None,
            instance: None,
            reg_id: None,
        }
    }

    fn request(contacts: Vec<RequestContact>) -> RegisterRequest {
        RegisterRequest {
            aor: Aor::parse("sip:alice@example.com").unwrap(),
            call_id: "c1@host".into(),
            cseq: 7,
            contacts,
            star: false,
            expires_s: Some(600),
            path: vec!["<sip:edge.example.com;lr>".into()],
            path_supported: true,
            outbound_supported: false,
            source: Source {
                transport: Transport::Tcp,
                remote: "192.0.2.1:40000".parse().unwrap(),
                local: "192.0.2.9:5060".parse().unwrap(),
                connection: Some(u64::MAX - 1),
            },
            via_matches_source: true,
            user_agent: Some("Test \"UA\"/1.0\u{1}é".into()),
        }
    }

    /// What the register script stores for `payload` (its additions appended).
    fn stored(payload: &[u8], reg: u64, upd: u64, exp: u64) -> Vec<u8> {
        let mut text = payload[..payload.len() - 1].to_vec();
        text.extend_from_slice(
            format!(
                r#","v":1,"cid":"c1@host","cseq":7,"reg":{reg},"upd":{upd},"ord":0,"exp":{exp}}}"#
            )
            .as_bytes(),
        );
        text
    }

    fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(b.to_vec())
    }

    #[test]
    fn script_sha1_constants_match_their_sources() {
        for script in [&REGISTER_SCRIPT, &LOOKUP_SCRIPT] {
            assert_eq!(
                script.sha1,
                redis::Script::new(script.source).get_hash(),
                "update the sha1 of {}",
                script.name
            );
        }
    }

    #[test]
    fn register_call_arguments() {
        let mut c = contact("sip:alice@192.0.2.1:40000;transport=tcp");
        c.expires_s = Some(10);
        assert_eq!(
            register_call(&request(vec![c]), &config(), "n1"),
            Err(RegisterError::IntervalTooBrief { min_expires_s: 60 })
        );
        let call = register_call(
            &request(vec![contact("sip:alice@h"), contact("sip:a@h")]),
            &config(),
            "n1",
        )
        .unwrap();
        assert_eq!(
            call.keys,
            vec![b"sipshard:reg:{sip:alice@example.com}".to_vec()]
        );
        let args: Vec<&[u8]> = call.args.iter().map(Vec::as_slice).collect();
        assert_eq!(
            &args[..6],
            &[
                &b"1"[..],
                b"sip:alice@example.com",
                b"c1@host",
                b"7",
                b"0",
                b"4"
            ]
        );
        assert_eq!(args.len(), 6 + 2 * 3);
        assert_eq!((args[6], args[7]), (&b"uri:sip:alice@h"[..], &b"600"[..]));
        let evalsha = call.evalsha();
        assert_eq!(evalsha[0], b"EVALSHA");
        assert_eq!(evalsha[1], REGISTER_SCRIPT.sha1.as_bytes());
        assert_eq!(evalsha[2], b"1");
        assert_eq!(evalsha.len(), 3 + 1 + 12);
        assert_eq!(call.eval()[1], REGISTER_SCRIPT.source.as_bytes());
        let lookup = lookup_call(&Aor::parse("sip:bob@example.com").unwrap());
        assert_eq!(lookup.evalsha()[0], b"EVALSHA_RO");
        assert_eq!(lookup.eval()[0], b"EVAL_RO");
    }

    #[test]
    fn contact_keys() {
        let mut c = contact("sip:a@h");
        c.instance = Some("<urn:uuid:ABC>".into());
        assert_eq!(contact_key(&c), "inst:<urn:uuid:abc>");
        c.reg_id = Some(2);
        assert_eq!(contact_key(&c), "inst:<urn:uuid:abc>;reg-id=2");
        // §19.1.4: escapes decoded, host and parameters case-insensitive, user case kept.
        assert_eq!(
            contact_key(&contact("sip:%41lice@EXAMPLE.com:5060;Transport=TCP;lr")),
            contact_key(&contact("sip:Alice@example.com:5060;lr;transport=tcp")),
        );
        assert_ne!(
            contact_key(&contact("sip:alice@h")),
            contact_key(&contact("sip:Alice@h"))
        );
        assert_ne!(
            contact_key(&contact("sip:a@h")),
            contact_key(&contact("sip:a@h:5060"))
        );
        assert_eq!(contact_key(&contact("tel:+1-555")), "uri:tel:+1-555");
    }

    #[test]
    fn match_forms_keep_what_section_19_1_4_compares() {
        let (base, params) = match_form("SIP:%61b@[2001:DB8::1]:5070;maddr=X;lr;maddr=y?b=2&a=%31");
        assert_eq!(base, "sip:ab@[2001:db8::1]:5070?a=1&b=2");
        assert_eq!(
            params,
            vec![("lr".into(), None), ("maddr".into(), Some("x".into()))]
        );
        // Escaping is canonical, so a separator inside a user cannot forge another base.
        assert_eq!(match_form("sip:a%40b@h").0, "sip:a%40b@h");
    }

    #[test]
    fn round_trip_through_the_stored_form() {
        let mut c = contact("sip:alice@192.0.2.1:40000;transport=tcp");
        c.q_millis = Some(500);
        c.instance = Some("<urn:uuid:1>".into());
        c.reg_id = Some(1);
        let req = request(vec![c]);
        let call = register_call(&req, &config(), "node-a").unwrap();
        let now = Instant::now();
        let server = 1_764_000_000_000;
        let value = stored(&call.args[8], server - 5_000, server, server + 600_000);
        let reply = Reply::Array(vec![
            Reply::Int(server as i64),
            Reply::Int(1),
            Reply::Array(vec![bulk(b"added")]),
            Reply::Int(0),
            Reply::Array(vec![Reply::Bulk(call.args[6].clone()), Reply::Bulk(value)]),
        ]);
        let decoded = decode_register(&reply, now).unwrap();
        assert_eq!(decoded.server_time_ms, server);
        assert!(decoded.changed);
        assert_eq!(decoded.outcomes, vec![ContactOutcome::Added]);
        let b = &decoded.bindings[..];
        assert_eq!(b.len(), 1);
        let b = &b[0];
        assert_eq!(&*b.field, "inst:<urn:uuid:1>;reg-id=1");
        assert_eq!(&*b.uri, "sip:alice@192.0.2.1:40000;transport=tcp");
        assert_eq!(&*b.echo_value, "<sip:alice@192.0.2.1:40000;transport=tcp>");
        assert_eq!((b.q_millis, b.reg_id), (Some(500), Some(1)));
        assert_eq!(b.instance.as_deref(), Some("<urn:uuid:1>"));
        assert_eq!((&*b.call_id, b.cseq), ("c1@host", 7));
        assert_eq!(b.path, req.path);
        assert_eq!(b.source, req.source);
        assert_eq!(&*b.node, "node-a");
        assert!(b.via_matches_source);
        assert_eq!(b.user_agent, req.user_agent);
        assert_eq!(b.registered_at, now - Duration::from_secs(5));
        assert_eq!(b.updated_at, now);
        assert_eq!(b.expires_at, now + Duration::from_secs(600));
    }

    #[test]
    fn lookup_reply_in_lookup_order() {
        let now = Instant::now();
        let server = 1_764_000_000_000u64;
        let mut pairs = Vec::new();
        // (uri, q, updated): expected order q desc, then most recent first.
        for (uri, q, upd) in [
            ("sip:a@h", 500, 3),
            ("sip:b@h", 900, 1),
            ("sip:c@h", 500, 9),
        ] {
            let mut c = contact(uri);
            c.q_millis = Some(q);
            let call = register_call(&request(vec![c]), &config(), "n").unwrap();
            pairs.push(Reply::Bulk(call.args[6].clone()));
            pairs.push(Reply::Bulk(stored(
                &call.args[8],
                server,
                server - 100 + upd,
                server + 1,
            )));
        }
        let reply = Reply::Array(vec![Reply::Int(server as i64), Reply::Array(pairs)]);
        let uris: Vec<String> = decode_lookup(&reply, now)
            .unwrap()
            .bindings
            .iter()
            .map(|b| b.uri.to_string())
            .collect();
        assert_eq!(uris, ["sip:b@h", "sip:c@h", "sip:a@h"]);
    }

    #[test]
    fn malformed_replies_are_errors() {
        let now = Instant::now();
        let ok_value = {
            let call = register_call(&request(vec![contact("sip:a@h")]), &config(), "n").unwrap();
            stored(&call.args[8], 1, 2, 3)
        };
        let with = |value: &[u8]| {
            Reply::Array(vec![
                Reply::Int(1),
                Reply::Array(vec![bulk(b"uri:sip:a@h"), bulk(value)]),
            ])
        };
        assert!(decode_lookup(&with(&ok_value), now).is_ok());
        assert_eq!(
            decode_lookup(&Reply::Error("NOSCRIPT x".into()), now),
            Err(DecodeError::Redis("NOSCRIPT x".into()))
        );
        assert!(matches!(
            decode_lookup(
                &Reply::Array(vec![Reply::Int(-1), Reply::Array(vec![])]),
                now
            ),
            Err(DecodeError::Shape(_))
        ));
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"v":2}"#,
            br#"{"v":1,"uri":"x"}"#,
            b"{\"v\":1,\"uri\":\"\xff\"}",
        ] {
            assert!(
                matches!(
                    decode_lookup(&with(bad), now),
                    Err(DecodeError::Binding { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Every truncation of a good value is refused (or, for none, decodes): never a panic.
        for end in 0..ok_value.len() {
            assert!(decode_lookup(&with(&ok_value[..end]), now).is_err());
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(Json::parse(deep.as_bytes()), None);
        let register = Reply::Array(vec![
            Reply::Int(1),
            Reply::Int(2),
            Reply::Array(vec![]),
            Reply::Int(0),
            Reply::Array(vec![]),
        ]);
        assert_eq!(
            decode_register(&register, now),
            Err(DecodeError::Shape("changed flag not 0 or 1"))
        );
    }

    #[test]
    fn json_reads_what_cjson_writes() {
        let v = Json::parse(
            br#" {"a":"x\/y\u00e9\ud83d\ude00\n","n":1.764e+12,"l":[true,null],"o":{}} "#,
        )
        .unwrap();
        let o = Obj(v.as_object().unwrap());
        assert_eq!(o.str("a"), Ok("x/yé😀\n"));
        assert_eq!(o.u64("n"), Ok(1_764_000_000_000));
        assert_eq!(
            o.get("l"),
            Some(&Json::Arr(vec![Json::Bool(true), Json::Null]))
        );
        assert_eq!(Json::Num("1.5".into()).as_u64(), None);
        assert_eq!(Json::Num("-1".into()).as_u64(), None);
        assert_eq!(Json::parse(br#""\ud83d""#), None);
        assert_eq!(Json::parse(b"1 2"), None);
    }

    #[test]
    fn server_times_map_onto_the_callers_clock() {
        let now = Instant::now();
        assert_eq!(
            server_instant(now, 10_000, 12_500),
            now + Duration::from_millis(2500)
        );
        assert_eq!(
            server_instant(now, 10_000, 9_000),
            now - Duration::from_secs(1)
        );
        assert_eq!(server_instant(now, 10_000, 10_000), now);
    }
}
