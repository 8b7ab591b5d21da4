-- Runtime Lua, part 3: framing across frames, event frames, the dissector entry, the stats tap.
--
-- Framing mirrors vuinspect/decoder.py's StreamFramer: a frame may hold several
-- messages, the end of one, or bytes that cannot be framed (resynchronised on
-- the next plausible header).  Bytes left over at the end of a frame wait, per
-- (connection, channel, direction), for the next frame; a frame given such a
-- prefix keeps it (M.carry), so later passes rebuild the same reassembled buffer.
-- When Wireshark asks for no tree (tshark's summary lines), nothing but the Info
-- column is made: no TvbRange, no tree item, no reassembled tvb.
-- ===================================================================== runtime: framing
local function plausible(off, channel, be)
  local req, flags, size = u32(off, be), u32(off + 4, be), u32(off + 8, be)
  return band(flags, C.FLAGS_UNKNOWN) == 0 and band(flags, 3) == C.VERSION
    and size <= C.MAX_PAYLOAD and REQUESTS[channel][req] ~= nil
end

-- The fds whose carrying frame ended before `stop` (decoder.StreamFramer._take_fds).
local function take_fds(fdq, stop)
  if #fdq == 0 then return EMPTY, fdq end
  local taken, keep = {}, {}
  for i_ = 1, #fdq do local e = fdq[i_]
    if e.off < stop then
      for i_ = 1, #e.list do local d = e.list[i_]; taken[#taken + 1] = d end
    else
      keep[#keep + 1] = e
    end
  end
  return taken, keep
end

-- The spans of the frame being dissected: one list and a pool of span tables, refilled per
-- frame (a span lives only while its frame is dissected).
local SPANS, SPAN_POOL = {}, {}
local function span(spans, off, len, fds, ts, raw, problems)
  local i = #spans + 1
  local sp = SPAN_POOL[i]
  if sp == nil then
    sp = {}
    SPAN_POOL[i] = sp
  end
  sp.off, sp.len, sp.fds, sp.ts, sp.raw, sp.problems = off, len, fds, ts, raw, problems
  spans[i] = sp
end

-- Cut [base, base+total) of CUR_S into messages and raw chunks.  Returns the spans, the
-- bytes left for a later frame and (first pass) the stream entry holding them.
local function frame_spans(base, total, ph, carry, ts_now, be, key, first)
  if carry == nil and total >= C.HEADER_SIZE and total - C.HEADER_SIZE == u32(base + 8, be)
      and total - C.HEADER_SIZE <= C.MAX_PAYLOAD then
    -- The common frame: one whole message and nothing before it, so every fd is its own
    -- (what the general case below computes, without its lists).
    local spans = SPANS
    for i = #spans, 2, -1 do spans[i] = nil end
    spans[1] = nil
    span(spans, 0, total, ph.fds, ts_now)
    if first then streams[key] = nil end
    return spans, 0, nil
  end
  local fdq = EMPTY  -- fds waiting for the message that ends in or after their frame
  if (carry and #carry.fds > 0) or #ph.fds > 0 then
    fdq = {}
    if carry then for i_ = 1, #carry.fds do local e = carry.fds[i_]; fdq[#fdq + 1] = e end end
    if #ph.fds > 0 then fdq[#fdq + 1] = { off = total - 1, list = ph.fds } end
  end
  local spans, pos, ts = SPANS, 0, carry and carry.ts or ts_now
  for i = #spans, 1, -1 do spans[i] = nil end
  local fds
  while total - pos >= C.HEADER_SIZE do
    local size = u32(base + pos + 8, be)
    if size > C.MAX_PAYLOAD and pos == 0 and total == C.HEADER_SIZE + size
        and not (carry and #carry.prefix > 0) then
      -- decoder.StreamFramer's fast path: the sender framed it whole (the proxy frames up to
      -- its own larger limit), so it is decoded whole, flagged, its framing kept.
      fds, fdq = take_fds(fdq, total)
      span(spans, 0, total, fds, ts, nil, {
        { code = "oversize", text = fmt("payload of %d bytes above the protocol maximum (%d); "
                                        .. "framed whole by the sender", size, C.MAX_PAYLOAD) } })
      pos = total
    elseif size > C.MAX_PAYLOAD then
      local nxt = total
      for off = pos + 1, total - C.HEADER_SIZE do
        if plausible(base + off, ph.channel_name, be) then nxt = off; break end
      end
      fds, fdq = take_fds(fdq, nxt)
      span(spans, pos, nxt - pos, fds, ts, true, {
        { code = "oversize", text = fmt("header announces %d payload bytes (max %d)", size, C.MAX_PAYLOAD) },
        { code = "framing_lost", text = fmt("%d bytes passed through raw", nxt - pos)
          .. (nxt < total and ", resynchronised on the next plausible header" or "") } })
      pos = nxt
    else
      if total - pos < C.HEADER_SIZE + size then break end
      fds, fdq = take_fds(fdq, pos + C.HEADER_SIZE + size)
      span(spans, pos, C.HEADER_SIZE + size, fds, ts)
      pos = pos + C.HEADER_SIZE + size
    end
    ts = ts_now
  end
  local leftover
  if first then
    if pos < total or #fdq > 0 then
      local rest = {}
      for i_ = 1, #fdq do local e = fdq[i_]; rest[#rest + 1] = { off = e.off - pos, list = e.list } end
      local p = base + pos - CUR_BASE + 1
      leftover = { buf = ssub(CUR_S, p, p + total - pos - 1), fds = rest, ts = ts }
      streams[key] = leftover
    else
      streams[key] = nil
    end
  end
  return spans, total - pos, leftover
end

-- decoder.StreamFramer.close: what is left of a stream when it ends.
local function truncation(buf, be, why)
  local n = #buf
  if n == 0 then return nil end
  if n < C.HEADER_SIZE then
    return { code = "truncated_header", text = fmt("stream ended after %d of 12 header bytes (%s)", n, why) }
  end
  local size = u32s(buf, 9, be)
  return { code = "truncated_payload",
           text = fmt("stream ended after %d of %d payload bytes (%s)", n - C.HEADER_SIZE, size, why) }
end

local TEXTS = {}

local function dissect_data(tvb, raw, ph, num, first, top, tree, pinfo)
  local key = ph.conn * 4 + ph.channel * 2 + ph.direction
  local hl = ph.hdr_len
  local carry, be
  if first then
    be = ph.big_endian or session(ph.conn).be == true
    local st = streams[key]
    if st then carry = { prefix = st.buf, fds = st.fds, ts = st.ts } end
  else
    be = M.first[num] % 2 == 1
    carry = M.carry[num]
  end
  local mt, base, total = tvb, hl, #raw - hl
  CUR_S, CUR_BASE = raw, 0
  if carry and #carry.prefix > 0 then
    CUR_S = carry.prefix .. ssub(raw, hl + 1)
    base, total = 0, #CUR_S
    mt = top and ByteArray.new(CUR_S, true):tvb("Reassembled vhost-user")
  end
  local ts_now = first and pinfo.rel_ts or 0
  local spans, partial, leftover = frame_spans(base, total, ph, carry, ts_now, be, key, first)
  if first then
    M.first[num] = (M.n + 1) * 2 + (be and 1 or 0)
    if #spans ~= 1 then M.count[num] = #spans end
    if carry or leftover then
      M.carry[num] = { prefix = carry and carry.prefix or "", fds = carry and carry.fds or EMPTY,
                       leftover = leftover, key = key }
    end
  end
  local m0 = floor(M.first[num] / 2)
  local texts = TEXTS  -- one list, emptied per frame
  for i = #texts, 1, -1 do texts[i] = nil end
  for i = 1, #spans do local sp = spans[i]
    local t = top
    if i > 1 and top then t = ti_add(tree, vu, tvb_range(mt, base + sp.off, sp.len)) end
    local rec
    if first then
      M.n = M.n + 1
      rec = first_rec(M.n, num, ph, be, sp)
    else
      rec = stored(m0 + i - 1, num, ph, sp.raw)
    end
    texts[#texts + 1] = dissect_message(mt, base + sp.off, sp.len, rec, first, t)
    if first then persist(rec) end
  end
  if partial > 0 then
    texts[#texts + 1] = fmt("[%d bytes of a message continued in a later frame]", partial)
    if top then
      top:add(F.partial, mt:range(base + total - partial, partial))
      -- Later passes know the whole file: nothing continued it and no close flushed it.
      local c = M.carry[num]
      if not first and c and c.leftover and streams[c.key] == c.leftover then
        local p = truncation(c.leftover.buf, be, "capture ended")
        if p then
          local r = mt:range(base + total - partial, partial)
          local worst = show_problem(top, r, p.code, p.text)
          top:add(F.severity, r, C.SEVERITIES[worst + 1]):set_generated()
        end
      end
    end
  end
  if not WANT_TEXT then return "" end
  if #texts == 0 then return "[no data]" end
  if #texts == 1 then return texts[1] end
  return concat(texts, " | ")
end

-- ===================================================================== runtime: events
-- Event names as the CLI shows them: the pseudo-header kind names in capitals.
local EVENT_NAMES = {}
for code, name in pairs(C.KIND_NAMES) do EVENT_NAMES[code] = name:upper() end
local MAX_SAMPLE_PROBLEMS = 64  -- a ring sample's problem list comes from the file: bounded

local function word(v)
  if v == nil or type(v) == "table" then return "-" end
  return tostring(v)
end

local function event_summary(kind, info)
  if kind == C.KIND.ring then  -- a vring sample of the data plane (docs/capture-format.md 4a)
    return fmt("vring %s %s avail=%s used=%s in_flight=%s", word(info.vring), word(info.layout),
      word(info.avail_idx), word(info.used_idx), word(info.in_flight))
  elseif kind == C.KIND.notify then
    return fmt("vring %s %s x%s", word(info.vring), word(info.signal), word(info.count))
  end
  if kind == C.KIND.open then
    local text = "connection opened " .. tostring(info.label or "") .. " " .. tostring(info.orientation or "")
    if info.device and info.device ~= "" then text = text .. " device=" .. tostring(info.device) end
    return (text:gsub("%s+$", ""))
  elseif kind == C.KIND.close then
    return "connection closed: " .. tostring(info.reason or "")
  end
  if info.text ~= nil then return tostring(info.text) end
  return "note"
end

-- A rule or addon note (docs/capture-format.md §4, docs/rules.md): its keys as
-- vhost_user.payload.KEY (C.RULE_KEYS, verdict.FIRING_NOTE_KEYS) under the one who acted
-- (payload.rule, else payload.addon), with an expert saying the proxy changed the traffic.
-- The old names (vhost_user.rule, vhost_user.rule.KEY) are hidden aliases.
local U32 = 4294967296
local RULE_LABELS = { original = "Message before the rule", new = "Message sent on (after the rule)",
                      answer = "Answer of the proxy" }
local function add_value(t, f, rng, v)  -- (v nil: the field reads its bytes)
  if v == nil then return t:add(f, rng) end
  return t:add(f, rng, v)
end
-- A note key's item (none for the head, shown as the note's own item) and its old name.
local function note_item(t, k, head, rng, v)
  local item = k ~= head and add_value(t, F["note_" .. k], rng, v) or nil
  local old = F["rule_" .. k]
  if old then add_value(t, old, rng, v):set_hidden() end
  return item
end
local function show_rule(top, r, info)
  local rule, addon = info.rule, info.addon
  local head = (type(rule) == "string" and "rule") or (type(addon) == "string" and "addon") or nil
  if head == nil then return end
  local t = top:add(F["note_" .. head], r, esc(info[head]))
  top:add(F.rule, r, esc(head == "rule" and rule or ("addon " .. addon))):set_hidden()
  for i_ = 1, #C.RULE_KEYS do local kc = C.RULE_KEYS[i_]
    local k, ctor = kc[1], kc[2]
    local v = info[k]
    if ctor == "bytes" then  -- hex from the file, shown only when it is hex, as its own data
      if type(v) == "string" and #v % 2 == 0 and not v:find("[^0-9a-fA-F]") then
        if #v == 0 then
          local item = note_item(t, k, head, r:range(0, 0))
          if item then item:set_text(RULE_LABELS[k] .. ": none") end
        else
          note_item(t, k, head, ByteArray.new(v):tvb(RULE_LABELS[k]):range())
        end
      end
    elseif ctor == "double" then
      if type(v) == "number" then note_item(t, k, head, r, v) end
    elseif ctor == "uint32" then
      if type(v) == "number" and v >= 0 and v < U32 and v % 1 == 0 then note_item(t, k, head, r, v) end
    elseif ctor == "bool" then
      note_item(t, k, head, r, v ~= false)
    elseif v ~= nil and type(v) ~= "table" then
      note_item(t, k, head, r, esc(tostring(v)))
    end
  end
  local text = esc(tostring(info.text or ""))
  t:add_proto_expert_info(info.fired == false and EXR.not_fired or EXR.injected, text)
end

-- A ring or notify frame's scalar JSON keys as vhost_user.payload.<key> (C.DATAPLANE, from
-- vuinspect/fields.py).  Only values of the field's type and range are shown (the file can
-- hold anything); ns times are read as digits (doubles lose them) and shown only when the
-- digits are the decoded number.
local function show_dataplane(top, r, info, text, keys)
  for i_ = 1, #keys do local e = keys[i_]
    local k, f, ctor = e[1], F[e[2]], e[3]
    local v = info[k]
    local tv = type(v)
    if ctor == "uint32" then
      if tv == "number" and v >= 0 and v < U32 and v % 1 == 0 then top:add(f, r, v) end
    elseif ctor == "uint64" then
      if tv == "number" and v >= 0 and v % 1 == 0 then
        local digits = text:match('"' .. k .. '"%s*:%s*(%d+)')
        if digits and #digits <= 19 and tonumber(digits) == v then top:add(f, r, UInt64(digits)) end
      end
    elseif ctor == "bool" then
      if tv == "boolean" then top:add(f, r, v) end
    elseif tv == "string" then
      top:add(f, r, esc(v))
    end
  end
end

-- Pipeline._event + Session.on_open/on_close (first pass only for the state).  The close
-- of the back-end channel ends only its own partial messages (Pipeline._flush_conn).
local function close_session(s, reason, num, channel)
  local found = {}
  local lo = s.conn * 4 + (channel == 0 and 0 or 2)
  for key = lo, s.conn * 4 + 3 do
    local st = streams[key]
    if st then
      local p = truncation(st.buf, s.be == true, "connection closed")
      if p then found[#found + 1] = p end
      streams[key] = nil
    end
  end
  if #found > 0 then M.closed[num] = found end
  if channel ~= 0 then return end
  for _, q in pairs(s.pending) do
    for i_ = 1, #q do local p = q[i_]
      if p.must then missing_reply(p, "connection ended before the reply (" .. reason .. ")") end
    end
  end
  if s.closed then return end
  s.closed = true
  local c = closed
  c.tail = c.tail + 1
  c[c.tail] = s
  if c.tail - c.head >= C.KEEP_CLOSED then
    local old = c[c.head]
    c[c.head], c.head = nil, c.head + 1
    if sessions[old.conn] == old then sessions[old.conn] = nil end
  end
end

-- What a close found of unfinished messages, with the severity of the worst.
local function show_closed(top, r, num)
  local worst
  for _, p in ipairs(M.closed[num] or EMPTY) do worst = show_problem(top, r, p.code, p.text, worst) end
  if worst then top:add(F.severity, r, C.SEVERITIES[worst + 1]):set_generated() end
end

local function dissect_event(tvb, raw, ph, num, first, top)
  local text = utf8_clean(ssub(raw, ph.hdr_len + 1))
  local info = json_decode(text)
  if info == nil then info = { text = text }
  elseif type(info) ~= "table" or info[1] ~= nil then info = { value = info } end
  if top then
    local r = tvb:range(ph.hdr_len, #raw - ph.hdr_len)
    top:add(F.event_json, r, esc(text))
    for i_ = 1, #C.EVENT_KEYS do local k = C.EVENT_KEYS[i_]
      local v = info[k]
      if v ~= nil and type(v) ~= "table" then
        local text_ = esc(tostring(v))
        top:add(F["ev_" .. k], r, text_)
        local old = F["ev_old_" .. k]  -- vhost_user.event.KEY, for a key that had that name
        if old then top:add(old, r, text_):set_hidden() end
      end
    end
    show_closed(top, r, num)
    if ph.kind == C.KIND.note then show_rule(top, r, info) end
    local dp = C.DATAPLANE[ph.kind]
    if dp then show_dataplane(top, r, info, text, dp) end
    if ph.kind == C.KIND.ring and type(info.problems) == "table" then
      local worst
      for i = 1, #info.problems do local p = info.problems[i]
        if i > MAX_SAMPLE_PROBLEMS then break end
        local code = type(p) == "table" and p.code
        if type(code) == "string" and EX[code] then
          worst = show_problem(top, r, code, tostring(p.text or ""), worst)
        end
      end
      if worst then top:add(F.severity, r, C.SEVERITIES[worst + 1]):set_generated() end
    end
  end
  if first then
    M.first[num] = false
    local s = session(ph.conn)
    if ph.kind == C.KIND.open then
      s.seen_start = true
      if type(info.device) == "string" and info.device ~= "" then s.device = info.device end
      if info.byteorder == "big" then s.be = true end
    elseif ph.kind == C.KIND.close then
      close_session(s, tostring(info.reason or "closed"), num, ph.channel)
      if top then
        show_closed(top, tvb:range(ph.hdr_len, #raw - ph.hdr_len), num)
      end
    end
  end
  local summary = esc(EVENT_NAMES[ph.kind] .. " " .. event_summary(ph.kind, info))
  if top then top:append_text(": " .. summary) end
  return summary
end

-- ===================================================================== runtime: entry point
-- conn -> { [0] = { front-end, back-end }, [1] = { back-end, front-end } }: the Source and
-- Destination columns of a frame by its direction.
local LABELS = {}
local function labels_of(conn)
  local labels = LABELS[conn]
  if labels == nil then
    local front, back = fmt("c%d front-end", conn), fmt("c%d back-end", conn)
    labels = { [0] = { front, back }, [1] = { back, front } }
    LABELS[conn] = labels
  end
  return labels
end

function vu.dissector(tvb, pinfo, tree)
  local columns = pinfo.cols
  columns.protocol = "vhost-user"
  -- tshark's summary lines come with no tree at all: then only the columns are made.
  local top, whole
  if tostring(tree):find("has item=false", 1, true) == nil then
    bind_tree(tree, tvb)
    gc_for_trees()
    whole = tvb_range(tvb)
    top = ti_add(tree, vu, whole)  -- the whole frame
  else
    gc_no_tree()
  end
  local num = pinfo.number
  local kept = top == nil and M.text[num]
  if kept then
    -- A later pass of a frame whose Info text was kept: only the columns (setting them is a
    -- no-op when there are none), not even the frame's bytes.
    local sd = M.cols[num]
    columns.src, columns.dst = sd[1], sd[2]
    columns.info = kept
    return tvb:len()
  end
  local cols = tostring(columns.protocol) == "vhost-user"  -- else there are no columns
  local raw = tvb:raw()
  local n = #raw
  local ph, err = parse_pseudo(raw, n)
  if ph == nil then
    if top then top:add_proto_expert_info(EX.pseudo_header, err) end
    columns.info = "damaged vuinspect pseudo-header: " .. err
    return n
  end
  local first = M.first[num] == nil
  if first then
    local shown = shown_conn(ph.conn, ph.kind == C.KIND.open)
    if shown ~= ph.conn then M.conn[num] = shown end
    ph.conn = shown
  else
    ph.conn = M.conn[num] or ph.conn
  end
  if top then show_pseudo(top, tvb, ph, whole) end
  local sd = labels_of(ph.conn)[ph.direction]
  if cols then columns.src, columns.dst = sd[1], sd[2] end
  -- A first pass with neither tree nor columns (tshark -2) keeps the Info text and the
  -- (shared) Source/Destination pair for the next pass, which then only sets the columns.
  local keep = first and not cols and top == nil
  WANT_TEXT = cols or keep
  local info
  if ph.kind ~= C.KIND.data then
    info = dissect_event(tvb, raw, ph, num, first, top)
  else
    info = dissect_data(tvb, raw, ph, num, first, top, tree, pinfo)
  end
  if not WANT_TEXT then return n end
  if ph.channel_name ~= "main" then info = "[" .. ph.channel_name .. " channel] " .. info end
  if keep then M.text[num], M.cols[num] = info, sd end
  if cols then columns.info = info end
  return n
end

-- ===================================================================== runtime: statistics
local function stats_message(acc, m)
  local bits = M.bits[m]
  if bits == nil then return end
  local key = KEYS[floor(bits / 4096)]
  local st = acc[key]
  if st == nil then
    st = { count = 0, replies = 0, lat = {}, problems = 0 }
    acc[key] = st
  end
  if has(bits, B_REPLY) then
    st.replies = st.replies + 1
    if M.lat[m] then st.lat[#st.lat + 1] = M.lat[m] * 1e6 end
  else
    st.count = st.count + 1
  end
  st.problems = st.problems + #(M.probs[m] or EMPTY)
end

local function stats_collect(acc, num)
  local f = M.first[num]
  if not f then return end
  local m0 = floor(f / 2)
  for m = m0, m0 + (M.count[num] or 1) - 1 do stats_message(acc, m) end
end

local function stats_text(acc)
  local keys = {}
  for k in pairs(acc) do keys[#keys + 1] = k end
  table.sort(keys)
  local rule = string.rep("=", 78)
  local lines = { rule, "vhost-user request statistics (vuinspect)",
    fmt("%-26s %6s %7s %8s %8s %8s %8s", "Request", "Count", "Replies", "Min us", "Avg us", "Max us", "Problems") }
  for i_ = 1, #keys do local k = keys[i_]
    local st = acc[k]
    local lo, hi, sum = nil, nil, 0
    for i_ = 1, #st.lat do local v = st.lat[i_]
      if lo == nil or v < lo then lo = v end
      if hi == nil or v > hi then hi = v end
      sum = sum + v
    end
    local function us(v) if v == nil then return "-" end return fmt("%.1f", v) end
    lines[#lines + 1] = fmt("%-26s %6d %7d %8s %8s %8s %8d", k, st.count, st.replies, us(lo),
      us(#st.lat > 0 and sum / #st.lat or nil), us(hi), st.problems)
  end
  lines[#lines + 1] = rule
  return concat(lines, "\n")
end

if register_stat_cmd_arg ~= nil then
  register_stat_cmd_arg("vhost_user,stat", function()
    local acc = {}
    local tap = Listener.new("frame", "vhost_user")
    function tap.packet(pinfo)
      stats_collect(acc, pinfo.number)
    end
    function tap.draw() print(stats_text(acc)) end
    function tap.reset() acc = {} end
  end)
end

if gui_enabled ~= nil and gui_enabled() and register_menu ~= nil then
  -- MENU_STAT_UNSORTED: Wireshark 4.0 (Qt) lists MENU_STAT_GENERIC entries in no menu
  register_menu("vhost-user request statistics", function()
    local acc = {}
    for m = 1, M.n do stats_message(acc, m) end
    local w = TextWindow.new("vhost-user request statistics")
    w:set(stats_text(acc))
  end, MENU_STAT_UNSORTED)
end
