//! The shard-core settings the sans-IO core tests share: one node on 127.0.0.1:5060 (UDP),
//! registrar and proxy for `example.org`, bindings in memory, no authentication. A test changes
//! what it needs with struct update syntax (`CoreSettings { auth: …, ..core_settings() }`).

use sipshard_engine::core::{CoreSettings, RegistrarDb};
use sipshard_engine::routing::LocalIdentity;
use sipshard_engine::transaction::TimerConfig;
use sipshard_net::Transport;
use sipshard_registrar::{Domains, RegistrarConfig};

pub fn core_settings() -> CoreSettings {
    CoreSettings {
        identity: LocalIdentity {
            hosts: vec!["127.0.0.1".into()],
            ports: vec![5060],
            domains: vec!["example.org".into()],
            any_domain: false,
            allow_foreign_domains: false,
        },
        registrar: RegistrarConfig {
            domains: Domains::list(["example.org"]).expect("a domain"),
            max_expires_s: 86_400,
            min_expires_s: 60,
            default_expires_s: 600,
            max_contacts_per_aor: 12,
            max_aors_per_shard: 1024,
        },
        timers: TimerConfig::default(),
        transaction_capacity: 1024,
        max_waiting: 64,
        advertised_host: "127.0.0.1".into(),
        ports: vec![(Transport::Udp, 5060)],
        auth: None,
        registrar_db: RegistrarDb::Memory,
        cluster: None,
    }
}
