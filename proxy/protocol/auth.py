"""Password scrambles, the RSA password exchange and sans-IO client/server auth state machines."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final, TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy.protocol.constants import (
    DEFAULT_COLLATION,
    SCRAMBLE_LENGTH,
    AuthPlugin,
    CachingSha2Status,
    Capability,
    ErrorCode,
    PacketHeader,
    ServerStatus,
    sqlstate_for,
)
from proxy.protocol.handshake import (
    DEFAULT_MAX_PACKET_SIZE,
    AuthSwitchRequest,
    ChangeUser,
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
    encode_auth_more_data,
    encode_auth_switch_request,
    encode_change_user,
    encode_handshake_response,
    encode_handshake_v10,
    encode_ssl_request,
    is_ssl_request,
    parse_auth_switch_request,
    parse_handshake_response,
)
from proxy.protocol.packets import (
    ErrPacket,
    OkPacket,
    ProtocolError,
    build_packet,
    encode_err,
    encode_ok,
    next_seq,
    parse_err,
    parse_ok,
)

_OK_HEADER: Final = int(PacketHeader.OK)
_AUTH_MORE_DATA_HEADER: Final = int(PacketHeader.AUTH_MORE_DATA)
_AUTH_SWITCH_HEADER: Final = int(PacketHeader.AUTH_SWITCH)
_ERR_HEADER: Final = int(PacketHeader.ERR)

# Capabilities pyproxy offers to its clients (CLIENT_SSL is added when TLS is available).
DEFAULT_SERVER_CAPABILITIES: Final = (
    Capability.CLIENT_LONG_PASSWORD
    | Capability.CLIENT_FOUND_ROWS
    | Capability.CLIENT_LONG_FLAG
    | Capability.CLIENT_CONNECT_WITH_DB
    | Capability.CLIENT_IGNORE_SPACE
    | Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_INTERACTIVE
    | Capability.CLIENT_IGNORE_SIGPIPE
    | Capability.CLIENT_TRANSACTIONS
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_MULTI_STATEMENTS
    | Capability.CLIENT_MULTI_RESULTS
    | Capability.CLIENT_PS_MULTI_RESULTS
    | Capability.CLIENT_PLUGIN_AUTH
    | Capability.CLIENT_CONNECT_ATTRS
    | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CLIENT_SESSION_TRACK
    | Capability.CLIENT_DEPRECATE_EOF
)

# Capabilities pyproxy asks a backend for; intersected with what the backend offers.
DEFAULT_CLIENT_CAPABILITIES: Final = (
    Capability.CLIENT_LONG_PASSWORD
    | Capability.CLIENT_FOUND_ROWS
    | Capability.CLIENT_LONG_FLAG
    | Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_TRANSACTIONS
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_MULTI_STATEMENTS
    | Capability.CLIENT_MULTI_RESULTS
    | Capability.CLIENT_PS_MULTI_RESULTS
    | Capability.CLIENT_PLUGIN_AUTH
    | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CLIENT_SESSION_TRACK
    | Capability.CLIENT_DEPRECATE_EOF
)

DEFAULT_SERVER_VERSION: Final = "8.0.36-pyproxy"

_NATIVE = AuthPlugin.MYSQL_NATIVE_PASSWORD
_SHA2 = AuthPlugin.CACHING_SHA2_PASSWORD
_CLEAR = AuthPlugin.MYSQL_CLEAR_PASSWORD
_SCRAMBLE_PLUGINS: Final = frozenset((_NATIVE, _SHA2))
_SHA2_DIGEST_LENGTH: Final = 32

_REQUEST_PUBLIC_KEY = bytes((CachingSha2Status.REQUEST_PUBLIC_KEY,))
_FAST_AUTH_SUCCESS = bytes((CachingSha2Status.FAST_AUTH_SUCCESS,))
_PERFORM_FULL_AUTH = bytes((CachingSha2Status.PERFORM_FULL_AUTH,))

Password: TypeAlias = str | bytes


# --------------------------------------------------------------------------- scrambles


def _pw_bytes(password: Password) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else password


def _xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("xor of unequal lengths")
    # As one big integer: a generator over the bytes costs ~20 interpreted steps per login.
    return (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(len(a))


# Each random byte to 7 bits and non-zero (0 -> 1), by one bytes.translate.
_SCRAMBLE_BYTE = bytes((b & 0x7F) or 0x01 for b in range(256))


def generate_scramble() -> bytes:
    """Random challenge; 7-bit and NUL-free because clients read it as a C string."""
    return os.urandom(SCRAMBLE_LENGTH).translate(_SCRAMBLE_BYTE)


def _challenge(data: bytes) -> bytes:
    # Auth-switch data is the scramble followed by a NUL; the hashes use 20 bytes.
    return data[:SCRAMBLE_LENGTH]


def scramble_native_password(password: Password, scramble: bytes) -> bytes:
    """mysql_native_password response: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))."""
    pw = _pw_bytes(password)
    if not pw:
        return b""
    stage1 = hashlib.sha1(pw).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(_challenge(scramble) + stage2).digest())


def verify_native_password(scramble: bytes, response: bytes, password: Password) -> bool:
    """Check a client's mysql_native_password response against a known plaintext password."""
    expected = scramble_native_password(password, scramble)
    return hmac.compare_digest(expected, _strip_empty(response))


