#!lua
-- sipshard: one REGISTER applied to one AOR's bindings, atomically (RFC 3261 §10.3 steps 6-8).
-- Layout and callers: registrar/src/redis_data.rs. The shebang (no flags) declares that the
-- script writes: a replica refuses it with -READONLY, a master short of min-replicas-to-write with
-- -NOREPLICAS, before it runs, so a refused call has no effect.
--
-- KEYS[1]   the AOR's hash, sipshard:reg:{<aor>}: field = contact key, value = binding JSON
-- ARGV[1]   layout version, "1"
-- ARGV[2]   the AOR, published on sipshard:reg-changes when the hash changes
-- ARGV[3]   Call-ID              ARGV[4]  CSeq
-- ARGV[5]   "1" for Contact: *   ARGV[6]  max contacts per AOR
-- ARGV[7..] three per contact: contact key, granted interval in seconds (0 removes), payload
--           (the binding JSON without cid, cseq and times, which this script adds)
--
-- Time is the server's (TIME), never the caller's: a node with a skewed clock cannot expire
-- bindings early. Applying the same call again leaves the hash as it is (§10.3 step 7: a contact
-- whose bindings carry this Call-ID with a CSeq at least this one is left alone), so a client may
-- replay its journal after a failover.
--
-- Reply: { server time in ms, 1 if the hash changed else 0, { outcome per contact, or one for
-- * }, bindings evicted, { key, JSON, key, JSON, ... } (every live binding after the call) }.
-- Outcomes: added, refreshed, removed, absent (interval 0, nothing matched), stale (left alone).

local key, version, aor = KEYS[1], ARGV[1], ARGV[2]
local call_id, cseq = ARGV[3], tonumber(ARGV[4])
local star, max_contacts = ARGV[5] == '1', tonumber(ARGV[6])
if version ~= '1' then
  return redis.error_reply('ERR sipshard: register.lua speaks layout 1, not ' .. tostring(version))
