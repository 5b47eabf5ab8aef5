//! One Redis connection as a task, and the mapping between the client's logical commands and
//! replies and redis-rs's RESP encoding and values.
//!
//! A connection task is a dumb pipe: it connects (with a timeout), then writes the packed
//! commands the driver gives it, in order and coalesced into as few writes as possible, while it
//! reads replies and hands each one to the driver as it is parsed. Redis answers a connection's
//! requests in the order sent, and the task preserves that order end to end (one writer, one
//! reader, one ordered channel to the driver), so the driver matches replies to request ids by
//! position. (redis-rs's `MultiplexedConnection` does not promise that order across concurrent
//! callers, and it runs its own handshake; the client must run `AUTH` itself, first.)
//!
//! The task ends when the connection fails (it reports why) or when the driver drops its
//! command sender or aborts it (a `Close` from the client: nothing to report).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::ha::{ConnId, RedisCommand, Reply, Write};

/// The most bytes of queued commands written in one system call.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What a connection task reports.
#[derive(Debug)]
pub(super) enum ConnEvent {
    Connected,
    ConnectFailed(String),
    /// One reply (or pub/sub message), in the order received.
    Value(redis::Value),
    /// The connection broke after it was established.
    Closed(String),
}

/// Runs one connection until it fails or the driver drops `commands`.
pub(super) async fn run(
    conn: ConnId,
    addr: Arc<str>,
    connect_timeout: Duration,
    mut commands: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::Sender<(ConnId, ConnEvent)>,
) {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(&*addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let _ = events
                .send((conn, ConnEvent::ConnectFailed(e.to_string())))
                .await;
            return;
        }
        Err(_) => {
            let why = format!("no connection within {connect_timeout:?}");
            let _ = events.send((conn, ConnEvent::ConnectFailed(why))).await;
            return;
        }
    };
    // Requests are small and latency matters more than packet count.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%addr, "TCP_NODELAY: {e}");
    }
    if events.send((conn, ConnEvent::Connected)).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    let reader = async {
        let mut decoder = combine::stream::Decoder::new();
        loop {
            match redis::parse_redis_value_async(&mut decoder, &mut rd).await {
                Ok(value) => {
                    if events.send((conn, ConnEvent::Value(value))).await.is_err() {
                        return None;
                    }
                }
                Err(e) => return Some(e.to_string()),
            }
        }
    };
    let writer = async {
        let mut batch = Vec::new();
        while let Some(first) = commands.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH_BYTES {
                match commands.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if let Err(e) = wr.write_all(&batch).await {
                return Some(e.to_string());
            }
        }
        None
    };
    let broken = tokio::select! {
        why = reader => why,
        why = writer => why,
    };
    if let Some(why) = broken {
        let _ = events.send((conn, ConnEvent::Closed(why))).await;
    }
}

/// The RESP encoding of a command.
pub(super) fn pack(cmd: &RedisCommand) -> Vec<u8> {
    let mut c;
    match cmd {
        RedisCommand::Auth { username, password } => {
            c = redis::cmd("AUTH");
            if let Some(user) = username {
                c.arg(user.as_str());
            }
            c.arg(password.as_str());
        }
        RedisCommand::SentinelGetMasterAddrByName(name) => {
            c = redis::cmd("SENTINEL");
            c.arg("get-master-addr-by-name").arg(name.as_str());
        }
        RedisCommand::SentinelReplicas(name) => {
            c = redis::cmd("SENTINEL");
            c.arg("replicas").arg(name.as_str());
        }
        RedisCommand::Subscribe(channels) => {
            c = redis::cmd("SUBSCRIBE");
            for channel in channels {
                c.arg(channel.as_str());
            }
        }
        RedisCommand::Role => c = redis::cmd("ROLE"),
        RedisCommand::InfoReplication => {
            c = redis::cmd("INFO");
            c.arg("replication");
        }
        RedisCommand::ScriptLoad(source) => {
            c = redis::cmd("SCRIPT");
            c.arg("LOAD").arg(&**source);
        }
        RedisCommand::EvalSha { sha1, write } => {
            c = redis::cmd("EVALSHA");
            script_call(&mut c, sha1, write);
        }
        RedisCommand::EvalShaRo { sha1, read } => {
            c = redis::cmd("EVALSHA_RO");
            script_call(&mut c, sha1, read);
        }
        RedisCommand::Wait {
            replicas,
            timeout_ms,
        } => {
            c = redis::cmd("WAIT");
            c.arg(*replicas).arg(*timeout_ms);
        }
    }
    c.get_packed_command()
}

/// `<sha1> <numkeys> <keys..> <args..>`.
fn script_call(c: &mut redis::Cmd, sha1: &str, call: &Write) {
    c.arg(sha1).arg(call.keys.len());
    for key in &call.keys {
        c.arg(key.as_slice());
    }
    for arg in &call.args {
        c.arg(arg.as_slice());
    }
}

