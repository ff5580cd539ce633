# Pure-Python-mode declarations for Cython (fastgw/native.py).

cdef class LocalAnswer:
    cdef public object client, head, status, body, headers
    cdef public bint keep_client, request_done
    cdef public object route, backend, sent_at_start, started, error, endpoint
    cdef public object server_latency, body_received
