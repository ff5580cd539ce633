# Pure-Python-mode declarations for Cython (fastgw/native.py).

cdef class WebSocketSession:
    cdef public object client, upstream, exchange, gateway, loop, endpoint, route
    cdef public object idle_timeout, close_timeout, pumps, transports, state
    cdef public object sent_close, got_close, open, close_code, close_reason, closed_by
    cdef public object started, duration, ended
