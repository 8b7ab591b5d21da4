-- Runtime Lua, part 1: helpers, event JSON, payload decoding (a port of vuinspect/payload.py).
--
-- Kept as a Python string so that an installed wheel can generate the dissector
-- without data files.  Written for Lua 5.2 through 5.4: bit tests use
-- arithmetic or the ``bit`` library, 64-bit values stay ``UInt64``/``Int64``.
-- Every loop is bounded by the bytes present or by a table's maximum.
-- ===================================================================== runtime: helpers
local floor, fmt, concat = math.floor, string.format, table.concat
local ipairs, pairs, type, tostring, tonumber = ipairs, pairs, type, tostring, tonumber
local TWO32 = 4294967296

-- Tree methods, taken once from the first tree item (bind_tree): wslua looks `item:add` up
-- through a C __index function (TreeItem has attributes), one more C call per use, and a
-- full tree (-V) makes ~30 items a frame.  Nil until a tree is built.
-- ti_len (set_len): an item on a longer range that starts where it does, cut to its own
-- length, instead of a range of its own (a TvbRange is a userdata with a finaliser and two
-- C allocations; set_len is one C call; wslua has had it since 1.11.3).
local ti_add, ti_add_le, ti_gen, ti_hide, ti_text, ti_len, tvb_range
local function bind_tree(item, tvb)
  if ti_add == nil then
    ti_add, ti_add_le, ti_gen = item.add, item.add_le, item.set_generated
    ti_hide, ti_text, tvb_range = item.set_hidden, item.append_text, tvb.range
    ti_len = item.set_len
  end
end

-- 32-bit AND with a non-negative result: BitOp's `bit` when present, arithmetic otherwise.
local band
if type(bit) == "table" and bit.band ~= nil then
  band = function(a, b)
    local r = bit.band(a, b)
    if r < 0 then r = r + TWO32 end
    return r
  end
else
  band = function(a, b)
    local r, p = 0, 1
    a, b = a % TWO32, b % TWO32
    while a > 0 and b > 0 do
      if a % 2 == 1 and b % 2 == 1 then r = r + p end
      a, b, p = floor(a / 2), floor(b / 2), p * 2
    end
    return r
  end
end

-- (low, high) 32-bit halves of a number, UInt64 or Int64.
local function lohi(v)
  if type(v) == "number" then
    if v < 0 then v = v + TWO32 end
    return v % TWO32, floor(v / TWO32)
  end
  return v:lower(), v:higher()
end

local function tonum(v)
  if v == nil or type(v) == "number" then return v end
  if type(v) == "boolean" then return v and 1 or 0 end
  return v:tonumber()
end

local function bit_set(v, n)
  local lo, hi = lohi(v)
  if n >= 32 then return floor(hi / 2 ^ (n - 32)) % 2 == 1 end
  return floor(lo / 2 ^ n) % 2 == 1
end

local function is_zero(v)
  local lo, hi = lohi(v)
  return lo == 0 and hi == 0
end

local function num_eq(v, n)
  local lo, hi = lohi(v)
  return lo == n % TWO32 and hi == floor(n / TWO32)
end

-- Like Python's f"{v:x}".
local function hex(v)
  if type(v) == "number" and v < 0 then return "-" .. hex(-v) end
  local lo, hi = lohi(v)
  if hi == 0 then return fmt("%x", lo) end
  return fmt("%x%08x", hi, lo)
end

local dec
do
  local DEC = {}  -- the decimal text of small integers, made once
  for i = 0, 1023 do DEC[i] = fmt("%d", i) end
  function dec(v)
    if type(v) == "number" then return DEC[v] or fmt("%d", v) end
    if type(v) == "boolean" then return v and "True" or "False" end
    return tostring(v)
  end
end

-- Like vuinspect.render.human_size.
local SIZE_UNITS = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" }
local function human_size(n)
  local value, i = n, 1
  while value >= 1024 and i < #SIZE_UNITS do
    value = value / 1024
    i = i + 1
  end
  if value == floor(value) then return fmt("%.0f%s", value, SIZE_UNITS[i]) end
  return fmt("%.1f%s", value, SIZE_UNITS[i])
end

-- Reads come from one Lua string per frame (CUR_S, holding tvb offsets from CUR_BASE on):
-- a TvbRange per value would cost a userdata each, and most passes build no tree at all.
local CUR_S, CUR_BASE = "", 0
local sbyte, ssub = string.byte, string.sub

