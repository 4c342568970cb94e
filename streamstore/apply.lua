#!lua name=streamstore
-- streamstore: apply batches of operations to one or more instances, atomically.
--
-- One FCALL of `streamstore_apply` is one write: every instance it names gets its operations
-- applied to its RedisJSON document and its events appended to its stream and to its
-- partition's change feed, all of them or none. The argument layout is built by
-- streamstore/plan.py; keep the two in step.
--
-- Checked before written (I7). A call runs in three phases:
--   1. check: parse and check every argument (numbers, ranges, arities, paths), read every
--      instance's state (the document's type, the stream's last entry and its format, the feed's
--      type and id room, the listing sets' types), compare versions, and ask the ACL whether this
--      user may run every write command the call will send. Nothing is written yet: a refusal
--      here leaves Redis untouched.
--   2. apply: run each operation's RedisJSON command(s). A handler checks what its outcome
--      depends on (the field is a list, the index is in range, the key is there) before its
--      one write. Whenever more than one write may touch a document (a batch, several instances,
--      a chunked extend, several dict items) the document is first copied aside (COPY keeps
--      RedisJSON's own representation of numbers) and put back if anything fails later.
--   3. append: the events, to each instance stream (gapless seq) and feed; the listing sets and
--      the expiry. Every command here was checked in phase 1 (key types, id room, ACL).
-- Everything runs under one pcall: an error at any point (a refusal, or a command Redis still
-- refuses) restores the documents copied aside, removes the entries appended by this call, and
-- becomes one error reply 'STREAMSTORE <code> <instance> <detail>'. A single operation on one
-- instance takes no copy: its RedisJSON command is its first write and applies whole or not at
-- all, and nothing after it can be refused once phase 1 has passed.
--
-- A Redis Functions library: its body runs once, when it is loaded, and each write is one FCALL.
-- The executor loads it under a name made from a hash of this text, so two versions of
-- streamstore can share a server.
--
-- KEYS, per instance: doc, stream, feed, undo (scratch copy of the document while a call runs),
--   index (the partition's live pks), expiry (the partition's pks with a TTL, by expiry ms).
-- ARGV: instance count, then per instance: pk, meta, layout version, model version,
--   ttl seconds (0 = leave, -1 = persist), feed maxlen, expected seq ('' = none),
--   create-if-missing document ('' = none), snapshot every n events (0 = never), op count,
--   then per op: type, event path, json path, flags, n, and n arguments. The flags are the
--   operation's row in streamstore/operations.py: 'r' read the value(s) back, 'd' fails without
--   a document, 'x' makes or removes the document (lists or unlists the instance).
--   Each handler below holds only what runs in Redis; what the type means lives in that row.
-- Reply: per instance { {stream id, seq, type}..., results..., last seq }.
--
-- More functions serve the read side (streamstore/projections): `streamstore_read` returns a
-- document with the newest entries of its stream, read together; `streamstore_put` rewrites a
-- document (rebuild) only if the stream has not moved on; `streamstore_lease` renews or releases
-- a subscriber's partition lease only while its owner holds it; `streamstore_members` lists a
-- partition's live instances.
--
-- RedisJSON's number parser is not exact (a double can land one unit off), so for values
-- that may hold floats ('r') the event records the value as stored, read back from the
-- document, never the text we sent: replaying the event must give the same document. The
-- stored value is also the operation's result, for the caller's local copy to match.

-- Numbers up to 2^53 are exact in Lua; ids, seqs, indexes and times stay below it.
local EXACT = 9007199254740992
-- Items per JSON.ARRAPPEND: Lua's unpack stops at a few thousand values.
local CHUNK = 1000
local LAST_ID_PART = '18446744073709551615'
-- The longest expiry accepted, in seconds (about 31,700 years; EXPIRE's own limit is higher).
local MAX_TTL = 1000000000000

-- A refusal: raised as a table, so the entry point can tell it from a Redis error.
local function fail(code, detail)
  error({ streamstore = true, code = code, detail = detail or '' }, 0)
end

local function integer(text, low, high, what)
  -- At most 17 characters (a sign and 16 digits): longer texts are beyond EXACT anyway.
  if type(text) ~= 'string' or not string.match(text, '^%-?%d+$') or #text > 17 then
    fail('USAGE', what .. ' must be an integer, got ' .. tostring(text))
  end
  local n = tonumber(text)
  if n < low or n > high then fail('USAGE', what .. ' out of range: ' .. text) end
  return n
end

-- The instance being worked on (set before each handler runs).
local DOC

-- A JSONPath for one key of the object at `path`. RedisJSON strings have no escapes and
-- lose leading spaces, so the key must avoid the quote we wrap it in, backslashes, and a
-- leading space (the same rule as operations.bracket_key).
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

local function require_type(op, wanted, noun)
  if json_type(op.jpath) ~= wanted then fail('PATH', op.path .. ' is not a ' .. noun) end
end

-- The operations: per event type, how many arguments it takes (phase 1 checks them), the
-- write commands it sends to the document (phase 1 asks the ACL), and its handler (phase 2).
-- A handler applies one operation and returns (event data, result); event data nil means the
-- operation changed nothing and writes no event.
local OPS = {}

local function arity(n) return function(args) return #args == n end end

-- Write commands as phase 1 asks the ACL about them (with the document key first).
local JSON_SET = { 'JSON.SET', '$', '0' }

OPS['saved'] = { args = arity(1), writes = { JSON_SET }, run = function(op)
  redis.call('JSON.SET', DOC, '$', op.args[1])
  if op.rb then
    local stored = get_one('$')
    return stored, stored
  end
  return op.args[1], false
end }

OPS['duplicated'] = { args = arity(3), writes = { JSON_SET }, run = function(op)
  redis.call('JSON.SET', DOC, '$', op.args[1])
  local document = op.rb and get_one('$') or op.args[1]
  return '{"document":' .. document .. ',"source":' .. op.args[2] .. ',"source_seq":'
    .. op.args[3] .. '}', op.rb and document or false
end }

OPS['snapshot'] = { args = arity(0), writes = {}, run = function(op)
  return '{"document":' .. get_one('$') .. '}', false
end }

OPS['deleted'] = {
  args = function(args) return #args == 0 or (#args == 1 and args[1] == 'if-exists') end,
  writes = { { 'DEL' } },
  run = function(op)
    -- DEL answers 0 only for an 'if-exists' delete of a missing document: no event then.
    if redis.call('DEL', DOC) == 0 then return nil end
    return '{}', false
  end }

OPS['set'] = { args = arity(1), writes = { JSON_SET }, run = function(op)
  -- With a $-path, JSON.SET answers nil (and changes nothing) when the parent is missing.
  if not redis.call('JSON.SET', DOC, op.jpath, op.args[1]) then
    fail('PATH', op.path .. ' has no parent in the document')
  end
  local value = op.rb and get_one(op.jpath) or op.args[1]
  return '{"value":' .. value .. '}', value
end }

local function negative(number_text) return string.sub(number_text, 1, 1) == '-' end

OPS['number.incr'] = {
  args = function(args)
    return #args == 1 and string.match(args[1], '^%-?%d+%.?%d*[eE]?[-+]?%d*$') ~= nil
  end,
  writes = { { 'JSON.NUMINCRBY', '$', '1' }, JSON_SET },
  run = function(op)
    local t = json_type(op.jpath)
    if t ~= 'integer' and t ~= 'number' then fail('PATH', op.path .. ' is not a number') end
    local before = get_one(op.jpath)
    local by = op.args[1]
    local value = string.sub(redis.call('JSON.NUMINCRBY', DOC, op.jpath, by), 2, -2)
    -- RedisJSON wraps a signed 64-bit overflow around (and a float one becomes no number):
    -- put the value back and refuse.
    local wrapped = t == 'integer' and string.match(value, '^%-?%d+$')
      and negative(before) == negative(by) and negative(value) ~= negative(before)
    if wrapped or not string.match(value, '^%-?%d') then
      redis.call('JSON.SET', DOC, op.jpath, before)
      fail('RANGE', op.path .. ' + ' .. by .. ' is out of range')
    end
    return '{"by":' .. by .. ',"value":' .. value .. '}', value
  end }

OPS['list.append'] = { args = arity(1), writes = { { 'JSON.ARRAPPEND', '$', '0' } }, run = function(op)
  require_type(op, 'array', 'list')
  redis.call('JSON.ARRAPPEND', DOC, op.jpath, op.args[1])
  local value = op.rb and get_one(op.jpath .. '[-1]') or op.args[1]
  return '{"value":' .. value .. '}', op.rb and value or false
end }

OPS['list.extend'] = {
  args = function(args) return #args >= 1 end,
  writes = { { 'JSON.ARRAPPEND', '$', '0' } },
  run = function(op)
    require_type(op, 'array', 'list')
    for first = 1, #op.args, CHUNK do
      redis.call('JSON.ARRAPPEND', DOC, op.jpath,
        unpack(op.args, first, math.min(first + CHUNK - 1, #op.args)))
    end
    local values = '[' .. table.concat(op.args, ',') .. ']'
    if op.rb then
      -- A slice path's matches are the items themselves: the reply is already their array.
      values = redis.call('JSON.GET', DOC, op.jpath .. '[-' .. #op.args .. ':]')
    end
    return '{"values":' .. values .. '}', op.rb and values or false
  end }

-- A list index argument: an integer within what Lua holds exactly.
local function index_arg(op) return integer(op.args[1], -EXACT, EXACT, op.path .. ' index') end

OPS['list.insert'] = {
  args = arity(2),
  writes = { { 'JSON.ARRINSERT', '$', '0', '0' } },
  check = index_arg,
  run = function(op)
    require_type(op, 'array', 'list')
    -- Clamp like Python's list.insert; RedisJSON would refuse an index out of range.
    local n, i = redis.call('JSON.ARRLEN', DOC, op.jpath)[1], tonumber(op.args[1])
    if i < 0 then i = math.max(0, n + i) end
    if i > n then i = n end
    redis.call('JSON.ARRINSERT', DOC, op.jpath, i, op.args[2])
    local value = op.rb and get_one(op.jpath .. '[' .. i .. ']') or op.args[2]
    return '{"index":' .. i .. ',"value":' .. value .. '}', op.rb and value or false
  end }

OPS['list.pop'] = {
  args = arity(1),
  writes = { { 'JSON.ARRPOP', '$', '0' } },
  check = index_arg,
  run = function(op)
    require_type(op, 'array', 'list')
    local n, i = redis.call('JSON.ARRLEN', DOC, op.jpath)[1], tonumber(op.args[1])
    if n == 0 then fail('EMPTY', 'pop from empty list') end
    if i < 0 then i = n + i end
    if i < 0 or i >= n then fail('EMPTY', 'pop index out of range') end
    local value = redis.call('JSON.ARRPOP', DOC, op.jpath, i)[1]
    return '{"index":' .. i .. ',"value":' .. value .. '}', value
  end }

OPS['list.clear'] = { args = arity(0), writes = { JSON_SET }, run = function(op)
  require_type(op, 'array', 'list')
  redis.call('JSON.SET', DOC, op.jpath, '[]')
  return '{}', false
end }

OPS['dict.set_item'] = { args = arity(3), writes = { JSON_SET }, run = function(op)
  require_type(op, 'object', 'dict')
  redis.call('JSON.SET', DOC, op.args[2], op.args[3])
  local value = op.rb and get_one(op.args[2]) or op.args[3]
  return '{"key":' .. op.args[1] .. ',"value":' .. value .. '}', op.rb and value or false
end }

OPS['dict.update'] = {
  args = function(args) return #args >= 3 and #args % 3 == 0 end,
  writes = { JSON_SET },
  run = function(op)
    require_type(op, 'object', 'dict')
    local items = {}
    for i = 1, #op.args, 3 do
      redis.call('JSON.SET', DOC, op.args[i + 1], op.args[i + 2])
      local value = op.rb and get_one(op.args[i + 1]) or op.args[i + 2]
      items[#items + 1] = op.args[i] .. ':' .. value
    end
    local object = '{' .. table.concat(items, ',') .. '}'
    return '{"items":' .. object .. '}', op.rb and object or false
  end }

-- dict.del_item, dict.pop: args = key as JSON, item path, has default ('1'/'0').
local function remove_key(op)
  require_type(op, 'object', 'dict')
  local value = get_one(op.args[2])
  if not value then
    if op.args[3] == '1' then return nil end
    fail('KEY', op.args[1])
  end
  redis.call('JSON.DEL', DOC, op.args[2])
  return '{"key":' .. op.args[1] .. ',"value":' .. value .. '}', value
end
local function removal_args(args) return #args == 3 and (args[3] == '0' or args[3] == '1') end
OPS['dict.del_item'] = { args = removal_args, writes = { { 'JSON.DEL', '$' } }, run = remove_key }
OPS['dict.pop'] = { args = removal_args, writes = { { 'JSON.DEL', '$' } }, run = remove_key }

OPS['dict.popitem'] = { args = arity(0), writes = { { 'JSON.DEL', '$' } }, run = function(op)
  require_type(op, 'object', 'dict')
  local keys = redis.call('JSON.OBJKEYS', DOC, op.jpath)[1]
  if #keys == 0 then fail('KEY', 'popitem(): dictionary is empty') end
  local key = keys[#keys]
  local path = item_path(op.jpath, key)
  if not path then fail('UNSAFE', key) end
  local value = get_one(path)
  redis.call('JSON.DEL', DOC, path)
  local key_json = cjson.encode(key)
  return '{"key":' .. key_json .. ',"value":' .. value .. '}', '[' .. key_json .. ',' .. value .. ']'
end }

OPS['dict.clear'] = { args = arity(0), writes = { JSON_SET }, run = function(op)
  require_type(op, 'object', 'dict')
  redis.call('JSON.SET', DOC, op.jpath, '{}')
  return '{}', false
end }

-- Phase 1: arguments -------------------------------------------------------------------------

local function parse_instance(KEYS, ARGV, number, pos)
  local k = (number - 1) * 6
  if not KEYS[k + 6] then fail('USAGE', 'instance ' .. number .. ' lacks its keys') end
  local inst = {
    number = number,
    doc = KEYS[k + 1], stream = KEYS[k + 2], feed = KEYS[k + 3], undo = KEYS[k + 4],
    index = KEYS[k + 5], expiry = KEYS[k + 6],
    pk = ARGV[pos], meta = ARGV[pos + 1], version = ARGV[pos + 2], mv = ARGV[pos + 3],
    ops = {}, events = {}, results = {}, appended = {}, fed = {},
  }
  if not ARGV[pos + 9] then fail('USAGE', 'instance ' .. number .. ' lacks its arguments') end
  integer(inst.version, 1, EXACT, 'layout version')
  if string.sub(inst.meta, 1, 1) ~= '{' then fail('USAGE', 'meta must be a JSON object') end
  integer(inst.mv, 1, EXACT, 'model version')
  inst.ttl = integer(ARGV[pos + 4], -1, MAX_TTL, 'ttl')
  inst.feed_maxlen = integer(ARGV[pos + 5], 1, EXACT, 'feed maxlen')
  if ARGV[pos + 6] ~= '' then inst.expected = integer(ARGV[pos + 6], 0, EXACT, 'expected seq') end
  local create = ARGV[pos + 7]
  if create ~= '' and string.sub(create, 1, 1) ~= '{' then
    fail('USAGE', 'the document to create must be a JSON object')
  end
  inst.snapshot_every = integer(ARGV[pos + 8], 0, EXACT, 'snapshot every')
  local count = integer(ARGV[pos + 9], 0, #ARGV, 'op count')
  pos = pos + 10
  inst.create = create ~= '' and create
  for _ = 1, count do
    local n = ARGV[pos + 4] and integer(ARGV[pos + 4], 0, #ARGV - pos - 4, 'argument count')
    if not n then fail('USAGE', 'an operation lacks its arguments') end
    local flags = ARGV[pos + 3]
    if string.find(flags, '[^rdx]') then fail('USAGE', 'unknown operation flags ' .. flags) end
    local op = { type = ARGV[pos], path = ARGV[pos + 1], jpath = ARGV[pos + 2], args = {},
      rb = string.find(flags, 'r', 1, true) ~= nil,
      needs_doc = string.find(flags, 'd', 1, true) ~= nil,
      existence = string.find(flags, 'x', 1, true) ~= nil }
    for j = 1, n do op.args[j] = ARGV[pos + 4 + j] end
    local row = OPS[op.type]
    if not row then fail('USAGE', 'unknown operation ' .. tostring(op.type)) end
    if string.sub(op.path, 1, 1) ~= '$' or string.sub(op.jpath, 1, 1) ~= '$' then
      fail('USAGE', op.type .. ': paths must start with $')
    end
    if not row.args(op.args) then fail('USAGE', op.type .. ': wrong arguments') end
    if row.check then row.check(op) end
    op.row = row
    inst.ops[#inst.ops + 1] = op
    pos = pos + 5 + n
  end
  return inst, pos
end

-- Phase 1: state -----------------------------------------------------------------------------

local function key_type(key)
  return redis.call('TYPE', key)['ok']
end

local function require_key_type(key, allowed, noun)
  local found = key_type(key)
  if found ~= 'none' and found ~= allowed then
    fail('WRONGTYPE', key .. ' holds a ' .. found .. ', not ' .. noun)
  end
  return found ~= 'none'
end

-- The newest entry of a stream, or nil; WRONGTYPE if the key is no stream.
local function newest(key)
  local ok, found = pcall(redis.call, 'XREVRANGE', key, '+', '-', 'COUNT', 1)
  if not ok then fail('WRONGTYPE', key .. ' is not a stream') end
  return found[1]
end

local function read_state(inst)
  inst.exists = require_key_type(inst.doc, 'ReJSON-RL', 'a JSON document')
  inst.existed = inst.exists
  if inst.create and not inst.exists then
    table.insert(inst.ops, 1, { type = 'saved', row = OPS['saved'], path = '$', jpath = '$',
      args = { inst.create }, implicit = true, rb = true, existence = true })
  end
  inst.seq, inst.last_ms, inst.last_id_full = 0, 0, false
  local last = newest(inst.stream)
  if last then
    -- The entry another program may have written: its layout must be ours (seq first), or
    -- the next seq cannot be known.
    local fields = last[2]
    local seq = fields[1] == 'seq' and string.match(fields[2], '^%d+$') and tonumber(fields[2])
    local ms, part = string.match(last[1], '^(%d+)%-(%d+)$')
    -- Exactly our eight fields: with a name given twice, readers and this function would
    -- disagree on which value counts.
    if not seq or seq < 1 or seq >= EXACT or fields[3] ~= 'type' or not OPS[fields[4]]
        or #fields ~= 16 then
      fail('CORRUPT', inst.stream .. ' ends with entry ' .. last[1]
        .. ', which is not a streamstore event (eight fields, seq first, a known type)')
    end
    if not ms or #ms > 15 then fail('IDS', inst.stream .. ' has no room for newer entry ids') end
    inst.seq, inst.last_ms, inst.last_id_full = seq, tonumber(ms), part == LAST_ID_PART
  end
  if inst.expected and inst.expected ~= inst.seq then fail('CONFLICT', tostring(inst.seq)) end
  local top = newest(inst.feed)
  if top and top[1] == LAST_ID_PART .. '-' .. LAST_ID_PART then
    fail('IDS', inst.feed .. ' has no room for newer entry ids')
  end
  inst.lists = false
  for _, op in ipairs(inst.ops) do
    if op.existence then inst.lists = true end
  end
  if inst.lists or inst.ttl ~= 0 then
    require_key_type(inst.index, 'zset', 'a sorted set')
    require_key_type(inst.expiry, 'zset', 'a sorted set')
  end
end

-- Phase 1: permissions -----------------------------------------------------------------------

local function allowed(command, key, ...)
  local ok, yes = pcall(redis.acl_check_cmd, command, key, ...)
  if not ok then
    if string.find(command, 'JSON.', 1, true) then fail('NOJSON', command) end
    error(yes)
  end
  if not yes then fail('NOPERM', 'this user may not run ' .. command .. ' on ' .. key) end
end

local function check_permissions(inst, copies)
  local seen = {}
  for _, op in ipairs(inst.ops) do
    for _, command in ipairs(op.row.writes) do
      if not seen[command] then
        seen[command] = true
        allowed(command[1], inst.doc, unpack(command, 2))
      end
    end
  end
  -- XADD, and XDEL to take an entry back should a later command fail.
  for _, key in ipairs({ inst.stream, inst.feed }) do
    allowed('XADD', key, '*', 'seq', '1')
    allowed('XDEL', key, '0-1')
  end
  if inst.lists or inst.ttl ~= 0 then
    for _, key in ipairs({ inst.index, inst.expiry }) do
      allowed('ZADD', key, '0', 'x')
      allowed('ZREM', key, 'x')
    end
  end
  if inst.ttl ~= 0 then
    for _, key in ipairs({ inst.doc, inst.stream }) do
      allowed(inst.ttl > 0 and 'EXPIRE' or 'PERSIST', key, '1')
    end
  end
  if copies then
    allowed('COPY', inst.doc, inst.undo)
    allowed('RENAME', inst.undo, inst.doc)
    allowed('DEL', inst.doc)
    allowed('DEL', inst.undo)
  end
end

-- Phase 2: apply -----------------------------------------------------------------------------

local function run_ops(inst)
  DOC = inst.doc
  if inst.copies and inst.exists then
    redis.call('COPY', inst.doc, inst.undo, 'REPLACE')
    inst.copied = true
  end
  inst.touched = true
  for _, op in ipairs(inst.ops) do
    if op.needs_doc and not inst.exists then fail('NOT_FOUND', op.path) end
    local data, result = op.row.run(op)
    inst.exists = op.type ~= 'deleted' and (inst.exists or data ~= nil)
    if data then inst.events[#inst.events + 1] = { op.type, op.path, data } end
    if not op.implicit then inst.results[#inst.results + 1] = result or false end
  end
  -- After every SNAPSHOT_EVERY events, a snapshot of the document follows, so replay can
  -- start there (and compaction can trim what lies before it). Snapshots take the seqs that
  -- are multiples of SNAPSHOT_EVERY + 1; a batch is never split, so one that crosses such a
  -- seq gets its snapshot right after it.
  local every, seq, n = inst.snapshot_every, inst.seq, #inst.events
  local period = every + 1
  if every > 0 and inst.exists and n > 0
      and math.floor((seq + n + 1) / period) > math.floor((seq + 1) / period) then
    inst.events[n + 1] = { 'snapshot', '$', OPS['snapshot'].run() }
  end
end

-- Phase 3: append ----------------------------------------------------------------------------

local function append(inst, now)
  -- The entry id is '<ms>-*' with ms the server time (never below the stream's last id), so the
  -- event's `ts` is exactly the time part of its id.
  local ms = math.max(now, inst.last_ms)
  if ms == inst.last_ms and inst.last_id_full then ms = ms + 1 end
  local ts = string.format('%.0f', ms)
  local seq = inst.seq
  local written = {}
  for _, ev in ipairs(inst.events) do
    seq = seq + 1
    local id = redis.call('XADD', inst.stream, ts .. '-*', 'seq', seq, 'type', ev[1],
      'path', ev[2], 'data', ev[3], 'ts', ts, 'meta', inst.meta, 'v', inst.version,
      'mv', inst.mv)
    inst.appended[#inst.appended + 1] = id
    inst.fed[#inst.fed + 1] = redis.call('XADD', inst.feed, 'MAXLEN', '~', inst.feed_maxlen,
      '*', 'pk', inst.pk, 'id', id, 'seq', seq, 'type', ev[1], 'path', ev[2], 'data', ev[3],
      'ts', ts, 'meta', inst.meta, 'v', inst.version, 'mv', inst.mv)
    written[#written + 1] = { id, seq, ev[1] }
  end
  -- Keep the partition's index of live instances, and of their expiry times, in step:
  -- `select` lists instances from it, and drops the expired ones before it reads.
  if #inst.events > 0 then
    local pk = inst.pk
    if inst.exists and (not inst.existed or inst.events[1][1] == 'saved') then
      redis.call('ZADD', inst.index, 0, pk)
    elseif inst.existed and not inst.exists then
      redis.call('ZREM', inst.index, pk)
      redis.call('ZREM', inst.expiry, pk)
    end
    if inst.ttl > 0 then
      redis.call('EXPIRE', inst.doc, inst.ttl)
      redis.call('EXPIRE', inst.stream, inst.ttl)
      if inst.exists then redis.call('ZADD', inst.expiry, now + inst.ttl * 1000, pk) end
    elseif inst.ttl < 0 then
      redis.call('PERSIST', inst.doc)
      redis.call('PERSIST', inst.stream)
      redis.call('ZREM', inst.expiry, pk)
    end
  end
  return { written, inst.results, seq }
end

-- Undo what a failed call changed: documents copied aside go back, appended entries go.
local function undo(instances)
  for _, inst in ipairs(instances) do
    if inst.copied then
      redis.call('RENAME', inst.undo, inst.doc)
    elseif inst.touched and not inst.existed then
      redis.call('DEL', inst.doc)
    end
    if #inst.appended > 0 then redis.call('XDEL', inst.stream, unpack(inst.appended)) end
    if #inst.fed > 0 then redis.call('XDEL', inst.feed, unpack(inst.fed)) end
  end
end

-- The instance the call is working on, named in its error reply.
local CURRENT

local function apply_all(KEYS, ARGV, instances)
  CURRENT = 1
  local count = integer(ARGV[1], 1, EXACT, 'instance count')
  if #KEYS ~= count * 6 then fail('USAGE', 'expected ' .. count * 6 .. ' keys') end
  local pos = 2
  for number = 1, count do
    CURRENT = number
    instances[number], pos = parse_instance(KEYS, ARGV, number, pos)
  end
  if pos ~= #ARGV + 1 then fail('USAGE', 'unexpected arguments after the last operation') end
  for number, inst in ipairs(instances) do
    CURRENT = number
    read_state(inst)
    -- More than one write may touch the document: keep a copy to put back.
    local ops = inst.ops
    inst.copies = count > 1 or #ops > 1 or (ops[1] and (
      (ops[1].type == 'dict.update' and #ops[1].args > 3)
      or (ops[1].type == 'list.extend' and #ops[1].args > CHUNK)))
    check_permissions(inst, inst.copies)
  end
  for number, inst in ipairs(instances) do
    CURRENT = number
    run_ops(inst)
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local replies = {}
  for number, inst in ipairs(instances) do
    CURRENT = number
    replies[number] = append(inst, now)
  end
  for _, inst in ipairs(instances) do
    if inst.copied then redis.call('DEL', inst.undo) end
  end
  return replies
end

local function apply(KEYS, ARGV)
  local instances = {}
  local ok, err = pcall(apply_all, KEYS, ARGV, instances)
  if ok then return err end
  local number = CURRENT
  undo(instances)
  if type(err) == 'table' and err.streamstore then
    return redis.error_reply('STREAMSTORE ' .. err.code .. ' ' .. number .. ' ' .. err.detail)
  end
  local message = type(err) == 'table' and tostring(err.err) or tostring(err)
  -- A read the checks make, refused by ACL (write commands are checked before they run).
  if string.find(message, "can't run this command", 1, true)
      or string.find(message, 'No permissions', 1, true) then
    return redis.error_reply('STREAMSTORE NOPERM ' .. number .. ' ' .. message)
  end
  if string.find(message, 'nknown', 1, true) then
    return redis.error_reply('STREAMSTORE NOJSON ' .. number .. ' ' .. message)
  end
  return redis.error_reply('STREAMSTORE REDIS ' .. number .. ' ' .. message)
end


-- Reads and writes of the read side ----------------------------------------------------------

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
    return redis.error_reply('STREAMSTORE CONFLICT 1 ' .. seq)
  end
  if ARGV[3] == '' then
    redis.call('DEL', KEYS[1])
    return false
  end
  local existed = redis.call('EXISTS', KEYS[1]) == 1
  if not redis.call('JSON.SET', KEYS[1], ARGV[2], ARGV[3]) then
    return redis.error_reply('STREAMSTORE PATH 1 ' .. ARGV[2] .. ' has no parent in the document')
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
