//! The configuration as an operator meets it: real files, `--set` overrides, and the one-line
//! errors the binary prints.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sipshard_engine::auth::Algorithm;
use sipshard_engine::config::{
    AuthDbImplementation, Config, ConfigError, ConfigErrorKind, DbImplementation, Listen,
    ListenHost, Location, LogLevel, Transport,
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/sipshard.conf");

/// The configuration of the seed deployment, as written there.
const SEED: &str = "[global]\ntransports=sips:host1.example.org\n[module::Registrar]\nreg-domains=mydomain.com\ndb-implementation=redis\nredis-server-domain=10.0.0.1\nredis-server-port=6379\nredis-auth-password=ComplicatedPassWord123456789\n[cluster]\nenabled=true\nnodes=10.0.0.1 10.0.0.2 10.0.0.3\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_ini_str(text, "test.conf")
}

/// The one-line message for `text`, which must be refused.
fn refusal(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted {text:?}: {config:?}"),
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "one line: {message}");
            message
        }
    }
}

fn overrides(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A file under cargo's per-test scratch directory.
fn scratch_file(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn seed_deployment_loads_as_written() {
    let c = parse(SEED).unwrap();
    assert_eq!(
        c.global.transports,
        [Listen {
            transport: Transport::Tls,
            host: ListenHost::Name("host1.example.org".into()),
            port: 5061,
            uri: "sips:host1.example.org".into(),
        }]
    );
    assert_eq!(c.registrar.reg_domains, ["mydomain.com"]);
    assert_eq!(c.registrar.db_implementation, DbImplementation::Redis);
    assert_eq!(c.registrar.redis_server_domain, "10.0.0.1");
    assert_eq!(c.registrar.redis_server_port, 6379);
    assert_eq!(
        c.registrar.redis_auth_password.expose(),
        "ComplicatedPassWord123456789"
    );
    assert!(c.cluster.enabled);
    assert_eq!(
        c.cluster.nodes,
        [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
    );
    // Everything not written keeps its default.
    let d = Config::default();
    assert_eq!(c.global.sip_t1, d.global.sip_t1);
    assert_eq!(c.registrar.max_expires, d.registrar.max_expires);
    assert_eq!(c.forward, d.forward);
}

#[test]
fn the_password_never_shows() {
    let c = parse(SEED).unwrap();
    for shown in [format!("{c:?}"), format!("{:?}", c.registrar)] {
        assert!(!shown.contains("ComplicatedPassWord"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }
    // Not in errors either, even when the override around it is wrong.
    let e = Config::load(
        None,
        &overrides(&["module::Registrar/redis-auth-pasword=ComplicatedPassWord"]),
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("ComplicatedPassWord"), "{e}");
    assert!(e.contains("did you mean redis-auth-password?"), "{e}");
    let e = refusal("[module::Registrar]\nredis-auth-password ComplicatedPassWord\n");
    assert!(!e.contains("ComplicatedPassWord"), "{e}");
}

#[test]
fn example_file_loads() {
    let c = Config::load(Some(Path::new(EXAMPLE)), &[]).unwrap();
    let listens: Vec<String> = c.global.transports.iter().map(|l| l.to_string()).collect();
    assert_eq!(listens, ["UDP *:5060", "TCP *:5060"]);
    assert_eq!(c.global.aliases, ["sip.example.org"]);
    assert_eq!(c.registrar.reg_domains, ["example.org"]);
    assert_eq!(c.registrar.db_implementation, DbImplementation::Internal);
    assert_eq!(c.registrar.min_expires, Duration::from_secs(60));
    assert_eq!(c.registrar.default_expires, Duration::from_secs(600));
    assert_eq!(c.registrar.max_expires, Duration::from_secs(86400));
    assert!(!c.forward.allow_foreign_domains);
    assert!(!c.authentication.enabled);
    assert_eq!(c.authentication.auth_domains, ["example.org"]);
    assert_eq!(
        c.authentication.file_path.as_deref(),
        Some(Path::new("/etc/sipshard/passwords"))
    );
    assert!(!c.cluster.enabled);
}

#[test]
fn names_are_case_insensitive_and_values_trimmed() {
    let c = parse(
        "\u{feff}  [GLOBAL]  \r\n\
         # a comment\r\n\
         ; another\r\n\
         \tThreads =  4 \r\n\
         LOG-LEVEL=Debug\r\n\
         [Module::registrar] ; trailing comment\r\n\
         Reg-Domains = Example.ORG *\r\n\
         DB-Implementation=REDIS\r\n\
         redis-server-domain = redis.example.org\r\n\
         [module::forward]\r\n\
         Allow-Foreign-Domains=YES\r\n\
         [CLUSTER]\r\n\
         ENABLED=1\r\n\
         Nodes=10.0.0.1,10.0.0.2,\t::1\r\n",
    )
    .unwrap();
    assert_eq!(c.global.threads, 4);
    assert_eq!(c.global.log_level, LogLevel::Debug);
    assert_eq!(c.registrar.reg_domains, ["example.org", "*"]);
    assert_eq!(c.registrar.db_implementation, DbImplementation::Redis);
    assert!(c.forward.allow_foreign_domains);
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.nodes, [ip("10.0.0.1"), ip("10.0.0.2"), ip("::1")]);
}

#[test]
fn durations_and_lists() {
    let c = parse(
        "[global]\n\
         sip-t1=250\n\
         sip-t2=2s\n\
         sip-t4=5000ms\n\
         transports=sip:*:5060 sips:host1.example.org,sip:[::1]:5070;transport=tcp\n\
         aliases=sip.example.org  proxy.example.org\n\
         [module::Registrar]\n\
         min-expires=1min\n\
         default-expires=10min\n\
         max-expires=1d\n",
    )
    .unwrap();
    assert_eq!(c.global.sip_t1, Duration::from_millis(250));
    assert_eq!(c.global.sip_t2, Duration::from_secs(2));
    assert_eq!(c.global.sip_t4, Duration::from_secs(5));
    let listens: Vec<String> = c.global.transports.iter().map(|l| l.to_string()).collect();
    assert_eq!(
        listens,
        [
            "UDP *:5060",
            "TCP *:5060",
            "TLS host1.example.org:5061",
            "TCP [::1]:5070"
        ]
    );
    assert_eq!(c.global.aliases, ["sip.example.org", "proxy.example.org"]);
    assert_eq!(c.registrar.min_expires, Duration::from_secs(60));
    assert_eq!(c.registrar.default_expires, Duration::from_secs(600));
    assert_eq!(c.registrar.max_expires, Duration::from_secs(86400));

    let c = parse("[module::Registrar]\nmax-expires=3600\nmin-expires=0\ndefault-expires=1h\n")
        .unwrap();
    assert_eq!(c.registrar.max_expires, Duration::from_secs(3600));
    assert_eq!(c.registrar.min_expires, Duration::ZERO);
    let c = parse("[global]\naliases=\n[cluster]\nnodes=\n").unwrap();
    assert!(c.global.aliases.is_empty() && c.cluster.nodes.is_empty());
}

#[test]
fn unknown_section() {
    let e = refusal("[global]\nthreads=2\n[module::Registar]\n");
    assert_eq!(
        e,
        "test.conf:3: unknown section [module::Registar] (did you mean [module::Registrar]?)"
    );
    let e = refusal("[module::Router]\n");
    assert_eq!(
        e,
        "test.conf:1: unknown section [module::Router] (sections are [global], [module::Registrar], [module::Forward], [module::Authentication], [module::DoSProtection], [cluster])"
    );
}

#[test]
fn dos_protection_reads_flexisips_keys_and_units() {
    let c = parse(
        "[module::DoSProtection]\nenabled=true\npacket-rate-limit=50\ntime-period=1000\n\
         ban-time=5\nwhite-list=192.0.2.1 2001:db8::1\n",
    )
    .unwrap();
    let d = &c.dos_protection;
    assert!(d.enabled);
    assert_eq!(d.packet_rate_limit, 50);
    // Bare numbers: milliseconds for time-period, minutes for ban-time, as in Flexisip.
    assert_eq!(d.time_period, Duration::from_secs(1));
    assert_eq!(d.ban_time, Duration::from_secs(300));
    assert_eq!(d.white_list.len(), 2);
    assert!(refusal("[module::DoSProtection]\nban-time=30s\n").contains("whole number of minutes"));
    assert!(
        refusal("[module::DoSProtection]\npacket-rate-limit=0\n").contains("packet-rate-limit")
    );
    assert!(
        refusal("[module::DoSProtection]\nwhite-list=sip.example.org\n")
            .contains("not an IP address")
    );
    let c =
        parse("[global]\nmax-connections-per-address=4\nmax-connections-per-shard=100\n").unwrap();
    assert_eq!(c.global.max_connections_per_address, 4);
    assert_eq!(c.global.max_connections_per_shard, 100);
}

#[test]
fn unknown_key_names_the_nearest() {
    let e = refusal("[module::Registrar]\n\nmax-expire=3600\n");
    assert_eq!(
        e,
        "test.conf:3: unknown key [module::Registrar] max-expire (did you mean max-expires?)"
    );
    let e = refusal("[global]\nreg-domains=example.org\n");
    assert_eq!(
        e,
        "test.conf:2: unknown key [global] reg-domains (did you mean [module::Registrar] reg-domains?)"
    );
    let e = refusal("[cluster]\nmaster=10.0.0.1\n");
    assert_eq!(
        e,
        "test.conf:2: unknown key [cluster] master (keys of [cluster] are enabled, cluster-domain, nodes, internal-transport)"
    );
    let err = parse("[global]\nthread=2\n").unwrap_err();
    assert_eq!(
        err.location,
        Some(Location::Line {
            origin: "test.conf".into(),
            line: 2
        })
    );
    assert!(matches!(
        err.kind,
        ConfigErrorKind::UnknownKey { section: "global", ref key, suggestion: Some(ref s) }
            if key == "thread" && s == "threads"
    ));
}

#[test]
fn bad_values_name_file_line_key_and_expectation() {
    assert_eq!(
        refusal("[module::Forward]\nallow-foreign-domains=maybe\n"),
        "test.conf:2: [module::Forward] allow-foreign-domains: expected true or false (or 1/0, yes/no), got \"maybe\""
    );
    assert_eq!(
        refusal("[module::Registrar]\nmax-expires=10 minutes\n"),
        "test.conf:2: [module::Registrar] max-expires: expected a duration: a whole number of seconds or with a unit (500ms, 30s, 10min, 1h, 1d), got \"10 minutes\""
    );
    assert_eq!(
        refusal("[global]\nsip-t1=1.5s\n"),
        "test.conf:2: [global] sip-t1: expected a duration: a whole number of milliseconds or with a unit (500ms, 30s, 10min, 1h, 1d), got \"1.5s\""
    );
    assert_eq!(
        refusal("[global]\ntransports=sip:127.0.0.1:5060;transport=sctp\n"),
        "test.conf:2: [global] transports: \"sip:127.0.0.1:5060;transport=sctp\" is not a URI to listen on: unknown transport \"sctp\" (expected udp, tcp, tls, ws or wss)"
    );
    assert_eq!(
        refusal("[global]\ntransports=sip:127.0.0.1:99999\n"),
        "test.conf:2: [global] transports: \"sip:127.0.0.1:99999\" is not a URI to listen on: not a valid URI"
    );
    assert_eq!(
        refusal("[global]\ntransports=\n"),
        "test.conf:2: [global] transports: expected at least one SIP URI to listen on, such as sip:*:5060"
    );
    assert_eq!(
        refusal("[global]\nthreads=-1\n"),
        "test.conf:2: [global] threads: expected a whole number from 0 to 1024, got \"-1\""
    );
    assert_eq!(
        refusal("[module::Registrar]\nredis-server-port=0\n"),
        "test.conf:2: [module::Registrar] redis-server-port: expected a port number from 1 to 65535, got \"0\""
    );
    assert_eq!(
        refusal("[module::Registrar]\ndb-implementation=mysql\n"),
        "test.conf:2: [module::Registrar] db-implementation: expected internal or redis, got \"mysql\""
    );
    assert_eq!(
        refusal("[module::Registrar]\nredis-server-domain=redis://10.0.0.1\n"),
        "test.conf:2: [module::Registrar] redis-server-domain: \"redis://10.0.0.1\" is not a host name or IP address"
    );
    assert_eq!(
        refusal("[module::Registrar]\nredis-server-domain=10.0.0.1 10.0.0.2\n"),
        "test.conf:2: [module::Registrar] redis-server-domain: expected one host name or IP address, got \"10.0.0.1 10.0.0.2\""
    );
    assert_eq!(
        refusal("[cluster]\nnodes=10.0.0.1 node2.example.org\n"),
        "test.conf:2: [cluster] nodes: \"node2.example.org\" is not an IP address"
    );
    assert_eq!(
        refusal("[module::Registrar]\nreg-domains=\n"),
        "test.conf:2: [module::Registrar] reg-domains: expected at least one domain, or * for any"
    );
    // Flexisip keeps a `#` after a value in the value; say so when that is why it fails.
    assert!(
        refusal("[module::Registrar]\nmax-expires=3600 # one hour\n")
            .ends_with("(a # after a value is part of it: put comments on their own line)")
    );
}

#[test]
fn inconsistent_expires() {
    assert_eq!(
        refusal("[module::Registrar]\nmin-expires=60\ndefault-expires=30\n"),
        "test.conf:3: [module::Registrar] min-expires (1min) is above default-expires (30s); expected min-expires <= default-expires <= max-expires"
    );
    assert_eq!(
        refusal("[module::Registrar]\nmax-expires=300\n"),
        "test.conf:2: [module::Registrar] default-expires (10min) is above max-expires (5min); expected min-expires <= default-expires <= max-expires"
    );
    // Blamed on the key set last, wherever the other one was set.
    let err = parse("[module::Registrar]\ndefault-expires=2h\n\nmax-expires=1h\n").unwrap_err();
    assert_eq!(
        err.location,
        Some(Location::Line {
            origin: "test.conf".into(),
            line: 4
        })
    );
    assert!(matches!(err.kind, ConfigErrorKind::Inconsistent { .. }));
}

#[test]
fn redis_sentinel_keys() {
    let c = parse(
        "[module::Registrar]\ndb-implementation=redis\n\
         redis-sentinel-addresses=127.0.0.1:26379 sentinel2.example.org:26380 [::1]:26381\n\
         redis-sentinel-master-name=flexi1\nredis-sentinel-password=SentinelPass\n\
         redis-username=sipshard\nredis-timeout=250\nredis-failover-hold=30s\n\
         redis-wait-replicas=1\nredis-replay-window=2s\n",
    )
    .unwrap();
    let r = &c.registrar;
    assert_eq!(
        r.redis_sentinel_addresses,
        [
            "127.0.0.1:26379",
            "sentinel2.example.org:26380",
            "[::1]:26381"
        ]
    );
    assert_eq!(r.redis_sentinel_master_name, "flexi1");
    assert_eq!(r.redis_sentinel_password.expose(), "SentinelPass");
    assert_eq!(r.redis_username, "sipshard");
    assert_eq!(r.redis_timeout, Duration::from_millis(250));
    assert_eq!(r.redis_failover_hold, Duration::from_secs(30));
    assert_eq!(r.redis_wait_replicas, 1);
    assert_eq!(r.redis_replay_window, Duration::from_secs(2));
    assert_eq!(
        refusal("[module::Registrar]\nredis-sentinel-addresses=127.0.0.1\n"),
        "test.conf:2: [module::Registrar] redis-sentinel-addresses: \"127.0.0.1\" is not host:port (IPv6 as [address]:port)"
    );
    assert_eq!(
        refusal("[module::Registrar]\nredis-sentinel-master-name=two words\n"),
        "test.conf:2: [module::Registrar] redis-sentinel-master-name: expected one word, got \"two words\""
    );
}

#[test]
fn other_consistency_checks() {
    assert_eq!(
        refusal("[global]\nsip-t1=5s\n"),
        "test.conf:2: [global] sip-t1 (5s) is above sip-t2 (4s); retransmissions start at T1 and are capped at T2"
    );
    assert_eq!(
        refusal("[module::Registrar]\ndb-implementation=redis\n"),
        "test.conf:2: [module::Registrar] db-implementation=redis needs redis-server-domain or redis-sentinel-addresses"
    );
    assert_eq!(
        refusal("[module::Registrar]\nredis-sentinel-addresses=127.0.0.1:26379\n"),
        "test.conf:2: [module::Registrar] redis-sentinel-addresses needs redis-sentinel-master-name (the name in the sentinels' `sentinel monitor <name> ...`)"
    );
    assert_eq!(
        refusal("[cluster]\nenabled=true\n"),
        "test.conf:2: [cluster] enabled=true needs the addresses of the nodes in nodes"
    );
}

#[test]
fn structural_errors() {
    assert_eq!(
        refusal("threads=2\n"),
        "test.conf:1: key threads comes before any [section] header"
    );
    assert_eq!(
        refusal("[global]\nthreads\n"),
        "test.conf:2: expected a [section] header, a # comment or key=value"
    );
    assert_eq!(
        refusal("[global\n"),
        "test.conf:1: expected a [section] header, a # comment or key=value"
    );
    assert_eq!(
        refusal("[global]\nthreads=2\n\n[Global]\nTHREADS=3\n"),
        "test.conf:5: [global] threads is set twice (first on line 2); keep one"
    );
}

#[test]
fn set_overrides_apply_after_the_file() {
    let path = scratch_file("overrides.conf", SEED);
    let c = Config::load(
        Some(&path),
        &overrides(&[
            "global/transports=sip:127.0.0.1:5070",
            "module::Registrar/max-expires=3600",
            "Module::Registrar/Max-Expires = 7200",
            "cluster/enabled=false",
        ]),
    )
    .unwrap();
    let listens: Vec<String> = c.global.transports.iter().map(|l| l.to_string()).collect();
    assert_eq!(listens, ["UDP 127.0.0.1:5070", "TCP 127.0.0.1:5070"]);
    assert_eq!(
        c.registrar.max_expires,
        Duration::from_secs(7200),
        "last wins"
    );
    assert!(!c.cluster.enabled);
    assert_eq!(c.registrar.reg_domains, ["mydomain.com"], "file kept");

    // Validated like the file, and blamed on the override.
    let e = Config::load(
        Some(&path),
        &overrides(&["module::Registrar/max-expires=5min"]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set module::Registrar/max-expires: [module::Registrar] default-expires (10min) is above max-expires (5min); expected min-expires <= default-expires <= max-expires"
    );
    let e = Config::load(None, &overrides(&["global/threads=many"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set global/threads: [global] threads: expected a whole number from 0 to 1024, got \"many\""
    );
    let e = Config::load(None, &overrides(&["globl/threads=2"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set globl/threads: unknown section [globl] (did you mean [global]?)"
    );
    let e = Config::load(None, &overrides(&["threads=2"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set \"threads\" is not SECTION/KEY=VALUE (e.g. module::Registrar/max-expires=3600)"
    );
    let e = Config::load(None, &overrides(&["global/threads"])).unwrap_err();
    assert!(matches!(e.kind, ConfigErrorKind::BadOverride { .. }));
}

#[test]
fn load_without_a_file_is_the_default() {
    assert_eq!(Config::load(None, &[]).unwrap(), Config::default());
}

#[test]
fn unreadable_file() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-file.conf");
    let e = Config::load(Some(&missing), &[]).unwrap_err();
    assert!(matches!(e.kind, ConfigErrorKind::Read { .. }));
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: cannot read the configuration: ",
            missing.display()
        )),
        "{message}"
    );
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("binary.conf");
    std::fs::write(&binary, b"[global]\nthreads=\xff\n").unwrap();
    assert_eq!(
        Config::load(Some(&binary), &[]).unwrap_err().to_string(),
        format!(
            "{}: cannot read the configuration: not UTF-8 text (byte 17)",
            binary.display()
        )
    );
    let e = Config::load(Some(Path::new("/dev/zero")), &[]).unwrap_err();
    assert!(e.to_string().ends_with("larger than 1048576 bytes"), "{e}");
}

#[test]
fn dump_default_round_trips() {
    let dump = Config::dump_default();
    assert_eq!(parse(&dump).unwrap(), Config::default());
    for key in [
        "transports=sip:127.0.0.1:5060",
        "threads=0",
        "aliases=",
        "sip-t1=500ms",
        "sip-t2=4s",
        "sip-t4=5s",
        "max-message-size=65536",
        "shard-queue-capacity=1024",
        "transaction-table-capacity=262144",
        "log-level=info",
        "reg-domains=localhost 127.0.0.1",
        "db-implementation=internal",
        "max-expires=86400",
        "min-expires=60",
        "default-expires=600",
        "max-contacts-by-aor=12",
        "redis-server-domain=",
        "redis-server-port=6379",
        "redis-auth-password=",
        "redis-username=",
        "redis-sentinel-addresses=",
        "redis-sentinel-master-name=",
        "redis-sentinel-password=",
        "redis-timeout=1s",
        "redis-failover-hold=20s",
        "redis-wait-replicas=0",
        "redis-replay-window=15s",
        "allow-foreign-domains=false",
        "enabled=false",
        "auth-domains=*",
        "available-algorithms=MD5",
        "db-implementation=file",
        "file-path=",
        "nonce-expires=300",
        "nonce-secret=",
        "trusted-hosts=",
        "nodes=",
    ] {
        let line = dump
            .lines()
            .position(|l| l == key)
            .unwrap_or_else(|| panic!("{key} missing"));
        let doc = dump.lines().nth(line - 1).unwrap();
        assert!(
            doc.starts_with("# ") && doc.len() > 10,
            "{key} has a doc: {doc:?}"
        );
    }
    for section in [
        "[global]",
        "[module::Registrar]",
        "[module::Forward]",
        "[module::Authentication]",
        "[cluster]",
    ] {
        assert!(dump.lines().any(|l| l == section), "{section}");
    }
    // The dump's own file, read back through `load`.
    let path = scratch_file("dump-default.conf", &dump);
    assert_eq!(Config::load(Some(&path), &[]).unwrap(), Config::default());
}

/// A Flexisip `[module::Authentication]` section, as a Flexisip deployment writes it.
const FLEXISIP_AUTH: &str = "[module::Authentication]\nenabled=true\nauth-domains=example.org sip.example.org\navailable-algorithms=MD5 SHA-256\ndb-implementation=file\nfile-path=/etc/flexisip/passwords\nnonce-expires=600\ntrusted-hosts=10.0.0.7\n";

#[test]
fn authentication_section_loads_as_flexisip_writes_it() {
    let c = parse(FLEXISIP_AUTH).unwrap();
    let a = &c.authentication;
    assert!(a.enabled);
    assert_eq!(a.auth_domains, ["example.org", "sip.example.org"]);
    assert_eq!(
        a.available_algorithms,
        [Algorithm::Sha256, Algorithm::Md5],
        "offered strongest first, whatever the order written"
    );
    assert_eq!(a.db_implementation, AuthDbImplementation::File);
    assert_eq!(
        a.file_path.as_deref(),
        Some(Path::new("/etc/flexisip/passwords"))
    );
    assert_eq!(a.nonce_expires, Duration::from_secs(600));
    assert!(a.nonce_secret.is_empty(), "random per start");
    assert_eq!(a.trusted_hosts, [ip("10.0.0.7")]);

    let d = Config::default().authentication;
    assert!(!d.enabled);
    assert_eq!(d.auth_domains, ["*"]);
    assert_eq!(d.available_algorithms, [Algorithm::Md5]);
    assert_eq!(d.file_path, None);
    assert_eq!(d.nonce_expires, Duration::from_secs(300));

    // A cluster shares one nonce secret; it never shows.
    let secret = "0123456789abcdef-cluster-secret";
    let c = parse(&format!(
        "{FLEXISIP_AUTH}nonce-secret={secret}\n[cluster]\nenabled=true\nnodes=10.0.0.1 10.0.0.2\n"
    ))
    .unwrap();
    assert_eq!(c.authentication.nonce_secret.expose(), secret);
    assert!(!format!("{c:?}").contains(secret));
}

#[test]
fn authentication_errors_are_one_line_and_name_the_key() {
    assert_eq!(
        refusal("[module::Authentication]\nenabled=true\n"),
        "test.conf:2: [module::Authentication] enabled=true needs file-path (the password file)"
    );
    assert_eq!(
        refusal("[module::Authentication]\ndb-implementation=soci\n"),
        "test.conf:2: [module::Authentication] db-implementation: expected file (a password file at file-path; sipshard reads no other password store), got \"soci\""
    );
    assert_eq!(
        refusal("[module::Authentication]\navailable-algorithms=MD5 SHA1\n"),
        "test.conf:2: [module::Authentication] available-algorithms: unknown algorithm \"SHA1\" (expected MD5, SHA-256, SHA-512-256 or their -sess variants)"
    );
    assert_eq!(
        refusal("[module::Authentication]\navailable-algorithms=\n"),
        "test.conf:2: [module::Authentication] available-algorithms: expected at least one algorithm: MD5, SHA-256 or SHA-512-256"
    );
    // The secret itself is never quoted, only its length.
    let e = refusal("[module::Authentication]\nnonce-secret=hunter2\n");
    assert_eq!(
        e,
        "test.conf:2: [module::Authentication] nonce-secret: expected at least 16 bytes (or nothing), got 7 bytes"
    );
    assert_eq!(
        refusal("[module::Authentication]\ntrusted-hosts=gw.example.org\n"),
        "test.conf:2: [module::Authentication] trusted-hosts: \"gw.example.org\" is not an IP address"
    );
    assert_eq!(
        refusal("[module::Authentication]\nnonce-expires=0\n"),
        "test.conf:2: [module::Authentication] nonce-expires: expected a duration from 1s to 1d, got \"0\""
    );
    assert_eq!(
        refusal(&format!(
            "{FLEXISIP_AUTH}[cluster]\nenabled=true\nnodes=10.0.0.1 10.0.0.2\n"
        )),
        "test.conf:10: [module::Authentication] enabled=true in a cluster needs nonce-secret, the same on every node (else each node refuses the others' nonces)"
    );
    let e = Config::load(None, &overrides(&["module::Authentication/enabled=yes"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set module::Authentication/enabled: [module::Authentication] enabled=true needs file-path (the password file)"
    );
    let e = refusal("[module::Authentication]\nfilepath=/etc/passwords\n");
    assert!(e.ends_with("(did you mean file-path?)"), "{e}");
}

/// `[cluster]` as Flexisip writes it: `cluster-domain`, `nodes`, and `internal-transport`, the
/// URI the other nodes reach this one at (an IP address: nodes reach each other without DNS).
#[test]
fn cluster_keys() {
    let c = parse(
        "[cluster]\nenabled=true\n\
         cluster-domain=Example.ORG\nnodes=10.0.0.1 10.0.0.2\n\
         internal-transport=sip:10.0.0.1:5070;transport=tcp\n",
    )
    .unwrap();
    assert_eq!(c.cluster.cluster_domain, "example.org");
    let internal = c.cluster.internal_transport.expect("internal-transport");
    assert_eq!(
        (internal.transport, internal.host, internal.port),
        (Transport::Tcp, ListenHost::Ip(ip("10.0.0.1")), 5070)
    );
    // A sip: URI without transport= is UDP there (RFC 3263 §4.1).
    let c = parse("[cluster]\ninternal-transport=sip:10.0.0.1\n").unwrap();
    let internal = c.cluster.internal_transport.expect("internal-transport");
    assert_eq!((internal.transport, internal.port), (Transport::Udp, 5060));
    // The seed's [cluster] has none: the node takes its transports address among nodes.
    let seed = parse(SEED).unwrap();
    assert!(seed.cluster.enabled && seed.cluster.internal_transport.is_none());

    for bad in ["sip:node1.example.org", "sip:*:5060", "10.0.0.1:5060"] {
        let e = refusal(&format!("[cluster]\ninternal-transport={bad}\n"));
        assert!(
            e.starts_with("test.conf:2: [cluster] internal-transport: "),
            "{bad}: {e}"
        );
    }
}

/// `configs/cluster/`: each host's file loads, names the three nodes and an internal address
/// that is its own.
#[test]
fn the_cluster_example_loads() {
    for host in 1..=3 {
        let path = format!(
            "{}/../configs/cluster/host{host}/sipshard.conf",
            env!("CARGO_MANIFEST_DIR")
        );
        let c = Config::load(Some(Path::new(&path)), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.cluster.enabled);
        assert_eq!(
            c.cluster.nodes,
            [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]
        );
        let internal = c.cluster.internal_transport.expect("internal-transport");
        assert_eq!(internal.host, ListenHost::Ip(ip(&format!("10.0.0.{host}"))));
        assert_eq!(c.registrar.db_implementation, DbImplementation::Redis);
        assert_eq!(c.global.aliases, [format!("host{host}.example.org")]);
    }
}
