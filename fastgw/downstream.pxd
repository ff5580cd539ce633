# Pure-Python-mode declarations for Cython (fastgw/native.py): when setup.py compiles
# downstream.py, ClientConnection becomes an extension type with these fields.

cdef class ClientConnection:
    cdef public object gateway, loop, socket_key
    cdef public bytes proto, port_bytes
    cdef public object transport, state, parser, queue, parsing
    cdef public bint write_paused
    cdef public dict pause_reasons
    cdef public object peer_ip, peer_port
    cdef public double deadline_at
    cdef public bint in_head, keepalive_token
    cdef public Py_ssize_t head_bytes, pending_head
    cdef public bytes url
    cdef public list headers
    cdef public Py_ssize_t requests
    cdef public object upgrade_exchange
    cdef public bint refused
    cdef public double request_started
    cdef public Py_ssize_t sent
    cdef public object tls_info
    cdef public object clock
    cdef public double header_timeout, keepalive_timeout
    cdef public Py_ssize_t max_header_size, upstream_keepalive
    cdef object __weakref__