def scramble_caching_sha2(password: Password, scramble: bytes) -> bytes:
    """caching_sha2_password response: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)."""
    pw = _pw_bytes(password)
    if not pw:
        return b""
    stage1 = hashlib.sha256(pw).digest()
    stage2 = hashlib.sha256(stage1).digest()
    return _xor(stage1, hashlib.sha256(stage2 + _challenge(scramble)).digest())


def verify_caching_sha2(scramble: bytes, response: bytes, password: Password) -> bool:
    """Check a caching_sha2_password fast-auth response against a plaintext password."""
    expected = scramble_caching_sha2(password, scramble)
    return hmac.compare_digest(expected, _strip_empty(response))


def _strip_empty(response: bytes) -> bytes:
    # Some clients send a lone NUL instead of an empty response for an empty password.
    return b"" if response == b"\0" else response


# --------------------------------------------------------------------------- RSA exchange


def _oaep() -> padding.OAEP:
    # MySQL uses RSA_PKCS1_OAEP_PADDING: SHA-1 for both the hash and MGF1.
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
    )


def _xor_cyclic(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))


def xor_password(password: Password, scramble: bytes) -> bytes:
    """(password + NUL) XOR the repeated scramble: the plaintext that gets RSA-encrypted."""
    return _xor_cyclic(_pw_bytes(password) + b"\0", _challenge(scramble))


def rsa_encrypt_password(password: Password, scramble: bytes, public_key_pem: bytes) -> bytes:
    """Client side of caching_sha2 full auth over an insecure transport."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("server public key is not an RSA key")
    return key.encrypt(xor_password(password, scramble), _oaep())


@dataclass(frozen=True, slots=True)
class RsaKeyPair:
    """Server-side key used for caching_sha2 full authentication without TLS."""

    private_key: rsa.RSAPrivateKey
    public_pem: bytes


def generate_rsa_key_pair() -> RsaKeyPair:
    """Fresh 2048-bit RSA key pair (slow: generate once per process, not per connection)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RsaKeyPair(private_key, pem)


def rsa_decrypt_password(key: RsaKeyPair, ciphertext: bytes, scramble: bytes) -> bytes:
    """Server side of the RSA exchange: the client's password, without the trailing NUL.

    Raises ValueError when the ciphertext does not decrypt.
    """
    masked = key.private_key.decrypt(ciphertext, _oaep())
    return _xor_cyclic(masked, _challenge(scramble)).removesuffix(b"\0")


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class AuthSend:
    """Send these bytes (already framed) and wait for the peer's next packet."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AuthWait:
    """Nothing to send; feed the peer's next packet."""


@dataclass(frozen=True, slots=True)
class AuthStartTLS:
    """Send *data* (if any), then run the TLS handshake on the transport."""

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class AuthDone:
    """Authenticated. Send *data* (server side: the final OK packet); the command phase begins."""

    data: bytes = b""
    ok: OkPacket | None = None


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """Authentication failed. Send *data* (server side: the ERR packet) and close."""

    error: ErrPacket
    data: bytes = b""


