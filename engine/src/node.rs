//! Start-up: one glommio executor per shard, pinned to its core, joined by a bounded channel
//! mesh. The node is either fully up (every shard bound every listen address) or not started:
//! a failure on any shard stops the process with one clear error. And the end: [`Node::run`]
//! waits for a stop signal and carries out the graceful stop of [`crate::lifecycle`].

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use sipshard_registrar::ha::HaConfig;
use sipshard_registrar::redis_thread::RedisThread;
use tracing::{info, warn};

use crate::admin::{self, Observed};
use crate::core::{CoreSettings, ShardCore};
use crate::lifecycle::{Lifecycle, Phase};
use crate::reload::PasswordReload;
use crate::shard::{self, RuntimeSettings};

/// Everything the shards need, derived once from the configuration.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub shards: usize,
    /// Bound of each shard-to-shard channel.
    pub queue_capacity: usize,
    pub runtime: RuntimeSettings,
    pub core: CoreSettings,
    /// The Redis HA registrar (`db-implementation=redis`); `None` keeps bindings in memory.
    pub redis: Option<HaConfig>,
    /// The password file, re-read on SIGHUP (with authentication enabled).
    pub password_reload: Option<Arc<PasswordReload>>,
}

/// A running node.
pub struct Node {
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Owns every Redis connection, in Redis mode.
    redis: Option<RedisThread>,
    lifecycle: Arc<Lifecycle>,
    /// What the admin endpoint reads.
    observed: Observed,
}

/// Glommio registers this much memory per shard for storage I/O; the node does none, so the
/// minimum keeps the node far under an 8 MiB `ulimit -l`.
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// Ring depth per shard: network operations in flight at once.
const RING_DEPTH: usize = 256;

/// Registrar writes one shard may have in flight to the Redis thread (beyond: 503).
const REDIS_WRITES_PER_SHARD: usize = 16_384;

/// How often the main thread looks at the lifecycle while it waits for the node to stop.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How long the shards keep running once nothing is in progress any more, within the grace
/// period: the ACK of a 2xx just relayed, and a CANCEL or BYE already on its way, still pass.
const DRAIN_LINGER: Duration = Duration::from_millis(300);

/// The least time the Redis journal gets to flush after the shards stopped, whatever is left
/// of the grace period.
const MIN_FLUSH: Duration = Duration::from_secs(1);

impl Node {
    /// Starts the shards (and the Redis thread in Redis mode); `grace` is how long a stop
    /// signal lets requests in progress finish ([`Node::run`]).
    pub fn start(options: NodeOptions, grace: Duration) -> Result<Node, String> {
        let (redis, mut links) = match options.redis.clone() {
            Some(ha) => {
                let (thread, links) =
                    RedisThread::start(ha, options.shards, REDIS_WRITES_PER_SHARD)
                        .map_err(|e| format!("cannot start the Redis thread: {e}"))?;
                (Some(thread), links.into_iter().map(Some).collect())
            }
            None => (None, Vec::new()),
        };
        links.resize_with(options.shards, || None);
        let lifecycle = Arc::new(Lifecycle::new(options.shards, grace));
        let (observed, ops) =
            admin::wire(lifecycle.clone(), redis.as_ref().map(RedisThread::observer));
        let mesh = MeshBuilder::full(options.shards, options.queue_capacity);
        let (bound_tx, bound_rx) = mpsc::channel();
        let mut handles = Vec::new();
        for (id, (link, ops)) in links.into_iter().zip(ops).enumerate() {
            let mesh = mesh.clone();
            let bound = bound_tx.clone();
            let runtime = options.runtime.clone();
            let core_settings = options.core.clone();
            let password_reload = options.password_reload.clone();
            let shards = options.shards;
            let placement = match core_affinity_available(id) {
                true => Placement::Fixed(id),
                false => Placement::Unbound,
            };
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .io_memory(IO_MEMORY_BYTES)
                .ring_depth(RING_DEPTH)
                .spawn(move || async move {
                    let core = ShardCore::new(id, shards, core_settings);
                    shard::run(id, core, runtime, mesh, link, password_reload, ops, bound)
                        .await;
                })
                .map_err(|e| {
                    format!(
                        "cannot start shard {id}: {e} (sipshard needs io_uring — Linux 5.8 or later, \
                         not blocked by seccomp — and at least 512 KiB of `ulimit -l`)"
                    )
                })?;
            handles.push(handle);
        }
        drop(bound_tx);
        for _ in 0..options.shards {
            match bound_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("a shard did not start within 10 s".into()),
            }
        }
        Ok(Node {
            handles,
            redis,
            lifecycle,
            observed,
        })
    }

    /// The node's lifecycle, for the signal handler ([`Lifecycle::signal_stop`]).
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// What the admin endpoint needs ([`admin::start`]).
    pub fn observed(&self) -> Observed {
        self.observed.clone()
    }

    /// Runs until a stop signal, then stops gracefully: waits while the shards drain (until
    /// nothing is in progress, then [`DRAIN_LINGER`], or the grace period is over), stops them,
    /// flushes the Redis journal and stops the Redis thread.
    pub fn run(self) {
        let life = self.lifecycle.clone();
        while life.phase() == Phase::Running {
            std::thread::sleep(STOP_POLL);
        }
        let deadline = Instant::now() + life.grace();
        let mut drained_at = None;
        while life.phase() == Phase::Draining {
            let now = Instant::now();
            if now >= deadline {
                warn!("grace period over: stopping with requests still in progress");
                break;
            }
            if life.drained() {
                let at = *drained_at.get_or_insert(now);
                if now >= at + DRAIN_LINGER {
                    info!("drained: nothing in progress");
                    break;
                }
            } else {
                drained_at = None;
            }
            std::thread::sleep(STOP_POLL);
        }
        life.stop();
        for handle in self.handles {
            let _ = handle.join();
        }
        if let Some(redis) = self.redis {
            let flushed = redis.flush(deadline.max(Instant::now() + MIN_FLUSH));
            if flushed {
                info!("redis journal flushed");
            }
            redis.shutdown();
        }
        info!("stopped");
    }
}

/// Pins shard `id` to core `id` when that core exists for this process.
fn core_affinity_available(id: usize) -> bool {
    std::thread::available_parallelism().is_ok_and(|n| id < n.get())
}
