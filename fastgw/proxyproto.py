"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2): pure parsing.

An L4 load balancer in front of the gateway sends one header at the start of each connection,
before HTTP or TLS, saying whose connection it forwards. `parse(data)` reads it from the bytes
received so far:

    None                   the header is not complete yet, and every byte of `data` belongs to
                           it (so a reader may consume them all and wait for more)
    ProxyHeader(length, source)
                           the header is the first `length` bytes; `source` is the client's
                           (ip, port), or None to keep the socket's peer (v1 UNKNOWN, v2 LOCAL,
                           or a v2 address family the gateway does not use)
    raises ProxyHeaderError  not a valid header (missing, malformed, too long)

Version 1 (spec section 2.1): one text line `PROXY TCP4|TCP6 src dst sport dport\\r\\n`, or
`PROXY UNKNOWN ...\\r\\n`, 107 bytes at most. Version 2 (section 2.2): a 12-byte signature, the
version/command byte, the family/transport byte, a 16-bit length, then the addresses and TLVs
(the TLVs are skipped: the gateway uses none of them).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # section 2.1: the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, length

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_INET, _AF_INET6 = 0x1, 0x2
_STREAM = 0x1
_ADDRESS_SIZE = {_AF_INET: 12, _AF_INET6: 36}  # src, dst, src port, dst port


class ProxyHeaderError(ValueError):
    """Not a valid PROXY protocol header: the connection is closed."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    length: int  # bytes of the header, to consume before HTTP or TLS
    source: tuple[str, int] | None  # the client's address; None: keep the socket's peer


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data` (see the module docstring)."""
    if data[:12] == V2_SIGNATURE[:len(data)] and len(data) >= 1 and data[:1] == b"\r":
        return _v2(data)
    if data[:6] == V1_PREFIX[:len(data)]:
        return _v1(data)
    raise ProxyHeaderError("no PROXY protocol header")


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or data.find(b"\n", 0, V1_MAX) >= 0:
            raise ProxyHeaderError("PROXY v1 line longer than 107 bytes or without CRLF")
        return None
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(end + 2, None)  # section 2.1: the rest of the line is ignored
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {text[:V1_MAX]!r}")
    version = 4 if parts[1] == "TCP4" else 6
    src = _address(parts[2], version)
    _address(parts[3], version)
    sport = _port(parts[4])
    _port(parts[5])
    return ProxyHeader(end + 2, (src, sport))


def _address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1: {text!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1: {text!r} is not an IPv{version} address")
    return str(address)


def _port(text: str) -> int:
    # Section 2.1: decimal, no leading zero, 0-65535.
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0") \
            or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY v1: {text!r} is not a port")
    return int(text)


def _v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2: version/command byte {data[12]:#04x}")
    (size,) = struct.unpack_from("!H", data, 14)
    total = V2_FIXED + size
    if len(data) < total:
        return None
    if command == _V2_LOCAL:
        return ProxyHeader(total, None)  # section 2.2: a health check of the proxy itself
    family, transport = data[13] >> 4, data[13] & 0x0F
    needed = _ADDRESS_SIZE.get(family)
    if needed is None or transport != _STREAM:
        # Section 2.2: an address the receiver cannot use is ignored (UNSPEC, UNIX, DGRAM).
        return ProxyHeader(total, None)
    if size < needed:
        raise ProxyHeaderError(f"PROXY v2: {size} address bytes, {needed} needed")
    if family == _AF_INET:
        src = str(ipaddress.IPv4Address(data[16:20]))
        (port,) = struct.unpack_from("!H", data, 24)
    else:
        src = str(ipaddress.IPv6Address(data[16:32]))
        (port,) = struct.unpack_from("!H", data, 48)
    return ProxyHeader(total, (src, port))


def v1_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header for these addresses (tests and tools send it)."""
    kind = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {kind} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode("ascii"))


def v2_header(source: tuple[str, int] | None, destination: tuple[str, int] | None = None,
              tlvs: bytes = b"") -> bytes:
    """A v2 PROXY header (LOCAL when `source` is None), with raw TLV bytes appended."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    destination = destination or (source[0], 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = _AF_INET if src.version == 4 else _AF_INET6
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    return V2_SIGNATURE + bytes([0x21, (family << 4) | _STREAM]) + struct.pack("!H", len(body)) \
        + body
