"""Runtime Lua, part 3: framing across frames, event frames, the dissector entry, the stats tap.

Framing mirrors vuinspect/decoder.py's StreamFramer: a frame may hold several
messages, the end of one, or bytes that cannot be framed (resynchronised on
the next plausible header).  Bytes left over at the end of a frame wait, per
(connection, channel, direction), for the next frame; each frame keeps the
prefix it was given, so later passes rebuild the same reassembled buffer.
"""

RUNTIME = r'''
-- ===================================================================== runtime: framing
local function plausible(mt, off, channel, be)
  local req, flags, size = u32(mt, off, be), u32(mt, off + 4, be), u32(mt, off + 8, be)
  return band(flags, C.FLAGS_UNKNOWN) == 0 and band(flags, 3) == C.VERSION
    and size <= C.MAX_PAYLOAD and REQUESTS[channel][req] ~= nil
end

-- The fds whose carrying frame ended before `stop` (decoder.StreamFramer._take_fds).
local function take_fds(fdq, stop)
  local taken, keep = {}, {}
  for _, e in ipairs(fdq) do
    if e.off < stop then
      for _, d in ipairs(e.list) do taken[#taken + 1] = d end
    else
      keep[#keep + 1] = e
    end
  end
  return taken, keep
end

-- First pass: cut [base, base+total) of mt into messages and raw chunks.
local function frame_spans(mt, base, total, ph, fr, ts_now, be, key)
  local fdq = {}
  for _, e in ipairs(fr.prefix_fds or {}) do fdq[#fdq + 1] = e end
  if #ph.fds > 0 then fdq[#fdq + 1] = { off = total - 1, list = ph.fds } end
  local spans, pos, ts = {}, 0, fr.prefix_ts or ts_now
  local fds
  while total - pos >= C.HEADER_SIZE do
    local size = u32(mt, base + pos + 8, be)
    if size > C.MAX_PAYLOAD then
      local nxt = total
      for off = pos + 1, total - C.HEADER_SIZE do
        if plausible(mt, base + off, ph.channel_name, be) then nxt = off; break end
      end
      fds, fdq = take_fds(fdq, nxt)
      spans[#spans + 1] = { off = pos, len = nxt - pos, raw = true, fds = fds, ts = ts, problems = {
        { code = "oversize", text = fmt("header announces %d payload bytes (max %d)", size, C.MAX_PAYLOAD) },
        { code = "framing_lost", text = fmt("%d bytes passed through raw", nxt - pos)
          .. (nxt < total and ", resynchronised on the next plausible header" or "") } } }
      pos = nxt
    else
      if total - pos < C.HEADER_SIZE + size then break end
      fds, fdq = take_fds(fdq, pos + C.HEADER_SIZE + size)
      spans[#spans + 1] = { off = pos, len = C.HEADER_SIZE + size, fds = fds, ts = ts }
      pos = pos + C.HEADER_SIZE + size
    end
    ts = ts_now
  end
  if pos < total or #fdq > 0 then
    local rest = {}
    for _, e in ipairs(fdq) do rest[#rest + 1] = { off = e.off - pos, list = e.list } end
    local buf = ByteArray.new()
    if pos < total then buf = mt:range(base + pos, total - pos):bytes() end
    streams[key] = { buf = buf, fds = rest, ts = ts }
    fr.leftover, fr.key = streams[key], key
  else
    streams[key] = nil
  end
  fr.partial = total - pos
  return spans
end

-- decoder.StreamFramer.close: what is left of a stream when it ends.
local function truncation(buf, be, why)
  local n = buf:len()
  if n == 0 then return nil end
  if n < C.HEADER_SIZE then
    return { code = "truncated_header", text = fmt("stream ended after %d of 12 header bytes (%s)", n, why) }
  end
  local size = u32(buf:tvb("Truncated vhost-user"), 8, be)
  return { code = "truncated_payload",
           text = fmt("stream ended after %d of %d payload bytes (%s)", n - C.HEADER_SIZE, size, why) }
end

local function dissect_data(tvb, ph, fr, first, top, tree, pinfo)
  local s = session(ph.conn)
  local key = ph.conn .. "/" .. ph.channel .. "/" .. ph.direction
  local dlen = tvb:len() - ph.hdr_len
  if first then
    local st = streams[key]
    if st then fr.prefix, fr.prefix_fds, fr.prefix_ts = st.buf, st.fds, st.ts end
    fr.be = ph.big_endian or s.be == true
  end
  local mt, base, total = tvb, ph.hdr_len, dlen
  if fr.prefix ~= nil and fr.prefix:len() > 0 then
    local ba = ByteArray.new()
    ba:append(fr.prefix)
    if dlen > 0 then ba:append(tvb:range(ph.hdr_len, dlen):bytes()) end
    mt, base, total = ba:tvb("Reassembled vhost-user"), 0, ba:len()
  end
  if first then
    fr.spans = frame_spans(mt, base, total, ph, fr, pinfo.rel_ts, fr.be, key)
    fr.msgs = {}
  end
  local texts = {}
  for i, sp in ipairs(fr.spans) do
    local t = top
    if i > 1 then t = tree:add(vu, mt:range(base + sp.off, sp.len)) end
    local rec = fr.msgs[i]
    if first then
      rec = { frame = pinfo.number, conn = ph.conn, channel = ph.channel_name, direction = ph.direction,
              be = fr.be, ts = sp.ts, raw = sp.raw, raw_fds = sp.fds, fds = {}, problems = sp.problems or {} }
      for j, d in ipairs(sp.fds) do rec.fds[j] = d end
      fr.msgs[i] = rec
    end
    texts[#texts + 1] = dissect_message(mt, base + sp.off, sp.len, rec, first, t)
  end
  if fr.partial > 0 then
    top:add(F.partial, mt:range(base + total - fr.partial, fr.partial))
    texts[#texts + 1] = fmt("[%d bytes of a message continued in a later frame]", fr.partial)
    -- Later passes know the whole file: nothing continued it and no close flushed it.
    if not first and fr.leftover ~= nil and streams[fr.key] == fr.leftover then
      local p = truncation(fr.leftover.buf, fr.be, "capture ended")
      if p then top:add_proto_expert_info(EX[p.code], p.text) end
    end
  end
  if #texts == 0 then texts[1] = "[no data]" end
  return concat(texts, " | ")
end

-- ===================================================================== runtime: events
local EVENT_NAMES = { [1] = "OPEN", [2] = "CLOSE", [3] = "NOTE" }

local function event_summary(kind, info)
  if kind == 1 then
    local text = "connection opened " .. tostring(info.label or "") .. " " .. tostring(info.orientation or "")
    if info.device and info.device ~= "" then text = text .. " device=" .. tostring(info.device) end
    return (text:gsub("%s+$", ""))
  elseif kind == 2 then
    return "connection closed: " .. tostring(info.reason or "")
  end
  if info.text ~= nil then return tostring(info.text) end
  return "note"
end

-- Pipeline._event + Session.on_open/on_close (first pass only for the state).
local function close_session(s, reason, fr)
  fr.truncated = {}
  local prefix = s.conn .. "/"
  for key, st in pairs(streams) do
    if key:sub(1, #prefix) == prefix then
      local p = truncation(st.buf, s.be == true, "connection closed")
      if p then fr.truncated[#fr.truncated + 1] = p end
      streams[key] = nil
    end
  end
  for _, q in pairs(s.pending) do
    for _, p in ipairs(q) do
      if p.must then
        p.rec.problems[#p.rec.problems + 1] = { code = "missing_reply", text = "connection ended before the reply (" .. reason .. ")" }
        p.rec.missing = true
      end
    end
  end
end

local function dissect_event(tvb, ph, fr, first, top)
  local dlen = tvb:len() - ph.hdr_len
  local r = tvb:range(ph.hdr_len, dlen)
  local text = ""
  if dlen > 0 then text = utf8_clean(r:raw()) end
  local info = json_decode(text)
  if info == nil then info = { text = text }
  elseif type(info) ~= "table" or info[1] ~= nil then info = { value = info } end
  top:add(F.event_json, r, text)
  for _, k in ipairs(C.EVENT_KEYS) do
    local v = info[k]
    if v ~= nil and type(v) ~= "table" then top:add(F["ev_" .. k], r, tostring(v)) end
  end
  if first then
    local s = session(ph.conn)
    if ph.kind == 1 then
      s.seen_start = true
      if type(info.device) == "string" and info.device ~= "" then s.device = info.device end
      if info.byteorder == "big" then s.be = true end
    elseif ph.kind == 2 then
      close_session(s, tostring(info.reason or "closed"), fr)
    end
  end
  for _, p in ipairs(fr.truncated or {}) do top:add_proto_expert_info(EX[p.code], p.text) end
  local summary = event_summary(ph.kind, info)
  top:append_text(": " .. EVENT_NAMES[ph.kind] .. " " .. summary)
  return EVENT_NAMES[ph.kind] .. " " .. summary
end

-- ===================================================================== runtime: entry point
function vu.dissector(tvb, pinfo, tree)
  pinfo.cols.protocol = "vhost-user"
  local top = tree:add(vu, tvb:range(0, tvb:len()))
  local ph, err = parse_pseudo(tvb)
  if ph == nil then
    top:add_proto_expert_info(EX.pseudo_header, err)
    pinfo.cols.info = "damaged vuinspect pseudo-header: " .. err
    return tvb:len()
  end
  show_pseudo(top, tvb, ph)
  local fe, be = fmt("c%d front-end", ph.conn), fmt("c%d back-end", ph.conn)
  if ph.direction == 0 then
    pinfo.cols.src, pinfo.cols.dst = fe, be
  else
    pinfo.cols.src, pinfo.cols.dst = be, fe
  end
  local fr = frames[pinfo.number]
  local first = fr == nil
  if first then
    fr = {}
    frames[pinfo.number] = fr
  end
  local info
  if ph.kind ~= 0 then
    info = dissect_event(tvb, ph, fr, first, top)
  else
    info = dissect_data(tvb, ph, fr, first, top, tree, pinfo)
  end
  if ph.channel_name ~= "main" then info = "[" .. ph.channel_name .. " channel] " .. info end
  pinfo.cols.info = info
  return tvb:len()
end

-- ===================================================================== runtime: statistics
local function stats_collect(acc, fr)
  for _, rec in ipairs(fr.msgs or {}) do
    local key = rec.channel .. ":" .. tostring(rec.name)
    local st = acc[key]
    if st == nil then
      st = { count = 0, replies = 0, lat = {}, problems = 0 }
      acc[key] = st
    end
    if rec.is_reply then
      st.replies = st.replies + 1
      if rec.latency then st.lat[#st.lat + 1] = rec.latency * 1e6 end
    else
      st.count = st.count + 1
    end
    st.problems = st.problems + #rec.problems
  end
end

local function stats_text(acc)
  local keys = {}
  for k in pairs(acc) do keys[#keys + 1] = k end
  table.sort(keys)
  local rule = string.rep("=", 104)
  local lines = { rule, "vhost-user request statistics (vuinspect)",
    fmt("%-46s %8s %8s %12s %12s %12s %8s", "Request", "Count", "Replies", "Min us", "Avg us", "Max us", "Problems") }
  for _, k in ipairs(keys) do
    local st = acc[k]
    local lo, hi, sum = nil, nil, 0
    for _, v in ipairs(st.lat) do
      if lo == nil or v < lo then lo = v end
      if hi == nil or v > hi then hi = v end
      sum = sum + v
    end
    local function us(v) if v == nil then return "-" end return fmt("%.1f", v) end
    lines[#lines + 1] = fmt("%-46s %8d %8d %12s %12s %12s %8d", k, st.count, st.replies, us(lo),
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
      local fr = frames[pinfo.number]
      if fr then stats_collect(acc, fr) end
    end
    function tap.draw() print(stats_text(acc)) end
    function tap.reset() acc = {} end
  end)
end

if gui_enabled ~= nil and gui_enabled() and register_menu ~= nil then
  register_menu("vhost-user/Request statistics", function()
    local acc = {}
    for _, fr in pairs(frames) do stats_collect(acc, fr) end
    local w = TextWindow.new("vhost-user request statistics")
    w:set(stats_text(acc))
  end, MENU_STAT_GENERIC)
end
'''
