# Pure-Python-mode declarations for Cython (fastgw/native.py): when setup.py compiles
# downstream.py, ClientConnection becomes an extension type with these fields, and the methods
# below C methods (still callable from Python: uvloop and httptools call some of them).

cimport cython
from fastgw.contracts cimport ClientSide, ConnectionHost, Exchange, Recorder
from fastgw.http1 cimport RequestHead

cdef class ClientConnection(ClientSide):
    cdef public ConnectionHost host
    cdef public Recorder recorder
    cdef public object state, parser, queue
    cdef public Exchange parsing
    cdef public dict pause_reasons
    cdef public bint in_head, keepalive_token, parser_fed
    cdef public Py_ssize_t head_bytes, pending_head
    cdef public bytes url
    cdef public list headers
    cdef public Py_ssize_t requests
    cdef public Exchange upgrade_exchange
    cdef public object session
    cdef public bint refused
    cdef public double request_started
    cdef public double header_timeout, keepalive_timeout
    cdef public Py_ssize_t max_header_size
    cdef object __weakref__

    @cython.locals(ex=Exchange)
    cpdef data_received(self, bytes data)
    @cython.locals(ex=Exchange)
    cpdef eof_received(self)
    @cython.locals(ex=Exchange, i=Py_ssize_t)
    cpdef connection_lost(self, object exc)
    @cython.locals(ex=Exchange)
    cpdef pause_writing(self)
    @cython.locals(ex=Exchange)
    cpdef resume_writing(self)
    cpdef on_url(self, bytes url)
    cpdef on_header(self, bytes name, bytes value)
    @cython.locals(pos=Py_ssize_t, size=Py_ssize_t, end=Py_ssize_t, found=tuple)
    cdef Py_ssize_t _scan(self, bytes data) except -2
    cdef _request_failed(self, object error)
    @cython.locals(headers=list, method=bytes)
    cpdef on_headers_complete(self)
    @cython.locals(head=RequestHead, ex=Exchange)
    cdef _request(self, bytes method, bytes url, str version, list headers, Py_ssize_t size)
    cpdef on_body(self, bytes body)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)
    cpdef write(self, bytes data)
    cpdef writelines(self, list chunks)
    @cython.locals(nxt=Exchange)
    cpdef exchange_done(self, Exchange ex)
    cpdef abort_exchange(self, Exchange ex)
    cpdef upgraded(self, Exchange ex, object session)
    cpdef session_ended(self)
    cpdef pause_reading_for(self, object reason)
    cpdef resume_reading_for(self, object reason)
    @cython.locals(ex=Exchange)
    cpdef on_deadline(self)
    @cython.locals(ex=Exchange)
    cdef _after_upgrade(self, bytes data, Py_ssize_t offset)
