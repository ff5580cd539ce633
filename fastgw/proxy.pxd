# Pure-Python-mode declarations for Cython (fastgw/native.py): the classes below become
# extension types with these fields when setup.py compiles the .py beside this file.

cdef class HttpExchange:
    cdef public object client, head, route, backend
    cdef public int state
    cdef public object conn, endpoint, parser, body
    cdef public Py_ssize_t body_bytes
    cdef public bint request_done
    cdef public object resp_headers, framing
    cdef public bint keep_client
    cdef public object tried
    cdef public bint retry_ok
    cdef public double started, upstream_started
    cdef public object status, sent_bytes, received_bytes, connect_task
    cdef public bint client_paused_by_us
    cdef public object response_head, last_error, affinity, request_id, server_latency
    cdef public object body_received, sent_at_start, error, waf, out
    cdef object __weakref__