local function u32s(s, p, be)  -- p is 1-based
  local a, b, c, d = sbyte(s, p, p + 3)
  if be then return ((a * 256 + b) * 256 + c) * 256 + d end
  return ((d * 256 + c) * 256 + b) * 256 + a
end

local function u16s(s, p, be)
  local a, b = sbyte(s, p, p + 1)
  if be then return a * 256 + b end
  return b * 256 + a
end

-- A 64-bit value: a Lua number while it is exact (below 2^53), else UInt64/Int64.
local function u64s(s, p, be, signed)
  local lo, hi
  if be then hi, lo = u32s(s, p, true), u32s(s, p + 4, true)
  else lo, hi = u32s(s, p, false), u32s(s, p + 4, false) end
  if signed and hi >= 2147483648 then
    if hi >= TWO32 - 2097152 then return (hi - TWO32) * TWO32 + lo end
    return Int64.new(lo, hi)
  end
  if hi < 2097152 then return hi * TWO32 + lo end
  if signed then return Int64.new(lo, hi) end
  return UInt64.new(lo, hi)
end

-- The value of layout field `f` at tvb offset `off` (nil for byte strings).
local function read(off, f, be)
  local c, p = f.fmt, off - CUR_BASE + 1
  if c == "I" then return u32s(CUR_S, p, be) end
  if c == "Q" then return u64s(CUR_S, p, be, false) end
  if c == "B" then return sbyte(CUR_S, p) end
  if c == "H" then return u16s(CUR_S, p, be) end
  if c == "i" then
    local v = u32s(CUR_S, p, be)
    if v >= 2147483648 then v = v - TWO32 end
    return v
  end
  if c == "q" then return u64s(CUR_S, p, be, true) end
  return nil
end

local function u32(off, be)
  return u32s(CUR_S, off - CUR_BASE + 1, be)
end


local HEXB = {}
for i = 0, 255 do HEXB[string.char(i)] = fmt("%02x", i) end

local function str_hex(s)
  return (s:gsub(".", HEXB))
end

-- Lower-case hex of `n` bytes at tvb offset `off`.
local function hex_at(off, n)
  if n <= 0 then return "" end
  local p = off - CUR_BASE + 1
  return str_hex(ssub(CUR_S, p, p + n - 1))
end

local function all_zero(off, n)
  local p = off - CUR_BASE + 1
  return not ssub(CUR_S, p, p + n - 1):find("[^\0]")
end

