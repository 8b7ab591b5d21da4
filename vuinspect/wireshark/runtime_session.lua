-- Runtime Lua, part 2: pseudo-header, framing, session state, pairing, checks, stats.
--
-- A port of vuinspect/decoder.py (framing), vuinspect/session.py (pairing and
-- stateful checks) and the pseudo-header reader.  Wireshark dissects a file at
-- least twice and in any order afterwards, so every stateful result is computed
-- once, on the first pass (when a frame has no record yet), and kept in tables
-- keyed by ``pinfo.number``; later passes only redraw from those records.
-- ===================================================================== runtime: state
-- What a later pass needs is kept per message in flat arrays of numbers (message ids are
-- given in first-pass order): a decoded tree is rebuilt from the bytes on each pass, only
-- the results of the stateful first pass (links, latency, problems, context) are stored.
local sessions = {}  -- conn -> negotiated state and pending requests
-- Closed connections whose session is kept (first pass), oldest first: past C.KEEP_CLOSED
-- (stats.KEEP_CLOSED, as `read --stats` keeps them) the oldest is dropped, so what a long
-- capture keeps (and every collection marks) follows its open connections, not all it
-- ever had.  A frame of a dropped connection (a crafted file: the proxy never reuses a
-- number) starts a fresh session.
local closed = { head = 1, tail = 0 }
local streams = {}   -- conn*4 + channel*2 + direction -> bytes of a message not yet complete
local M = {}         -- per-message and per-frame records, reset by vu.init
local ORIGINS        -- capture of origin of each connection number (shown_conn), reset by vu.init
-- Whether this dissection fills columns (tshark -V and the first pass of -2 do not): the
-- Info text is only built when someone reads it.
local WANT_TEXT = true
-- The collector runs when the heap has grown by this much (Lua's default is 200%): the heap
-- peaks at about twice the live data otherwise, and the live data here grows with the file.
do
  local pause = collectgarbage("setpause", 150)
  if pause < 150 then collectgarbage("setpause", pause) end  -- someone wanted it tighter
end
-- A built tree leaves ~48 wslua userdata a frame (each tree item and byte range, with a
-- finaliser), dead as soon as the frame is printed.  Lua 5.2's collector handles them
-- best while they are few and still in the CPU's cache: a full collection every
-- gc_every tree frames (from TREE_GC_MIN), with the automatic collector held back
-- (pause TREE_GC_PAUSE, still a safety net) while trees are built.  A full collection
-- also marks what lives (the per-message records, open sessions), so its period grows
-- with the live heap (TREE_GC_KB kB a frame of period): the whole run stays linear.
-- Its generational mode, used before, runs 4 finalisers a minor collection and keeps
-- the rest waiting (walked at every minor collection), and collections of 2,000 frames
-- or more find their garbage out of the cache (bench/RESULTS.md, Lua section).  Frames
-- without a tree go back to the incremental collector's pause.  Only Lua 5.2 was
-- measured: 5.3 and later (math.type) are left as they are.
local gc_for_trees, gc_no_tree
do
  local TREE_GC_MIN, TREE_GC_KB, TREE_GC_PAUSE = 128, 64, 1000
  local tuned = math.type == nil
  local frames, gc_every, pause = 0, TREE_GC_MIN, nil
  function gc_for_trees()
    if not tuned then return end
    if pause == nil then pause = collectgarbage("setpause", TREE_GC_PAUSE) end
    frames = frames + 1
    if frames >= gc_every then
      frames = 0
      collectgarbage("collect")
      gc_every = math.max(TREE_GC_MIN, floor(collectgarbage("count") / TREE_GC_KB))
    end
  end
  function gc_no_tree()
    if pause ~= nil then
      collectgarbage("setpause", pause)
      pause = nil
    end
  end
end
local EMPTY = {}     -- shared empty list (never written)
local PROBLEMS, SCRATCH = {}, {}  -- first-pass problems of the message; thrown-away ones
local function empty(list)
  for i = #list, 1, -1 do list[i] = nil end
  return list
end

local function reset()
  sessions, streams = {}, {}
  closed = { head = 1, tail = 0 }
  M = {
    n = 0,          -- messages so far
    first = {},     -- frame number -> first message id * 2 + (1 if big-endian); false: event frame
    count = {},     -- frame number -> message count, when not 1
    link = {},      -- message id -> reply_in frame (> 0), -reply_to frame (< 0), or false
    lat = {},       -- message id -> latency in seconds, or false
    bits = {},      -- message id -> packed flags, device and statistics key (see pack)
    probs = {},     -- message id -> first-pass problems (only messages with some)
    fds = {},       -- message id -> fd texts with their roles (only messages with fds)
    carry = {},     -- frame number -> framing across frames (only frames that need it)
    closed = {},    -- frame number -> problems a close event found in unfinished streams
    text = {},      -- frame number -> Info text, kept by a first pass that had no columns
    cols = {},      -- frame number -> its shared { Source, Destination } pair, with text
    conn = {},      -- frame number -> connection number shown, when not the pseudo-header's
  }
  -- next: above every number claimed; low: below it every number is claimed (past the u32 end)
  ORIGINS = { of = {}, n = 0, shown = {}, owner = {}, next = 1, low = 1 }
end
reset()

-- Merged captures (docs/capture-format.md §8): `cat` or `mergecap` of two runs has two
-- `conn 1`.  Wireshark gives a Lua dissector the interface of a frame only through Field
-- extractors, and any Field extractor makes tshark build a tree for every frame (3x the
-- summary's time) and still gives nothing in the first pass of -2, so the capture of
-- origin is told from the frames: one run never reuses a connection number, hence an OPEN
-- event for a number already seen starts another capture; a number first seen belongs to
-- the latest capture.  The shown number then follows pcapng.Origins: a (capture, conn)
-- keeps its number unless another pair claimed it, else the next number above all claimed,
-- or past the u32 end (which the conn field cannot show) the lowest free one, searched upward
-- once overall.
local function shown_conn(conn, is_open)
  local O = ORIGINS
  local origin = O.of[conn]
  if origin == nil or is_open then
    if origin ~= nil then O.n = O.n + 1 end
    origin = O.n
    O.of[conn] = origin
  end
  local mine = O.shown[origin]  -- conn -> shown number, one table per origin
  if mine == nil then
    mine = {}
    O.shown[origin] = mine
  end
  local shown = mine[conn]
  if shown ~= nil then return shown end
  if O.owner[conn] == nil then
    shown = conn
  elseif O.next <= 0xFFFFFFFF then
    shown = O.next
  else
    shown = O.low
    while O.owner[shown] do shown = shown + 1 end
    O.low = shown + 1
  end
  O.owner[shown], mine[conn] = true, shown
  if shown + 1 > O.next then O.next = shown + 1 end
  return shown
end

function vu.init()
  reset()
end

-- bits: 1 big-endian, 2 Xen mmap, 4 packed ring, 8 a reply is owed, 16 missing reply seen at
-- close, 32 is a reply; then the device (x64) and the statistics key (x 64 * 64).
local B_BE, B_XEN, B_PACKED, B_MUST, B_MISSING, B_REPLY = 1, 2, 4, 8, 16, 32
local function has(bits, flag) return bits % (flag + flag) >= flag end  -- bits >= 0, flag 2^n

local DEVICES, DEVICE_ID = { [0] = false }, {}
do
  local names = {}
  for name in pairs(DEVICE_BITS) do names[#names + 1] = name end
  table.sort(names)
  for i = 1, #names do local name = names[i]; DEVICES[i], DEVICE_ID[name] = name, i end
end
local KEYS, KEY_ID = {}, { main = {}, backend = {} }  -- interned "channel:name" statistics keys
local function key_id(channel, name)
  local by = KEY_ID[channel]
  local id = by[name]
  if id == nil then
    id = #KEYS + 1
    KEYS[id], by[name] = channel .. ":" .. name, id
  end
  return id
end

-- The decoding context of a message (byte order, device, Xen, packed ring) as one shared
-- table per distinct value: ctx_of(bits) for the low 12 bits of a message's packed bits.
local CTXS = {}
local function ctx_of(bits)
  local low = bits % 4096
  local c = CTXS[low]
  if c == nil then
    c = { be = has(low, B_BE), xen = has(low, B_XEN), packed = has(low, B_PACKED),
          must = has(low, B_MUST), missing = has(low, B_MISSING), reply = has(low, B_REPLY),
          device = DEVICES[floor(low / 64)] or nil }
    CTXS[low] = c
  end
  return c
end


local function session(conn)
  local s = sessions[conn]
  if s == nil then
    s = { conn = conn, messages = 0, seen_start = false, started = {}, regions = {}, nregions = 0,
          pending = { main = {}, backend = {} } }
    sessions[conn] = s
  end
  return s
end

-- Bit n of a negotiated feature word of the session (cached per word: asked per message).
local function word_has(s, word, cache, n)
  local v = s[word]
  if v == nil then return nil end
  local c = s[cache]
  if c == nil or c.v ~= v then
    c = { v = v }
    s[cache] = c
  end
  local r = c[n]
  if r == nil then
    r = bit_set(v, n)
    c[n] = r
  end
  return r
end

local function protocol_has(s, n)
  return word_has(s, "protocol_acked", "protocol_acked_bits", n)
end

-- features.guess_device: the first device whose distinctive bits are offered.
local function guess_device(features)
  local lo = lohi(features)
  for i_ = 1, #C.GUESS do local g = C.GUESS[i_]
    if band(lo, g[2]) ~= 0 then return g[1] end
  end
  return nil
end

local function bit_names_of(v, named)  -- the names a feature word's item shows, for a text
  return concat(bits_entry(v, bits_by(named), 64).names, ", ")
end

-- ===================================================================== runtime: pseudo-header
-- Bytes -> valid UTF-8 as Python's decode("utf-8", "replace") does it: each maximal invalid
-- subpart becomes one U+FFFD.  (TvbRange:string(ENC_UTF_8) in Wireshark 4.0 returns its
-- replacements cut to the input length, leaving half a U+FFFD in the tree.)
local REPLACEMENT = "\239\191\189"

local function utf8_clean(s)
  local i = s:find("[\128-\255]")
  if i == nil then return s end
  local out, n = { s:sub(1, i - 1) }, #s
  while i <= n do
    local c = s:byte(i)
    if c < 0x80 then
      local j = s:find("[\128-\255]", i) or (n + 1)
      out[#out + 1] = s:sub(i, j - 1)
      i = j
    else
      local need, lo, hi = 0, 0x80, 0xBF
      if c >= 0xC2 and c <= 0xDF then need = 1
      elseif c == 0xE0 then need, lo = 2, 0xA0
      elseif (c >= 0xE1 and c <= 0xEC) or c == 0xEE or c == 0xEF then need = 2
      elseif c == 0xED then need, hi = 2, 0x9F
      elseif c == 0xF0 then need, lo = 3, 0x90
      elseif c >= 0xF1 and c <= 0xF3 then need = 3
      elseif c == 0xF4 then need, hi = 3, 0x8F end
      local j, ok = i + 1, need > 0
      for _ = 1, need do
        local b = s:byte(j)
        if b == nil or b < lo or b > hi then ok = false; break end
        lo, hi, j = 0x80, 0xBF, j + 1
      end
      out[#out + 1] = ok and s:sub(i, j - 1) or REPLACEMENT
      i = j
    end
  end
  return concat(out)
end

local PH = {}
local parse_pseudo
do  -- (a block: the main chunk may hold at most 200 locals)
local PH_FIXED, PH_VERSION, PH_MAX_FDS = C.PH_FIXED, C.PH_VERSION, C.PH_MAX_FDS
local MAGIC1, MAGIC2 = sbyte(C.PH_MAGIC, 1, 2)
local KIND_NAMES, CHANNEL_NAMES, DIRECTION_NAMES = C.KIND_NAMES, C.CHANNEL_NAMES, C.DIRECTION_NAMES
local FD_TEXT, NFD_TEXT = {}, 0  -- an fd description's bytes -> the text shown (bounded)

-- The pseudo-header from `raw`, the frame's bytes as a string (`n` of them).
function parse_pseudo(raw, n)
  if n < PH_FIXED then return nil, fmt("pseudo-header cut short: %d of %d bytes", n, PH_FIXED) end
  local m1, m2, version, kind, h1, h2, channel, direction = sbyte(raw, 1, 8)
  if m1 ~= MAGIC1 or m2 ~= MAGIC2 then return nil, "bad pseudo-header magic" end
  local flags, nfds = sbyte(raw, 13, 14)
  local hdr_len, conn = h1 * 256 + h2, u32s(raw, 9, true)
  local ph = PH  -- one table, refilled per frame
  ph.version, ph.kind, ph.hdr_len, ph.channel, ph.direction = version, kind, hdr_len, channel, direction
  ph.raw_conn, ph.conn, ph.flags, ph.nfds, ph.fds = conn, conn, flags, nfds, EMPTY
  if version ~= PH_VERSION then return nil, fmt("unsupported pseudo-header version %d", version) end
  if KIND_NAMES[kind] == nil then return nil, fmt("unknown frame kind %d", kind) end
  if CHANNEL_NAMES[channel] == nil then return nil, fmt("unknown channel %d", channel) end
  if DIRECTION_NAMES[direction] == nil then return nil, fmt("unknown direction %d", direction) end
  if hdr_len < PH_FIXED or hdr_len > n then
    return nil, fmt("pseudo-header length %d outside %d..%d", hdr_len, PH_FIXED, n)
  end
  if nfds > PH_MAX_FDS then return nil, fmt("%d fds: at most %d allowed", nfds, PH_MAX_FDS) end
  local pos = PH_FIXED
  if nfds > 0 then
    local fds, sizes = {}, {}
    ph.fds, ph.fd_sizes = fds, sizes
    for i = 1, nfds do
      if pos + 2 > hdr_len then return nil, fmt("fd list overruns pseudo-header length at fd %d", i - 1) end
      local size = u16s(raw, pos + 1, true)
      if pos + 2 + size > hdr_len then return nil, fmt("fd %d description overruns pseudo-header", i - 1) end
      local text = ""
      if size > 0 then
        local bytes = ssub(raw, pos + 3, pos + 2 + size)
        text = FD_TEXT[bytes]
        if text == nil then
          text = esc(utf8_clean(bytes))
          if NFD_TEXT < 4096 then FD_TEXT[bytes], NFD_TEXT = text, NFD_TEXT + 1 end
        end
      end
      fds[i], sizes[i] = text, size
      pos = pos + 2 + size
    end
  end
  if pos ~= hdr_len then return nil, fmt("fd list ends at %d, pseudo-header length says %d", pos, hdr_len) end
  ph.channel_name = CHANNEL_NAMES[channel]
  ph.big_endian = flags % 2 == 1
  return ph
end
end

local show_pseudo
do
-- The pseudo-header line's text per (direction, connection), made once (bounded).
local PH_TEXT, NPH_TEXT = { [0] = {}, [1] = {} }, 0
local function ph_text(ph)
  local text = fmt(", conn %d %s %s", ph.conn, ph.channel_name, C.DIRECTION_NAMES[ph.direction])
  if ph.channel == 0 and NPH_TEXT < 4096 then
    PH_TEXT[ph.direction][ph.conn], NPH_TEXT = text, NPH_TEXT + 1
  end
  return text
end

function show_pseudo(top, tvb, ph, whole)
  -- Values are passed, not read again from the tvb: wslua's add is ~2x cheaper then (-V).
  -- The subtree starts where the frame does: the frame's range (`whole`), cut to its length.
  local add, range = ti_add, tvb_range
  local t = add(top, F.pseudo, whole)
  ti_len(t, ph.hdr_len)
  add(t, F.ph_version, range(tvb, 2, 1), ph.version)
  add(t, F.kind, range(tvb, 3, 1), ph.kind)
  add(t, F.ph_hdr_len, range(tvb, 4, 2), ph.hdr_len)
  add(t, F.channel, range(tvb, 6, 1), ph.channel)
  add(t, F.direction, range(tvb, 7, 1), ph.direction)
  local c = add(t, F.conn, range(tvb, 8, 4), ph.conn)
  if ph.conn ~= ph.raw_conn then ti_text(c, fmt(" (conn %d of another capture, merged)", ph.raw_conn)) end
  local r = range(tvb, 12, 1)
  add(add(t, F.ph_flags, r, ph.flags), F.ph_big_endian, r, ph.flags)
  add(t, F.fd_count, range(tvb, 13, 1), ph.nfds)
  local pos = C.PH_FIXED
  for i = 1, #ph.fds do local text = ph.fds[i]
    local size = ph.fd_sizes[i]
    add(t, F.ph_fd, range(tvb, pos, 2 + size), text)
    pos = pos + 2 + size
  end
  ti_text(t, ph.channel == 0 and PH_TEXT[ph.direction][ph.conn] or ph_text(ph))
end
end

-- ===================================================================== runtime: checks
local function check_fds(s, rec, lname, out, lo, hi, role, probs, first)
  local n = 0
  local truncated
  for i_ = 1, #rec.raw_fds do local d = rec.raw_fds[i_]
    if d:sub(1, #C.TRUNCATED_FD) == C.TRUNCATED_FD then truncated = truncated or d else n = n + 1 end
  end
  if truncated then problem(probs, "fds_truncated", truncated) end
  if lname == "vring_fd" or lname == "vring_area" then
    local nofd = out.nofd
    if nofd then lo, hi = 0, 0 else lo, hi = 1, 1 end
    if lname == "vring_area" and not nofd then lo = 0 end
  elseif lname == "postcopy_ack" then
    lo, hi = 0, 0
  elseif hi == -1 then
    if out.regions ~= nil then hi = #out.regions else hi = C.MAX_FDS end
    lo = hi
  end
  if n < lo or n > hi then
    local want = lo == hi and tostring(lo) or (lo .. "-" .. hi)
    problem(probs, "fd_count", fmt("%d fds, expected %s%s", n, want, role ~= "" and (" (" .. role .. ")") or ""))
  end
  if first and n > 0 and rec.channel == "backend" and not rec.is_reply
      and protocol_has(s, C.BIT.BACKEND_SEND_FD) == false then
    problem(probs, "fds_without_backend_send_fd", "fds on the back-end channel without BACKEND_SEND_FD")
  end
end

local function check_result(rec, lname, out, probs)
  if lname == "ack" and out.result ~= nil and not is_zero(out.result) then
    problem(probs, "ack_error", "result " .. dec(out.result))
  elseif lname == "device_state_result" and out.error ~= nil and out.error ~= 0 then
    problem(probs, "ack_error", "error code " .. dec(out.error))
  elseif lname == "config" and rec.size == 0 then
    problem(probs, "ack_error", "empty GET_CONFIG reply means failure")
  elseif lname and lname:sub(1, 6) == "crypto" and out.session_id ~= nil and tonum(out.session_id) < 0 then
    problem(probs, "ack_error", "session_id " .. tostring(out.session_id))
  end
end

-- session._check_request / _apply_request / _apply_reply: the rule table (RULES, from
-- vuinspect/protocol/effects.py) run by runtime_effects.lua, which fills these.
local check_request, apply_request, apply_reply

-- ===================================================================== runtime: pairing
local function expects_reply(s, spec, need_reply)
  if spec == nil then return need_reply, false end
  local mode = spec.mode
  local ack = protocol_has(s, C.BIT.REPLY_ACK)
  if mode == "always" then return true, true end
  if mode == "flag" then return need_reply, need_reply end
  if mode == "log_shmfd" and protocol_has(s, C.BIT.LOG_SHMFD) then return true, true end
  if mode == "ack" or mode == "log_shmfd" then return need_reply, need_reply and ack == true end
  return false, false
end

-- A request whose reply will not come (the connection ended, or C.MAX_PENDING later ones
-- wait): missing_reply on its first-pass record, as session.py puts it on the message.
local function missing_reply(p, text)
  local m = p.m
  local list = M.probs[m]
  if list == nil then list = {}; M.probs[m] = list end
  list[#list + 1] = { code = "missing_reply", text = text }
  if not has(M.bits[m], B_MISSING) then M.bits[m] = M.bits[m] + B_MISSING end
end

local function enqueue(s, rec, spec, probs)
  local keep = s.pending[rec.channel]
  -- at most one optional entry exists, the newest: its reply did not come, which is fine
  if #keep > 0 and not keep[#keep].must then table.remove(keep) end
  if #keep > 0 then
    local more = ""
    if #keep > 1 then more = fmt(" (and %d later requests)", #keep - 1) end
    problem(probs, "request_while_waiting", fmt("%s (frame %d) still waits for its reply%s", keep[1].name, keep[1].frame, more))
  end
  local may, must = expects_reply(s, spec, rec.need_reply)
  if may then
    if #keep >= C.MAX_PENDING then  -- state.MAX_PENDING: the oldest is given up
      local old = table.remove(keep, 1)
      if old.must then missing_reply(old, fmt("given up: %d later requests wait", C.MAX_PENDING)) end
    end
    -- what pairing and close need of the request (rec itself is reused for the next one)
    local entry = { m = rec.m, frame = rec.frame, ts = rec.ts, request = rec.request,
                    name = rec.name, must = must }
    keep[#keep + 1] = entry
    rec.pending = entry
  end
  rec.must = must and may
  s.pending[rec.channel] = keep
end

local function pair(s, rec, probs)
  local q = s.pending[rec.channel]
  if #q == 0 then
    problem(probs, "reply_to_nothing", "no request is waiting for a reply")
    return nil
  end
  local mi
  for i = 1, #q do local p = q[i]
    if p.request == rec.request then mi = i; break end
  end
  local head = q[1]
  if mi == nil then
    problem(probs, "reply_mismatch", fmt("reply id %d but %s (id %d, frame %d) waits", rec.request, head.name, head.request, head.frame))
    return nil
  end
  if mi ~= 1 then
    problem(probs, "reply_mismatch", fmt("replies out of order: %s (frame %d) was sent first", head.name, head.frame))
  end
  local p = table.remove(q, mi)
  local req = p
  rec.reply_to = req.frame
  M.link[req.m] = rec.frame  -- the request was stored when its frame was dissected
  rec.latency = rec.ts - req.ts
  if not p.must and protocol_has(s, C.BIT.REPLY_ACK) == false then
    problem(probs, "unexpected_reply", "REPLY_ACK is not negotiated, no reply was due")
  end
  return req
end

-- ===================================================================== runtime: messages

-- A problem in the tree: its expert info and a vhost_user.problems item; returns its rank.
-- Every problem text is shown through here, escaped here once: some carry a capture's text
-- (a close reason, a ring event's problem).
local function show_problem(t, mrange, code, text, worst)
  t:add_proto_expert_info(EX[code], esc(text))
  ti_gen(ti_add(t, F.problems, mrange, code))
  local rank = SEV[code] or 0
  if worst == nil or rank < worst then return rank end
  return worst
end

local function show_fds(t, fds, mrange)
  for i_ = 1, #fds do local d = fds[i_]
    ti_gen(ti_add(t, F.fds, mrange, d))
    ti_hide(ti_add(t, F.fd, mrange, d))
  end
end

-- response_time's NSTime per latency (a userdata with a finaliser; latencies repeat in a
-- long capture): made once, kept (bounded).
local NSTIMES, NNSTIMES = {}, 0
local function nstime_of(sign, secs, ns)
  local key = sign * (secs * 1000000000 + ns)
  local v = NSTIMES[key]
  if v == nil then
    v = NSTime.new(sign * secs, sign * ns)
    if NNSTIMES < 4096 then NSTIMES[key], NNSTIMES = v, NNSTIMES + 1 end
  end
  return v
end

local function add_links(t, rec, mrange, visited)
  local add, gen, hide = ti_add, ti_gen, ti_hide
  if rec.reply_in then
    gen(add(t, F.reply_in, mrange, rec.reply_in))
    hide(add(t, F.response_in, mrange, rec.reply_in))
  end
  if rec.reply_to then
    gen(add(t, F.reply_to, mrange, rec.reply_to))
    hide(add(t, F.response_to, mrange, rec.reply_to))
    local lat = rec.latency or 0
    gen(add(t, F.latency_us, mrange, lat * 1e6))
    local sign = 1
    if lat < 0 then sign, lat = -1, -lat end  -- a reply that began before its request ended
    local secs = floor(lat)
    local ns = floor((lat - secs) * 1e9 + 0.5)
    if ns >= 1000000000 then secs, ns = secs + 1, ns - 1000000000 end
    hide(add(t, F.response_time, mrange, nstime_of(sign, secs, ns)))
  end
  local worst
  for i_ = 1, #rec.problems do local p = rec.problems[i_]; worst = show_problem(t, mrange, p.code, p.text, worst) end
  if visited and rec.must and rec.reply_in == nil and not rec.missing then
    worst = show_problem(t, mrange, "missing_reply", "capture ended before the reply", worst)
  end
  if worst then gen(add(t, F.severity, mrange, C.SEVERITIES[worst + 1])) end
end

-- fd lists repeat ("call: eventfd" in every session): one table per distinct list (bounded).
local SHARED, NSHARED = {}, 0
local function shared_list(list)
  local key = concat(list, "\0")
  local got = SHARED[key]
  if got then return got end
  if NSHARED < 4096 then
    SHARED[key], NSHARED = list, NSHARED + 1
  end
  return list
end

-- The first-pass results of a message, kept for later passes (see M in runtime: state).
local function persist(rec)
  local m, ctx = rec.m, rec.ctx or EMPTY
  local bits = (rec.be and B_BE or 0) + (ctx.xen and B_XEN or 0) + (ctx.packed and B_PACKED or 0)
    + (rec.must and B_MUST or 0) + (rec.is_reply and B_REPLY or 0)
    + (DEVICE_ID[ctx.device] or 0) * 64 + key_id(rec.channel, rec.name) * 4096
  M.bits[m] = bits
  M.link[m] = rec.reply_to and -rec.reply_to or false
  M.lat[m] = rec.latency or false
  local probs = rec.problems
  if #probs > 0 then
    if probs == PROBLEMS then  -- the shared list: keep a copy
      probs = {}
      for i = 1, #PROBLEMS do local p = PROBLEMS[i]; probs[i] = p end
    end
    M.probs[m] = probs
  end
  if #rec.fds > 0 then M.fds[m] = shared_list(rec.fds) end
end

-- A message as a later pass sees it: the stored results, no state.
-- (One table, refilled per message: a later pass keeps nothing of it.)
local STORED = {}
local function stored(m, frame, ph, raw)
  local ctx = ctx_of(M.bits[m] or 0)
  local link, lat = M.link[m], M.lat[m]
  local r = STORED
  r.m, r.frame, r.conn, r.channel, r.direction = m, frame, ph.conn, ph.channel_name, ph.direction
  r.be, r.raw, r.fds, r.problems, r.ctx = ctx.be, raw, M.fds[m] or EMPTY, M.probs[m] or EMPTY, ctx
  r.reply_in = link and link > 0 and link or nil
  r.reply_to = link and link < 0 and -link or nil
  r.latency, r.must, r.missing = lat or nil, ctx.must, ctx.missing
  return r
end

-- A message on the first pass: the framing facts, the rest is filled by dissect_message.
-- (One table, refilled per message: pending requests keep their own small entry.)
local REC = {}
local function first_rec(m, frame, ph, be, sp)
  local r = REC
  r.m, r.frame, r.conn, r.channel, r.direction = m, frame, ph.conn, ph.channel_name, ph.direction
  r.be, r.ts, r.raw, r.raw_fds, r.problems = be, sp.ts, sp.raw, sp.fds, sp.problems or empty(PROBLEMS)
  r.fds = EMPTY
  if #sp.fds > 0 then
    r.fds = {}
    for j = 1, #sp.fds do local d = sp.fds[j]; r.fds[j] = d end
  end
  r.name, r.request, r.flags, r.size, r.is_reply, r.need_reply = nil, nil, nil, nil, nil, nil
  r.ctx, r.must, r.index, r.reply_to, r.latency, r.pending = nil, nil, nil, nil, nil, nil
  return r
end

local OUT = {}

-- One framed message (or raw chunk) at tvb offset [base, base+len) of mt; its bytes are in
-- CUR_S.  On the first pass `rec` holds only the framing facts and is completed here (the
-- state is updated, checks run); later passes only redraw.  `t` is nil when no tree is built.
local function dissect_message(mt, base, len, rec, first, t)
  local s = first and session(rec.conn)  -- later passes redraw from the records alone
  local probs = first and rec.problems or empty(SCRATCH)
  local mrange = t and tvb_range(mt, base, len)
  if first then s.messages = s.messages + 1 end
  if rec.raw then
    rec.name = "RAW"
    if t then
      ti_add(t, F.raw, mrange)
      ti_gen(ti_add(t, F.name, mrange, "RAW"))
      show_fds(t, rec.fds, mrange)
      add_links(t, rec, mrange, false)
    end
    if not WANT_TEXT then return "" end
    if #rec.fds > 0 then return fmt("%d raw bytes fds=[%s]", len, concat(rec.fds, ", ")) end
    return fmt("%d raw bytes", len)
  end
  local be = rec.be
  local p = base - CUR_BASE + 1
  local req, flags, size
  do  -- the header's three words in one read
    local a, b, c, d, e, f, g, h, i, j, k, l = sbyte(CUR_S, p, p + 11)
    if be then
      req, flags, size = ((a * 256 + b) * 256 + c) * 256 + d, ((e * 256 + f) * 256 + g) * 256 + h,
        ((i * 256 + j) * 256 + k) * 256 + l
    else
      req, flags, size = ((d * 256 + c) * 256 + b) * 256 + a, ((h * 256 + g) * 256 + f) * 256 + e,
        ((l * 256 + k) * 256 + j) * 256 + i
    end
  end
  local channel = rec.channel
  local spec = REQUESTS[channel][req]
  local is_reply = rec.direction ~= C.REQUESTER[channel]
  local need_reply = has(flags, C.FLAG_NEED_REPLY)
  local name = spec and spec.name or ((channel == "main" and "UNKNOWN_" or "BACKEND_UNKNOWN_") .. req)
  rec.request, rec.flags, rec.size, rec.name = req, flags, size, name
  rec.is_reply, rec.need_reply = is_reply, need_reply
  if first and s.messages == 1 and req == R.GET_FEATURES and channel == "main" then s.seen_start = true end
  if t then
    local add, gen, range = ti_add, ti_gen, tvb_range
    -- the request and its name on the message's range, cut to the request's 4 bytes
    if channel == "main" then
      ti_len(add(t, F.request, mrange, req), 4)
    else  -- the same vhost_user.request with the back-end's names; the old name hidden
      ti_len(add(t, F.request_backend, mrange, req), 4)
      ti_len(ti_hide(add(t, F.backend_request, mrange, req)), 4)
    end
    ti_len(gen(add(t, F.name, mrange, name)), 4)
    local fr = range(mt, base + 4, 4)
    local fl = add(t, F.flags, fr, flags)
    add(fl, F.flags_version, fr, flags)  -- masked: the whole value
    add(fl, F.flags_reply, fr, flags)
    add(fl, F.flags_need_reply, fr, flags)
    add(fl, F.flags_reserved, fr, flags)
    add(t, F.size, range(mt, base + 8, 4), size)
    gen(add(t, F.reply, fr, is_reply))
    ti_hide(add(t, F.is_reply, fr, is_reply))
    if need_reply then gen(add(t, F.need_reply, fr, true)) end
    ti_text(t, is_reply and (spec and spec.reply_text or ": " .. name .. " reply")
      or (spec and spec.request_text or ": " .. name))
  end
  if first then
    if flags % 4 ~= C.VERSION then problem(probs, "bad_version", fmt("version bits are %d, not 1", flags % 4)) end
    if flags >= C.FLAGS_UNKNOWN_FROM then problem(probs, "reserved_flags", "flags 0x" .. hex(flags)) end
    if is_reply and flags ~= C.REPLY_FLAGS then
      problem(probs, "reply_flags", "flags 0x" .. hex(flags) .. " instead of 0x5")
    elseif not is_reply and has(flags, C.FLAG_REPLY) then
      problem(probs, "wrong_direction", "REPLY flag set on a message from the "
        .. (channel == "main" and "front-end" or "back-end") .. ", which sends requests here")
    end
  end
  local pbase, plen = base + C.HEADER_SIZE, len - C.HEADER_SIZE
  local out = OUT  -- one table, emptied per message (nothing keeps it)
  for k in pairs(out) do out[k] = nil end
  if spec == nil then
    problem(probs, "unknown_request", fmt("request id %d is not defined on the %s channel", req, channel))
    if plen > 0 then
      if t then ti_add(t, F.p_data, tvb_range(mt, pbase, plen)) end
      out.data = hex_at(pbase, plen)
    end
  end
  local request
  if first then
    if is_reply then request = pair(s, rec, probs) else enqueue(s, rec, spec, probs) end
    -- the session's part of the context, remade only when its words or device change
    local pa, va, dev = s.protocol_acked, s.virtio_acked, s.device
    local cc = s.ctx_cache
    if cc == nil or cc[1] ~= pa or cc[2] ~= va or cc[3] ~= dev then
      cc = { pa, va, dev, (protocol_has(s, C.BIT.XEN_MMAP) == true and B_XEN or 0)
        + (word_has(s, "virtio_acked", "virtio_acked_bits", C.BIT.RING_PACKED) and B_PACKED or 0)
        + (DEVICE_ID[dev] or 0) * 64 }
      s.ctx_cache = cc
    end
    rec.ctx = ctx_of((be and B_BE or 0) + cc[4])
  end
  local ctx = rec.ctx
  local lay
  if spec ~= nil then
    lay = choose_layout(is_reply and spec.reply or spec.request, mt, pbase, plen, ctx)
    if lay == nil then
      if plen > 0 then
        problem(probs, "wrong_size", fmt("%d bytes where none are defined", plen))
        if t then ti_add(t, F.p_data, tvb_range(mt, pbase, plen)) end
        out.data = hex_at(pbase, plen)
      end
    else
      if t then ti_gen(ti_add(t, F.layout, mrange, lay.name)) end
      decode_layout(lay, mt, pbase, plen, ctx, t, out, probs)
    end
    if first then
      local lname = lay and lay.name
      if is_reply then
        check_fds(s, rec, lname, out, spec.reply_fds[1], spec.reply_fds[2], spec.reply_fd_role, probs, first)
        check_result(rec, lname, out, probs)
        apply_reply(s, rec, out, request)
      else
        check_fds(s, rec, lname, out, spec.fds[1], spec.fds[2], spec.fd_role, probs, first)
        rec.index = out.index
        if rec.pending then rec.pending.index = out.index end
        check_request(s, rec, spec, out, probs)
        apply_request(s, rec, out)
      end
      if #rec.raw_fds > 0 then
        local role = is_reply and spec.reply_fd_role or spec.fd_role
        if role ~= "" then
          for i = 1, #rec.raw_fds do local d = rec.raw_fds[i]; rec.fds[i] = role .. ": " .. d end
        end
      end
    end
  end
  if t then
    show_fds(t, rec.fds, mrange)
    add_links(t, rec, mrange, not first)
  end
  if not WANT_TEXT then return "" end
  local summary = payload_summary(lay, out)
  local head  -- the name and its reply or need_reply mark (made once per request)
  if spec then
    head = is_reply and spec.reply_label or (need_reply and spec.need_label or name)
  else
    head = name .. (is_reply and " reply" or "") .. ((need_reply and not is_reply) and " (need_reply)" or "")
  end
  if #rec.fds > 0 then
    return head .. (summary ~= "" and " " or "") .. summary .. " fds=[" .. concat(rec.fds, ", ") .. "]"
  end
  if summary == "" then return head end
  return head .. " " .. summary
end
