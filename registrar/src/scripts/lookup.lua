#!lua flags=no-writes
-- sipshard: the live bindings of one AOR, read-only (EVALSHA_RO; runs on a replica too, so
-- lookups go on while no master is known). Layout: registrar/src/redis_data.rs.
--
-- KEYS[1]  the AOR's hash, sipshard:reg:{<aor>}
-- ARGV[1]  layout version, "1"
--
-- Reply: { server time in ms, { key, JSON, key, JSON, ... } } for the bindings whose expiry is
-- after the server's TIME. A replica may keep an expired key a little while (it waits for the
-- master's DEL), hence the filter.

if ARGV[1] ~= '1' then
  return redis.error_reply('ERR sipshard: lookup.lua speaks layout 1, not ' .. tostring(ARGV[1]))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reply = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local ok, rec = pcall(cjson.decode, flat[i + 1])
  if not ok or type(rec) ~= 'table' or rec.v ~= 1 or type(rec.exp) ~= 'number' then
    return redis.error_reply('ERR sipshard: binding ' .. flat[i] .. ' of ' .. KEYS[1]
      .. ' is not layout 1')
  end
  if rec.exp > now then
    reply[#reply + 1] = flat[i]
    reply[#reply + 1] = flat[i + 1]
  end
end
return { now, reply }
