//! From a validated [`Config`] to the options the node runs with: bind addresses resolved,
//! identity and registrar settings derived, the password file read, everything checked before
//! any shard starts.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use sipshard_net::Transport;
use std::time::Duration;

use sipshard_registrar::ha::{Credentials, Discovery, HaConfig};
use sipshard_registrar::{Domains, RegistrarConfig, redis_bridge};

use crate::auth::{AuthSettings, Authenticator, PasswordDb};
use crate::cluster::{ClusterSettings, FLOW_KEY_BYTES, FlowKey};
use crate::config::{Config, DbImplementation, ListenHost};
use crate::core::{CoreSettings, RegistrarDb, ShardAuthSettings};
use crate::dos::FloodSettings;
use crate::node::NodeOptions;
use crate::reload::PasswordReload;
use crate::routing::LocalIdentity;
use crate::shard::RuntimeSettings;
use crate::tls;
use crate::transaction::TimerConfig;

/// Requests one shard may have waiting on other shards at once (beyond: 503).
const MAX_WAITING_PER_SHARD: usize = 16_384;

/// Largest password file read: ~250,000 users with every kind of credential, low enough that a
/// wrong `file-path` (a log, a device) fails at once instead of filling memory.
const MAX_PASSWORD_FILE_BYTES: u64 = 64 << 20;

/// Bytes of `nonce-secret` drawn from the kernel when the configuration leaves it empty.
const RANDOM_SECRET_BYTES: usize = 32;

/// Users named in one start-up warning about hashes that cannot serve an offered algorithm.
const MAX_USERS_IN_WARNING: usize = 10;

