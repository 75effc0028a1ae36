"""OpenSSL calls that Python's ssl module does not offer, through ctypes.

Test helper for peer.py (tlsvpn's interop tests); not for production use.

Why this exists: the interop tests must make OpenSSL send two TLS 1.3
post-handshake messages at moments the test chooses:

  - KeyUpdate (RFC 8446 section 4.6.3), with request_update set to
    update_not_requested (0) or update_requested (1): SSL_key_update();
  - an extra NewSessionTicket after application data has flowed:
    SSL_new_session_ticket() (OpenSSL 1.1.1 and later).

Python's ssl module (3.11, and still 3.13) has no API for either: there is
no SSLSocket.key_update() and no way to ask for another ticket. So we call
the two functions of the very libssl that the _ssl extension module uses,
on the SSL* inside the SSLSocket.

How the SSL* is found: an ssl.SSLSocket keeps a C object, sock._sslobj, of
type _ssl._SSLSocket. In CPython 3.11 (Modules/_ssl.c) that object is

    typedef struct {
        PyObject_HEAD          /* Py_ssize_t ob_refcnt; PyTypeObject *ob_type */
        PyObject *Socket;      /* weakref to the socket */
        SSL *ssl;
        ...
    } PySSLSocket;

so the SSL* sits at id(sock._sslobj) + sizeof(Py_ssize_t) + 2 * sizeof(void *)
(24 on 64-bit builds). This is CPython internals, not an API, so every
handle is checked before use, and anything unexpected aborts loudly instead
of calling OpenSSL with a wrong pointer:

  - the libssl we load reports the same OpenSSL version as ssl.OPENSSL_VERSION_NUMBER
    (dlopen of the same soname returns the library _ssl already loaded);
  - SSL_get_fd(ssl) is the socket's file descriptor;
  - SSL_version(ssl) is TLS 1.3 (0x0304);
  - SSL_is_server(ssl) matches the role the caller expects.

Both calls only queue the message: OpenSSL sends it with the next
SSL_write (or SSL_do_handshake). While a KeyUpdate is queued, OpenSSL is
"in init", and SSL_new_session_ticket() then fails; write in between.
"""

import ctypes
import ssl

TLS1_3_VERSION = 0x0304

# SSL_key_update() types (openssl/ssl.h).
SSL_KEY_UPDATE_NOT_REQUESTED = 0
SSL_KEY_UPDATE_REQUESTED = 1

# Offset of "SSL *ssl" in CPython 3.11's PySSLSocket (see the docstring).
_SSL_PTR_OFFSET = ctypes.sizeof(ctypes.c_ssize_t) + 2 * ctypes.sizeof(ctypes.c_void_p)


class OpenSSLError(RuntimeError):
    """An OpenSSL call failed, or the SSL* could not be found safely."""


def _load():
    libssl = ctypes.CDLL("libssl.so.3")
    libcrypto = ctypes.CDLL("libcrypto.so.3")
    libssl.OpenSSL_version_num.argtypes = []
    libssl.OpenSSL_version_num.restype = ctypes.c_ulong
    for name in ("SSL_get_fd", "SSL_version", "SSL_is_server", "SSL_new_session_ticket",
                 "SSL_get_key_update_type"):
        fn = getattr(libssl, name)
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_int
    libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libssl.SSL_key_update.restype = ctypes.c_int
    libcrypto.ERR_get_error.argtypes = []
    libcrypto.ERR_get_error.restype = ctypes.c_ulong
    libcrypto.ERR_error_string_n.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]
    libcrypto.ERR_error_string_n.restype = None
    got = libssl.OpenSSL_version_num()
    if got != ssl.OPENSSL_VERSION_NUMBER:
        raise OpenSSLError(
            f"libssl.so.3 reports OpenSSL version 0x{got:x}, but Python's ssl module uses "
            f"0x{ssl.OPENSSL_VERSION_NUMBER:x} ({ssl.OPENSSL_VERSION}): not the same library, "
            "refusing to pass it an SSL* from the ssl module")
    return libssl, libcrypto


class Handle:
    """The SSL* of one connected ssl.SSLSocket, checked (see the module docstring)."""

    def __init__(self, sock, server):
        if not isinstance(sock, ssl.SSLSocket) or sock._sslobj is None:
            raise OpenSSLError("not a connected ssl.SSLSocket")
        self._libssl, self._libcrypto = _load()
        self._sock = sock  # keeps the SSL object alive as long as the handle
        sslobj = sock._sslobj
        ptr = ctypes.c_void_p.from_address(id(sslobj) + _SSL_PTR_OFFSET).value
        if not ptr:
            raise OpenSSLError("no SSL* at the expected offset of the _ssl._SSLSocket object "
                               "(CPython's PySSLSocket layout changed?)")
        fd = self._libssl.SSL_get_fd(ptr)
        if fd != sock.fileno():
            raise OpenSSLError(f"SSL_get_fd of the pointer found is {fd}, the socket's fd is "
                               f"{sock.fileno()}: not this socket's SSL* (CPython layout changed?)")
        version = self._libssl.SSL_version(ptr)
        if version != TLS1_3_VERSION:
            raise OpenSSLError(f"SSL_version is 0x{version:04x}, want TLS 1.3 (0x0304)")
        if bool(self._libssl.SSL_is_server(ptr)) != server:
            raise OpenSSLError(f"SSL_is_server disagrees with the role (server={server})")
        self._ptr = ptr

    def _error(self, what):
        codes = []
        while True:
            code = self._libcrypto.ERR_get_error()
            if not code:
                break
            buf = ctypes.create_string_buffer(256)
            self._libcrypto.ERR_error_string_n(code, buf, len(buf))
            codes.append(buf.value.decode(errors="replace"))
        return OpenSSLError(f"{what} failed: {'; '.join(codes) or 'no error on the OpenSSL queue'}")

    def key_update(self, request):
        """Queue a KeyUpdate; request is SSL_KEY_UPDATE_(NOT_)REQUESTED.

        OpenSSL sends it, and switches its sending keys, with the next write.
        """
        if request not in (SSL_KEY_UPDATE_NOT_REQUESTED, SSL_KEY_UPDATE_REQUESTED):
            raise ValueError(f"key update type {request}")
        if self._libssl.SSL_key_update(self._ptr, request) != 1:
            raise self._error(f"SSL_key_update({request})")

    def key_update_pending(self):
        """SSL_get_key_update_type: the queued type, or -1 (SSL_KEY_UPDATE_NONE)."""
        return self._libssl.SSL_get_key_update_type(self._ptr)

    def new_session_ticket(self):
        """Queue one more NewSessionTicket (server only); sent with the next write."""
        if self._libssl.SSL_new_session_ticket(self._ptr) != 1:
            raise self._error("SSL_new_session_ticket")