end
if cseq == nil or max_contacts == nil or max_contacts < 1 or (#ARGV - 6) % 3 ~= 0 then
  return redis.error_reply('ERR sipshard: register.lua: malformed arguments')
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- §19.1.4 on the match forms ("m") the caller wrote: "b" holds scheme, user, password, host,
-- port and headers in a canonical form (compared whole); "p" the parameters, names and values
-- canonical (true for a parameter without value).
local MUST_MATCH = { user = true, ttl = true, method = true, maddr = true, transport = true }
local function uri_equivalent(a, b)
  if a.b ~= b.b then return false end
  for name, va in pairs(a.p) do
    local vb = b.p[name]
    if vb == nil then
      if MUST_MATCH[name] then return false end
    elseif vb ~= va then
      return false
    end
  end
  for name in pairs(MUST_MATCH) do
    if b.p[name] ~= nil and a.p[name] == nil then return false end
  end
  return true
end

-- RFC 5626 §6 and §10.3 step 7, as Binding::matches: same +sip.instance (and the same reg-id
-- when both have one), else equivalent URIs.
local function matches(stored, contact)
  if contact.inst ~= nil then
    return stored.inst ~= nil and string.lower(stored.inst) == string.lower(contact.inst)
      and (contact.rid == nil or stored.rid == nil or stored.rid == contact.rid)
  end
  return uri_equivalent(stored.m, contact.m)
end

-- §10.3 step 7: same Call-ID and a CSeq not above the stored one: an old or repeated request.
local function stale(stored)
  return stored.cid == call_id and cseq <= stored.cseq
end

local function decode(field, raw)
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' or rec.v ~= 1 or type(rec.exp) ~= 'number' then
    error('sipshard: binding ' .. field .. ' of ' .. key .. ' is not layout 1')
  end
  return rec
end

-- Lookup order: q descending (absent = 1000), then most recently updated first.
local function before(x, y)
  local qx, qy = x.rec.q or 1000, y.rec.q or 1000
  if qx ~= qy then return qx > qy end
  if x.rec.upd ~= y.rec.upd then return x.rec.upd > y.rec.upd end
  if x.rec.ord ~= y.rec.ord then return x.rec.ord > y.rec.ord end
  return x.field < y.field
end

-- Load; bindings whose time is up are gone already.
local stored_fields, live = {}, {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
  local field, raw = flat[i], flat[i + 1]
  stored_fields[field] = raw
  local rec = decode(field, raw)
  if rec.exp > now then
    live[#live + 1] = { field = field, rec = rec, raw = raw }
  end
end
table.sort(live, before)

local function without(list, drop)
  local kept = {}
  for _, e in ipairs(list) do
    if not drop[e] then kept[#kept + 1] = e end
  end
  return kept
end

local outcomes = {}
if star then
  -- §10.3 step 6 / §10.2.2: remove every binding, except those this request is older than.
  local drop, removed, kept_stale = {}, 0, 0
  for _, e in ipairs(live) do
    if stale(e.rec) then kept_stale = kept_stale + 1 else drop[e] = true; removed = removed + 1 end
  end
  live = without(live, drop)
  outcomes[1] = (kept_stale > 0 and 'stale') or (removed > 0 and 'removed') or 'absent'
end

-- §10.3 step 7, contact by contact in order.
for i = 7, #ARGV, 3 do
  local field, expires = ARGV[i], tonumber(ARGV[i + 1])
  local ok, contact = pcall(cjson.decode, ARGV[i + 2])
  if expires == nil or not ok or type(contact) ~= 'table' or type(contact.m) ~= 'table' then
    return redis.error_reply('ERR sipshard: register.lua: malformed contact ' .. field)
  end
  local matching, any_stale = {}, false
  for _, e in ipairs(live) do
    if matches(e.rec, contact) then
      matching[#matching + 1] = e
      any_stale = any_stale or stale(e.rec)
    end
  end
  if any_stale then
    outcomes[#outcomes + 1] = 'stale'
  else
    -- Interval 0 removes every match; otherwise the first (in lookup order) is updated and the
    -- others removed: one device, one binding.
    local drop = {}
    local first = 1
    if expires == 0 then first = 0 end
    for j = first + 1, #matching do drop[matching[j]] = true end
    live = without(live, drop)
    if expires == 0 then
      outcomes[#outcomes + 1] = (#matching > 0 and 'removed') or 'absent'
    else
      local old = matching[1]
      contact.v, contact.cid, contact.cseq = 1, call_id, cseq
      contact.reg = (old and old.rec.reg) or now
      contact.upd, contact.ord = now, (i - 7) / 3
      contact.exp = now + expires * 1000
      local entry = { field = field, rec = contact }
      if old then
        -- The key may change (an equivalent URI written differently, a reg-id now given).
        old.field, old.rec, old.raw = field, contact, nil
        outcomes[#outcomes + 1] = 'refreshed'
      else
        live[#live + 1] = entry
        outcomes[#outcomes + 1] = 'added'
      end
    end
  end
  table.sort(live, before)
end

-- Past max contacts, the least recently updated go (Flexisip's max-contacts-by-aor).
local evicted = 0
while #live > max_contacts do
  local oldest = #live
  for j = 1, #live do
    local x, y = live[j].rec, live[oldest].rec
    if x.upd < y.upd or (x.upd == y.upd and x.ord < y.ord) then oldest = j end
  end
  table.remove(live, oldest)
  evicted = evicted + 1
end

-- Write the difference; the key lives as long as its last binding.
local final, reply, last_exp = {}, {}, 0
for _, e in ipairs(live) do
  if e.raw == nil then e.raw = cjson.encode(e.rec) end
  final[e.field] = e.raw
  reply[#reply + 1] = e.field
  reply[#reply + 1] = e.raw
  if e.rec.exp > last_exp then last_exp = e.rec.exp end
end
local changed = false
if #live == 0 then
  changed = next(stored_fields) ~= nil
  if changed then redis.call('DEL', key) end
else
  local gone = {}
  for field in pairs(stored_fields) do
    if final[field] == nil then gone[#gone + 1] = field end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)); changed = true end
  for field, raw in pairs(final) do
    if stored_fields[field] ~= raw then redis.call('HSET', key, field, raw); changed = true end
  end
  if changed then redis.call('PEXPIREAT', key, last_exp) end
end
if changed then redis.call('PUBLISH', 'sipshard:reg-changes', aor) end
return { now, changed and 1 or 0, outcomes, evicted, reply }