/// Derives the node's options; `threads` (from `--threads`) overrides `[global] threads`.
pub fn node_options(config: &Config, threads: Option<usize>) -> Result<NodeOptions, String> {
    let shards = match threads.unwrap_or(config.global.threads) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut listens = Vec::new();
    for listen in &config.global.transports {
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
    let cluster = cluster_settings(config, &listens)?;
    if let Some(cluster) = &cluster {
        hosts.push(cluster.internal_host.clone());
    }
    if config.cluster.enabled && !config.cluster.cluster_domain.is_empty() {
        hosts.push(config.cluster.cluster_domain.clone());
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
        max_aors_per_shard: config.registrar.max_aors_per_shard,
    };
    registrar
        .validate()
        .map_err(|e| format!("[module::Registrar] {e}"))?;
    let auth = auth_settings(config)?;
    let identity = LocalIdentity {
        hosts,
        ports: ports.iter().map(|(_, p)| *p).collect(),
        domains: config.registrar.reg_domains.clone(),
        any_domain,
        allow_foreign_domains: config.forward.allow_foreign_domains,
    };
    let redis = redis_settings(config)?;
    let password_reload = match (&auth, &config.authentication.file_path) {
        (Some(auth), Some(path)) => Some(Arc::new(PasswordReload::new(
            path.clone(),
            Arc::clone(&auth.db),
        ))),
        _ => None,
    };
    let trusted = dos_trusted(config);
    let (tls, tls_client) = tls_settings(config, &advertised_host)?;
    let registrar_db = match &redis {
        None => RegistrarDb::Memory,
        Some(ha) => RegistrarDb::Redis {
            node: format!(
                "{advertised_host}:{}",
                ports.first().map_or(5060, |(_, p)| *p)
            )
            .into(),
            // Past the hold the Redis thread answers every write itself; the margin covers the
            // last request's timeout and the trip back to the shard.
            wait_limit: ha.failover_hold + 2 * ha.request_timeout + Duration::from_secs(2),
        },
    };
    Ok(NodeOptions {
        shards,
        redis,
        password_reload,
        queue_capacity: config.global.shard_queue_capacity,
        runtime: RuntimeSettings {
            listens,
            max_message_bytes: config.global.max_message_size_bytes,
            read_chunk_bytes: 16 * 1024,
            flood: config.dos_protection.enabled.then(|| FloodSettings {
                packet_rate_limit: u32::try_from(config.dos_protection.packet_rate_limit)
                    .unwrap_or(u32::MAX),
                time_period: config.dos_protection.time_period,
                ban_time: config.dos_protection.ban_time,
                trusted: trusted.clone(),
            }),
            trusted,
            max_connections: config.global.max_connections_per_shard,
            max_connections_per_address: config.global.max_connections_per_address,
            tls,
            tls_client,
            idle_timeout: config.global.idle_timeout,
            incomplete_message_timeout: config.global.incomplete_message_timeout,
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
            auth,
            registrar_db,
            cluster,
        },
    })
}

/// `[cluster]`, when enabled: the internal address and a fresh flow-token key (tokens are read
/// back only by the node that made them). The internal address is `internal-transport`, which
/// must be one this node listens on; else the first listen address (host names resolved) that
/// is in `nodes`; else, for a listen on every address (`sip:*`), the first of `nodes` that is
/// an address of this host. The seed's `transports=sips:host1.example.org` with
/// `nodes=<IP host1> ...` works as written.
fn cluster_settings(
    config: &Config,
    listens: &[(Transport, SocketAddr)],
) -> Result<Option<ClusterSettings>, String> {
    let c = &config.cluster;
    if !c.enabled {
        return Ok(None);
    }
    let internal = match &c.internal_transport {
        Some(listen) => {
            let ip = match listen.host {
                ListenHost::Ip(ip) => ip,
                // The configuration accepts IP addresses only.
                _ => {
                    return Err(format!(
                        "[cluster] internal-transport {}: needs an IP address",
                        listen.uri
                    ));
                }
            };
            let listened = listens.iter().any(|(t, a)| {
                *t == listen.transport
                    && a.port() == listen.port
                    && (a.ip() == ip || a.ip().is_unspecified())
            });
            if !listened {
                return Err(format!(
                    "[cluster] internal-transport {}: this node does not listen there ({} {}:{} \
                     is in no transports URI)",
                    listen.uri, listen.transport, listen.host, listen.port
                ));
            }
            (listen.transport, SocketAddr::new(ip, listen.port))
        }
        None => {
            let named = listens
                .iter()
                .find(|(_, a)| c.nodes.contains(&a.ip()))
                .copied();
            let any = || {
                let (transport, any) = listens.iter().find(|(_, a)| a.ip().is_unspecified())?;
                // An address of this host is one a socket can be bound to.
                let ip = c
                    .nodes
                    .iter()
                    .find(|ip| std::net::UdpSocket::bind((**ip, 0)).is_ok())?;
                Some((*transport, SocketAddr::new(*ip, any.port())))
            };
            named.or_else(any).ok_or_else(|| {
                "[cluster] enabled=true needs internal-transport (the URI the other nodes reach \
                 this one at): no transports address is one of nodes"
                    .to_owned()
            })?
        }
    };
    let (transport, addr) = internal;
    let secret = random_secret(FLOW_KEY_BYTES)
        .map_err(|e| format!("[cluster] cannot read /dev/urandom for the flow-token key: {e}"))?;
    Ok(Some(ClusterSettings {
        internal_host: ListenHost::Ip(addr.ip()).to_string(),
        internal_port: addr.port(),
        internal_transport: transport,
        nodes: c.nodes.clone(),
        flows: FlowKey::new(&secret),
    }))
}

/// The TLS server configuration when a transport is TLS: certificate and key loaded (an error
/// stops the node), and a warning when the certificate's SubjectAltNames do not cover the
/// node's names and SIP domains (RFC 5922). And the configuration of outgoing TLS connections,
/// which present the same certificate when there is one.
fn tls_settings(
    config: &Config,
    advertised_host: &str,
) -> Result<(Option<Arc<rustls::ServerConfig>>, Arc<rustls::ClientConfig>), String> {
    let g = &config.global;
    let roots = tls::trust_store(config)?;
    let listens_tls = g
        .transports
        .iter()
        .any(|l| matches!(l.transport, Transport::Tls | Transport::Wss));
    if !listens_tls {
        return Ok((None, tls::client_config(roots, None)?));
    }
    let files = tls::files(config)?;
    let own = tls::identity(&files)?;
    let client_roots = g.tls_verify_incoming.then(|| roots.clone());
    let server = tls::server_config(&files, &own, client_roots)?;
    let client = tls::client_config(roots, Some(&own))?;
    let chain = &own.chain;
    let mut names = vec![advertised_host.trim_matches(['[', ']']).to_owned()];
    for listen in g
        .transports
        .iter()
        .filter(|l| matches!(l.transport, Transport::Tls | Transport::Wss))
    {
        match &listen.host {
            ListenHost::Any => {}
            ListenHost::Ip(ip) => names.push(ip.to_string()),
            ListenHost::Name(name) => names.push(name.clone()),
        }
    }
    names.extend(config.registrar.reg_domains.iter().cloned());
    let uncovered = chain
        .first()
        .map(|leaf| tls::uncovered_names(leaf, &names))
        .unwrap_or_default();
    if !uncovered.is_empty() {
        tracing::warn!(
            "[global] TLS certificate {}: its SubjectAltNames do not cover {} (RFC 5922: peers \
             verifying this node's name will refuse the connection)",
            files.certificates.display(),
            uncovered.join(", ")
        );
    }
    Ok((Some(server), client))
}

/// The addresses `[module::DoSProtection]` never limits: its `white-list`, the `[cluster]
/// nodes, 127.0.0.1 and ::1 (as Flexisip adds them).
fn dos_trusted(config: &Config) -> Vec<IpAddr> {
    let always = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let mut trusted: Vec<IpAddr> = Vec::new();
    let listed = config.dos_protection.white_list.iter();
    for ip in listed.chain(&config.cluster.nodes).chain(&always) {
        let ip = ip.to_canonical();
        if !trusted.contains(&ip) {
            trusted.push(ip);
        }
    }
    trusted
}

/// `db-implementation=redis`: the Redis HA client's settings from the `redis-*` keys (with
/// sentinels: the master a majority of them names; without: `redis-server-domain`, followed by
/// `INFO replication`). `None` for the in-memory registrar.
fn redis_settings(config: &Config) -> Result<Option<HaConfig>, String> {
    let r = &config.registrar;
    if r.db_implementation != DbImplementation::Redis {
        return Ok(None);
    }
    let credentials = |username: &str, password: &str| Credentials {
        username: (!username.is_empty()).then(|| username.to_owned()),
        password: (!password.is_empty()).then(|| password.to_owned()),
    };
    let mut ha = if r.redis_sentinel_addresses.is_empty() {
        let host = &r.redis_server_domain;
        let server = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", r.redis_server_port)
        } else {
            format!("{host}:{}", r.redis_server_port)
        };
        HaConfig::direct(server)
    } else {
        let sentinels = r
            .redis_sentinel_addresses
            .iter()
            .map(|a| Arc::from(a.as_str()))
            .collect();
        HaConfig::sentinel(sentinels, r.redis_sentinel_master_name.clone())
    };
    if let Discovery::Sentinel { credentials: c, .. } = &mut ha.discovery {
        *c = credentials("", r.redis_sentinel_password.expose());
    }
    ha.credentials = credentials(&r.redis_username, r.redis_auth_password.expose());
    ha.scripts = redis_bridge::ha_scripts();
    ha.request_timeout = r.redis_timeout;
    ha.failover_hold = r.redis_failover_hold;
    ha.replay_window = r.redis_replay_window;
    ha.wait_replicas = u32::try_from(r.redis_wait_replicas).unwrap_or(u32::MAX);
    ha.validate()
        .map_err(|e| format!("[module::Registrar] Redis settings: {e}"))?;
    Ok(Some(ha))
}

