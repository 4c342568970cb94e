#!lua name=streamstore
-- streamstore: apply a batch of operations to one instance, atomically.
--
-- Runs every RedisJSON command first; only when all of them succeeded does it append the
-- events to the instance stream and to the partition's change feed. A failing operation
-- restores the document and returns an error reply, so nothing is half-written (I2).
-- The argument layout is built by streamstore/plan.py; keep the two in step.
--
-- A Redis Functions library: its body (the handlers below) runs once, when it is loaded, and
-- each write is one FCALL of `streamstore_apply`. The executor loads it under a name made
-- from a hash of this text, so two versions of streamstore can share a server.
--
-- KEYS: doc, stream, feed, undo (scratch copy of the document while a batch runs),
--       index (the partition's live pks), expiry (the partition's pks with a TTL, by expiry ms)
-- ARGV: pk, meta, layout version, model version, ttl seconds (0 = leave, -1 = persist),
--       feed maxlen,
--       expected seq ('' = none), create-if-missing document ('' = none),
--       snapshot every n events (0 = never), op count,
--       then per op: type, event path, json path, flags ('r': read back), n, and n arguments.
--
-- More functions serve the read side (streamstore/projections): `streamstore_read` returns a
-- document with the newest entries of its stream, read together; `streamstore_put` rewrites a
-- document (rebuild) only if the stream has not moved on; `streamstore_lease` renews or releases
-- a subscriber's partition lease only while its owner holds it.
--
-- RedisJSON's number parser is not exact (a double can land one unit off), so for values
-- that may hold floats ('r') the event records the value as stored, read back from the
-- document, never the text we sent: replaying the event must give the same document.

-- The document and undo keys of the call being run (set at the start of every call).
local DOC, UNDO

-- A batch of several commands copies the document aside (COPY keeps RedisJSON's own
-- representation; writing back its JSON text would not, its number parser being inexact),
-- to put it back if a later operation fails. A single command applies or fails whole.
local snapshot, existed   -- a batch is running (the document may need restoring); it existed

local function abort(code, detail)
  if snapshot then
    if existed then
      redis.call('RENAME', UNDO, DOC)
    else
      redis.call('DEL', DOC)
    end
  end
  return redis.error_reply('STREAMSTORE ' .. code .. ' ' .. (detail or ''))
end

-- A JSONPath for one key of the object at `path`. RedisJSON strings have no escapes and
-- lose leading spaces, so the key must avoid the quote we wrap it in, backslashes, and a
-- leading space (the same rule as operations.item_json_path).
local function item_path(path, key)
  if string.find(key, '\\', 1, true) or string.sub(key, 1, 1) == ' ' then return nil end
  if not string.find(key, "'", 1, true) then return path .. "['" .. key .. "']" end
  if not string.find(key, '"', 1, true) then return path .. '["' .. key .. '"]' end
  return nil
end

-- The raw JSON of the single value at `path`, or nil when the path matches nothing.
local function get_one(path)
  local raw = redis.call('JSON.GET', DOC, path)
  if not raw or raw == '[]' then return nil end
  return string.sub(raw, 2, -2)
end

local function json_type(path)
  local t = redis.call('JSON.TYPE', DOC, path)
  if type(t) == 'table' then t = t[1] end
  return t
end

local function array_len(path)
  local n = redis.call('JSON.ARRLEN', DOC, path)[1]
  if not n then return nil end
  return n
end

-- Each handler applies one operation and returns (event data, result) or (false, code, detail).
-- An event data of nil means the operation changed nothing and writes no event.
local H = {}

H['saved'] = function(op)
  redis.call('JSON.SET', DOC, '$', op.args[1])
  if op.rb then return get_one('$') end
  return op.args[1]
end

H['duplicated'] = function(op)
  redis.call('JSON.SET', DOC, '$', op.args[1])
  local document = op.rb and get_one('$') or op.args[1]
  return '{"document":' .. document .. ',"source":' .. op.args[2] .. ',"source_seq":'
    .. op.args[3] .. '}'
end

H['snapshot'] = function(op)
  return '{"document":' .. get_one('$') .. '}'
end

H['deleted'] = function(op)
  -- DEL answers 0 only for an 'if-exists' delete of a missing document: no event then.
  if redis.call('DEL', DOC) == 0 then return nil end
  return '{}'
end

H['set'] = function(op)
  -- With a $-path, JSON.SET answers nil (and changes nothing) when the parent is missing.
  if not redis.call('JSON.SET', DOC, op.jpath, op.args[1]) then
    return false, 'PATH', op.path .. ' has no parent in the document'
  end
  local value = op.rb and get_one(op.jpath) or op.args[1]
  return '{"value":' .. value .. '}', value
