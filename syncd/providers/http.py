"""The environment a `requests` session would consult, read once instead of per request.

With `trust_env` on (requests' default), every request walks the whole environment for proxy
variables, looks for a ~/.netrc and reads REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE again. Profiled
on a first upload of 2,000 small files to Azurite, that was ~17 % of syncd's CPU. A provider
talks to one endpoint for its whole life, so the Azure and GCS adapters resolve the same
settings once, when they build their session, and turn the per-request lookups off.

netrc is left out on purpose: the SDKs sign their own requests, and a netrc entry for the host
would replace their Authorization header with basic auth.
"""

from __future__ import annotations

import os

import requests
import requests.utils


def ca_bundle() -> str | None:
    """The CA bundle requests takes from the environment: REQUESTS_CA_BUNDLE, else
    CURL_CA_BUNDLE (None: its own default)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def pin_environment(session: requests.Session, endpoint: str) -> None:
    """Give `session` the proxies (honouring NO_PROXY for `endpoint`'s host) and CA bundle the
    environment names now, then stop it from looking again at every request."""
    session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    bundle = ca_bundle()
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False
