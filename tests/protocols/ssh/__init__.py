"""
Tests for L{hoopgw.protocols.ssh}.
"""
