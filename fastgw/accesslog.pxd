# Pure-Python-mode declarations for Cython (fastgw/native.py): a record's line, built in C.

cimport cython
from fastgw.http1 cimport RequestHead

@cython.locals(second=long, cached=tuple)
cpdef str timestamp(object t=*)

@cython.locals(c=Py_UCS4)
cpdef str json_text(str value)

@cython.locals(c=cython.uchar)
cpdef str wire_text(bytes value)

@cython.locals(micros=cython.longlong)
cpdef str seconds(double t)

@cython.locals(received=Py_ssize_t)
cpdef str request_line(str when, bint handshake, str peer_ip, object peer_port, object tls,
                       RequestHead head, int status, Py_ssize_t received_body, Py_ssize_t sent,
                       double taken, tuple labels, object settings, str server, object latency,
                       bytes request_id, str error)

cpdef str session_line(object session, str when)