AuthAction: TypeAlias = AuthSend | AuthWait | AuthStartTLS | AuthDone | AuthFailed


def _error(code: ErrorCode, message: str) -> ErrPacket:
    return ErrPacket(code, message, sqlstate_for(code))


def _out_of_order(got: int, expected: int) -> ErrPacket:
    return _error(
        ErrorCode.ER_NET_PACKETS_OUT_OF_ORDER,
        f"Got packets out of order (seq {got}, expected {expected})",
    )


class _ClientState(Enum):
    INIT = auto()
    TLS = auto()
    WAIT_SERVER = auto()
    WAIT_PUBLIC_KEY = auto()
    DONE = auto()
    FAILED = auto()


# --------------------------------------------------------------------------- client side


class ClientAuth:
    """pyproxy authenticating to a backend: turns server packets into the next action.

    Usage: ``start()`` after parsing the greeting, then ``feed(payload, seq)`` with each
    packet the server sends until the action is AuthDone or AuthFailed. With ``tls=True``
    ``start()`` returns AuthStartTLS; after the TLS handshake call ``tls_established()``.
    """

    def __init__(
        self,
        greeting: HandshakeV10,
        username: str,
        password: Password,
        *,
        database: str | None = None,
        capabilities: int = DEFAULT_CLIENT_CAPABILITIES,
        charset: int = DEFAULT_COLLATION,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        connect_attrs: Mapping[str, str] | None = None,
        tls: bool = False,
        secure_transport: bool = False,
        plugin: str | None = None,
        server_public_key: bytes | None = None,
        allow_cleartext: bool = False,
    ) -> None:
        self.greeting = greeting
        self.username = username
        self._password = _pw_bytes(password)
        self.database = database
        self.charset = charset
        self.max_packet_size = max_packet_size
        self.connect_attrs = dict(connect_attrs or {})
        self.tls = tls
        self.secure = tls or secure_transport
        self.server_public_key = server_public_key
        self.allow_cleartext = allow_cleartext
        self.capabilities = self._negotiate(capabilities)
        self.plugin = self._initial_plugin(plugin)
        self._scramble = _challenge(greeting.auth_plugin_data)
        self._seq = 0  # greeting was seq 0
        self._state = _ClientState.INIT
        self.ok: OkPacket | None = None
        self.error: ErrPacket | None = None

    def _negotiate(self, wanted: int) -> int:
        server = self.greeting.capabilities
        caps = wanted & server
        caps |= Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_SECURE_CONNECTION
        caps &= ~(Capability.CLIENT_SSL | Capability.CLIENT_CONNECT_WITH_DB)
        caps &= ~Capability.CLIENT_CONNECT_ATTRS
        if self.database and server & Capability.CLIENT_CONNECT_WITH_DB:
            caps |= Capability.CLIENT_CONNECT_WITH_DB
        if self.connect_attrs and server & Capability.CLIENT_CONNECT_ATTRS:
            caps |= Capability.CLIENT_CONNECT_ATTRS
        if self.tls:
            caps |= Capability.CLIENT_SSL
        return caps

    def _initial_plugin(self, preferred: str | None) -> str:
        if not self.capabilities & Capability.CLIENT_PLUGIN_AUTH:
            return _NATIVE
        if preferred:
            return preferred
        announced = self.greeting.auth_plugin_name
        return announced if announced in _SCRAMBLE_PLUGINS else _SHA2

    @property
    def done(self) -> bool:
        """Authentication succeeded."""
        return self._state is _ClientState.DONE

    def _fail(self, error: ErrPacket) -> AuthFailed:
        self._state = _ClientState.FAILED
        self.error = error
        return AuthFailed(error)

    def _send(self, payload: bytes) -> AuthSend:
        seq = (self._seq + 1) & 0xFF
        self._seq = (next_seq(seq, len(payload)) - 1) & 0xFF
        return AuthSend(build_packet(seq, payload))

    def _auth_data(self, plugin: str, scramble: bytes) -> bytes | None:
        if plugin == _NATIVE:
            return scramble_native_password(self._password, scramble)
        if plugin == _SHA2:
            return scramble_caching_sha2(self._password, scramble)
        if plugin == _CLEAR and (self.secure or self.allow_cleartext):
            return self._password + b"\0"
        return None

    def _handshake_response(self) -> bytes:
        auth = self._auth_data(self.plugin, self._scramble)
        resp = HandshakeResponse41(
            capabilities=self.capabilities,
            username=self.username,
            auth_response=auth or b"",  # unknown plugin: empty, the server will switch
            database=self.database,
            auth_plugin_name=self.plugin,
            connect_attrs=self.connect_attrs,
            max_packet_size=self.max_packet_size,
            charset=self.charset,
        )
        return encode_handshake_response(resp)

    def start(self) -> AuthAction:
        """First action: send the handshake response (or the SSLRequest when using TLS)."""
        if self._state is not _ClientState.INIT:
            raise RuntimeError("ClientAuth.start() called twice")
        if not self.greeting.capabilities & Capability.CLIENT_PROTOCOL_41:
            return self._fail(_error(ErrorCode.CR_VERSION_ERROR, "server is older than 4.1"))
        if self.tls:
            if not self.greeting.capabilities & Capability.CLIENT_SSL:
                return self._fail(
                    _error(
                        ErrorCode.CR_SSL_CONNECTION_ERROR,
                        "SSL connection error: SSL is required but the server doesn't support it",
                    )
                )
            self._state = _ClientState.TLS
            req = SSLRequest(self.capabilities, self.max_packet_size, self.charset)
            return AuthStartTLS(self._send(encode_ssl_request(req)).data)
        self._state = _ClientState.WAIT_SERVER
        return self._send(self._handshake_response())

    def start_change_user(self) -> AuthSend:
        """Begin COM_CHANGE_USER on an established connection instead of a handshake.

        Construct with the connection's original greeting and options; the scramble of
        the greeting is reused, as MySQL clients do.
        """
        if self._state is not _ClientState.INIT:
            raise RuntimeError("ClientAuth already started")
        self._state = _ClientState.WAIT_SERVER
        req = ChangeUser(
            username=self.username,
            auth_response=self._auth_data(self.plugin, self._scramble) or b"",
            database=self.database or "",
            charset=self.charset,
            auth_plugin_name=self.plugin,
            connect_attrs=self.connect_attrs,
        )
        self._seq = 0
        return AuthSend(build_packet(0, encode_change_user(req, self.capabilities)))

    def tls_established(self) -> AuthSend:
        """The TLS handshake finished: send the real handshake response."""
        if self._state is not _ClientState.TLS:
            raise RuntimeError("tls_established() without a pending SSLRequest")
        self._state = _ClientState.WAIT_SERVER
        return self._send(self._handshake_response())

    def feed(self, payload: bytes, seq: int) -> AuthAction:
        """Process one packet from the server."""
        if self._state not in (_ClientState.WAIT_SERVER, _ClientState.WAIT_PUBLIC_KEY):
            raise RuntimeError(f"unexpected packet in state {self._state.name}")
        expected = (self._seq + 1) & 0xFF
        if seq != expected:
            return self._fail(_out_of_order(seq, expected))
        self._seq = seq
        if not payload:
            return self._fail(_error(ErrorCode.CR_MALFORMED_PACKET, "empty packet"))
        try:
            return self._dispatch(payload)
        except (ProtocolError, ValueError) as exc:
            return self._fail(_error(ErrorCode.CR_MALFORMED_PACKET, f"Malformed packet: {exc}"))

    def _dispatch(self, payload: bytes) -> AuthAction:
        header = payload[0]
        if header == _OK_HEADER:
            self._state = _ClientState.DONE
            self.ok = parse_ok(payload, self.capabilities)
            return AuthDone(ok=self.ok)
        if header == _ERR_HEADER:
            return self._fail(parse_err(payload))
        if header == _AUTH_SWITCH_HEADER:
            switch = parse_auth_switch_request(payload)
            data = self._auth_data(switch.plugin_name, switch.plugin_data)
            if data is None:
                return self._fail(
                    _error(
                        ErrorCode.CR_AUTH_PLUGIN_CANNOT_LOAD,
                        f"Authentication plugin '{switch.plugin_name}' cannot be used",
                    )
                )
            self.plugin = switch.plugin_name
            self._scramble = _challenge(switch.plugin_data)
            self._state = _ClientState.WAIT_SERVER
            return self._send(data)
        if header == _AUTH_MORE_DATA_HEADER and self.plugin == _SHA2:
            return self._caching_sha2_more(payload[1:])
        return self._fail(
            _error(ErrorCode.CR_MALFORMED_PACKET, f"unexpected packet 0x{header:02X} during auth")
        )

    def _caching_sha2_more(self, data: bytes) -> AuthAction:
        if self._state is _ClientState.WAIT_PUBLIC_KEY:
            self._state = _ClientState.WAIT_SERVER
            return self._send(rsa_encrypt_password(self._password, self._scramble, data))
        if data == _FAST_AUTH_SUCCESS:
            return AuthWait()  # the OK packet follows
        if data != _PERFORM_FULL_AUTH:
            return self._fail(_error(ErrorCode.CR_MALFORMED_PACKET, "unexpected AuthMoreData"))
        if self.secure:
            return self._send(self._password + b"\0")
        if self.server_public_key is not None:
            return self._send(
                rsa_encrypt_password(self._password, self._scramble, self.server_public_key)
            )
        self._state = _ClientState.WAIT_PUBLIC_KEY
        return self._send(_REQUEST_PUBLIC_KEY)


