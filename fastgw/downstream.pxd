# Pure-Python-mode declarations for Cython (fastgw/native.py): the classes below become
# extension types with these fields when setup.py compiles the .py beside this file.

cdef class ClientConnection:
    cdef public object gateway, loop, limits, socket_key, proto, port_bytes, transport
    cdef public object state, parser, queue, parsing
    cdef public bint write_paused
    cdef public object pause_reasons, peer_ip, peer_port
    cdef public double deadline_at
    cdef public bint in_head
    cdef public Py_ssize_t head_bytes, pending_head
    cdef public object url, headers
    cdef public Py_ssize_t requests
    cdef public object upgrade_exchange
    cdef public bint refused
    cdef public double request_started
    cdef public object sent, tls_info
    cdef object __weakref__
