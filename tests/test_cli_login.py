"""hoopgw.cli.login's checks, without an IdP: redirects, plain http, the loopback callback, the cache's owner."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
import urllib.request
from typing import Any

from twisted.trial.unittest import TestCase

from hoopgw.cli import login
from hoopgw.errors import CommandError


class _Redirect(http.server.BaseHTTPRequestHandler):
    seen: list[Any] = []

    def do_GET(self) -> None:  # noqa: N802
        _Redirect.seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/elsewhere":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(302)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class CallTests(TestCase):
    def test_redirect_not_followed(self) -> None:
        """A redirect is answered as it is: the bearer token is not carried to where it points."""
        server = http.server.HTTPServer(("127.0.0.1", 0), _Redirect)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        _Redirect.seen = []
        code, _ = login.call(f"http://127.0.0.1:{server.server_port}/api/v1/whoami", token="SECRET")
        self.assertEqual(code, 302)
        self.assertEqual(_Redirect.seen, [("/api/v1/whoami", "Bearer SECRET")])

    def test_plain_http_only_to_loopback_literals(self) -> None:
        """localhost may resolve to ::1, where another user can bind the gateway's port."""
        self.assertEqual(login._secure("http://127.0.0.1:1/x"), "http://127.0.0.1:1/x")
        self.assertEqual(login._secure("http://[::1]:1/x"), "http://[::1]:1/x")
        for url in ("http://localhost:18009", "http://gateway:18009", "http://127.0.0.2:1"):
            with self.assertRaisesRegex(login.LoginError, "is reached over https"):
                login._secure(url)

    def test_metadata_must_name_its_issuer_and_use_https(self) -> None:
        documents = {
            "https://gw/.well-known/hoopgw": {"issuers": [{"issuer": "https://idp", "client_id": "c"}]},
        }

        def fake(url: str, data: Any = None, token: Any = None) -> Any:
            return 200, documents[url]

        self.patch(login, "_request", fake)
        for metadata, said in (({"issuer": "https://other", "token_endpoint": "https://idp/token"}, "names another issuer"),
                               ({"issuer": "https://idp", "token_endpoint": "http://idp/token"}, "over https")):
            documents["https://idp/.well-known/openid-configuration"] = metadata
            with self.assertRaisesRegex(CommandError, said):
                login.discover("https://gw")


class CallbackTests(TestCase):
    def test_only_this_logins_state_is_taken(self) -> None:
        """
        Another local process calling the loopback port first (to end the
        login, or to slip in its own code) is answered 404 and the login
        waits on for its own answer.
        """
        answers: list[Any] = []
        visitors: list[threading.Thread] = []

        def browser(url: str) -> bool:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
            redirect, state = query["redirect_uri"], query["state"]

            def visit() -> None:
                for attempt in ({"code": "MALLORY", "state": "guess"}, {"code": "MALLORY"},
                                {"code": "ALICE", "state": state}):
                    try:
                        with urllib.request.urlopen(f"{redirect}?{urllib.parse.urlencode(attempt)}") as r:
                            answers.append(r.status)
                    except urllib.error.HTTPError as e:
                        answers.append(e.code)

            visitor = threading.Thread(target=visit, daemon=True)
            visitors.append(visitor)
            visitor.start()
            return True

        exchanged: list[Any] = []

        def token_endpoint(url: str, data: Any = None, token: Any = None) -> Any:
            exchanged.append(data["code"])
            return 200, {"access_token": "T"}

        self.patch(login.webbrowser, "open", browser)
        self.patch(login, "_request", token_endpoint)
        tokens = login.browser_login({"client_id": "c", "scopes": ["openid"]},
                                     {"authorization_endpoint": "https://idp/auth", "token_endpoint": "https://idp/token"},
                                     tell=lambda text: None, timeout=20)
        self.assertEqual(tokens, {"access_token": "T"})
        visitors[0].join(10)
        self.assertEqual(exchanged, ["ALICE"])
        self.assertEqual(answers, [404, 404, 200])