/// A redis-rs value as the client's [`Reply`]. The connections speak RESP2 (no `HELLO 3`), so
/// only its five types occur; the RESP3 ones are mapped to the nearest RESP2 shape.
pub(super) fn to_reply(value: redis::Value) -> Reply {
    use redis::Value as V;
    match value {
        V::Nil => Reply::Nil,
        V::Int(i) => Reply::Int(i),
        V::BulkString(b) => Reply::Bulk(b),
        V::SimpleString(s) => Reply::Status(s),
        V::Okay => Reply::Status("OK".into()),
        V::Array(items) | V::Set(items) => Reply::Array(items.into_iter().map(to_reply).collect()),
        V::Map(pairs) => Reply::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [to_reply(k), to_reply(v)])
                .collect(),
        ),
        V::Attribute { data, .. } => to_reply(*data),
        V::Push { kind, data } => {
            let mut items = vec![Reply::Bulk(kind.to_string().into_bytes())];
            items.extend(data.into_iter().map(to_reply));
            Reply::Array(items)
        }
        V::Double(d) => Reply::Bulk(d.to_string().into_bytes()),
        V::Boolean(b) => Reply::Int(i64::from(b)),
        V::VerbatimString { text, .. } => Reply::Bulk(text.into_bytes()),
        V::BigNumber(n) => Reply::Bulk(format!("{n:?}").into_bytes()),
        // `-CODE detail` as Redis sent it: the client reads the code (READONLY, LOADING..).
        V::ServerError(e) => Reply::Error(match e.details() {
            Some(detail) => format!("{} {detail}", e.code()),
            None => e.code().to_owned(),
        }),
        other => Reply::Error(format!("unsupported reply {other:?}")),
    }
}

/// A pub/sub `message` push as (channel, payload).
pub(super) fn as_message(value: &redis::Value) -> Option<(String, String)> {
    let redis::Value::Array(items) = value else {
        return None;
    };
    match items.as_slice() {
        [
            redis::Value::BulkString(kind),
            redis::Value::BulkString(channel),
            redis::Value::BulkString(payload),
        ] if kind.as_slice() == b"message" => Some((
            String::from_utf8_lossy(channel).into_owned(),
            String::from_utf8_lossy(payload).into_owned(),
        )),
        _ => None,
    }
}

/// Whether a value is a `subscribe` confirmation (one comes per channel subscribed).
pub(super) fn is_subscribe_confirmation(value: &redis::Value) -> bool {
    matches!(value, redis::Value::Array(items)
        if matches!(items.first(), Some(redis::Value::BulkString(k)) if k.as_slice() == b"subscribe"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::ScriptId;

    fn parse(bytes: &[u8]) -> redis::Value {
        redis::parse_redis_value(bytes).expect("valid RESP")
    }

    #[test]
    fn commands_pack_as_resp() {
        let auth = RedisCommand::Auth {
            username: Some("u".into()),
            password: "p".into(),
        };
        assert_eq!(pack(&auth), b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n");
        let write = Arc::new(Write {
            script: ScriptId(0),
            keys: vec![b"k".to_vec()],
            args: vec![b"a".to_vec(), b"b".to_vec()],
        });
        let eval = RedisCommand::EvalSha {
            sha1: "abc".into(),
            write,
        };
        assert_eq!(
            pack(&eval),
            b"*6\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        let RedisCommand::EvalSha { write, .. } = eval else {
            unreachable!()
        };
        let read = RedisCommand::EvalShaRo {
            sha1: "abc".into(),
            read: write,
        };
        assert_eq!(
            pack(&read),
            b"*6\r\n$10\r\nEVALSHA_RO\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            pack(&RedisCommand::SentinelReplicas("m".into())),
            b"*3\r\n$8\r\nSENTINEL\r\n$8\r\nreplicas\r\n$1\r\nm\r\n"
        );
        let wait = RedisCommand::Wait {
            replicas: 1,
            timeout_ms: 500,
        };
        assert_eq!(pack(&wait), b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$3\r\n500\r\n");
    }

    #[test]
    fn replies_map_to_the_clients_shape() {
        assert_eq!(to_reply(parse(b"+OK\r\n")), Reply::Status("OK".into()));
        assert_eq!(to_reply(parse(b":7\r\n")), Reply::Int(7));
        assert_eq!(to_reply(parse(b"$-1\r\n")), Reply::Nil);
        assert_eq!(
            to_reply(parse(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n")),
            Reply::Array(vec![
                Reply::Bulk(b"127.0.0.1".to_vec()),
                Reply::Bulk(b"6379".to_vec())
            ])
        );
        assert_eq!(
            to_reply(parse(
                b"-READONLY You can't write against a read only replica.\r\n"
            )),
            Reply::Error("READONLY You can't write against a read only replica.".into())
        );
        assert_eq!(
            to_reply(parse(b"-NOREPLICAS Not enough good replicas to write.\r\n")),
            Reply::Error("NOREPLICAS Not enough good replicas to write.".into())
        );
        assert_eq!(
            to_reply(parse(b"-WRONGPASS invalid username-password pair\r\n")),
            Reply::Error("WRONGPASS invalid username-password pair".into())
        );
    }

    #[test]
    fn pubsub_pushes_are_recognised() {
        let msg = parse(b"*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$5\r\nm a b\r\n");
        assert_eq!(
            as_message(&msg),
            Some(("+switch-master".into(), "m a b".into()))
        );
        assert!(!is_subscribe_confirmation(&msg));
        let sub = parse(b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
        assert!(is_subscribe_confirmation(&sub));
        assert_eq!(as_message(&sub), None);
        assert_eq!(as_message(&parse(b"+OK\r\n")), None);
    }
}
