# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython
from fastgw.backends cimport Backend, SessionCount
from fastgw.contracts cimport ClientSide, ConnectionHost, Exchange, ExchangeServices, Recorder
from fastgw.handshake cimport validate_request
from fastgw.http1 cimport RequestHead
from fastgw.rewrite cimport Request, RequestPlan, RuleSet, rewrite_request

cdef class Dispatcher(ConnectionHost):
    cdef public object config, router
    cdef public dict backends
    cdef public ExchangeServices services
    cdef public Recorder recorder
    cdef public object sweeper
    cdef public set connections
    cdef public bint stopping
    cdef public Py_ssize_t limit
    cdef public bint accepting
    cdef public object control

    cpdef admit(self, object client)
    @cython.locals(retry=Py_ssize_t)
    cpdef Exchange start_exchange(self, ClientSide client, RequestHead head)
    cpdef bint connection_opened(self, object client)
    cpdef connection_closed(self, object client)
    cdef Exchange _handshake(self, ClientSide client, RequestHead head)
    @cython.locals(count=SessionCount)
    cdef Exchange _session(self, ClientSide client, RequestHead head, object route, object offer,
                           Backend backend, Request source)
    cdef Exchange _refuse(self, ClientSide client, RequestHead head, object route, object exc)
    cdef Exchange _too_many(self, ClientSide client, RequestHead head, object gate,
                            Py_ssize_t retry)
    cdef Exchange _redirect(self, ClientSide client, RequestHead head, object route, bint keep)
    @cython.locals(ruleset=RuleSet, source=Request, plan=RequestPlan)
    cdef Exchange _rewritten(self, ClientSide client, RequestHead head, object route, object offer)
