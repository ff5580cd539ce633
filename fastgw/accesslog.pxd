# Pure-Python-mode declarations for Cython (fastgw/native.py): a record's values, picked once.

from fastgw.http1 cimport RequestHead

cpdef str timestamp(object t=*)

cpdef bytes request_line(double now, bint handshake, str peer_ip, object peer_port, object tls,
                         RequestHead head, int status, Py_ssize_t received_body, Py_ssize_t sent,
                         double taken, tuple labels, object settings, str server, object latency,
                         bytes request_id, str error)
