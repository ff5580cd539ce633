# Pure-Python-mode declarations for Cython (fastgw/native.py).

cimport cython
from fastgw.backends cimport Backend, Endpoint
from fastgw.contracts cimport ClientSide, Exchange, Recorder
from fastgw.http1 cimport RequestHead
from fastgw.logfile cimport LogFile
from fastgw.relay cimport WebSocketSession
from fastgw.stats cimport Stats

cdef class GatewayRecorder(Recorder):
    cdef public Stats stats
    cdef public LogFile access_log
    cdef public object router
    cdef public set sessions
    cdef public object clock

    @cython.locals(status=int, index=Py_ssize_t, labels=tuple, head=RequestHead, stats=Stats,
                   access_log=LogFile, backend=Backend, endpoint=Endpoint)
    cpdef exchange_finished(self, ClientSide client, Exchange ex, str error)
    cpdef session_started(self, object session)
    @cython.locals(access_log=LogFile, ended=WebSocketSession, stats=Stats)
    cpdef session_ended(self, object session)

# exchange: a WebSocketExchange, or a resumed session's identity (fastgw.handover)
@cython.locals(client=ClientSide, endpoint=Endpoint)
cdef bytes _session_line(WebSocketSession session, double now)
