# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython

cdef class Histo:
    cdef public tuple bounds
    cdef public list counts
    cdef public double sum

    @cython.locals(i=Py_ssize_t, bound=double)
    cpdef observe(self, double value)

cdef class Stats:
    cdef public object requests, upgrades, sessions, closes, probes, waf, log_errors, log_dropped
    cdef public object accept_errors, connect_errors, client_refusals, handovers
    cdef public list frames_closed, bytes_closed
    cdef public dict latency
    cdef public Histo durations

    @cython.locals(histo=Histo)
    cpdef Histo latency_histo(self, str pool)
