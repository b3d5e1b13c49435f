"""
Credentials in request-targets never reach the audit trail.

Clients put secrets in URLs: OAuth's C{access_token}, API keys, S3 and Azure
pre-signed URLs (C{X-Amz-Signature}, C{sig}), a C{password} in a query, a
JWT on its own, C{user:password@} in an absolute URL.  The gateway forwards
the request-target as it is, but everything it I{records} about one (an
action's C{input}, a C{request.refused} record's target, a C{Head}'s repr)
goes through L{redact_target}, which replaces credentials by L{MARKER}.

A list of names can never be complete, so the rules are structural where
they can be (C{docs/http.md}, "Credentials in URLs", is the reference):

  - B{names}: percent-decoded up to L{DECODE_ROUNDS} times (C{%2573ig} is
    C{sig}), split into sub-keys on C{[}, C{]} and C{.} (C{user[password]},
    C{token[]}, C{a.secret}) and every sub-key read: each run of letters
    and digits, and each of its camel-case words, is compared with
    L{CREDENTIAL_WORDS} (C{key}, C{secret}, C{token}, C{pw}, C{otp},
    C{ticket}, ...: C{aws_secret_access_key}, C{subscription-key},
    C{SAMLResponse}) and a run also by its end (L{CREDENTIAL_SUFFIXES}:
    C{secretkey}, C{authcode}; C{dbpass}, but not L{PASS_WORDS}) and
    start (L{CREDENTIAL_PREFIXES}: C{passwordConfirm}); a sub-key that is C{code} (OAuth's authorization
    code), or ends in C{code} after one of L{CODE_QUALIFIERS}
    (C{device_code}), is one too, but not C{status_code};
  - B{values}, percent-decoded the same way, whatever their name: a JWT
    (three base64url parts, the first a JSON object: C{eyJ...}), an
    C{Authorization} value (C{Bearer ...}, C{Basic} + base64 of
    C{user:password}), a URL with userinfo (C{//user:pw@host}), a
    well-known token format (C{ghp_}, C{glpat-}, C{xoxb-}, C{sk_live_},
    C{AIza}, C{ya29.}, a PEM private key), or text holding an inner
    C{name=value} / C{name: value} whose name is a credential's
    (C{?next=/a?password=...}, C{?filter={"token":...}}): the whole value
    is redacted;
  - a pair B{without C{=}} is redacted whole when its text is such a value,
    or a token-like run of at least 16 characters mixing letters and digits
    (a bare API key); a name that holds such a value is redacted with the
    pair;
  - B{userinfo}: C{http://alice:pw@host/} and C{alice:pw@host:443} are
    recorded as C{alice:<redacted>@host}, and C{<redacted>@host} when there
    is no C{:} (a token used as the user name); also after a C{//} in the
    path;
  - pairs are split on C{&} and C{;}, in the query, the fragment and path
    parameters (C{/x;jsessionid=...}); every occurrence is redacted; the
    name stays, so the trail still says that a credential was sent;
  - a raw JWT in a path segment is redacted.

Not redacted: values by their look alone (no entropy rule on named values:
resource versions, UIDs, commit hashes and Kubernetes C{continue} tokens
must stay readable), C{state}, C{nonce}, C{code_challenge}, C{*_code} other
than the listed compounds (C{status_code}, C{country_code}).

Redacting is a pure function of the target, so the proxy's action cache
keeps the redacted form.  A target without C{?}, C{#}, C{;}, C{@} or the
start of a JWT costs one scan; a query is decoded and scanned once for
C{_HINT} (a fragment of every word and value form above: the unit tests
check that this prefilter never skips what the rules would redact), and
only then parsed pair by pair.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote

__all__ = [
    "CREDENTIAL_PREFIXES",
    "CREDENTIAL_SUFFIXES",
    "CREDENTIAL_WORDS",
    "PASS_WORDS",
    "CODE_QUALIFIERS",
    "DECODE_ROUNDS",
    "MARKER",
    "is_credential_name",
    "is_credential_value",
    "redact_query",
    "redact_target",
]

MARKER = "<redacted>"
"""What a credential becomes: not a valid URL character, so it cannot be mistaken for what was sent."""

DECODE_ROUNDS = 4
"""How many times names and values are percent-decoded (C{%252573} included), at most."""

CREDENTIAL_WORDS = frozenset(
    {
        "apikey",
        "assertion",
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "cred",
        "credential",
        "credentials",
        "creds",
        "hmac",
        "hotp",
        "jsessionid",
        "jwt",
        "key",
        "mfa",
        "otp",
        "pass",
        "passcode",
        "passphrase",
        "passwd",
        "password",
        "passwords",
        "phpsessid",
        "pin",
        "psk",
        "pw",
        "pwd",
        "saml",
        "secret",
        "secrets",
        "session",
        "sessionid",
        "sid",
        "sig",
        "signature",
        "ticket",
        "token",
        "tokens",
        "totp",
        "verifier",
    }
)
"""Lower-case words (a run of letters and digits, or one of its camel-case words) that make a name a credential's."""

