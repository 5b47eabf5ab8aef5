//! The registrar's Redis layout and scripts against real Redis processes (the lab).

#[path = "support/redis_lab.rs"]
mod redis_lab;

use std::time::{Duration, Instant};

use redis_lab::{LabOptions, RedisLab};

/// Validates the lab for the HA end-to-end tests: with 3 servers and 3 sentinels (quorum 2),
/// SIGKILL of the master makes the sentinels promote a replica, and the helpers report it.
#[test]
fn lab_failover_after_master_kill() {
    let mut lab = RedisLab::start(LabOptions::ha());
    let old = lab.redis_addr(0);
    assert_eq!(lab.current_master_per_sentinels(), vec![Some(old); 3]);
    let killed = Instant::now();
    lab.kill(0);
    let new = lab.wait_for_failover(old, Duration::from_secs(20));
    eprintln!("failover to redis-{new} after {:?}", killed.elapsed());
    assert_ne!(new, 0);
    assert_eq!(
        lab.current_master_per_sentinels(),
        vec![Some(lab.redis_addr(new)); 3]
    );
    let other = 3 - new;
    lab.wait_replicas_in_sync(new, Duration::from_secs(20));
    assert_eq!(lab.role(other).as_deref(), Some("slave"));
}
