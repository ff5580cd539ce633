# Pure-Python-mode declarations for Cython (fastgw/native.py).

from fastgw.backends cimport Endpoint

cdef class UpstreamConnection:
    cdef public Endpoint endpoint
    cdef public object transport, exchange
    cdef public bint closed
    cdef public Py_ssize_t uses
    cdef public double idle_since
    cdef public bint paused
