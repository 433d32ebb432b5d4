"""Tests of password scrambles, the RSA exchange and the auth state machines."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from proxy.protocol.auth import (
    AuthAction,
    AuthDone,
    AuthFailed,
    AuthSend,
    AuthStartTLS,
    AuthWait,
    ClientAuth,
    RsaKeyPair,
    ServerAuth,
    generate_rsa_key_pair,
    generate_scramble,
    rsa_decrypt_password,
    rsa_encrypt_password,
    scramble_caching_sha2,
    scramble_native_password,
    verify_caching_sha2,
    verify_native_password,
    xor_password,
)
from proxy.protocol.constants import AuthPlugin, Capability, ErrorCode
from proxy.protocol.handshake import (
    AuthSwitchRequest,
    HandshakeV10,
    encode_auth_switch_request,
    parse_change_user,
    parse_handshake_response,
    parse_handshake_v10,
)
from proxy.protocol.packets import (
    ErrPacket,
    Packet,
    PacketReader,
    build_err,
    build_ok,
    build_packet,
    parse_err,
)
from tests.unit.protocol.test_handshake import MARIADB_10_11_GREETING, MARIADB_SCRAMBLE

NATIVE = AuthPlugin.MYSQL_NATIVE_PASSWORD
SHA2 = AuthPlugin.CACHING_SHA2_PASSWORD
SCRAMBLE = bytes.fromhex("3a7b2f4c5d6e1a2b3c4d5e6f7a1b2c3d4e5f6a7b")
USERS = {"alice": "s3cret!", "nopw": "", "ünï": "pässwörd"}


@pytest.fixture(scope="module")
def rsa_key() -> RsaKeyPair:
    return generate_rsa_key_pair()


# --------------------------------------------------------------------------- scrambles


def _ref_native(password: bytes, scramble: bytes) -> bytes:
    s1 = hashlib.sha1(password).digest()
    s3 = hashlib.sha1(scramble + hashlib.sha1(s1).digest()).digest()
    return bytes(a ^ b for a, b in zip(s1, s3, strict=True))


def _ref_sha2(password: bytes, scramble: bytes) -> bytes:
    s1 = hashlib.sha256(password).digest()
    s3 = hashlib.sha256(hashlib.sha256(s1).digest() + scramble).digest()
    return bytes(a ^ b for a, b in zip(s1, s3, strict=True))


def test_native_scramble_known_vector() -> None:
    # Precomputed vector for password 'secret' and the MariaDB greeting's challenge.
    expected = bytes.fromhex("a7fff9c8fcab2eaf9d3d308d2b95afd5bd9d4001")
    assert scramble_native_password("secret", MARIADB_SCRAMBLE) == expected
    assert _ref_native(b"secret", MARIADB_SCRAMBLE) == expected
    # The switch data carries a trailing NUL; it must not change the result.
    assert scramble_native_password("secret", MARIADB_SCRAMBLE + b"\0") == expected
    assert scramble_native_password(b"secret", SCRAMBLE) == _ref_native(b"secret", SCRAMBLE)
    assert scramble_native_password("", SCRAMBLE) == b""
    assert verify_native_password(SCRAMBLE, _ref_native(b"pw", SCRAMBLE), "pw")
    assert not verify_native_password(SCRAMBLE, _ref_native(b"pw", SCRAMBLE), "pW")
    assert verify_native_password(SCRAMBLE, b"", "")
    assert verify_native_password(SCRAMBLE, b"\0", "")
    assert not verify_native_password(SCRAMBLE, b"", "pw")


def test_caching_sha2_scramble() -> None:
    for pw in ("secret", "pässwörd", "x" * 100):
        expected = _ref_sha2(pw.encode(), SCRAMBLE)
        assert scramble_caching_sha2(pw, SCRAMBLE) == expected
        assert len(expected) == 32
        assert verify_caching_sha2(SCRAMBLE, expected, pw)
        assert not verify_caching_sha2(SCRAMBLE, expected, pw + "!")
    assert scramble_caching_sha2("", SCRAMBLE) == b""
    assert verify_caching_sha2(SCRAMBLE, b"", "")


def test_generate_scramble() -> None:
    s = generate_scramble()
    assert len(s) == 20 and b"\0" not in s and all(b < 0x80 for b in s)
    assert generate_scramble() != s


def test_rsa_round_trip(rsa_key: RsaKeyPair) -> None:
    assert rsa_key.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    ciphertext = rsa_encrypt_password("pässwörd", SCRAMBLE, rsa_key.public_pem)
    assert len(ciphertext) == 256
    assert rsa_decrypt_password(rsa_key, ciphertext, SCRAMBLE) == "pässwörd".encode()
    # Independently: OAEP with SHA-1 over (password + NUL) XOR scramble.
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    plain = rsa_key.private_key.decrypt(ciphertext, oaep)
    pw0 = "pässwörd".encode() + b"\0"
    assert plain == bytes(b ^ SCRAMBLE[i % 20] for i, b in enumerate(pw0))
    assert xor_password("pässwörd", SCRAMBLE) == plain
    with pytest.raises(ValueError):
        rsa_decrypt_password(rsa_key, b"\x00" * 256, SCRAMBLE)


# --------------------------------------------------------------------------- driving both ends


class Transcript:
    """Packets exchanged, in order, as (direction, seq, payload)."""

    def __init__(self) -> None:
        self.packets: list[tuple[str, int, bytes]] = []

    def payloads(self, direction: str) -> list[bytes]:
        return [p for d, _, p in self.packets if d == direction]


def _drain(reader: PacketReader, data: bytes, direction: str, log: Transcript) -> list[Packet]:
    reader.feed(data)
    got = list(reader)
    log.packets.extend((direction, p.seq, p.payload) for p in got)
    return got


def run_auth(
    server: ServerAuth,
    make_client: Callable[[HandshakeV10], ClientAuth],
) -> tuple[AuthAction, AuthAction, Transcript, ClientAuth]:
    """Run both state machines against each other through real framing."""
    log = Transcript()
    to_client, to_server = PacketReader(), PacketReader()
    (greeting,) = _drain(to_client, server.start().data, "s>c", log)
    client = make_client(parse_handshake_v10(greeting.payload))
    c_act: AuthAction = client.start()
    s_act: AuthAction = AuthWait()
    for _ in range(10):
        if isinstance(c_act, AuthSend | AuthStartTLS):
            for pkt in _drain(to_server, c_act.data, "c>s", log):
                s_act = server.feed(pkt.payload, pkt.seq)
        if isinstance(c_act, AuthStartTLS):
            assert isinstance(s_act, AuthStartTLS) and s_act.data == b""
            c_act = client.tls_established()
            continue
        if isinstance(c_act, AuthDone | AuthFailed):
            break
        reply = s_act.data if isinstance(s_act, AuthSend | AuthDone | AuthFailed) else b""
        last_server = s_act
        s_act = AuthWait()
        for pkt in _drain(to_client, reply, "s>c", log):
            c_act = client.feed(pkt.payload, pkt.seq)
        if isinstance(c_act, AuthDone | AuthFailed):
            return c_act, last_server, log, client
    return c_act, s_act, log, client


def _server(**kw: object) -> ServerAuth:
    options: dict[str, object] = {"connection_id": 7, "client_host": "10.0.0.7"}
    options.update(kw)
    return ServerAuth(USERS.get, **options)  # type: ignore[arg-type]


def _client(user: str, password: str, **kw: object) -> Callable[[HandshakeV10], ClientAuth]:
    def make(greeting: HandshakeV10) -> ClientAuth:
        return ClientAuth(greeting, user, password, **kw)  # type: ignore[arg-type]

    return make


@pytest.mark.parametrize("server_plugin", [NATIVE, SHA2])
@pytest.mark.parametrize("client_plugin", [None, NATIVE, SHA2, "mysql_clear_password"])
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("tls", [False, True])
def test_plugin_matrix(
    server_plugin: str, client_plugin: str | None, strict: bool, tls: bool
) -> None:
    server = _server(
        default_plugin=server_plugin,
        allowed_plugins=[server_plugin] if strict else None,
        tls_available=tls,
    )
    c_act, s_act, log, client = run_auth(
        server, _client("alice", "s3cret!", plugin=client_plugin, database="shop", tls=tls)
    )
    assert isinstance(c_act, AuthDone), c_act
    assert isinstance(s_act, AuthDone)
    assert server.done and client.done
    assert server.username == "alice" and server.database == "shop"
    assert server.tls == tls
    # Which plugin finally authenticated, and whether a switch happened.
    expected_plugin = (
        client_plugin
        if client_plugin in (NATIVE, SHA2) and (not strict or client_plugin == server_plugin)
        else server_plugin
    )
    assert server.plugin == expected_plugin == client.plugin
    switched = any(p[:1] == b"\xfe" for p in log.payloads("s>c")[1:])
    assert switched == (client_plugin != expected_plugin and client_plugin is not None)
    # Sequence ids: every packet follows the previous one, whatever its direction.
    seqs = [seq for _, seq, _ in log.packets]
    assert seqs == list(range(len(seqs)))
    fast = log.payloads("s>c")[-2] == b"\x01\x03"
    assert fast == (expected_plugin == SHA2)
    assert log.payloads("s>c")[-1][0] == 0x00


def test_fast_auth_sequence_ids() -> None:
    server = _server(default_plugin=SHA2)
    _, _, log, _ = run_auth(server, _client("alice", "s3cret!"))
    assert [(d, s) for d, s, _ in log.packets] == [("s>c", 0), ("c>s", 1), ("s>c", 2), ("s>c", 3)]
    assert log.packets[2][2] == b"\x01\x03"
    assert log.packets[3][2][:1] == b"\x00"


@pytest.mark.parametrize("plugin", [NATIVE, SHA2])
@pytest.mark.parametrize("tls", [False, True])
def test_wrong_password_message(plugin: str, tls: bool) -> None:
    server = _server(default_plugin=plugin, tls_available=tls)
    c_act, s_act, _, _ = run_auth(server, _client("alice", "wrong", plugin=plugin, tls=tls))
    expected = ErrPacket(
        1045, "Access denied for user 'alice'@'10.0.0.7' (using password: YES)", "28000"
    )
    assert isinstance(s_act, AuthFailed) and s_act.error == expected
    assert isinstance(c_act, AuthFailed) and c_act.error == expected
    assert parse_err(s_act.data[4:]) == expected


@pytest.mark.parametrize("plugin", [NATIVE, SHA2])
def test_empty_password_given_when_one_is_needed(plugin: str) -> None:
    c_act, _, _, _ = run_auth(_server(default_plugin=plugin), _client("alice", "", plugin=plugin))
    assert isinstance(c_act, AuthFailed)
    assert c_act.error.message == ("Access denied for user 'alice'@'10.0.0.7' (using password: NO)")


@pytest.mark.parametrize("plugin", [NATIVE, SHA2])
@pytest.mark.parametrize("password", ["x", ""])
def test_unknown_user(plugin: str, password: str) -> None:
    c_act, s_act, _, _ = run_auth(_server(default_plugin=plugin), _client("mallory", password))
    assert isinstance(s_act, AuthFailed) and isinstance(c_act, AuthFailed)
    using = "YES" if password else "NO"
    assert c_act.error == ErrPacket(
        ErrorCode.ER_ACCESS_DENIED_ERROR,
        f"Access denied for user 'mallory'@'10.0.0.7' (using password: {using})",
        "28000",
    )


@pytest.mark.parametrize("plugin", [NATIVE, SHA2])
def test_user_without_password(plugin: str) -> None:
    c_act, _, _, _ = run_auth(_server(default_plugin=plugin), _client("nopw", "", plugin=plugin))
    assert isinstance(c_act, AuthDone)
    c_act, _, _, _ = run_auth(_server(default_plugin=plugin), _client("nopw", "x", plugin=plugin))
    assert isinstance(c_act, AuthFailed)


def test_non_ascii_credentials() -> None:
    c_act, _, _, _ = run_auth(_server(), _client("ünï", "pässwörd"))
    assert isinstance(c_act, AuthDone)


def test_full_auth_cleartext_over_tls() -> None:
    server = _server(tls_available=True, force_full_auth=True)
    c_act, _, log, _ = run_auth(server, _client("alice", "s3cret!", tls=True))
    assert isinstance(c_act, AuthDone)
    assert b"\x01\x04" in log.payloads("s>c")
    assert b"s3cret!\0" in log.payloads("c>s")  # cleartext only inside TLS


def test_full_auth_rsa_with_key_request(rsa_key: RsaKeyPair) -> None:
    server = _server(rsa_key=rsa_key, force_full_auth=True)
    c_act, _, log, _ = run_auth(server, _client("alice", "s3cret!"))
    assert isinstance(c_act, AuthDone), c_act
    sent = log.payloads("c>s")
    assert sent[1] == b"\x02"  # public key request
    assert log.payloads("s>c")[2] == b"\x01" + rsa_key.public_pem
    assert len(sent[2]) == 256 and b"s3cret!" not in sent[2]
    assert [s for _, s, _ in log.packets] == list(range(len(log.packets)))


def test_full_auth_rsa_with_known_key_and_wrong_password(rsa_key: RsaKeyPair) -> None:
    server = _server(rsa_key=rsa_key, force_full_auth=True)
    c_act, _, log, _ = run_auth(
        server, _client("alice", "s3cret!", server_public_key=rsa_key.public_pem)
    )
    assert isinstance(c_act, AuthDone)
    assert b"\x02" not in log.payloads("c>s")
    c_act, _, _, _ = run_auth(
        _server(rsa_key=rsa_key, force_full_auth=True),
        _client("alice", "nope", server_public_key=rsa_key.public_pem),
    )
    assert isinstance(c_act, AuthFailed) and "(using password: YES)" in c_act.error.message


def test_full_auth_without_tls_or_key_is_denied() -> None:
    c_act, _, _, _ = run_auth(_server(force_full_auth=True), _client("alice", "s3cret!"))
    assert isinstance(c_act, AuthFailed)
    assert c_act.error.code == ErrorCode.ER_ACCESS_DENIED_ERROR


def test_server_full_auth_for_odd_length_response(rsa_key: RsaKeyPair) -> None:
    # A caching_sha2 response that is neither empty nor 32 bytes triggers full auth.
    server = _server(rsa_key=rsa_key, secure_transport=True)
    server.start()
    resp = _response_payload(server, "alice", SHA2, b"\x01" * 5)
    act = server.feed(resp, 1)
    assert isinstance(act, AuthSend) and act.data == build_packet(2, b"\x01\x04")
    act = server.feed(b"s3cret!\0", 3)
    assert isinstance(act, AuthDone) and act.data == build_ok(4, server.capabilities)


def _response_payload(server: ServerAuth, user: str, plugin: str, auth: bytes) -> bytes:
    from proxy.protocol.handshake import HandshakeResponse41, encode_handshake_response

    caps = (
        Capability.CLIENT_PROTOCOL_41
        | Capability.CLIENT_SECURE_CONNECTION
        | Capability.CLIENT_PLUGIN_AUTH
        | Capability.CLIENT_LONG_PASSWORD
    )
    return encode_handshake_response(HandshakeResponse41(caps, user, auth, auth_plugin_name=plugin))


def test_server_rejects_out_of_order_and_unexpected_ssl() -> None:
    server = _server()
    server.start()
    act = server.feed(_response_payload(server, "alice", SHA2, b""), 2)
    assert isinstance(act, AuthFailed)
    assert act.error.code == ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER
    assert act.error.sqlstate == "08S01"

    server = _server(tls_available=False)
    server.start()
    from proxy.protocol.handshake import SSLRequest, encode_ssl_request

    act = server.feed(encode_ssl_request(SSLRequest(Capability.CLIENT_PROTOCOL_41)), 1)
    assert isinstance(act, AuthFailed) and act.error.code == ErrorCode.ER_HANDSHAKE_ERROR

    server = _server()
    server.start()
    act = server.feed(b"\x01garbage", 1)
    assert isinstance(act, AuthFailed) and act.error.message == "Bad handshake"


def test_server_client_without_plugin_auth_support() -> None:
    server = _server(default_plugin=SHA2, allowed_plugins=[SHA2], scramble=SCRAMBLE)
    server.start()
    from proxy.protocol.handshake import HandshakeResponse41, encode_handshake_response

    caps = Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_SECURE_CONNECTION
    raw = encode_handshake_response(
        HandshakeResponse41(caps, "alice", scramble_native_password("s3cret!", server.scramble))
    )
    act = server.feed(raw, 1)
    assert isinstance(act, AuthFailed)
    assert act.error.code == ErrorCode.ER_NOT_SUPPORTED_AUTH_MODE
    # With native allowed the same client gets in.
    server = _server(scramble=SCRAMBLE)
    server.start()
    assert isinstance(server.feed(raw, 1), AuthDone)


def test_server_greeting_contents() -> None:
    server = _server(scramble=SCRAMBLE, server_version="5.5.5-10.11.6-pyproxy", tls_available=True)
    reader = PacketReader()
    reader.feed(server.start().data)
    packet = reader.read()
    assert packet is not None and packet.seq == 0
    hs = parse_handshake_v10(packet.payload)
    assert hs.auth_plugin_data == SCRAMBLE
    assert hs.auth_plugin_name == SHA2
    assert hs.connection_id == 7
    assert hs.capabilities & Capability.CLIENT_SSL
    assert hs.capabilities & Capability.CLIENT_DEPRECATE_EOF
    with pytest.raises(RuntimeError):
        server.start()
    with pytest.raises(ValueError):
        _server(default_plugin="mysql_clear_password")


# --------------------------------------------------------------------------- canned servers


def _mariadb_greeting() -> HandshakeV10:
    return parse_handshake_v10(MARIADB_10_11_GREETING[4:])


def _sent_payload(act: AuthAction, seq: int) -> bytes:
    assert isinstance(act, AuthSend | AuthStartTLS)
    reader = PacketReader()
    reader.feed(act.data)
    packet = reader.read()
    assert packet is not None and packet.seq == seq
    return packet.payload


def test_client_against_mariadb_greeting() -> None:
    client = ClientAuth(
        _mariadb_greeting(),
        "app",
        "secret",
        database="shop",
        connect_attrs={"program_name": "pyproxy"},
    )
    resp = parse_handshake_response(_sent_payload(client.start(), 1))
    assert resp.auth_plugin_name == NATIVE  # follows the server's announced plugin
    assert resp.auth_response == bytes.fromhex("a7fff9c8fcab2eaf9d3d308d2b95afd5bd9d4001")
    assert resp.database == "shop"
    assert resp.connect_attrs == {"program_name": "pyproxy"}
    assert resp.capabilities & Capability.CLIENT_DEPRECATE_EOF
    assert not resp.capabilities & Capability.CLIENT_SSL
    assert resp.mariadb_capabilities == 0  # we never ask for MariaDB extensions
    act = client.feed(build_ok(2, client.capabilities)[4:], 2)
    assert isinstance(act, AuthDone) and act.ok is not None and client.done


def test_client_auth_switch_to_sha2_then_error() -> None:
    client = ClientAuth(_mariadb_greeting(), "app", "secret")
    client.start()
    new_scramble = b"Z" * 20
    switch = encode_auth_switch_request(AuthSwitchRequest(SHA2, new_scramble + b"\0"))
    act = client.feed(switch, 2)
    assert _sent_payload(act, 3) == _ref_sha2(b"secret", new_scramble)
    assert client.plugin == SHA2
    act = client.feed(build_err(4, 1045, "denied")[4:], 4)
    assert isinstance(act, AuthFailed) and act.error.code == 1045
    assert client.error == act.error


def test_client_rejects_bad_sequence_and_unknown_plugin() -> None:
    client = ClientAuth(_mariadb_greeting(), "app", "secret")
    client.start()
    act = client.feed(build_ok(3, client.capabilities)[4:], 3)
    assert isinstance(act, AuthFailed)
    assert act.error.code == ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER

    client = ClientAuth(_mariadb_greeting(), "app", "secret")
    client.start()
    switch = encode_auth_switch_request(AuthSwitchRequest("client_ed25519", b"x" * 32))
    act = client.feed(switch, 2)
    assert isinstance(act, AuthFailed)
    assert act.error.code == ErrorCode.CR_AUTH_PLUGIN_CANNOT_LOAD

    # Cleartext is refused on an insecure transport unless explicitly allowed.
    client = ClientAuth(_mariadb_greeting(), "app", "secret", allow_cleartext=True)
    client.start()
    act = client.feed(encode_auth_switch_request(AuthSwitchRequest("mysql_clear_password", b"")), 2)
    assert _sent_payload(act, 3) == b"secret\0"

    client = ClientAuth(_mariadb_greeting(), "app", "secret")
    client.start()
    act = client.feed(b"\x07junk", 2)
    assert isinstance(act, AuthFailed) and act.error.code == ErrorCode.CR_MALFORMED_PACKET


def test_client_tls_requires_server_support() -> None:
    client = ClientAuth(_mariadb_greeting(), "app", "secret", tls=True)
    act = client.start()
    assert isinstance(act, AuthFailed)
    assert act.error.code == ErrorCode.CR_SSL_CONNECTION_ERROR


def test_client_change_user() -> None:
    greeting = _mariadb_greeting()
    client = ClientAuth(
        greeting, "other", "pw2", database="db2", connect_attrs={"_client_name": "pyproxy"}
    )
    act = client.start_change_user()
    payload = _sent_payload(act, 0)
    req = parse_change_user(payload, client.capabilities)
    assert req.username == "other" and req.database == "db2"
    assert req.auth_plugin_name == NATIVE
    assert req.auth_response == _ref_native(b"pw2", MARIADB_SCRAMBLE)
    # The server may switch plugins; the reply continues the sequence.
    switch = encode_auth_switch_request(AuthSwitchRequest(SHA2, SCRAMBLE + b"\0"))
    assert _sent_payload(client.feed(switch, 1), 2) == _ref_sha2(b"pw2", SCRAMBLE)
    assert isinstance(client.feed(b"\x01\x03", 3), AuthWait)
    assert isinstance(client.feed(build_ok(4, client.capabilities)[4:], 4), AuthDone)


# --------------------------------------------------------------------------- COM_CHANGE_USER


def run_change_user(
    server_options: dict[str, object], user: str, password: str, **client_kw: object
) -> tuple[AuthAction, AuthAction, Transcript, ServerAuth]:
    """A client's COM_CHANGE_USER (ClientAuth) against ServerAuth.start_change_user, as on a
    connection that logged in with the greeting of *server_options*."""
    login = _server(**server_options)
    greeting = login.greeting()
    client = _client(user, password, database="db2", **client_kw)(greeting)
    server = _server(
        **server_options, scramble=greeting.auth_plugin_data, capabilities=client.capabilities
    )
    log = Transcript()
    to_client, to_server = PacketReader(), PacketReader()
    (request,) = _drain(to_server, client.start_change_user().data, "c>s", log)
    s_act = server.start_change_user(parse_change_user(request.payload, client.capabilities))
    c_act: AuthAction = AuthWait()
    for _ in range(10):
        assert isinstance(s_act, AuthSend | AuthDone | AuthFailed), s_act
        for pkt in _drain(to_client, s_act.data, "s>c", log):
            c_act = client.feed(pkt.payload, pkt.seq)
        if isinstance(s_act, AuthDone | AuthFailed):
            return c_act, s_act, log, server
        assert isinstance(c_act, AuthSend), c_act
        for pkt in _drain(to_server, c_act.data, "c>s", log):
            s_act = server.feed(pkt.payload, pkt.seq)
    raise AssertionError("change-user exchange did not end")


@pytest.mark.parametrize("server_plugin", [NATIVE, SHA2])
@pytest.mark.parametrize("client_plugin", [NATIVE, SHA2])
@pytest.mark.parametrize("strict", [False, True])
def test_change_user_plugins(server_plugin: str, client_plugin: str, strict: bool) -> None:
    c_act, s_act, log, server = run_change_user(
        {"default_plugin": server_plugin, "allowed_plugins": [server_plugin] if strict else None},
        "ünï",
        "pässwörd",
        plugin=client_plugin,
    )
    assert isinstance(c_act, AuthDone) and isinstance(s_act, AuthDone), (c_act, s_act)
    assert server.done and server.username == "ünï" and server.database == "db2"
    expected = server_plugin if strict else client_plugin
    assert server.plugin == expected
    switched = any(p[:1] == b"\xfe" for p in log.payloads("s>c"))
    assert switched == (expected != client_plugin)
    # The request is seq 0; every packet follows the previous one.
    assert [seq for _, seq, _ in log.packets] == list(range(len(log.packets)))
    assert (b"\x01\x03" in log.payloads("s>c")) == (expected == SHA2)
    assert log.payloads("s>c")[-1][0] == 0x00


@pytest.mark.parametrize("plugin", [NATIVE, SHA2])
def test_change_user_wrong_password_or_unknown_user(plugin: str) -> None:
    for user, password in (("alice", "wrong"), ("mallory", "s3cret!")):
        c_act, s_act, log, _ = run_change_user(
            {"default_plugin": plugin}, user, password, plugin=plugin
        )
        assert isinstance(s_act, AuthFailed) and isinstance(c_act, AuthFailed)
        assert s_act.error.code == ErrorCode.ER_ACCESS_DENIED_ERROR
        assert s_act.error.message == (
            f"Access denied for user '{user}'@'10.0.0.7' (using password: YES)"
        )
        assert log.packets[-1][:2] == ("s>c", 1)


def test_change_user_caching_sha2_rsa_exchange(rsa_key: RsaKeyPair) -> None:
    c_act, s_act, log, _ = run_change_user(
        {"default_plugin": SHA2, "rsa_key": rsa_key, "force_full_auth": True},
        "alice",
        "s3cret!",
        plugin=SHA2,
    )
    assert isinstance(s_act, AuthDone) and isinstance(c_act, AuthDone)
    assert log.payloads("c>s")[1] == b"\x02"  # public key request
    assert log.payloads("s>c")[1] == b"\x01" + rsa_key.public_pem
    assert b"s3cret!" not in b"".join(log.payloads("c>s"))
    assert [seq for _, seq, _ in log.packets] == list(range(len(log.packets)))


def test_change_user_caching_sha2_full_auth_over_tls() -> None:
    c_act, s_act, log, _ = run_change_user(
        {"default_plugin": SHA2, "secure_transport": True, "force_full_auth": True},
        "alice",
        "s3cret!",
        plugin=SHA2,
        secure_transport=True,
    )
    assert isinstance(s_act, AuthDone) and isinstance(c_act, AuthDone)
    assert b"s3cret!\0" in log.payloads("c>s")


def test_change_user_starts_once() -> None:
    server = _server()
    server.start()
    with pytest.raises(RuntimeError):
        server.start_change_user(parse_change_user(b"\x11alice\x00\x00", 0))
