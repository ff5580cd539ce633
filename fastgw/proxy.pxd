# Pure-Python-mode declarations for Cython (fastgw/native.py): when setup.py compiles proxy.py,
# HttpExchange becomes an extension type whose fields below are typed, so that the exchange
# reaches its client, heads, backend connection and server without generic attribute lookups.

from fastgw.backends cimport Backend, Endpoint
from fastgw.downstream cimport ClientConnection
from fastgw.http1 cimport RequestHead, ResponseHead
from fastgw.upstream cimport UpstreamConnection

cdef class HttpExchange:
    cdef public ClientConnection client
    cdef public RequestHead head
    cdef public object route
    cdef public Backend backend
    cdef public int state
    cdef public UpstreamConnection conn
    cdef public Endpoint endpoint
    cdef public object parser
    cdef public list body
    cdef public Py_ssize_t body_bytes
    cdef public bint request_done
    cdef public list resp_headers
    cdef public bytes framing
    cdef public bint keep_client
    cdef public tuple tried
    cdef public bint retry_ok
    cdef public double started, upstream_started, read_at
    cdef public object status, sent_bytes, received_bytes, connect_task
    cdef public bint client_paused_by_us
    cdef public ResponseHead response_head
    cdef public object last_error, affinity, request_id, server_latency
    cdef public object body_received, sent_at_start, error, waf
    cdef public list out
    cdef public double request_timeout
    cdef public bint cookie_affinity
