"""The protocol tables are complete and named as the current spec names them."""

from __future__ import annotations

from vuinspect.protocol import features as F
from vuinspect.protocol import problems, requests
from vuinspect.protocol.layouts import ALL_LAYOUTS, Array, Field, Tail


def test_every_frontend_and_backend_request_is_defined():
    assert sorted(requests.FRONTEND) == list(range(1, 46))
    assert sorted(requests.BACKEND) == list(range(1, 11))


def test_spec_names_and_numbers():
    # spot checks against docs/interop/vhost-user.rst
    expect = {
        1: "GET_FEATURES",
        5: "SET_MEM_TABLE",
        11: "GET_VRING_BASE",
        21: "SET_BACKEND_REQ_FD",
        24: "GET_CONFIG",
        33: "GPU_SET_SOCKET",
        37: "ADD_MEM_REG",
        41: "GET_SHARED_OBJECT",
        42: "SET_DEVICE_STATE_FD",
        44: "GET_SHMEM_CONFIG",
        45: "GET_VRING_BASE_SKIP_DRAIN",
    }
    for rid, name in expect.items():
        assert requests.FRONTEND[rid].name == name
    bexpect = {
        1: "BACKEND_IOTLB_MSG",
        3: "BACKEND_VRING_HOST_NOTIFIER_MSG",
        8: "BACKEND_SHARED_OBJECT_LOOKUP",
        9: "BACKEND_SHMEM_MAP",
        10: "BACKEND_SHMEM_UNMAP",
    }
    for rid, name in bexpect.items():
        assert requests.BACKEND[rid].name == name


def test_current_names_with_old_aliases():
    for spec in (*requests.FRONTEND_REQUESTS, *requests.BACKEND_REQUESTS):
        assert "SLAVE" not in spec.name and "MASTER" not in spec.name
    assert requests.by_name("SET_SLAVE_REQ_FD").name == "SET_BACKEND_REQ_FD"
    assert requests.by_name("VHOST_USER_SLAVE_IOTLB_MSG").name == "BACKEND_IOTLB_MSG"
    assert F.PROTOCOL_BY_NAME["SLAVE_REQ"].name == "BACKEND_REQ"
    assert F.PROTOCOL_BY_NAME["SLAVE_SEND_FD"].bit == 10


def test_protocol_feature_bits_0_to_23():
    assert [b.bit for b in F.PROTOCOL_FEATURES] == list(range(24))
    named = {b.bit: b.name for b in F.PROTOCOL_FEATURES}
    assert (
        named[3] == "REPLY_ACK" and named[5] == "BACKEND_REQ" and named[15] == "CONFIGURE_MEM_SLOTS"
    )
    assert (
        named[18] == "SHARED_OBJECT"
        and named[22] == "SHMEM"
        and named[23] == "GET_VRING_BASE_SKIP_DRAIN"
    )


def test_virtio_bits_for_every_required_device():
    for dev in ("net", "blk", "fs", "scsi", "gpu", "input", "vsock", "crypto"):
        assert dev in F.DEVICE_FEATURES
    assert F.virtio_table("net")[15] == "MRG_RXBUF"
    assert F.virtio_table("blk")[9] == "FLUSH"
    assert F.virtio_table(None)[30] == "PROTOCOL_FEATURES"
    assert F.virtio_table(None)[32] == "VERSION_1"
    assert F.virtio_table(None)[34] == "RING_PACKED"


def test_reply_rules_from_the_spec():
    always = {n for n, s in requests.FRONTEND.items() if s.reply_mode == "always"}
    assert {1, 11, 15, 17, 22, 24, 26, 28, 30, 31, 36, 40, 41, 42, 43, 44, 45} <= always
    assert requests.FRONTEND[6].reply_mode == "log_shmfd"
    assert requests.FRONTEND[29].reply_mode == "flag"
    assert requests.BACKEND[8].reply_mode == "always"
    for rid in (2, 3, 8, 9, 10, 12, 13, 14, 18, 21, 32, 39):
        assert requests.FRONTEND[rid].reply_mode == "ack"


def test_request_and_reply_layouts_differ_where_the_spec_says():
    f = requests.FRONTEND
    assert [lay.name for lay in f[11].request] == ["vring_state"]
    assert [lay.name for lay in f[11].reply] == ["vring_base"]
    assert f[5].request[0].name == "mem_table" and f[5].reply[0].name == "ack"
    assert f[1].request[0].name == "empty" and f[1].reply[0].name == "virtio_features"
    assert f[31].reply[0].name == "inflight" and f[31].reply_fds == (0, 1)
    assert f[28].reply_fds == (1, 1)


def test_fd_rules():
    f = requests.FRONTEND
    assert f[5].fds == (1, -1)  # one per region
    assert f[12].fds == (0, 1) and f[21].fds == (1, 1) and f[37].fds == (1, 1)
    assert requests.BACKEND[9].fds == (1, 1)


def test_layout_sizes_match_the_spec():
    sizes = {lay.name: lay.fixed_size for lay in ALL_LAYOUTS}
    assert sizes["vring_addr"] == 40 and sizes["mem_region"] == 32 and sizes["mem_region_xen"] == 40
    assert sizes["mem_reg"] == 40 and sizes["log"] == 16 and sizes["iotlb"] == 32
    assert sizes["inflight"] == 24 and sizes["vring_area"] == 24 and sizes["shared"] == 16
    assert sizes["shmem_map"] == 40 and sizes["crypto_session_sym"] == 1072
    assert sizes["crypto_session_asym"] == 1072 and sizes["crypto_session_old"] == 632
    assert sizes["config"] == 12 and sizes["mem_table"] == 8 and sizes["shmem_config"] == 8


def test_layout_field_names_are_unique_per_layout():
    for lay in ALL_LAYOUTS:
        names = [
            f.name for f in lay.fields if not (isinstance(f, Field) and f.display == "padding")
        ]
        assert len(names) == len(set(names)), lay.name
        for f in lay.fields:
            assert isinstance(f, (Field, Array, Tail))


def test_every_problem_code_has_group_and_severity():
    for code in problems.CODES.values():
        assert code.group in ("malformed", "sequence", "protocol", "response_code", "undecoded")
        assert code.severity in problems.SEVERITIES
