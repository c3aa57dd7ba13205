"""Masking of secrets in notification URLs and in any text that may echo them.

Apprise URLs carry passwords (`mailto://user:pw@host`), tokens in the host or path
(`discord://id/token`, `tgram://bot-token/chat`, `slack://A/B/C`), and keys in the query
(`?token=`, `?apikey=`) or in header overrides (`+Authorization=Bearer ...`). Anything shown to
people or written to a data file goes through `mask_url` or `mask_text`: the status screen,
test output, error texts (apprise's log lines may echo the URL), results, the outbox and
the audit chain. Only the config file holds the clear values. A site's broker URL
(`[sites.NAME] broker`, `redis://:PASSWORD@host/0`) is masked the same way.

One function (`_analyse`) decides both what is masked and which substrings are secrets, so
`mask_url` and `config_secrets` can never disagree. It asks apprise first: the plugin for the
URL's schema knows which of its parts are private, and `url(privacy=True)` hides them, so
every piece of the clear URL missing from the privacy URL is a secret (`_apprise_secrets`).
Our own patterns then catch what apprise leaves visible: letters-only tokens (gotify),
ntfy topics (anyone who knows one can read it), and signatures or keys in the query
(`?hmac=`, `?s=`, `?h=`, `?token=`). The masked form shown is ours (scheme, host and port
stay, in the order configured), because it names the target in the outbox and the status.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

if TYPE_CHECKING:
    from portconsole.core.settings import NotifySettings, Settings

MASK = "****"

# A secret shorter than this is not searched for in free text: masking every "ab" in an
# error message would destroy it and such a password is not worth protecting this way.
MIN_SECRET_LENGTH = 3

# Services whose "host" (and user) part is a token or key, not a machine name.
TOKEN_HOST_SCHEMES = frozenset(
    {
        "discord",
        "slack",
        "tgram",
        "pover",
        "pbul",
        "msteams",
        "ifttt",
        "join",
        "gchat",
        "line",
        "pushed",
        "prowl",
        "pjet",
        "spush",
        "techulus",
        "twist",
        "wxteams",
        "webex",
        "zulip",
        "opsgenie",
        "pagerduty",
        "pagertree",
        "splunk",
        "victorops",
        "signl4",
        "squadcast",
        "ilert",
        "bark",
        "barks",
        "pushy",
        "pushover",
        "serverchan",
        "kumulos",
        "simplepush",
        "fcm",
        "twilio",
        "clicksend",
        "sinch",
        "vonage",
        "nexmo",
        "messagebird",
        "mailgun",
        "sendgrid",
        "sparkpost",
        "ses",
        "sns",
        "resend",
        "brevo",
        "postmark",
        "smtp2go",
        "workflows",
        "wecombot",
        "dingtalk",
        "feishu",
        "lark",
        "flock",
        "ryver",
        "guilded",
        "revolt",
        "kook",
        "qq",
        "bale",
        "pushplus",
        "pushdeer",
        "wxpusher",
        "chanify",
        "notica",
        "notifico",
        "pushme",
        "streamlabs",
        "strmlabs",
        "threema",
        "mobilemessage",
        "vapid",
    }
)

# Services whose path (or dotless host) is itself the secret: a gotify application token may
# be letters only, and an ntfy topic is readable by anyone who knows its name.
SECRET_PATH_SCHEMES = frozenset({"gotify", "gotifys", "ntfy", "ntfys"})

# Query or header names whose values are secrets (matched as substrings, case-insensitive).
_SECRET_KEY = re.compile(
    r"(pass|pwd|token|secret|key|auth|bearer|sig|cookie|credential|session|access|webhook|"
    r"code|private|privkey|jwt|sid|apikey|api_key|client_id|client_secret|otp|pin|hmac|hash)",
    re.IGNORECASE,
)
# Short query names used for signatures and keys (`?s=`, `?h=`): whole names only.
_SECRET_SHORT_KEY = frozenset({"s", "h", "k", "t", "p", "pw", "pk", "sk", "st"})
_URL_PIECE = re.compile(r"[/:@?&=#,+]")

_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://[^\s'\"<>]+")

_HOSTLIKE = re.compile(
    r"^(localhost|\[[0-9a-fA-F:.]+\]|[0-9.]+|[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)+)$"
)


def _looks_like_token(segment: str) -> bool:
    """A path segment that is probably a credential rather than a route name.

    Long opaque strings, or medium ones mixing letters and digits (webhook ids, API keys);
    words like `hooks`, `v1`, `portconsole` and pure numbers (chat ids, ports) stay visible.
    """
    text = unquote(segment)
    if len(text) >= 20:
        return True
    has_digit = any(ch.isdigit() for ch in text)
    has_alpha = any(ch.isalpha() for ch in text)
    return len(text) >= 8 and has_digit and has_alpha


def _variants(secret: str) -> set[str]:
    """The forms a secret may take in text: as configured, decoded and re-encoded."""
    forms = {secret, unquote(secret), unquote_plus(secret)}
    forms |= {quote(form, safe="") for form in list(forms)}
    forms |= {quote_plus(form, safe="") for form in list(forms)}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _apprise_secrets(url: str) -> list[str]:
    """The parts of `url` apprise's own privacy URL hides; [] if apprise cannot read it."""
    try:
        from apprise import Apprise
    except ImportError:  # apprise is a dependency; without it our patterns still apply
        return []
    logger = logging.getLogger("apprise")
    previous = logger.disabled
    logger.disabled = True  # a URL apprise rejects is reported where it is delivered, not here
    try:
        plugin = Apprise.instantiate(url, suppress_exceptions=True)
        if not plugin:
            return []
        clear, private = plugin.url(privacy=False), plugin.url(privacy=True)
    except Exception:  # noqa: BLE001 - a plugin's own bug must not stop masking
        return []
    finally:
        logger.disabled = previous
    shown = set(_URL_PIECE.split(private)) | set(_URL_PIECE.split(unquote(private)))
    pieces = set(_URL_PIECE.split(clear)) | set(_URL_PIECE.split(unquote(clear)))
    return [piece for piece in pieces - shown if len(piece) >= MIN_SECRET_LENGTH]


