"""
Tests for L{hoopgw.protocols.http}.
"""
