# Pure-Python-mode declarations for Cython (fastgw/native.py).

from fastgw.contracts cimport ClientSide, Exchange

cdef class LocalAnswer(Exchange):
    cdef public ClientSide client
    cdef public str body
    cdef public tuple headers

    cpdef start(self)
    cpdef request_body(self, bytes data)
    cpdef request_complete(self)
    cpdef client_data(self, bytes data)
    cpdef client_lost(self)
    cpdef on_deadline(self)
    cpdef pause_backend(self)
    cpdef resume_backend(self)
