//! The read-compare-write steps as Lua scripts (one `EVAL` each, atomic against other
//! writers), queued on the batch's pipeline.

use fred::clients::Pipeline;
use fred::prelude::{Client, ClientLike};
use fred::types::{ClusterHash, CustomCommand};

use super::map_error;
use crate::BackendError;

/// KEYS[1] = `devices:last_seen`, KEYS[2..] = `device:{id}:latest`;
/// ARGV = (id, ts_ms, json) per key. Stores a reading unless a newer one is stored.
pub(super) const PUT_LATEST_SCRIPT: &str = r#"
local stored = 0
for i = 2, #KEYS do
  local j = (i - 2) * 3
  local id, ts = ARGV[j + 1], ARGV[j + 2]
  local seen = redis.call('HGET', KEYS[1], id)
  if (not seen) or tonumber(seen) <= tonumber(ts) or redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SET', KEYS[i], ARGV[j + 3])
    redis.call('HSET', KEYS[1], id, ts)
    stored = stored + 1
  end
end
return stored
"#;

/// KEYS[1] = `alerts`, KEYS[2] = `alerts:by_id`; ARGV[1] = cap, then (id, json) pairs.
/// Replaces the older entry of the same id, pushes newest first, trims to the cap and
/// forgets the ids trimmed away (so `alerts:by_id` stays as bounded as the list).
pub(super) const PUSH_ALERTS_SCRIPT: &str = r#"
local cap = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local previous = redis.call('HGET', KEYS[2], ARGV[i])
  if previous then
    redis.call('LREM', KEYS[1], 0, previous)
  end
  redis.call('LPUSH', KEYS[1], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
for _, json in ipairs(redis.call('LRANGE', KEYS[1], cap, -1)) do
  local ok, alert = pcall(cjson.decode, json)
  if ok and type(alert) == 'table' and type(alert.id) == 'string'
      and redis.call('HGET', KEYS[2], alert.id) == json then
    redis.call('HDEL', KEYS[2], alert.id)
  end
end
redis.call('LTRIM', KEYS[1], 0, cap - 1)
return redis.call('LLEN', KEYS[1])
"#;

/// KEYS[1] = `devices:metrics`, KEYS[2..] = `device:{id}:metrics`; ARGV = the ids.
/// Removes ids whose metrics key has expired; atomic, so an id re-added by a concurrent
/// `put_metrics` is never removed.
pub(super) const PRUNE_METRICS_SCRIPT: &str = r#"
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('SREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
"#;

/// Queues `EVAL script keys… args…` on a pipeline. (`fred` offers `eval` on clients but
/// not on pipelines; as a custom command it travels with the rest of the batch.)
pub(super) async fn queue_eval(
    pipeline: &Pipeline<Client>,
    script: &'static str,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<(), BackendError> {
    let mut command = Vec::with_capacity(2 + keys.len() + args.len());
    command.push(script.to_owned());
    command.push(keys.len().to_string());
    command.extend(keys);
    command.extend(args);
    // Offset 2: the first key, for a cluster-aware router.
    let eval = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
    pipeline.custom(eval, command).await.map_err(map_error)
}