/// `[module::Authentication]`: the settings every shard's [`Authenticator`] is built from, and
/// the password file, read and parsed once and shared read-only by the shards. `None` when
/// authentication is disabled.
fn auth_settings(config: &Config) -> Result<Option<ShardAuthSettings>, String> {
    let a = &config.authentication;
    if !a.enabled {
        return Ok(None);
    }
    let section = "[module::Authentication]";
    // Config::load refuses enabled=true without file-path; checked again for other callers.
    let path = a
        .file_path
        .as_deref()
        .ok_or(format!("{section} enabled=true needs file-path"))?;
    let db = read_password_file(path)?;
    let secret = if a.nonce_secret.is_empty() {
        random_secret(RANDOM_SECRET_BYTES).map_err(|e| {
            format!(
                "{section} nonce-secret is empty and no random secret could be read from \
                 /dev/urandom ({e}); set nonce-secret"
            )
        })?
    } else {
        a.nonce_secret.expose().as_bytes().to_vec()
    };
    // Cluster nodes relay each other's requests: they are trusted like trusted-hosts.
    let mut trusted = a.trusted_hosts.clone();
    if config.cluster.enabled {
        for node in &config.cluster.nodes {
            if !trusted.contains(node) {
                trusted.push(*node);
            }
        }
    }
    let algorithms: Vec<&str> = a.available_algorithms.iter().map(|x| x.name()).collect();
    let settings = AuthSettings::new(
        &a.auth_domains.join(" "),
        &algorithms.join(" "),
        a.nonce_expires.as_secs(),
        &secret,
        &trusted,
    )
    .map_err(|e| format!("{section} {e}"))?;
    let db = Arc::new(db);
    // Every shard builds its own from these; a refusal must stop the node here, not a shard.
    Authenticator::new(settings.clone(), Arc::clone(&db), 0)
        .map_err(|e| format!("{section} {e}"))?;
    for algorithm in &settings.algorithms {
        let missing = db.users_without(*algorithm);
        if missing.is_empty() {
            continue;
        }
        let shown = missing.len().min(MAX_USERS_IN_WARNING);
        let more = missing.len() - shown;
        tracing::warn!(
            "{section} {} of {} users in {} have no password or hash for {algorithm}: {}{}; \
             a phone choosing {algorithm} will fail to authenticate for them",
            missing.len(),
            db.len(),
            path.display(),
            missing[..shown].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(Some(ShardAuthSettings { settings, db }))
}

/// Reads and parses the password file; errors name the file and, for its content, the line.
pub fn read_password_file(path: &Path) -> Result<PasswordDb, String> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| format!("[module::Authentication] file-path {shown}: cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PASSWORD_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("[module::Authentication] file-path {shown}: cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE_BYTES {
        return Err(format!(
            "[module::Authentication] file-path {shown}: larger than {MAX_PASSWORD_FILE_BYTES} bytes"
        ));
    }
    // The error names the line and never quotes its content (it may hold a password).
    PasswordDb::parse(&bytes).map_err(|e| {
        format!(
            "[module::Authentication] file-path {shown}:{}: {}",
            e.line, e.kind
        )
    })
}

/// `bytes` bytes from the kernel's random source: a `nonce-secret` for a node that runs alone,
/// the flow-token key of a cluster node.
fn random_secret(bytes: usize) -> std::io::Result<Vec<u8>> {
    let mut secret = vec![0; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

fn seconds(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(ini: &str, listens: &[(Transport, &str)]) -> Result<ClusterSettings, String> {
        let config = Config::from_ini_str(ini, "test.conf").expect("a valid configuration");
        let listens: Vec<(Transport, SocketAddr)> = listens
            .iter()
            .map(|(t, a)| (*t, a.parse().expect("an address")))
            .collect();
        cluster_settings(&config, &listens).map(|c| c.expect("[cluster] enabled"))
    }

    const NODES: &str = "[cluster]\nenabled=true\nnodes=127.0.0.2 127.0.0.3\n";

    #[test]
    fn the_internal_address_is_given_or_found_among_the_listens() {
        let given = cluster(
            &format!("{NODES}internal-transport=sip:127.0.0.3:5070;transport=tcp\n"),
            &[
                (Transport::Udp, "0.0.0.0:5060"),
                (Transport::Tcp, "0.0.0.0:5070"),
            ],
        )
        .unwrap();
        assert_eq!(
            given.internal_uri(None),
            "<sip:127.0.0.3:5070;transport=tcp;lr>"
        );
        let err = cluster(
            &format!("{NODES}internal-transport=sip:127.0.0.3:5080;transport=tcp\n"),
            &[(Transport::Tcp, "0.0.0.0:5070")],
        )
        .unwrap_err();
        assert!(err.contains("does not listen there"), "{err}");

        // The seed: a host name in transports (resolved to one of nodes), no internal-transport.
        let resolved = cluster(
            NODES,
            &[
                (Transport::Tls, "192.0.2.1:5061"),
                (Transport::Tls, "127.0.0.2:5061"),
            ],
        )
        .unwrap();
        assert_eq!(
            resolved.internal_uri(None),
            "<sip:127.0.0.2:5061;transport=tls;lr>"
        );
        // sip:* — the first node address that is one of this host's (all of 127/8 is).
        let any = cluster(NODES, &[(Transport::Udp, "0.0.0.0:5060")]).unwrap();
        assert_eq!(any.internal_uri(None), "<sip:127.0.0.2:5060;lr>");
        let err = cluster(
            "[cluster]\nenabled=true\nnodes=192.0.2.7\n",
            &[(Transport::Udp, "0.0.0.0:5060")],
        )
        .unwrap_err();
        assert!(err.contains("needs internal-transport"), "{err}");
    }
}
