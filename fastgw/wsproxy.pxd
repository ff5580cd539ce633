# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython

from fastgw.backends cimport SessionCount
from fastgw.contracts cimport Recorder
from fastgw.handshake cimport Offer, check_response, client_101
from fastgw.http1 cimport ResponseHead, analyse_response
from fastgw.proxy cimport HttpExchange
from fastgw.relay cimport WebSocketSession

cdef class WebSocketExchange(HttpExchange):
    cdef public Offer offer
    cdef public list early
    cdef public Py_ssize_t early_bytes
    cdef public ResponseHead switching
    cdef public WebSocketSession session
    cdef public Recorder recorder
    cdef public double close_timeout
    cdef public SessionCount sessions

    cpdef client_data(self, bytes data)
    cpdef client_lost(self)
    @cython.locals(found=tuple)
    cpdef upstream_data(self, bytes data)
    cpdef response_head_complete(self)
    cdef _switching(self, list headers, str version)
    cdef _switch(self, bytes backend_early)

@cython.locals(count=SessionCount)
cpdef release_session(ex)
