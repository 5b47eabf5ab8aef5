//! From a validated [`Config`] to the options the node runs with: bind addresses resolved,
//! identity and registrar settings derived, everything checked before any shard starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use sipshard_net::Transport;
use sipshard_registrar::{Domains, RegistrarConfig};

use crate::config::{Config, DbImplementation, ListenHost};
use crate::core::CoreSettings;
use crate::node::NodeOptions;
use crate::routing::LocalIdentity;
use crate::shard::RuntimeSettings;
use crate::transaction::TimerConfig;

/// Requests one shard may have waiting on other shards at once (beyond: 503).
const MAX_WAITING_PER_SHARD: usize = 16_384;

/// Derives the node's options; `threads` (from `--threads`) overrides `[global] threads`.
pub fn node_options(config: &Config, threads: Option<usize>) -> Result<NodeOptions, String> {
    if config.registrar.db_implementation == DbImplementation::Redis {
        return Err(
            "[module::Registrar] db-implementation=redis is not available in this build \
                    yet; use db-implementation=internal"
                .into(),
        );
    }
    let shards = match threads.unwrap_or(config.global.threads) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut listens = Vec::new();
    for listen in &config.global.transports {
        if !matches!(listen.transport, Transport::Udp | Transport::Tcp) {
            return Err(format!(
                "[global] transports: {} is not available in this build yet (UDP and TCP are)",
                listen.uri
            ));
        }
        let ip = match &listen.host {
            ListenHost::Any => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ListenHost::Ip(ip) => *ip,
            ListenHost::Name(name) => (name.as_str(), listen.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
                .ok_or(format!("[global] transports: cannot resolve {name}"))?,
        };
        listens.push((listen.transport, SocketAddr::new(ip, listen.port)));
    }

    let mut hosts: Vec<String> = config.global.aliases.clone();
    for listen in &config.global.transports {
        match &listen.host {
            ListenHost::Any => hosts.extend(["127.0.0.1".to_owned(), "localhost".to_owned()]),
            other => hosts.push(other.to_string().to_ascii_lowercase()),
        }
    }
    hosts.dedup();
    let advertised_host = config
        .global
        .aliases
        .first()
        .cloned()
        .or_else(|| {
            config.global.transports.iter().find_map(|l| match &l.host {
                ListenHost::Any => None,
                other => Some(other.to_string()),
            })
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let mut ports: Vec<(Transport, u16)> = listens.iter().map(|(t, a)| (*t, a.port())).collect();
    ports.dedup();

    let any_domain = config.registrar.reg_domains.iter().any(|d| d == "*");
    let domains = if any_domain {
        Domains::Any
    } else {
        Domains::list(&config.registrar.reg_domains)
            .map_err(|e| format!("[module::Registrar] {e}"))?
    };
    let registrar = RegistrarConfig {
        domains,
        max_expires_s: seconds(config.registrar.max_expires),
        min_expires_s: seconds(config.registrar.min_expires),
        default_expires_s: seconds(config.registrar.default_expires),
        max_contacts_per_aor: config.registrar.max_contacts_by_aor,
    };
    registrar
        .validate()
        .map_err(|e| format!("[module::Registrar] {e}"))?;
    let identity = LocalIdentity {
        hosts,
        ports: ports.iter().map(|(_, p)| *p).collect(),
        domains: config.registrar.reg_domains.clone(),
        any_domain,
        allow_foreign_domains: config.forward.allow_foreign_domains,
    };
    Ok(NodeOptions {
        shards,
        queue_capacity: config.global.shard_queue_capacity,
        runtime: RuntimeSettings {
            listens,
            max_message_bytes: config.global.max_message_size_bytes,
            read_chunk_bytes: 16 * 1024,
        },
        core: CoreSettings {
            identity,
            registrar,
            timers: TimerConfig {
                t1: config.global.sip_t1,
                t2: config.global.sip_t2,
                t4: config.global.sip_t4,
            },
            transaction_capacity: config.global.transaction_table_capacity,
            max_waiting: MAX_WAITING_PER_SHARD,
            advertised_host,
            ports,
        },
    })
}

fn seconds(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