-- Text from a capture before Wireshark shows it, escaped as render.safe_text does (C.ESC,
-- generated from its table): C0, DEL, C1 as \n, \t, \r or \xNN, line and paragraph separators
-- and bidi marks, overrides and isolates as \uNNNN, so that no ESC sequence, forged line or
-- reordered text reaches a reader.  The UTF-8 bytes are matched (Lua 5.2 has no utf8 library):
-- one find of any first byte of them, then a gsub per encoded length whose matches the table
-- replaces (or, not in it, keeps: "…" shares U+2028's first two bytes).
local esc
do
  local ESC, ESC_FIND, ESC_PATTERNS = C.ESC, C.ESC_FIND, C.ESC_PATTERNS
  function esc(s)
    if not s:find(ESC_FIND) then return s end
    for i = 1, #ESC_PATTERNS do s = s:gsub(ESC_PATTERNS[i], ESC) end
    return s
  end
end

-- ===================================================================== runtime: event JSON
-- A code point as UTF-8; a lone surrogate (a JSON "\ud800" not in a pair) has none: its
-- escape, as render.safe_text shows Python's json.loads of it.
local function utf8_char(cp)
  if cp >= 0xD800 and cp <= 0xDFFF then return fmt("\\u%04x", cp) end
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64,
                     0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

-- The 4 hex digits of a \u escape at s[i], as JSON has them (tonumber alone takes "-1", " 1 ").
local function hex4(s, i)
  local h = s:sub(i, i + 3)
  if not h:find("^%x%x%x%x$") then return nil end
  return tonumber(h, 16)
end

local JSON_ESC = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

-- A small JSON reader for event frames: returns the value, or nil if the text is not JSON.
local function json_decode(s)
  local pos, n = 1, #s
  local value
  local function ws() pos = s:find("[^ \t\r\n]", pos) or n + 1 end
  local function str()
    local out, i = {}, pos + 1
    while i <= n do
      local c = s:sub(i, i)
      if c == '"' then pos = i + 1; return concat(out) end
      if c == "\\" then
        local e = s:sub(i + 1, i + 1)
        if e == "u" then
          local cp = hex4(s, i + 2)
          if cp == nil then return nil end
          i = i + 6
          if cp >= 0xD800 and cp <= 0xDBFF and s:sub(i, i + 1) == "\\u" then
            local low = hex4(s, i + 2)
            if low and low >= 0xDC00 and low <= 0xDFFF then
              cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
              i = i + 6
            end
          end
          out[#out + 1] = utf8_char(cp)
        else
          out[#out + 1] = JSON_ESC[e] or e
          i = i + 2
        end
      else
        local j = s:find('["\\]', i) or n + 1
        out[#out + 1] = s:sub(i, j - 1)
        i = j
      end
    end
    return nil
  end
  value = function(depth)
    if depth > 32 then return nil end
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return obj end
      while pos <= n do
        ws()
        if s:sub(pos, pos) ~= '"' then return nil end
        local k = str()
        if k == nil then return nil end
        ws()
        if s:sub(pos, pos) ~= ":" then return nil end
        pos = pos + 1
        local v = value(depth + 1)
        if v == nil then return nil end
        obj[k] = v
        ws()
        c = s:sub(pos, pos)
        pos = pos + 1
        if c == "}" then return obj end
        if c ~= "," then return nil end
      end
      return nil
    elseif c == "[" then
      local arr = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return arr end
      while pos <= n do
        local v = value(depth + 1)
        if v == nil then return nil end
        arr[#arr + 1] = v
        ws()
        c = s:sub(pos, pos)
        pos = pos + 1
        if c == "]" then return arr end
        if c ~= "," then return nil end
      end
      return nil
    elseif c == '"' then
      return str()
    end
    local lit = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if lit and #lit > 0 then pos = pos + #lit; return tonumber(lit) or 0 end
    for word, v in pairs({ ["true"] = true, ["false"] = false, ["null"] = "null" }) do
      if s:sub(pos, pos + #word - 1) == word then pos = pos + #word; return v end
    end
    return nil
  end
  local ok, result = pcall(value, 0)
  if not ok or result == nil then return nil end
  ws()
  if pos <= n then return nil end
  return result
end

-- ===================================================================== runtime: payloads
-- Precomputed per layout: the field `when` tests, and whether its size is fixed (no array or
-- tail: then its expected size is lay.fixed and it has no empty array).
for _, lay in pairs(LAYOUTS) do
  lay.static = true
  for i_ = 1, #lay.fields do local f = lay.fields[i_]
    if lay.when and f.t == "f" and f.name == lay.when[1] then lay.when_field = f end
    if f.t ~= "f" then lay.static = false end
  end
end

-- The tree text of a request and of its reply, made once per request.
for _, by in pairs(REQUESTS) do
  for _, spec in pairs(by) do
    spec.request_text, spec.reply_text = ": " .. spec.name, ": " .. spec.name .. " reply"
    spec.reply_label, spec.need_label = spec.name .. " reply", spec.name .. " (need_reply)"
  end
end

local VIRTIO_BITS = {}
local function virtio_bits(device)
  local key = (device and DEVICE_BITS[device]) and device or ""
  local list = VIRTIO_BITS[key]
  if list == nil then
    local by = {}
    for _, b in ipairs(DEVICE_BITS[key] or {}) do by[b.bit] = b end
    for i_ = 1, #TRANSPORT_BITS do local b = TRANSPORT_BITS[i_]; by[b.bit] = b end
    list = {}
    for n = 0, 63 do if by[n] then list[#list + 1] = by[n] end end
    VIRTIO_BITS[key] = list
  end
  return list
end

local function problem(list, code, text)
  list[#list + 1] = { code = code, text = text }
end

-- payload.expected_size
local function expected_size(lay, tvb, base, len, be)
  if lay.static then return lay.fixed end
  local size, counts = 0, {}
  for i_ = 1, #lay.fields do local f = lay.fields[i_]
    if f.t == "f" then
      if size + f.size <= len and f.fmt ~= "s" then counts[f.name] = tonum(read(base + size, f, be)) end
      size = size + f.size
    elseif f.t == "a" then
      local n = f.count
      if type(n) ~= "number" then n = counts[n] end
      if n == nil then return nil end
      if n > f.max then n = f.max end
      size = size + n * f.item.isize
    else
      if f.length == nil then return nil end
      local n = counts[f.length]
      if n == nil then return nil end
      size = size + n
    end
  end
  return size
end

-- payload._empty_array
local function empty_array(lay, tvb, base, len, be)
  if lay.static then return false end
  local off, counts = 0, {}
  for i_ = 1, #lay.fields do local f = lay.fields[i_]
    if f.t == "f" then
      if off + f.size <= len and f.fmt ~= "s" then counts[f.name] = tonum(read(base + off, f, be)) end
      off = off + f.size
    elseif f.t == "a" and type(f.count) == "string" then
      return (counts[f.count] or 0) == 0
    end
  end
  return false
end

-- payload.choose_layout: exact size, `when`, Xen layouts only when XEN_MMAP is negotiated.
local function choose_layout(cands, tvb, base, len, ctx)
  if cands == nil or #cands == 0 then return nil end
  if #cands == 1 then return cands[1] end  -- what the scoring below returns for one candidate
  local best, best_score
  local names = {}
  for i_ = 1, #cands do local lay = cands[i_]; names[lay.name] = true end
  for rank = 1, #cands do local lay = cands[rank]
    local xen = lay.xen
    if not xen and not names[lay.name .. "_xen"] then xen = ctx.xen end  -- no Xen twin
    local ok = true
    if lay.when then
      local f = lay.when_field
      if f == nil or len < f.size or not num_eq(read(base, f, ctx.be), lay.when[2]) then ok = false end
    end
    if ok then
      local need = expected_size(lay, tvb, base, len, ctx.be)
      local fits
      if lay.exact then fits = need == len else fits = len >= lay.fixed end
      if fits then
        local score = rank
        if xen ~= ctx.xen then score = score + 100 end
        if empty_array(lay, tvb, base, len, ctx.be) then score = score + 50 end
        if best == nil or score < best_score then best, best_score = lay, score end
      end
    end
  end
  if best then return best end
  for i_ = 1, #cands do local lay = cands[i_]
    if lay.xen == ctx.xen and lay.when == nil then return lay end
  end
  return cands[1]
end

-- What a value's bits show, made once per value and named list (feature words repeat in
-- every session; at most 256 values kept per list): `names`, the set bits lowest first
-- (named ones by name, others as BIT_n); once a tree shows it, `states` (each named bit's
-- state), `extra` (the unnamed set bits' generic fields) and `text` (appended to the item).
local function bits_entry(v, named_by, width)
  local cache = named_by[-1]
  if cache == nil then
    cache = { n = 0 }
    named_by[-1] = cache
  end
  local key = type(v) == "number" and v or tostring(v)
  local entry = cache[key]
  if entry then return entry end
  local names = {}
  entry = { names = names }
  if cache.n < 256 then
    cache[key], cache.n = entry, cache.n + 1
  end
  local lo, hi = lohi(v)
  for half = 0, 1 do
    local x = half == 0 and lo or hi
    local n = half * 32
    while x > 0 and n < width do
      if x % 2 == 1 then names[#names + 1] = named_by[n] or ("BIT_" .. n) end
      x, n = floor(x / 2), n + 1
    end
  end
  return entry
end

-- The tree's part of a bits entry (`named`'s states, `generic`'s fields for unnamed bits).
local function bits_shown(entry, v, named, generic)
  if entry.states then return entry end
  local lo, hi = lohi(v)
  local names, states, extra = entry.names, {}, {}
  for i = 1, #named do local n = named[i].bit
    if n < 32 then states[i] = floor(lo / 2 ^ n) % 2 == 1 else states[i] = floor(hi / 2 ^ (n - 32)) % 2 == 1 end
  end
  for i_ = 1, #names do local name = names[i_]  -- unnamed set bits: BIT_n
    if name:sub(1, 4) == "BIT_" then
      local g = generic[tonumber(name:sub(5))]
      if g then extra[#extra + 1] = g end
    end
  end
  entry.extra, entry.text = extra, #names > 0 and " [" .. concat(names, " ") .. "]" or nil
  entry.states = states
  return entry
end

-- bit number -> name of a named list (made once, kept in the list).
local function bits_by(named)
  local by = named.by
  if by == nil then
    by = {}
    for i_ = 1, #named do local b = named[i_]; by[b.bit] = b.name end
    named.by = by
  end
  return by
end

-- Named bits always, unnamed ones when set; returns the names of the set bits, lowest first.
-- `item` is nil when no tree is built.
local function add_bits(item, r, v, named, generic, width)
  local entry = bits_entry(v, bits_by(named), width)
  if item then
    local shown = bits_shown(entry, v, named, generic)
    local states, extra = shown.states, shown.extra
    for i = 1, #named do ti_add(item, named[i].pf, r, states[i]) end
    for i_ = 1, #extra do ti_add(item, extra[i_], r, true) end
    if shown.text then ti_text(item, shown.text) end
  end
  return entry.names
end

local function uuid_text(h)
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-" .. h:sub(13, 16) .. "-" .. h:sub(17, 20) .. "-" .. h:sub(21, 32)
end

local VRING_BASE_F = { "avail_idx", "avail_wrap", "used_idx", "used_wrap" }
local EMPTY_LIST = {}  -- never written

-- payload._render: the field at tvb offset `at`, its derived keys and its bitfields.
-- `r` (its TvbRange) and `tree` are nil when no tree is built.
local function render(f, at, r, ctx, tree, out)
  local name, d = f.name, f.disp
  if f.fmt == "s" then
    if tree then ti_add(tree, f.pf, r) end
    local h = hex_at(at, f.size)
    if d == "uuid" then
      out[name] = uuid_text(h)
    elseif d == "mac" then
      local parts = {}
      for i = 1, #h, 2 do parts[#parts + 1] = h:sub(i, i + 1) end
      out[name] = concat(parts, ":")
    else
      out[name] = h
    end
    return
  end
  local v = read(at, f, ctx.be)
  local item
  if tree then  -- the value read, not read again (~2x cheaper); a uint64 field wants a UInt64
    if f.size == 8 then
      if ctx.be then item = ti_add(tree, f.pf, r) else item = ti_add_le(tree, f.pf, r) end
    else
      item = ti_add(tree, f.pf, r, v)
    end
  end
  out[name] = v
  if d == "enum" and f.values then
    out[name .. "_name"] = f.values[tonum(v)] or ("unknown(" .. dec(v) .. ")")
  elseif d == "virtio_features" then
    out[name .. "_names"] = add_bits(item, r, v, virtio_bits(ctx.device), GENERIC.virtio, 64)
  elseif d == "protocol_features" then
    out[name .. "_names"] = add_bits(item, r, v, PROTO_BITS, GENERIC.protocol, 64)
  elseif d == "status" then
    local lo = lohi(v)
    out[name .. "_names"] = add_bits(item, r, band(lo, 0xFF), STATUS_BITS, GENERIC.status, 8)
  elseif d == "vring_base" then
    local n = tonum(v)
    local vals
    if ctx.packed then
      vals = { n % 0x8000, floor(n / 0x8000) % 2, floor(n / 0x10000) % 0x8000, floor(n / 0x80000000) % 2 }
    else
      vals = { n % 0x10000 }
    end
    for i = 1, #vals do local x = vals[i]
      out[VRING_BASE_F[i]] = x
      if item then ti_add(item, F["p_" .. VRING_BASE_F[i]], r, x) end
    end
    if item then ti_text(item, ctx.packed and " (packed ring)" or " (split ring)") end
  elseif d == "size" and item then
    ti_text(item, " (" .. human_size(tonum(v)) .. ")")
  end
  if f.bits then
    local lo = lohi(v)
    for i_ = 1, #f.bits do local b = f.bits[i_]
      local x = floor(band(lo, b.mask) / 2 ^ b.shift)
      if b.single then x = x ~= 0 end
      out[b.name] = x
      if item then ti_add(item, b.pf, r, x) end
    end
  end
end

-- payload._decode_fields: decodes what is present; returns the offset reached.  Values are
-- read from CUR_S; `tvb` only gives the tree its ranges (both nil-safe when tree is nil).
local decode_fields
decode_fields = function(lay, tvb, base, off, len, ctx, tree, out, probs)
  for i_ = 1, #lay.fields do local f = lay.fields[i_]
    if f.t == "f" then
      if off + f.size > len then return off end
      local at = base + off
      local r = tree and tvb_range(tvb, at, f.size)
      off = off + f.size
      if f.disp == "padding" then
        if tree then ti_add(tree, f.pf, r) end
        if not all_zero(at, f.size) then
          problem(probs, "nonzero_padding", f.name .. " is " .. hex_at(at, f.size))
        end
      else
        render(f, at, r, ctx, tree, out)
      end
    elseif f.t == "a" then
      local n = f.count
      if type(n) ~= "number" then n = tonum(out[n]) or 0 end
      if n > f.max then
        problem(probs, "bad_count", fmt("%s = %s, at most %d allowed", tostring(f.count), dec(n), f.max))
        n = f.max
      end
      local size = f.item.isize
      local span = n * size
      if span > len - off then span = len - off end
      local at
      if tree then
        at = ti_add(tree, f.pf, tvb_range(tvb, base + off, span))
        ti_text(at, fmt(" (%d)", n))
      end
      local items = {}
      for i = 1, n do
        if off + size > len then
          problem(probs, "bad_count", fmt("%s: %d items announced, only %d present", f.name, n, #items))
          break
        end
        local item = {}
        local it
        if at then
          it = ti_add(at, f.ipf, tvb_range(tvb, base + off, size))
          ti_text(it, fmt(" [%d]", i - 1))
        end
        off = decode_fields(f.item, tvb, base, off, len, ctx, it, item, probs)
        items[#items + 1] = item
      end
      out[f.name] = items
    else
      local n
      if f.length == nil then n = len - off else n = tonum(out[f.length]) or 0 end
      local have = n
      if have > len - off then have = len - off end
      if have < n then
        problem(probs, "bad_count", fmt("%s = %s but only %d bytes follow", tostring(f.length), dec(n), have))
      end
      if tree then ti_add(tree, f.pf, tvb_range(tvb, base + off, have)) end
      out[f.name] = hex_at(base + off, have)
      off = off + have
    end
  end
  return off
end

-- payload.decode_layout
local function decode_layout(lay, tvb, base, len, ctx, tree, out, probs)
  local before = #probs
  local off = decode_fields(lay, tvb, base, 0, len, ctx, tree, out, probs)
  local need = expected_size(lay, tvb, base, len, ctx.be)
  local wrong
  if need == nil and len < lay.fixed then  -- too short to hold its own count
    wrong = fmt("payload is %d bytes, %s needs at least %d", len, lay.name, lay.fixed)
  elseif lay.exact and need ~= nil and need ~= len then
    wrong = fmt("payload is %d bytes, %s needs %s", len, lay.name, dec(need))
  elseif not lay.exact and len < lay.fixed then
    wrong = fmt("payload is %d bytes, %s needs at least %d", len, lay.name, lay.fixed)
  end
  if wrong then
    table.insert(probs, before + 1, { code = "wrong_size", text = wrong })
  elseif off < len then
    local seen = false
    for i = before + 1, #probs do if probs[i].code == "wrong_size" then seen = true end end
    if not seen then problem(probs, "wrong_size", fmt("%d unexpected trailing bytes", len - off)) end
  end
end

-- ===================================================================== runtime: summaries
local function names_text(out, key)
  local names = out[key .. "_names"]
  if names and #names > 0 then return " [" .. concat(names, " ") .. "]" end
  return ""
end


local payload_summary
do  -- (a block: the main chunk may hold at most 200 locals)
-- render.payload_summary's fallback: the first four scalar fields in layout order, a number
-- by numtext's rule: in hex when its field's display is one of C.HEX_DISPLAYS
-- (protocol/layouts.HEX_DISPLAYS), else (counts, indices, the keys read out of a field) decimal.
local HEX_DISPLAYS = C.HEX_DISPLAYS
local function add_part(parts, p, k, hexa)
  local v = p[k]
  if v == nil or type(v) == "table" or #parts >= 4 then return end
  if type(v) == "string" then
    if #v <= 40 then parts[#parts + 1] = k .. "=" .. v end
  elseif type(v) == "boolean" then
    parts[#parts + 1] = k .. "=" .. (v and "True" or "False")
  elseif hexa then
    parts[#parts + 1] = k .. "=0x" .. hex(v)
  else
    parts[#parts + 1] = k .. "=" .. dec(v)
  end
end

local function generic_summary(lay, p)
  local parts = {}
  if lay == nil then add_part(parts, p, "data"); return concat(parts, " ") end
  for i_ = 1, #lay.fields do local f = lay.fields[i_]
    if f.t == "f" and f.disp ~= "padding" then
      add_part(parts, p, f.name, HEX_DISPLAYS[f.disp])
      if f.values then add_part(parts, p, f.name .. "_name") end
      if f.disp == "vring_base" then
        for i_ = 1, #VRING_BASE_F do local k = VRING_BASE_F[i_]; add_part(parts, p, k) end
      end
      for _, b in ipairs(f.bits or EMPTY_LIST) do add_part(parts, p, b.name) end
    elseif f.t == "t" then
      add_part(parts, p, f.name)
    end
    if #parts >= 4 then break end  -- add_part adds nothing more
  end
  return concat(parts, " ")
end

-- Like vuinspect.render.payload_summary: the key payload fields in a few words, one function
-- per layout with its own form (looked up, not tested one by one); nil: the generic form.
local function features_summary(p)
  if p.features == nil then return "" end
  return "0x" .. hex(p.features) .. names_text(p, "features")
end
local function mem_table_summary(p)
  local regs, total = p.regions or EMPTY_LIST, 0
  for i_ = 1, #regs do local reg = regs[i_]; total = total + (tonum(reg.memory_size) or 0) end
  return fmt("%d region%s %s", #regs, #regs ~= 1 and "s" or "", human_size(total))
end
local function mem_reg_summary(p)
  if not p.memory_size then return nil end
  return "gpa=0x" .. hex(p.guest_phys_addr) .. " size=" .. human_size(tonum(p.memory_size))
end
local function vring_num_summary(p, lname)
  if not p.num then return nil end
  if lname == "vring_state" and p.num == 0 then return "vring " .. dec(p.index) end
  return "vring " .. dec(p.index) .. " num=" .. (p.num_name or dec(p.num))
end
local SUMMARIES = {
  virtio_features = features_summary,
  protocol_features = features_summary,
  mem_table = mem_table_summary,
  mem_table_xen = mem_table_summary,
  mem_reg = mem_reg_summary,
  mem_reg_xen = mem_reg_summary,
  vring_fd = function(p)
    if not p.index then return nil end
    return "vring " .. dec(p.index) .. (p.nofd and " NOFD" or "")
  end,
  vring_addr = function(p)
    if p.log == nil or type(p.log) == "boolean" then return nil end
    local log = (not is_zero(p.log) and bit_set(p.flags, 0)) and " log" or ""
    return fmt("vring %s desc=0x%s used=0x%s avail=0x%s%s", dec(p.index), hex(p.desc), hex(p.used), hex(p.avail), log)
  end,
  vring_base = function(p)
    if not p.num then return nil end
    return "vring " .. dec(p.index) .. " base=" .. dec(p.num)
  end,
  vring_enable = function(p)
    if not p.num then return nil end
    return "vring " .. dec(p.index) .. " " .. tostring(p.num_name)
  end,
  vring_state = vring_num_summary,
  vring_num = vring_num_summary,
  vring_endian = vring_num_summary,
  ack = function(p)
    if not p.result then return nil end
    if is_zero(p.result) then return "ok" end
    return "FAILED result=" .. dec(p.result)
  end,
  status = function(p)
    if not p.status then return nil end
    return "0x" .. hex(p.status) .. names_text(p, "status")
  end,
  config = function(p)
    if not p.flags_name then return nil end
    return fmt("offset=%s size=%s %s", dec(p.offset), dec(p.size), p.flags_name)
  end,
  iotlb = function(p)
    if not p.type_name then return nil end
    return fmt("%s iova=0x%s size=%s %s", p.type_name, hex(p.iova), human_size(tonum(p.size)), p.perm_name)
  end,
  log = function(p)
    if not p.mmap_offset then return nil end
    return "size=" .. human_size(tonum(p.mmap_size)) .. " offset=0x" .. hex(p.mmap_offset)
  end,
  inflight = function(p)
    if not p.queue_size then return nil end
    return fmt("size=%s queues=%s queue_size=%s", human_size(tonum(p.mmap_size)), dec(p.num_queues), dec(p.queue_size))
  end,
}

function payload_summary(lay, p)
  if next(p) == nil then return "" end
  local lname = lay and lay.name
  local form = lname and SUMMARIES[lname]
  if form then
    local text = form(p, lname)
    if text then return text end
  end
  return generic_summary(lay, p)
end
end