# --------------------------------------------------------------------------- server side


class _ServerState(Enum):
    INIT = auto()
    WAIT_RESPONSE = auto()
    WAIT_SWITCH_RESPONSE = auto()
    WAIT_FULL_AUTH = auto()
    WAIT_RSA = auto()
    DONE = auto()
    FAILED = auto()


class ServerAuth:
    """pyproxy authenticating a client, from greeting to the final OK or ERR.

    ``start()`` gives the greeting; then ``feed(payload, seq)`` each client packet. An
    SSLRequest yields AuthStartTLS: wrap the transport, then keep feeding. Passwords are
    known in plaintext (``password_for``), so caching_sha2's cache is always hot; full
    authentication still works for clients that ask for it.

    Clients answering with a plugin in *allowed_plugins* are verified at once; others get
    an AuthSwitchRequest to *default_plugin*. A caching_sha2 response that is not 32 bytes
    (or any non-empty one, with *force_full_auth*) leads to full authentication: cleartext when
    the transport is secure (TLS or *secure_transport*), otherwise RSA with *rsa_key*.
    *client_host* only appears in the "Access denied" message.
    """

    def __init__(
        self,
        password_for: Callable[[str], str | None],
        *,
        connection_id: int,
        server_version: str = DEFAULT_SERVER_VERSION,
        default_plugin: str = _SHA2,
        allowed_plugins: Collection[str] | None = None,
        capabilities: int = DEFAULT_SERVER_CAPABILITIES,
        charset: int = DEFAULT_COLLATION,
        status: int = ServerStatus.AUTOCOMMIT,
        tls_available: bool = False,
        secure_transport: bool = False,
        rsa_key: RsaKeyPair | None = None,
        client_host: str = "localhost",
        scramble: bytes | None = None,
        force_full_auth: bool = False,
    ) -> None:
        if default_plugin not in _SCRAMBLE_PLUGINS:
            raise ValueError(f"unsupported default plugin {default_plugin!r}")
        self._password_for = password_for
        self.connection_id = connection_id
        self.server_version = server_version
        self.default_plugin = default_plugin
        self.allowed_plugins = (
            frozenset(_SCRAMBLE_PLUGINS if allowed_plugins is None else allowed_plugins)
            & _SCRAMBLE_PLUGINS
        )
        self.server_capabilities = capabilities | (Capability.CLIENT_SSL if tls_available else 0)
        self.charset = charset
        self.status = status
        self.tls_available = tls_available
        self.tls = False
        self.secure = secure_transport
        self.rsa_key = rsa_key
        self.client_host = client_host
        self.scramble = scramble if scramble is not None else generate_scramble()
        self.force_full_auth = force_full_auth
        self.capabilities = self.server_capabilities  # narrowed once the client answers
        self.response: HandshakeResponse41 | None = None
        self.plugin = default_plugin
        self._username = ""
        self._database: str | None = None
        self._password: str | None = None
        self._seq = 0
        self._state = _ServerState.INIT

    # -- results

    @property
    def done(self) -> bool:
        """The client is authenticated."""
        return self._state is _ServerState.DONE

    @property
    def username(self) -> str:
        """User name the client sent ("" before its response)."""
        return self._username

    @property
    def database(self) -> str | None:
        """Default schema requested with CLIENT_CONNECT_WITH_DB (or by COM_CHANGE_USER)."""
        return self._database

    # -- flow

    def greeting(self) -> HandshakeV10:
        """The greeting this server sends."""
        return HandshakeV10(
            server_version=self.server_version,
            connection_id=self.connection_id,
            auth_plugin_data=self.scramble,
            capabilities=self.server_capabilities,
            charset=self.charset & 0xFF,
            status=self.status,
            auth_plugin_name=self.default_plugin,
        )

    def start(self) -> AuthSend:
        """The greeting packet (seq 0)."""
        if self._state is not _ServerState.INIT:
            raise RuntimeError("ServerAuth.start() called twice")
        self._state = _ServerState.WAIT_RESPONSE
        self._seq = 0
        return AuthSend(build_packet(0, encode_handshake_v10(self.greeting())))

    def feed(self, payload: bytes, seq: int) -> AuthAction:
        """Process one packet from the client."""
        state = self._state
        if state in (_ServerState.INIT, _ServerState.DONE, _ServerState.FAILED):
            raise RuntimeError(f"unexpected packet in state {state.name}")
        expected = (self._seq + 1) & 0xFF
        if seq != expected:
            return self._fail(_out_of_order(seq, expected))
        self._seq = seq
        try:
            if state is _ServerState.WAIT_RESPONSE:
                return self._on_response(payload)
            if state is _ServerState.WAIT_SWITCH_RESPONSE:
                return self._verify(self.plugin, payload)
            if state is _ServerState.WAIT_FULL_AUTH:
                return self._on_full_auth(payload)
            return self._on_rsa(payload)
        except ProtocolError:
            return self._fail(_error(ErrorCode.ER_HANDSHAKE_ERROR, "Bad handshake"))

    def _send(self, payload: bytes) -> bytes:
        seq = (self._seq + 1) & 0xFF
        self._seq = (next_seq(seq, len(payload)) - 1) & 0xFF
        return build_packet(seq, payload)

    def _fail(self, error: ErrPacket) -> AuthFailed:
        self._state = _ServerState.FAILED
        payload = encode_err(error.code, error.message, error.sqlstate)
        return AuthFailed(error, self._send(payload))

    def _deny(self, using_password: bool) -> AuthFailed:
        message = (
            f"Access denied for user '{self.username}'@'{self.client_host}' "
            f"(using password: {'YES' if using_password else 'NO'})"
        )
        return self._fail(_error(ErrorCode.ER_ACCESS_DENIED_ERROR, message))

    def _accept(self, prefix: bytes = b"") -> AuthDone:
        self._state = _ServerState.DONE
        ok = OkPacket(status=self.status)
        return AuthDone(prefix + self._send(encode_ok(ok, self.capabilities)), ok)

    def _on_response(self, payload: bytes) -> AuthAction:
        if is_ssl_request(payload):
            if not self.tls_available or self.tls:
                return self._fail(_error(ErrorCode.ER_HANDSHAKE_ERROR, "Bad handshake"))
            self.tls = True
            self.secure = True
            return AuthStartTLS()
        resp = parse_handshake_response(payload)
        self.response = resp
        self.capabilities = resp.capabilities & self.server_capabilities
        if resp.capabilities & Capability.CLIENT_SSL and not self.tls:
            # The client claims TLS without having asked for it: refuse rather than trust.
            return self._fail(_error(ErrorCode.ER_HANDSHAKE_ERROR, "Bad handshake"))
        self._username = resp.username
        self._database = resp.database
        plugin_auth = bool(resp.capabilities & Capability.CLIENT_PLUGIN_AUTH)
        return self._identify(plugin_auth, resp.auth_plugin_name, resp.auth_response)

    def start_change_user(self, request: ChangeUser) -> AuthAction:
        """Authenticate a client's COM_CHANGE_USER (its packet had seq 0) instead of a login.

        Construct with the connection's scramble (the client answers the original greeting's
        challenge), its negotiated capabilities, ``secure_transport`` when it is on TLS, and no
        ``tls_available``: the exchange goes on as after a handshake response (auth switch,
        caching_sha2 fast or full authentication) and ends in the OK or ERR.
        """
        if self._state is not _ServerState.INIT:
            raise RuntimeError("ServerAuth already started")
        self._seq = 0
        self._username = request.username
        self._database = request.database or None
        plugin_auth = bool(self.capabilities & Capability.CLIENT_PLUGIN_AUTH)
        return self._identify(plugin_auth, request.auth_plugin_name, request.auth_response)

    def _identify(self, plugin_auth: bool, plugin: str | None, auth_response: bytes) -> AuthAction:
        """Verify the client's first answer, or ask it to switch to the default plugin."""
        self._password = self._password_for(self._username)
        client_plugin = (plugin or _NATIVE) if plugin_auth else _NATIVE
        if client_plugin in self.allowed_plugins:
            self.plugin = client_plugin
            return self._verify(client_plugin, auth_response)
        if not plugin_auth:
            return self._fail(
                _error(
                    ErrorCode.ER_NOT_SUPPORTED_AUTH_MODE,
                    "Client does not support authentication protocol requested by server; "
                    "consider upgrading MySQL client",
                )
            )
        self.plugin = self.default_plugin
        self._state = _ServerState.WAIT_SWITCH_RESPONSE
        switch = AuthSwitchRequest(self.plugin, self.scramble + b"\0")
        return AuthSend(self._send(encode_auth_switch_request(switch)))

    def _verify(self, plugin: str, response: bytes) -> AuthAction:
        password = self._password
        empty = _strip_empty(response) == b""
        if password is None:
            return self._deny(not empty)  # unknown user
        if plugin == _NATIVE:
            if verify_native_password(self.scramble, response, password):
                return self._accept()
            return self._deny(not empty)
        if empty:
            # MySQL answers an empty caching_sha2 response without a full-auth round.
            return self._accept() if password == "" else self._deny(False)
        if len(response) == _SHA2_DIGEST_LENGTH and not self.force_full_auth:
            if verify_caching_sha2(self.scramble, response, password):
                return self._accept(self._send(encode_auth_more_data(_FAST_AUTH_SUCCESS)))
            return self._deny(True)
        self._state = _ServerState.WAIT_FULL_AUTH
        return AuthSend(self._send(encode_auth_more_data(_PERFORM_FULL_AUTH)))

    def _check_plaintext(self, plain: bytes) -> AuthAction:
        password = self._password
        if password is not None and hmac.compare_digest(plain, _pw_bytes(password)):
            return self._accept()
        return self._deny(bool(plain))

    def _on_full_auth(self, payload: bytes) -> AuthAction:
        if self.secure:
            return self._check_plaintext(payload.removesuffix(b"\0"))
        if payload in (b"", b"\0"):
            return self._check_plaintext(b"")
        if payload == _REQUEST_PUBLIC_KEY:
            if self.rsa_key is None:
                return self._deny(True)
            self._state = _ServerState.WAIT_RSA
            return AuthSend(self._send(encode_auth_more_data(self.rsa_key.public_pem)))
        return self._on_rsa(payload)

    def _on_rsa(self, payload: bytes) -> AuthAction:
        if self.rsa_key is None:
            return self._deny(True)
        try:
            plain = rsa_decrypt_password(self.rsa_key, payload, self.scramble)
        except ValueError:
            return self._deny(True)
        return self._check_plaintext(plain)
