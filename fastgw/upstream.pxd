# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython

from fastgw.backends cimport Endpoint
from fastgw.contracts cimport ProxiedExchange

cdef class UpstreamConnection:
    cdef public Endpoint endpoint
    cdef public object transport
    cdef public ProxiedExchange exchange
    cdef public bint closed
    cdef public Py_ssize_t uses
    cdef public double idle_since
    cdef public bint paused
    cdef public object parser

    cpdef object response_parser(self)
    @cython.locals(exchange=ProxiedExchange)
    cpdef on_header(self, bytes name, bytes value)
    @cython.locals(exchange=ProxiedExchange)
    cpdef on_headers_complete(self)
    @cython.locals(exchange=ProxiedExchange)
    cpdef on_body(self, bytes body)
    @cython.locals(exchange=ProxiedExchange)
    cpdef on_message_complete(self)
    @cython.locals(exchange=ProxiedExchange)
    cpdef data_received(self, bytes data)
    cpdef release(self, Py_ssize_t limit, double now)
    cpdef close(self)
    cpdef abort(self)
