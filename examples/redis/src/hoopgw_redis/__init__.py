"""
A Redis front end for hoopgw, installed apart from it (C{pip install
examples/redis}).  So far only its protocol core exists:
L{hoopgw_redis.resp}, a sans-IO RESP2/RESP3 codec.
"""
