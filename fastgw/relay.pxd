# Pure-Python-mode declarations for Cython (fastgw/native.py). A leg typed int indexes the
# per-leg lists without a Python integer.

cimport cython

from fastgw.backends cimport Endpoint
from fastgw.contracts cimport ClientSide, Recorder

cdef class WebSocketSession:
    cdef public ClientSide client
    cdef public object exchange
    cdef public Recorder recorder
    cdef public object loop
    cdef public Endpoint endpoint
    cdef public object route
    cdef public double idle_timeout, close_timeout
    cdef public tuple pumps, transports
    cdef public object state
    cdef public list sent_close, got_close, open
    cdef public object close_code, close_reason, closed_by
    cdef public double started, duration
    cdef public bint ended
    cdef public double ping_interval, ping_timeout
    cdef public list ping_sent, pongs_due, stalled_since, stalled_size
    cdef public Py_ssize_t ping_count, upgrades

    cpdef start(self, bytes early_client, bytes early_backend)
    @cython.locals(leg=int)
    cpdef on_connection_lost(self, object pump, object exc)
    cpdef end(self, object ending)
    cpdef _end_with(self, object ending, int side, int code=*, str reason=*)
    @cython.locals(leg=int)
    cpdef _apply(self, tuple actions, int side)
    cpdef _gateway_close(self, int leg, int code, str reason)
    cpdef _enter_closing(self)
    @cython.locals(leg=int)
    cpdef _reap(self)
    cpdef _close_leg(self, int leg, bint abort=*)
    cpdef on_deadline(self)
    cpdef _end(self)
    cpdef _untie(self)
