# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython

cdef class Endpoint:
    cdef public Backend backend
    cdef public object address, host, port
    cdef public Py_ssize_t index
    cdef public object state
    cdef public Py_ssize_t active
    cdef public list idle
    cdef public Py_ssize_t requests, failures, consecutive_failures
    cdef public object last_probe, last_result, last_reason, affinity_id, name

cdef class SessionCount:
    cdef public Py_ssize_t open, limit

cdef class Backend:
    cdef public object pool, settings, probe
    cdef public list endpoints
    cdef public dict by_affinity
    cdef public Py_ssize_t rr_next
    cdef public object latency
    cdef public SessionCount sessions
    cdef public bint ws_checks

    @cython.locals(endpoints=list, ep=Endpoint)
    cpdef Endpoint choose(self, tuple exclude=*, Endpoint preferred=*)
