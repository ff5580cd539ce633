# Pure-Python-mode declarations for Cython (fastgw/native.py): the contracts of contracts.py as
# extension types, so that calls through them are C calls (vtable), and their implementations
# (proxy, wsproxy, local, the gateway's host, recorder and services) subclass them.

from fastgw.backends cimport Backend, Endpoint
from fastgw.http1 cimport RequestHead
from fastgw.stats cimport Histo

cdef class Exchange:
    cdef public RequestHead head
    cdef public object route
    cdef public Backend backend
    cdef public Endpoint endpoint
    cdef public int status
    cdef public str error
    cdef public bytes request_id
    cdef public object server_latency
    cdef public Py_ssize_t body_received, sent_at_start
    cdef public double started
    cdef public bint keep_client, request_done, handshake, upgrading, answering

    cdef begin(self, RequestHead head, object route, Backend backend)
    cpdef start(self)
    cpdef request_body(self, bytes data)
    cpdef request_complete(self)
    cpdef client_data(self, bytes data)
    cpdef client_lost(self)
    cpdef on_deadline(self)
    cpdef pause_backend(self)
    cpdef resume_backend(self)

cdef class ClientSide:
    cdef public object transport, peer_ip, peer_port
    cdef public bytes proto, port_bytes
    cdef public tuple socket_key
    cdef public object tls_info
    cdef public Py_ssize_t sent
    cdef public double deadline_at
    cdef public object clock, loop
    cdef public bint write_paused
    cdef public Py_ssize_t upstream_keepalive
    cdef public object pages, gate

    cpdef write(self, bytes data)
    cpdef writelines(self, list chunks)
    cpdef exchange_done(self, Exchange ex)
    cpdef abort_exchange(self, Exchange ex)
    cpdef upgraded(self, Exchange ex, object session)
    cpdef session_ended(self)
    cpdef pause_reading_for(self, object reason)
    cpdef resume_reading_for(self, object reason)

cdef class ProxiedExchange(Exchange):
    cpdef upstream_data(self, bytes data)
    cpdef upstream_eof(self)
    cpdef upstream_lost(self, object exc)
    cpdef upstream_pause_writing(self)
    cpdef upstream_resume_writing(self)
    cpdef response_header(self, bytes name, bytes value)
    cpdef response_head_complete(self)
    cpdef response_body(self, bytes body)
    cpdef response_complete(self)

cdef class ConnectionHost:
    cpdef Exchange start_exchange(self, ClientSide client, RequestHead head)
    cpdef bint connection_opened(self, object client)
    cpdef connection_closed(self, object client)

cdef class Recorder:
    cpdef exchange_finished(self, ClientSide client, Exchange ex, str error)
    cpdef session_started(self, object session)
    cpdef session_ended(self, object session)

cdef class ExchangeServices:
    cpdef waf_for(self, object listener)
    cpdef waf_verdict(self, object verdict)
    cpdef tuple upstream_tls(self, Backend backend)
    cpdef endpoint_failed(self, Endpoint endpoint, str reason)
    cpdef gateway_shortage(self, str reason)
    cpdef Histo latency_histo(self, Backend backend)