CREDENTIAL_SUFFIXES = (
    # Compounds written as one word.
    "token", "tokens", "secret", "secrets", "password", "passwd", "pwd", "passphrase", "passcode",
    "signature", "credential", "credentials", "assertion", "ticket", "otp", "jwt", "sessionid", "sessid",
    "authorization",
    "apikey", "accesskey", "secretkey", "privatekey", "authkey", "sessionkey", "signingkey", "masterkey",
    "clientkey", "appkey", "subscriptionkey", "licensekey", "hmackey", "encryptionkey", "sharedkey",
    "accountkey", "storagekey", "passkey", "devkey", "userkey", "serverkey",
    "authcode", "authorizationcode", "devicecode", "usercode", "accesscode", "verificationcode",
    "securitycode", "recoverycode", "backupcode", "mfacode", "otpcode", "smscode", "logincode",
    "resetcode", "activationcode", "confirmationcode",
)  # fmt: skip
"""
A run of letters and digits (lower-cased) ending with one of these is a
credential's name (C{mysecretkey}); the C{*code} ones also count as two words
(C{device_code}, L{CODE_QUALIFIERS}).
"""

CREDENTIAL_PREFIXES = (
    "password", "passwd", "passphrase", "passcode", "secret", "credential", "signature", "session",
    "saml", "apikey", "bearer", "jwt",
)  # fmt: skip
"""A run of letters and digits (lower-cased) starting with one of these is a credential's name (C{SAMLResponse})."""

CODE_QUALIFIERS = frozenset(
    {
        "access", "activation", "auth", "authorization", "backup", "confirmation", "device", "login", "mfa",
        "otp", "recovery", "reset", "security", "sms", "user", "verification",
    }
)  # fmt: skip
"""
A word before a final C{code} that makes the pair a credential's name
(C{device_code}, C{userCode}); C{status_code} is not one.
"""

# -- fast paths ----------------------------------------------------------------

# What a target must contain for anything in it to be redacted: a query, a
# fragment, path parameters, userinfo, or (tested apart, "in" being much
# cheaper than a regular expression) the start of a raw JWT.
_SPECIAL = re.compile(r"[?#;@]")
# Every credential word, suffix, prefix and qualifier, and every value rule
# (JWT, scheme, userinfo, token formats) contains one of these; searched in
# the lower-cased, decoded text (an IGNORECASE alternation is much slower,
# and so is one not grouped by first letter).
_HINT = re.compile(
    r"@|key|s(?:ecret|ess|i[dg]|aml|k[_-])|t(?:oken|icket)|p(?:ass|w|in|sk)|otp|c(?:red|o(?:de|okie))"
    r"|a(?:uth|ssert|iza)|b(?:earer|asic)|(?<![a-z0-9_-])e[wy][a-z0-9_-]*\.|g(?:h[pousr]_|ithub_pat|lpat)"
    r"|jwt|verif|hmac|mfa|xox|rk_|ya29"
)
_PAIRS = re.compile(r"([&;])")

