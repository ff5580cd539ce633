# Pure-Python-mode declarations for Cython (fastgw/native.py).

from fastgw.backends cimport Backend, Endpoint
from fastgw.contracts cimport ExchangeServices
from fastgw.stats cimport Histo, Stats

cdef class Services(ExchangeServices):
    cdef public object config
    cdef public Stats stats
    cdef public object loop
    cdef public dict wafs
    cdef public object firewall_log, tls
    cdef public double shortage_logged

    cpdef waf_for(self, object listener)
    cpdef waf_verdict(self, object verdict)
    cpdef tuple upstream_tls(self, Backend backend)
    cpdef endpoint_failed(self, Endpoint endpoint, str reason)
    cpdef gateway_shortage(self, str reason)
    cpdef Histo latency_histo(self, Backend backend)
