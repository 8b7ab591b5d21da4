-- The anchor of bench/lua_bench.py: the least a Lua dissector of vuinspect captures does
-- (pseudo-header, the first message's header fields, the Info column).  Not shipped.
local vu = Proto("vhost_user", "vhost-user (minimal)")
local f_conn = ProtoField.uint32("vhost_user.conn", "Connection")
local f_req = ProtoField.uint32("vhost_user.request", "Request")
local f_flags = ProtoField.uint32("vhost_user.flags", "Flags", base.HEX)
local f_size = ProtoField.uint32("vhost_user.size", "Size")
vu.fields = { f_conn, f_req, f_flags, f_size }

function vu.dissector(tvb, pinfo, tree)
  pinfo.cols.protocol = "vhost-user"
  local t = tree:add(vu, tvb:range(0, tvb:len()))
  if tvb:len() < 14 then return tvb:len() end
  local hl = tvb:range(4, 2):uint()
  t:add(f_conn, tvb:range(8, 4))
  if tvb:range(3, 1):uint() ~= 0 or tvb:len() < hl + 12 then
    pinfo.cols.info = "event"
    return tvb:len()
  end
  local req = tvb:range(hl, 4):le_uint()
  t:add_le(f_req, tvb:range(hl, 4))
  t:add_le(f_flags, tvb:range(hl + 4, 4))
  t:add_le(f_size, tvb:range(hl + 8, 4))
  pinfo.cols.info = "request " .. req
  return tvb:len()
end