end

H['number.incr'] = function(op)
  local t = json_type(op.jpath)
  if t ~= 'integer' and t ~= 'number' then return false, 'PATH', op.path .. ' is not a number' end
  local value = string.sub(redis.call('JSON.NUMINCRBY', DOC, op.jpath, op.args[1]), 2, -2)
  return '{"by":' .. op.args[1] .. ',"value":' .. value .. '}', value
end

local function require_array(op)
  if json_type(op.jpath) ~= 'array' then return false end
  return true
end

H['list.append'] = function(op)
  if not require_array(op) then return false, 'PATH', op.path .. ' is not a list' end
  redis.call('JSON.ARRAPPEND', DOC, op.jpath, op.args[1])
  local value = op.rb and get_one(op.jpath .. '[-1]') or op.args[1]
  return '{"value":' .. value .. '}'
end

H['list.extend'] = function(op)
  if not require_array(op) then return false, 'PATH', op.path .. ' is not a list' end
  redis.call('JSON.ARRAPPEND', DOC, op.jpath, unpack(op.args))
  local values = table.concat(op.args, ',')
  if op.rb then
    values = string.sub(redis.call('JSON.GET', DOC, op.jpath .. '[-' .. #op.args .. ':]'), 2, -2)
  end
  return '{"values":[' .. values .. ']}'
end

H['list.insert'] = function(op)
  if not require_array(op) then return false, 'PATH', op.path .. ' is not a list' end
  -- Clamp like Python's list.insert; RedisJSON would refuse an index out of range.
  local n, i = array_len(op.jpath), tonumber(op.args[1])
  if i < 0 then i = math.max(0, n + i) end
  if i > n then i = n end
  redis.call('JSON.ARRINSERT', DOC, op.jpath, i, op.args[2])
  local value = op.rb and get_one(op.jpath .. '[' .. i .. ']') or op.args[2]
  return '{"index":' .. i .. ',"value":' .. value .. '}'
end

H['list.pop'] = function(op)
  if not require_array(op) then return false, 'PATH', op.path .. ' is not a list' end
  local n, i = array_len(op.jpath), tonumber(op.args[1])
  if n == 0 then return false, 'EMPTY', 'pop from empty list' end
  if i < 0 then i = n + i end
  if i < 0 or i >= n then return false, 'EMPTY', 'pop index out of range' end
  local value = redis.call('JSON.ARRPOP', DOC, op.jpath, i)[1]
  return '{"index":' .. i .. ',"value":' .. value .. '}', value
end

H['list.clear'] = function(op)
  if not require_array(op) then return false, 'PATH', op.path .. ' is not a list' end
  redis.call('JSON.SET', DOC, op.jpath, '[]')
  return '{}'
end

local function require_object(op)
  return json_type(op.jpath) == 'object'
end

H['dict.set_item'] = function(op)
  if not require_object(op) then return false, 'PATH', op.path .. ' is not a dict' end
  redis.call('JSON.SET', DOC, op.args[2], op.args[3])
  local value = op.rb and get_one(op.args[2]) or op.args[3]
  return '{"key":' .. op.args[1] .. ',"value":' .. value .. '}'
end

H['dict.update'] = function(op)
  if not require_object(op) then return false, 'PATH', op.path .. ' is not a dict' end
  local items = {}
  for i = 1, #op.args, 3 do
    redis.call('JSON.SET', DOC, op.args[i + 1], op.args[i + 2])
    local value = op.rb and get_one(op.args[i + 1]) or op.args[i + 2]
    items[#items + 1] = op.args[i] .. ':' .. value
  end
  return '{"items":{' .. table.concat(items, ',') .. '}}'
end

-- dict.del_item, dict.pop: args = key as JSON, item path, has default ('1'/'0').
local function remove_key(op)
  if not require_object(op) then return false, 'PATH', op.path .. ' is not a dict' end
  local value = get_one(op.args[2])
  if not value then
    if op.args[3] == '1' then return nil end
    return false, 'KEY', op.args[1]
  end
  redis.call('JSON.DEL', DOC, op.args[2])
  return '{"key":' .. op.args[1] .. ',"value":' .. value .. '}', value
end
H['dict.del_item'] = remove_key
H['dict.pop'] = remove_key

H['dict.popitem'] = function(op)
  if not require_object(op) then return false, 'PATH', op.path .. ' is not a dict' end
  local keys = redis.call('JSON.OBJKEYS', DOC, op.jpath)[1]
  if #keys == 0 then return false, 'KEY', 'popitem(): dictionary is empty' end
  local key = keys[#keys]
  local path = item_path(op.jpath, key)
  if not path then return false, 'UNSAFE', key end
  local value = get_one(path)
  redis.call('JSON.DEL', DOC, path)
  local key_json = cjson.encode(key)
  return '{"key":' .. key_json .. ',"value":' .. value .. '}', '[' .. key_json .. ',' .. value .. ']'
end

H['dict.clear'] = function(op)
  if not require_object(op) then return false, 'PATH', op.path .. ' is not a dict' end
  redis.call('JSON.SET', DOC, op.jpath, '{}')
  return '{}'
end

local function apply(KEYS, ARGV)
  DOC, UNDO = KEYS[1], KEYS[4]
  snapshot, existed = false, false
  local STREAM, FEED, INDEX, EXPIRY = KEYS[2], KEYS[3], KEYS[5], KEYS[6]
  local PK, META, VERSION, MODEL_VERSION = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  local TTL, FEED_MAXLEN = tonumber(ARGV[5]), ARGV[6]
  local EXPECTED, CREATE = ARGV[7], ARGV[8]
  local SNAPSHOT_EVERY, NOPS = tonumber(ARGV[9]), tonumber(ARGV[10])

  -- 1. Read the current state: does the document exist, what is the last seq?
  local exists = redis.call('EXISTS', DOC) == 1
  local was = exists
  local last = redis.call('XREVRANGE', STREAM, '+', '-', 'COUNT', 1)[1]
  local seq, last_ms = 0, 0
  if last then
    seq = tonumber(last[2][2])
    last_ms = tonumber(string.match(last[1], '^(%d+)'))
  end
  if EXPECTED ~= '' and tonumber(EXPECTED) ~= seq then
    return redis.error_reply('STREAMSTORE CONFLICT ' .. seq)
  end

  -- 2. Parse the operations.
  local ops, pos = {}, 11
  if CREATE ~= '' and not exists then
    ops[1] = { type = 'saved', path = '$', jpath = '$', args = { CREATE }, implicit = true,
      rb = true }
  end
  for _ = 1, NOPS do
    local op = { type = ARGV[pos], path = ARGV[pos + 1], jpath = ARGV[pos + 2],
      rb = ARGV[pos + 3] == 'r', args = {} }
    local n = tonumber(ARGV[pos + 4])
    for j = 1, n do op.args[j] = ARGV[pos + 4 + j] end
    pos = pos + 5 + n
    ops[#ops + 1] = op
  end
  if #ops > 1 or (ops[1] and ops[1].type == 'dict.update' and #ops[1].args > 3) then
    snapshot = true
    existed = exists
    if exists then redis.call('COPY', DOC, UNDO, 'REPLACE') end
  end

  -- 3. Apply them to the document, collecting events and results.
  local events, results = {}, {}
  for _, op in ipairs(ops) do
    local handler = H[op.type]
    if not handler then return abort('USAGE', 'unknown operation ' .. op.type) end
    local needs_document = op.type ~= 'saved' and op.type ~= 'duplicated'
      and not (op.type == 'deleted' and op.args[1] == 'if-exists')
    if needs_document and not exists then return abort('NOT_FOUND', op.path) end
    local pok, data, result, detail = pcall(handler, op)
    if not pok then
      local message = tostring(data)
      if string.find(message, 'nknown', 1, true) then return abort('NOJSON', message) end
      return abort('REDIS', message)
    end
    if data == false then return abort(result, detail) end
    exists = op.type ~= 'deleted' and (exists or data ~= nil)
    if data then events[#events + 1] = { op.type, op.path, data } end
    if not op.implicit then results[#results + 1] = result or false end
  end

  if existed then redis.call('DEL', UNDO) end

  -- After every SNAPSHOT_EVERY events, a snapshot of the document follows, so replay can
  -- start there (and compaction can trim what lies before it). Snapshots take the seqs that
  -- are multiples of SNAPSHOT_EVERY + 1; a batch is never split, so one that crosses such a
  -- seq gets its snapshot right after it.
  local period = SNAPSHOT_EVERY + 1
  if SNAPSHOT_EVERY > 0 and exists and #events > 0
      and math.floor((seq + #events + 1) / period) > math.floor((seq + 1) / period) then
    events[#events + 1] = { 'snapshot', '$', H['snapshot']() }
  end

  -- 4. Append the events: instance stream first (gapless seq), then the partition feed.
  -- The entry id is '<ms>-*' with ms the server time (never below the stream's last id), so the
  -- event's `ts` is exactly the time part of its id.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local ts = string.format('%.0f', math.max(now, last_ms))
  local written = {}
  for _, ev in ipairs(events) do
    seq = seq + 1
    local id = redis.call('XADD', STREAM, ts .. '-*', 'seq', seq, 'type', ev[1], 'path', ev[2],
      'data', ev[3], 'ts', ts, 'meta', META, 'v', VERSION, 'mv', MODEL_VERSION)
    redis.call('XADD', FEED, 'MAXLEN', '~', FEED_MAXLEN, '*', 'pk', PK, 'id', id, 'seq', seq,
      'type', ev[1], 'path', ev[2], 'data', ev[3], 'ts', ts, 'meta', META, 'v', VERSION,
      'mv', MODEL_VERSION)
    written[#written + 1] = { id, seq, ev[1] }
  end
  -- 5. Keep the partition's index of live instances, and of their expiry times, in step:
  -- `select` lists instances from it, and drops the expired ones before it reads.
  if #events > 0 then
    if exists and (not was or events[1][1] == 'saved') then
      redis.call('ZADD', INDEX, 0, PK)
    elseif was and not exists then
      redis.call('ZREM', INDEX, PK)
      redis.call('ZREM', EXPIRY, PK)
    end
    if TTL > 0 then
      redis.call('EXPIRE', DOC, TTL)
      redis.call('EXPIRE', STREAM, TTL)
      if exists then redis.call('ZADD', EXPIRY, now + TTL * 1000, PK) end
    elseif TTL < 0 then
      redis.call('PERSIST', DOC)
      redis.call('PERSIST', STREAM)
      redis.call('ZREM', EXPIRY, PK)
    end
  end
  return { written, results, seq }
end

-- The last seq of the stream, or 0 when it has no entries.
local function last_seq(stream)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not last then return 0 end
  return tonumber(last[2][2])
end

-- KEYS: doc, stream. ARGV: how many of the newest entries to return.
-- Returns { document JSON or false, entries newest first }: a consistent pair to fold from.
local function read(KEYS, ARGV)
  local doc = redis.call('JSON.GET', KEYS[1])
  return { doc or false, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[1]) }
end

-- KEYS: doc, stream. ARGV: expected last seq, JSON path, JSON value ('' deletes the document).
-- Writes the value only while the stream's last seq is the expected one (else CONFLICT), and
-- returns the value as RedisJSON stored it, for the caller to compare with what it meant.
-- A document made anew expires with its stream.
local function put(KEYS, ARGV)
  local seq = last_seq(KEYS[2])
  if tonumber(ARGV[1]) ~= seq then
    return redis.error_reply('STREAMSTORE CONFLICT ' .. seq)
  end
  if ARGV[3] == '' then
    redis.call('DEL', KEYS[1])
    return false
  end
  local existed = redis.call('EXISTS', KEYS[1]) == 1
  if not redis.call('JSON.SET', KEYS[1], ARGV[2], ARGV[3]) then
    return redis.error_reply('STREAMSTORE PATH ' .. ARGV[2] .. ' has no parent in the document')
  end
  if not existed then
    local pttl = redis.call('PTTL', KEYS[2])
    if pttl > 0 then redis.call('PEXPIRE', KEYS[1], pttl) end
  end
  return redis.call('JSON.GET', KEYS[1], ARGV[2])
end

-- KEYS: a subscriber group's partition lease. ARGV: 'renew' or 'release', owner, ms.
-- Renews (PEXPIRE) or releases (DEL) the lease only if `owner` still holds it; returns 1 if so.
local function lease(KEYS, ARGV)
  if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
  if ARGV[1] == 'release' then return redis.call('DEL', KEYS[1]) end
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end

-- KEYS: a partition's index and expiry sets. ARGV: lowest pk (exclusive; '' = from the
-- first), count. Drops the instances whose expiry has passed (by the server's clock, which
-- also expires the keys) from both sets, then returns up to `count` pks of the index, in pk
-- order after the given one: expired instances never linger in a listing.
local function members(KEYS, ARGV)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  repeat
    local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 500)
    if #gone > 0 then
      redis.call('ZREM', KEYS[1], unpack(gone))
      redis.call('ZREM', KEYS[2], unpack(gone))
    end
  until #gone < 500
  local low = ARGV[1] == '' and '-' or '(' .. ARGV[1]
  return redis.call('ZRANGE', KEYS[1], low, '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[2]))
end

redis.register_function('streamstore_apply', apply)
redis.register_function('streamstore_members', members)
redis.register_function('streamstore_lease', lease)
redis.register_function{ function_name = 'streamstore_read', callback = read,
  flags = { 'no-writes' } }
redis.register_function('streamstore_put', put)