# -- names ---------------------------------------------------------------------

_SUBKEYS = re.compile(r"[\[\].]+")
_RUNS = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

# -- values --------------------------------------------------------------------

# Only at the start of a base64url run: "eyey...ey" costs one pass, not one per "ey".
_JWT = re.compile(r"(?<![A-Za-z0-9_-])(e[wy][A-Za-z0-9_-]{2,})\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_JSON_OBJECT = re.compile(rb"\{\s*\"")
_SCHEME = re.compile(r"(?<![A-Za-z0-9])(?:(bearer)\s+[!-~]|(basic)\s+([A-Za-z0-9+/_-]{4,}=*))", re.IGNORECASE)
_VALUE_USERINFO = re.compile(r"//[^/?#@\s]+@")
_TOKEN_FORMATS = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,}|AIza[A-Za-z0-9_-]{30,}"
    r"|ya29\.[A-Za-z0-9_-]{20,}|PRIVATE KEY-----"
)
# An inner "name=value" or "name: value" (a URL in a value, a selector, JSON).
_INNER_NAME = re.compile(r"(?:^|[?&;#\s,{(\"'])([^?&;#\s,{}()\"'=:]+)[\"']?\s*[=:]")
_BARE_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,}")
_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"[0-9]")

# -- targets -------------------------------------------------------------------

# Absolute-form (scheme://userinfo@host) and authority-form (userinfo@host)
# targets: the userinfo ends at the last "@" before the first "/".
_AUTHORITY = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.\-]*://)?)(?!/)([^/]*)@")
_PATH_USERINFO = re.compile(r"//([^/]*)@")


def _decode(text: str) -> str:
    """C{text} percent-decoded (C{+} as a space) until it no longer changes, at most L{DECODE_ROUNDS} times."""
    if "+" in text:
        text = text.replace("+", " ")
    for _ in range(DECODE_ROUNDS):
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


PASS_WORDS = ("bypass", "compass", "overpass", "underpass", "trespass", "surpass", "encompass", "impass")
"""Words ending in C{pass} that name no credential: any other run ending in it does (C{dbpass}, C{userpass})."""


def _is_credential_run(run: str) -> bool:
    lowered = run.lower()
    if lowered in CREDENTIAL_WORDS or lowered.endswith(CREDENTIAL_SUFFIXES) or lowered.startswith(CREDENTIAL_PREFIXES):
        return True
    if lowered.endswith("pass") and not lowered.endswith(PASS_WORDS):
        return True
    return any(word.lower() in CREDENTIAL_WORDS for word in _CAMEL.findall(run))


def _is_credential_decoded_name(name: str) -> bool:
    for subkey in _SUBKEYS.split(name):
        runs = _RUNS.findall(subkey)
        if any(_is_credential_run(run) for run in runs):
            return True
        words = [word.lower() for run in runs for word in _CAMEL.findall(run)]
        if words and words[-1] == "code" and (len(words) == 1 or words[-2] in CODE_QUALIFIERS):
            return True
    return False


def is_credential_name(name: str) -> bool:
    """Whether a query or path parameter named C{name} (as sent, percent-encoded) holds a credential."""
    return _is_credential_decoded_name(_decode(name))


def _is_jwt(text: str) -> bool:
    for match in _JWT.finditer(text):
        head = match.group(1)[:8]
        try:
            decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        except (binascii.Error, ValueError):
            continue
        if _JSON_OBJECT.match(decoded):
            return True
    return False