@functools.lru_cache(maxsize=512)
def _analyse(url: str) -> tuple[str, tuple[str, ...]]:
    """Return (masked url, secret substrings) for one apprise URL: our structural mask, then
    every part apprise calls private masked wherever it still shows."""
    masked, secrets = _analyse_structure(url)
    extra = [s for s in _apprise_secrets(url.strip()) if s not in secrets]
    for secret in sorted({v for s in extra for v in _variants(s)}, key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    return masked, tuple(secrets + extra)


def _analyse_structure(url: str) -> tuple[str, list[str]]:
    """Return (masked url, secret substrings) by our patterns alone."""
    raw = url.strip()
    try:
        parts = urlsplit(raw)
    except ValueError:
        # Unparseable: show only the scheme, treat the whole text as secret.
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        return (f"{scheme}://{MASK}" if scheme else MASK), [raw]
    scheme = parts.scheme.lower()
    if not scheme or "://" not in raw:
        return MASK, [raw]
    secrets: list[str] = []
    token_host = scheme in TOKEN_HOST_SCHEMES
    secret_path = token_host or scheme in SECRET_PATH_SCHEMES

    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    shown_user = ""
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if has_password and password:
            secrets.append(password)
            password_shown = MASK
        else:
            password_shown = ""
        # A user part that is really a key (pover://userkey@token, or an opaque id).
        if user and (token_host or _looks_like_token(user)):
            secrets.append(user)
            user = MASK
        shown_user = user + (f":{password_shown}" if has_password else "") + "@"

    host, port = hostport, ""
    if not hostport.startswith("[") and hostport.count(":") == 1:
        host, port = hostport.split(":", 1)
    elif hostport.startswith("[") and "]:" in hostport:
        host, port = hostport.rsplit(":", 1)
    # A "host" that is really a bot token, key or topic (tgram://123:AA.../, discord://id/...).
    dotless_token = (
        "." not in host
        and host != "localhost"
        and (_looks_like_token(host) or scheme in SECRET_PATH_SCHEMES)
    )
    if host and (token_host or not _HOSTLIKE.match(host) or dotless_token):
        secrets.append(host)
        host = MASK
    if port and not port.isdigit():
        secrets.append(port)
        port = MASK
    shown_netloc = shown_user + host + (f":{port}" if port else "")

    shown_segments: list[str] = []
    for segment in parts.path.split("/"):
        if segment and (secret_path or _looks_like_token(segment)):
            secrets.append(segment)
            shown_segments.append(MASK)
        else:
            shown_segments.append(segment)
    shown_path = "/".join(shown_segments)

    shown_query: list[str] = []
    for pair in parts.query.split("&") if parts.query else []:
        # Parsed by hand: apprise's `+Header=` and `:payload=` prefixes must not be decoded.
        key, has_value, value = pair.partition("=")
        name = unquote(key).lstrip("+-:")
        decoded = unquote_plus(value)
        secret_value = bool(value) and (
            bool(_SECRET_KEY.search(name))
            or name.lower() in _SECRET_SHORT_KEY
            or (key.startswith("+") and _looks_like_token(decoded))
        )
        if not has_value and _looks_like_token(decoded):  # a bare key in the query (`?abc...`)
            secrets.append(key)
            shown_query.append(MASK)
            continue
        if secret_value:
            secrets.append(value)
            # Header values such as "Bearer abc...": the credential word is secret too.
            secrets.extend(word for word in decoded.split() if len(word) >= 8)
            shown_query.append(f"{key}={MASK}")
        else:
            shown_query.append(f"{key}={value}" if has_value else key)

    masked = f"{scheme}://{shown_netloc}{shown_path}"
    if shown_query:
        masked += "?" + "&".join(shown_query)
    if parts.fragment:
        # Apprise uses the fragment for channels (#general); mask it only if it looks opaque.
        if _looks_like_token(parts.fragment):
            secrets.append(parts.fragment)
            masked += f"#{MASK}"
        else:
            masked += f"#{parts.fragment}"
    return masked, [s for s in secrets if s]


def mask_url(url: str) -> str:
    """The URL with passwords, tokens and keys replaced by ****; scheme, host and port stay."""
    return _analyse(url)[0]


def url_secrets(url: str) -> list[str]:
    """The secret substrings of one URL, in every form they may appear in text."""
    found: set[str] = set()
    for secret in _analyse(url)[1]:
        found |= _variants(secret)
    return sorted(found, key=len, reverse=True)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret in `text` with ****, then mask any URL left in it.

    Longer secrets go first so a secret containing a shorter one is removed whole.
    """
    result = text
    for secret in sorted(
        {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
    ):
        result = result.replace(secret, MASK)
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), result)


def config_secrets(settings: NotifySettings | Settings) -> list[str]:
    """The secret parts of every configured notification URL and site broker URL (a Redis
    or AMQP password: `[sites.NAME] broker`), in all encodings, longest first."""
    from portconsole.core.settings import Settings as SettingsModel

    notify = settings.notify if isinstance(settings, SettingsModel) else settings
    found: set[str] = set()
    for target in notify.targets():
        found |= set(url_secrets(target.url))
    if isinstance(settings, SettingsModel):
        for site in settings.sites.values():
            found |= set(url_secrets(site.broker))
    return sorted(found, key=len, reverse=True)
