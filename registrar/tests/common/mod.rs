//! Helpers shared by the registrar's integration tests: REGISTER text, sources, a fake clock.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sipshard_net::Message;
use sipshard_registrar::{
    Aor, Binding, BindingStore, Domains, RegisterError, RegisterOutcome, RegisterRequest,
    RegistrarConfig, Source, Transport,
};

/// A fixed base instant; tests add offsets to it and never read the clock again.
pub fn t(offset_s: u64) -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now) + Duration::from_secs(offset_s)
}

pub fn config() -> RegistrarConfig {
    RegistrarConfig {
        domains: Domains::list(["example.com"]).unwrap(),
        max_expires_s: 7200,
        min_expires_s: 60,
        default_expires_s: 3600,
        max_contacts_per_aor: 4,
        max_aors_per_shard: 4096,
    }
}

pub fn store() -> BindingStore {
    BindingStore::new(config())
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn udp(remote: &str) -> Source {
    Source {
        transport: Transport::Udp,
        remote: addr(remote),
        local: addr("192.0.2.1:5060"),
        connection: None,
    }
}

pub fn tcp(remote: &str, connection: u64) -> Source {
    Source {
        transport: Transport::Tcp,
        remote: addr(remote),
        local: addr("192.0.2.1:5060"),
        connection: Some(connection),
    }
}

pub fn aor(s: &str) -> Aor {
    Aor::parse(s).unwrap()
}

/// A REGISTER under construction.
#[derive(Clone)]
pub struct Reg {
    pub request_uri: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub contacts: Vec<String>,
    pub headers: Vec<String>,
    pub extra_vias: usize,
}

impl Reg {
    pub fn new(to: &str) -> Reg {
        Reg {
            request_uri: "sip:example.com".into(),
            to: to.into(),
            call_id: "call-1@198.51.100.7".into(),
            cseq: 1,
            contacts: Vec::new(),
            headers: Vec::new(),
            extra_vias: 0,
        }
    }

    pub fn contact(mut self, value: &str) -> Reg {
        self.contacts.push(value.into());
        self
    }

    pub fn header(mut self, line: &str) -> Reg {
        self.headers.push(line.into());
        self
    }

    pub fn expires(self, s: u32) -> Reg {
        self.header(&format!("Expires: {s}"))
    }

    pub fn call_id(mut self, id: &str) -> Reg {
        self.call_id = id.into();
        self
    }

    pub fn cseq(mut self, seq: u32) -> Reg {
        self.cseq = seq;
        self
    }

    pub fn request_uri(mut self, uri: &str) -> Reg {
        self.request_uri = uri.into();
        self
    }

    /// Adds Via lines above the UA's, as proxies on the way would.
    pub fn via_proxies(mut self, n: usize) -> Reg {
        self.extra_vias = n;
        self
    }

    pub fn text(&self) -> String {
        let mut s = format!("REGISTER {} SIP/2.0\r\n", self.request_uri);
        for i in 0..self.extra_vias {
            s += &format!("Via: SIP/2.0/UDP proxy{i}.example.com;branch=z9hG4bKp{i}\r\n");
        }
        s += "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKua;rport\r\n";
        s += "Max-Forwards: 70\r\n";
        s += &format!("From: <{}>;tag=f1\r\n", self.to);
        s += &format!("To: <{}>\r\n", self.to);
        s += &format!("Call-ID: {}\r\n", self.call_id);
        s += &format!("CSeq: {} REGISTER\r\n", self.cseq);
        for c in &self.contacts {
            s += &format!("Contact: {c}\r\n");
        }
        for h in &self.headers {
            s += h;
            s += "\r\n";
        }
        s += "Content-Length: 0\r\n\r\n";
        s
    }

    pub fn request(&self, source: Source) -> Result<RegisterRequest, RegisterError> {
        request_from_bytes(self.text().as_bytes(), source, &config())
    }

    /// Parses and applies the request from `source` at `now`.
    pub fn send(
        &self,
        store: &mut BindingStore,
        source: Source,
        now: Instant,
    ) -> Result<RegisterOutcome, RegisterError> {
        let req = request_from_bytes(self.text().as_bytes(), source, store.config())?;
        store.register(req, now)
    }
}

pub fn request_from_bytes(
    bytes: &[u8],
    source: Source,
    cfg: &RegistrarConfig,
) -> Result<RegisterRequest, RegisterError> {
    let msg = Message::parse_datagram(bytes).expect("test message parses");
    RegisterRequest::from_message(&msg, source, cfg)
}

/// The live bindings' URIs, in lookup order.
pub fn uris(store: &BindingStore, aor: &Aor, now: Instant) -> Vec<String> {
    store.lookup(aor, now).map(|b| b.uri.to_string()).collect()
}

/// Everything observable about an AOR, to show that a refused request changed nothing.
pub fn snapshot(store: &BindingStore, aor: &Aor, now: Instant) -> Vec<Binding> {
    store.lookup(aor, now).cloned().collect()
}
