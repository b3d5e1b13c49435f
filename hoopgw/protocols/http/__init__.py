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
    upstream, and the impersonation headers the gateway adds.
"""
