"""
The HTTP front end: a reverse proxy for HTTP APIs, the Kubernetes API first
among them (C{https://gateway:18443/<connection>/...}).

The request model is pure (no I/O), so that it can be tested on its own and
with Hypothesis:

  - L{hoopgw.protocols.http.paths}: the request-target split into the
    connection and the canonical path and query that are decided on and
    forwarded (what is judged is exactly what the upstream will route);
  - L{hoopgw.protocols.http.k8s}: a Kubernetes API request's verb, group,
    resource, subresource, namespace and name, derived as the API server's
    C{RequestInfoFactory} derives them, and the action policy decides;
  - L{hoopgw.protocols.http.headers}: the client headers that may reach the
    upstream, and the impersonation headers the gateway adds;
  - L{hoopgw.protocols.http.wire}: HTTP/1.1 message framing (requests and
    responses, Content-Length and chunked), strict about every ambiguity
    that request smuggling lives on;
  - L{hoopgw.protocols.http.redact}: credentials in request-targets
    replaced by a marker in what is recorded (never in what is forwarded);
  - L{hoopgw.protocols.http.state}: where an exchange is (its request,
    upstream leg and response) and where its client connection is in its
    cycle, with the transitions allowed between them.

The I/O is thin around them: L{hoopgw.protocols.http.proxy} (the front
end and its listener), L{hoopgw.protocols.http.client} (the client's
connection), L{hoopgw.protocols.http.exchange} (one request through the
pipeline), L{hoopgw.protocols.http.upstream} (where requests go, with the
connection's credentials), L{hoopgw.protocols.http.responses} (what the
gateway answers itself), L{hoopgw.protocols.http.actions} (what a request
is decided as, cached), L{hoopgw.protocols.http.pool} (persistent upstream
connections), L{hoopgw.protocols.http.upgrade} (the exec/attach/port-forward
relay), L{hoopgw.protocols.http.taps} (what that relay records).
"""
