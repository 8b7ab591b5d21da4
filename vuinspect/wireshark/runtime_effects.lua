-- Runtime Lua, part 3: the session's rule table (RULES, generated from
-- vuinspect/protocol/effects.py) run as session.py runs it: per request the checks its rule
-- lists and, on the request and on its reply, the effects on the negotiated state.
--
-- The table is compiled once, at load: per request a list of entries holding their op's
-- handler (no per-frame closures, no lookups by op name).  The dissector keeps only the
-- state its checks read (feature words, queue count, memory slots, regions, started
-- rings); effects on the rest (the state views and data plane of the Python session) are
-- dropped here.  An op or check this file does not know stops the load: the table and
-- this runtime cannot drift apart silently.
-- Fills check_request, apply_request and apply_reply, declared in runtime_session.lua.
do
  -- session fields the dissector reads, and how a payload value is kept there
  local KEEP = { virtio_acked = "raw", protocol_acked = "raw", virtio_offered = "raw",
                 protocol_offered = "raw", queue_num = "num", max_mem_slots = "num" }

  local function region_key(p)
    return hex(p.guest_phys_addr or 0) .. "/" .. hex(p.memory_size or 0) .. "/" .. hex(p.userspace_addr or 0)
  end

  -- handlers: fn(s, e, out, idx); idx is the vring of a vring effect
  local function op_set(s, e, out)
    local v = out[e.key]
    if e.how == "num" then v = tonum(v) end
    s[e.field] = v
  end
  local function op_const(s, e) s[e.field] = e.value end
  local function op_guess_device(s, e, out)
    if s.device == nil then s.device = guess_device(out[e.key]) end
  end
  -- regions as counts per key (s.regions) and in all (s.nregions): only the count is
  -- checked, and a REM_MEM_REG then costs one lookup, not a pass over every region added
  local function op_regions_set(s, e, out)
    local regions, list = {}, out[e.key]
    for i = 1, #list do local k = region_key(list[i]); regions[k] = (regions[k] or 0) + 1 end
    s.regions, s.nregions = regions, #list
  end
  local function op_region_add(s, e, out)
    if s.nregions >= C.MAX_REGIONS then return end  -- (the slots check said "not kept")
    local k = region_key(out)
    s.regions[k], s.nregions = (s.regions[k] or 0) + 1, s.nregions + 1
  end
  local function op_region_remove(s, e, out)  -- every region of that key, as session.py does
    local k = region_key(out)
    s.nregions, s.regions[k] = s.nregions - (s.regions[k] or 0), nil
  end
  -- no state for a vring past C.MAX_RINGS (a peer's u32): vring_range reports it
  local function op_start(s, e, out, idx)
    if idx < C.MAX_RINGS then s.started[idx] = e.value or nil end
  end
  local function op_stop_all(s) s.started = {} end

  -- op -> function(effect) giving its handler, or false: not state the dissector keeps
  local function kept(fn) return function(e) return KEEP[e.field] and fn end end
  local function started(fn) return function(e) return e.field == "started" and fn end end
  local PICK = {
    set = kept(op_set),
    const = kept(op_const),
    fd = false,
    with_fd = false,
    guess_device = function() return op_guess_device end,
    regions_set = function() return op_regions_set end,
    region_add = function() return op_region_add end,
    region_remove = function() return op_region_remove end,
    rings_stopped = false,  -- the data plane is diagnosed by the Python session only
    ring_restart = false,
    vring = false,
    vring_set = function(e) assert(e.field ~= "started", "vring_set of started"); return false end,
    vring_const = started(op_start),
    vring_fd = function(e) assert(e.field ~= "started", "vring_fd of started"); return false end,
    vrings_all = function(e)
      if e.field ~= "started" then return false end
      assert(e.value == false, "vrings_all can only stop every ring here")
      return op_stop_all
    end,
  }
  local VRING_OP = { vring = true, vring_set = true, vring_const = true, vring_fd = true }

  local function holds(s, when, out, request)
    local kind = when[1]
    if kind == "has" then return out[when[2]] ~= nil end
    if kind == "int" then return type(out[when[2]]) == "number" end
    if kind == "ok" then return out.result == nil or is_zero(out.result) end
    if kind == "request" then return request ~= nil end
    if kind == "lacks_virtio" then return s.virtio_acked ~= nil and not bit_set(s.virtio_acked, when[2]) end
    error("runtime_effects.lua: unknown effect condition " .. tostring(kind))
  end

  -- checks: fn(s, rec, out, probs, value)
  local function vring_started(s, rec, out, probs)
    if not s.seen_start then return end
    local idx = out.index
    if idx == nil or not s.started[idx] then
      problem(probs, "vring_not_started", fmt("vring %s was never started (no SET_VRING_KICK)", idx and dec(idx) or "None"))
    end
  end
  local function vring_range(s, rec, out, probs)
    local index, n = out.index, s.queue_num
    -- GET_QUEUE_NUM counts queues or queue pairs depending on the back-end: allow both
    if type(index) ~= "number" then return end
    if n ~= nil and n ~= 0 and index >= 2 * n then
      problem(probs, "vring_out_of_range", fmt("vring %s, back-end announced %s queues", dec(index), dec(n)))
    elseif index >= C.MAX_RINGS then
      problem(probs, "vring_out_of_range",
              fmt("vring %s, past the %d vrings vuinspect follows", dec(index), C.MAX_RINGS))
    end
  end
  local function max_regions(s, rec, out, probs, limit)
    if tonum(out.nregions or 0) > limit then
      problem(probs, "too_many_regions", fmt("%s regions, %s allows %d", dec(out.nregions), rec.name, limit))
    end
  end
  local function offered(s, rec, out, probs, how)
    local word, verb = how[1], how[2]
    local have = s.protocol_offered
    if word == "virtio" then have = s.virtio_offered end
    if have == nil then return end
    local extra = UInt64(lohi(out.features or 0)):band(UInt64(lohi(have)):bnot())
    if is_zero(extra) then return end
    local names = word == "virtio" and virtio_bits(s.device) or PROTO_BITS
    problem(probs, "features_not_offered", verb .. " " .. bit_names_of(extra, names) .. " not offered by the back-end")
  end
  local function slots(s, rec, out, probs)
    if s.max_mem_slots ~= nil and s.nregions >= s.max_mem_slots then
      problem(probs, "too_many_regions", fmt("%d regions, back-end has %d slots", s.nregions + 1, s.max_mem_slots))
    elseif s.nregions >= C.MAX_REGIONS then  -- a front-end adding ever more: not kept
      problem(probs, "too_many_regions", fmt("past the %d regions vuinspect follows: not kept", C.MAX_REGIONS))
    end
  end
  local CHECK = { vring_started = vring_started, vring_range = vring_range, max_regions = max_regions,
                  offered = offered, slots = slots }

  for i_ = 1, #EFFECT_OPS do local op = EFFECT_OPS[i_]
    if PICK[op] == nil then error("runtime_effects.lua does not know the effect op " .. op) end
  end
  for i_ = 1, #EFFECT_CHECKS do local kind = EFFECT_CHECKS[i_]
    if CHECK[kind] == nil then error("runtime_effects.lua does not know the check " .. kind) end
  end

  local function compile_effects(list)
    local out = {}
    for i_ = 1, #list do local e = list[i_]
      local pick = PICK[e.op]
      if pick == nil then error("runtime_effects.lua: unknown effect op " .. tostring(e.op)) end
      local fn = pick and pick(e)
      if fn then
        out[#out + 1] = { fn = fn, field = e.field, key = e.key, value = e.value, when = e.when,
                          how = KEEP[e.field], vring = VRING_OP[e.op] or false }
      end
    end
    if #out == 0 then return EMPTY end
    return out
  end

  local NO_RULE = { req = EMPTY, rep = EMPTY, checks = EMPTY, virtio = "acked" }
  local COMPILED = { main = {}, backend = {} }
  for channel, rules in pairs(RULES) do
    for id, r in pairs(rules) do
      local checks = {}
      for i = 1, #r.checks do local c = r.checks[i]
        local fn = CHECK[c.kind]
        if fn == nil then error("runtime_effects.lua: unknown check " .. tostring(c.kind)) end
        checks[i] = { fn = fn, value = c.value }
      end
      COMPILED[channel][id] = { req = compile_effects(r.req), rep = compile_effects(r.rep),
                                checks = #checks > 0 and checks or EMPTY, virtio = r.virtio,
                                vcode = r.vcode, vtext = r.vtext }
    end
  end

  local function rule_of(rec)
    return COMPILED[rec.channel][rec.request] or NO_RULE
  end

  local function run(s, list, out, request, idx)
    for i = 1, #list do
      local e = list[i]
      if e.when == nil or holds(s, e.when, out, request) then
        if e.vring then
          if idx ~= nil then e.fn(s, e, out, idx) end
        else
          e.fn(s, e, out)
        end
      end
    end
  end

  -- session._check_request: checks that need the negotiated state (first pass only).
  function check_request(s, rec, spec, out, probs)
    if #spec.needs > 0 and s.protocol_acked ~= nil then
      local missing = {}
      for i_ = 1, #spec.needs do local nb = spec.needs[i_]
        if not bit_set(s.protocol_acked, nb[2]) then missing[#missing + 1] = nb[1] end
      end
      if #missing > 0 then
        problem(probs, "feature_not_negotiated", "needs protocol feature " .. concat(missing, ", "))
      end
    end
    local rule = rule_of(rec)
    if #spec.needs_virtio > 0 then
      local feats = s.virtio_acked
      if rule.virtio == "offered" or (rule.virtio == "acked_or_offered" and feats == nil) then
        feats = s.virtio_offered
      end
      for i_ = 1, #spec.needs_virtio do local nb = spec.needs_virtio[i_]
        if feats ~= nil and not bit_set(feats, nb[2]) then
          if rule.vcode then
            problem(probs, rule.vcode, rule.vtext)
          else
            problem(probs, "feature_not_negotiated", fmt("needs virtio feature %s (bit %d)", nb[1], nb[2]))
          end
        end
      end
    end
    if rec.need_reply and spec.mode == "ack" and protocol_has(s, C.BIT.REPLY_ACK) == false then
      problem(probs, "need_reply_without_ack", "NEED_REPLY set but REPLY_ACK not negotiated: no ack will come")
    end
    local checks = rule.checks
    for i = 1, #checks do
      local c = checks[i]
      c.fn(s, rec, out, probs, c.value)
    end
  end

  -- session._apply_request / _apply_reply: the state later messages are checked against.
  function apply_request(s, rec, out)
    local list = rule_of(rec).req
    if #list > 0 then run(s, list, out, nil, out.index) end
  end

  function apply_reply(s, rec, out, request)
    local list = rule_of(rec).rep
    if #list == 0 then return end
    local idx
    if request ~= nil then
      idx = request.index
      if idx == nil then idx = out.index or -1 end
    end
    run(s, list, out, request, idx)
  end
end
