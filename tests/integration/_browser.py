"""
A scripted browser for the identity provider's pages (oidc-provider's
built-in login and consent, its device-code page): it submits each page's
first form, typing C{login} as the name, until a page has no form, and
follows every redirect (to a loopback callback too).

As a program (a C{BROWSER} for Python's webbrowser, which waits for it):
C{python _browser.py URL [LOGIN]} returns at once and runs the flow in a
child process, as a real browser would go on after being started.
"""

from __future__ import annotations

import html
import os
import re
import sys
from urllib.parse import urljoin

import requests

_FORM = re.compile(r'<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>', re.S | re.I)
_INPUT = re.compile(r"<input[^>]*>", re.I)


def run(url: str, login: str = "alice") -> requests.Response:
    session = requests.Session()
    response = session.get(url, timeout=30)
    for _ in range(12):
        forms = _FORM.findall(response.text)
        if not forms:
            return response
        action, body = forms[0]
        fields = {}
        for tag in _INPUT.findall(body):
            name = re.search(r'name="([^"]*)"', tag)
            value = re.search(r'value="([^"]*)"', tag)
            if name:
                fields[html.unescape(name.group(1))] = html.unescape(value.group(1)) if value else ""
        if "login" in fields:
            fields["login"] = login
        if "password" in fields:
            fields["password"] = "any"
        response = session.post(urljoin(response.url, html.unescape(action)), data=fields, timeout=30)
    raise AssertionError(f"the login flow did not end: {response.url}")


if __name__ == "__main__":
    if os.fork() == 0:
        try:
            run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "alice")
        finally:
            os._exit(0)
