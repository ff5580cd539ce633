# Pure-Python-mode declarations for Cython (fastgw/native.py): when setup.py compiles proxy.py,
# HttpExchange becomes an extension type whose fields below are typed, so that the exchange
# reaches its client, heads, backend connection and server without generic attribute lookups.

cimport cython

from fastgw.acceptor cimport Driven
from fastgw.contracts cimport ClientSide, ExchangeServices, ProxiedExchange
from fastgw.http1 cimport ResponseHead
from fastgw.rewrite cimport Request, apply_headers, rewrite_response
from fastgw.upstream cimport UpstreamConnection

cdef class HttpExchange(ProxiedExchange):
    cdef public ClientSide client
    cdef public ExchangeServices services
    cdef public int state
    cdef public UpstreamConnection conn, releasing
    cdef public object parser
    cdef public list body
    cdef public Py_ssize_t body_bytes
    cdef public list resp_headers
    cdef public bytes framing
    cdef public tuple tried
    cdef public bint retry_ok
    cdef public double upstream_started, read_at
    cdef public Py_ssize_t received_bytes
    cdef public Driven connect_task
    cdef public bint client_paused_by_us
    cdef public ResponseHead response_head
    cdef public object last_error, affinity, waf
    cdef public list out
    cdef public double request_timeout
    cdef public bint cookie_affinity
    cdef public Request rewrite

    cpdef start(self)
    cpdef request_body(self, bytes data)
    cpdef request_complete(self)
    cpdef client_data(self, bytes data)
    cpdef client_lost(self)
    cpdef on_deadline(self)
    cpdef pause_backend(self)
    cpdef resume_backend(self)
    cpdef upstream_data(self, bytes data)
    cpdef upstream_eof(self)
    cpdef upstream_lost(self, object exc)
    cpdef upstream_pause_writing(self)
    cpdef upstream_resume_writing(self)
    cpdef response_header(self, bytes name, bytes value)
    cpdef response_head_complete(self)
    cdef _response_head(self, int status, str version, list headers)
    @cython.locals(found=tuple, end=Py_ssize_t, length=Py_ssize_t)
    cdef bint _scanned(self, bytes data) except -1
    cpdef response_body(self, bytes body)
    cpdef response_complete(self)
    cdef _response_done(self, bint scanned)
    cpdef fail(self, object error)
    cpdef coro_done(self, tuple result)
    cpdef coro_failed(self, BaseException exc)

    cdef _inspect_when_ready(self)
    cdef _dispatch(self)
    cdef _attach(self, UpstreamConnection conn)
    cdef bytes request_head(self)
    cdef tuple response_extra(self)
    cdef edit_response_head(self, ResponseHead head)
    cdef _flush(self)
    cdef bint _close_delimited(self)
    cdef _release_endpoint(self)
    cdef _finish(self)
    cdef _settle(self, bint stray)