def _is_basic(credentials: str) -> bool:
    try:
        decoded = base64.b64decode(credentials + "=" * (-len(credentials) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _is_credential_decoded_value(text: str, bare: bool) -> bool:
    if "." in text and _is_jwt(text):
        return True
    for match in _SCHEME.finditer(text):
        if match.group(1) or _is_basic(match.group(3)):
            return True
    if "@" in text and _VALUE_USERINFO.search(text):
        return True
    if _TOKEN_FORMATS.search(text):
        return True
    if ("=" in text or ":" in text) and any(
        _is_credential_decoded_name(name) for name in _INNER_NAME.findall(text)
    ):
        return True
    if bare:
        stripped = text.strip()
        return (
            _BARE_TOKEN.fullmatch(stripped) is not None
            and _LETTER.search(stripped) is not None
            and _DIGIT.search(stripped) is not None
        )
    return False


def is_credential_value(value: str, *, bare: bool = False) -> bool:
    """
    Whether C{value} (as sent, percent-encoded) is a credential whatever its
    parameter's name; C{bare} for a pair without C{=}, where a token-like
    run of 16 or more letters and digits counts too.
    """
    return _is_credential_decoded_value(_decode(value), bare)


def _hinted(decoded: str) -> bool:
    return _HINT.search(decoded.lower()) is not None


def _may_hold_credentials(query: str) -> bool:
    if ";" in query or _hinted(_decode(query) if "%" in query or "+" in query else query):
        return True
    # The one rule without a hint: a bare token (16 characters or more, as sent).
    return len(query) >= 16 and any(len(part) >= 16 and "=" not in part for part in query.split("&"))


def redact_query(query: str) -> str:
    """
    C{query} (without the C{?}) with every credential (see the module
    docstring) replaced by L{MARKER}; C{query} itself (the same object) when
    there is nothing to redact.
    """
    if not query or not _may_hold_credentials(query):
        return query
    parts = _PAIRS.split(query)
    changed = False
    for index in range(0, len(parts), 2):
        part = parts[index]
        if not part or part == MARKER:
            continue
        name, equals, value = part.partition("=")
        decoded_name = _decode(name)
        decoded_value = _decode(value) if value else ""
        if equals and not _hinted(decoded_name) and not _hinted(decoded_value):
            continue
        if _is_credential_decoded_value(decoded_name, not equals):
            # The name itself holds a credential (or is a bare one): all of it goes.
            parts[index] = MARKER
            changed = True
        elif (
            equals
            and value
            and value != MARKER
            and (_is_credential_decoded_name(decoded_name) or _is_credential_decoded_value(decoded_value, False))
        ):
            parts[index] = name + "=" + MARKER
            changed = True
    return "".join(parts) if changed else query


def _userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return user + ":" + MARKER if colon else MARKER


def _redact_path(path: str) -> str:
    if "@" in path:
        path = _PATH_USERINFO.sub(lambda m: "//" + _userinfo(m.group(1)) + "@", path)
    if ";" in path or "." in path:
        segments = path.split("/")
        for index, segment in enumerate(segments):
            head, semicolon, params = segment.partition(";")
            if "." in head and _is_jwt(head):
                head = MARKER
            segments[index] = head + semicolon + redact_query(params) if semicolon else head
        path = "/".join(segments)
    return path


def redact_target(target: str) -> str:
    """
    A request-target (or any URL) as it may be recorded: userinfo, the
    query, the fragment and path parameters redacted (see the module
    docstring); C{target} itself (the same object) when there is nothing to
    redact.
    """
    if _SPECIAL.search(target) is None and (("ey" not in target and "ew" not in target) or _JWT.search(target) is None):
        return target
    rest = target
    if "@" in rest:
        rest = _AUTHORITY.sub(lambda m: m.group(1) + _userinfo(m.group(2)) + "@", rest, count=1)
    rest, hash_, fragment = rest.partition("#")
    path, question, query = rest.partition("?")
    redacted = _redact_path(path) + question + redact_query(query) + hash_ + redact_query(fragment)
    return target if redacted == target else redacted
