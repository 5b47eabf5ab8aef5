//! Start-up: one glommio executor per shard, pinned to its core, joined by a bounded channel
//! mesh. The node is either fully up (every shard bound every listen address) or not started:
//! a failure on any shard stops the process with one clear error.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use sipshard_registrar::ha::HaConfig;
use sipshard_registrar::redis_thread::RedisThread;

use crate::core::{CoreSettings, ShardCore};
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
}

/// Glommio registers this much memory per shard for storage I/O; the node does none, so the
/// minimum keeps the node far under an 8 MiB `ulimit -l`.
const IO_MEMORY_BYTES: usize = 64 * 1024;

/// Ring depth per shard: network operations in flight at once.
const RING_DEPTH: usize = 256;

/// Registrar writes one shard may have in flight to the Redis thread (beyond: 503).
const REDIS_WRITES_PER_SHARD: usize = 16_384;

impl Node {
    pub fn start(options: NodeOptions) -> Result<Node, String> {
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
        let mesh = MeshBuilder::full(options.shards, options.queue_capacity);
        let (bound_tx, bound_rx) = mpsc::channel();
        let mut handles = Vec::new();
        for (id, link) in links.into_iter().enumerate() {
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
                    shard::run(id, core, runtime, mesh, link, password_reload, bound).await;
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
        Ok(Node { handles, redis })
    }

    /// Waits for the shards (they run until the process ends), then stops the Redis thread.
    pub fn join(self) {
        for handle in self.handles {
            let _ = handle.join();
        }
        if let Some(redis) = self.redis {
            redis.shutdown();
        }
    }
}

/// Pins shard `id` to core `id` when that core exists for this process.
fn core_affinity_available(id: usize) -> bool {
    std::thread::available_parallelism().is_ok_and(|n| id < n.get())
}
