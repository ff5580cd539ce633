# Pure-Python-mode declarations for Cython (fastgw/native.py).

from fastgw.backends cimport Endpoint
from fastgw.downstream cimport ClientConnection
from fastgw.upstream cimport UpstreamConnection

cdef class WebSocketSession:
    cdef public ClientConnection client
    cdef public UpstreamConnection upstream
    cdef public object exchange, gateway, loop
    cdef public Endpoint endpoint
    cdef public object route
    cdef public double idle_timeout, close_timeout
    cdef public tuple pumps, transports
    cdef public object state
    cdef public list sent_close, got_close, open
    cdef public object close_code, close_reason, closed_by
    cdef public double started, duration
    cdef public bint ended
