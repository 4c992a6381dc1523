"""The requests sessions under the Azure and GCS SDKs: the environment read once, and the
plain request sent without requests' per-request session merging (`SdkSession`).

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
import time
from datetime import timedelta
from typing import Any

import requests
import requests.utils
from requests.cookies import RequestsCookieJar
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict


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


class SdkSession(requests.Session):
    """A requests session for an SDK's transport, which sends the plain request straight to
    the adapter.

    `Session.request` rebuilds every request around the session: it merges the session's
    cookies, auth, params and hooks into it, prepares cookie headers, and after the answer
    stores the cookies it set. An SDK's transport uses none of that: it signs its own
    requests and the storage services set no cookies. Measured on 4 KiB Put Blob calls,
    requests' own Python was ~0.6 ms of ~1.4 ms per blob, and the merging ~0.15 ms of it.
    A redirect is still followed as requests follows it (unless the caller said not to). A
    request that asks for any of the other features (params, cookies, files, auth, hooks,
    json), or a session given any of them, takes requests' full path unchanged.
    """

    def request(  # noqa: PLR0917 - requests' own signature, positional order included
        self,
        method: str,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        cookies: Any = None,
        files: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        proxies: Any = None,
        hooks: Any = None,
        stream: bool | None = None,
        verify: Any = None,
        cert: Any = None,
        json: Any = None,
    ) -> requests.Response:
        plain = not (
            params
            or cookies
            or files
            or auth
            or hooks
            or json is not None
            or self.trust_env
            or self.auth is not None
            or self.params
            or len(self.cookies)
            or any(self.hooks.values())
            or isinstance(url, bytes)
        )
        if not plain:
            return super().request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                cookies=cookies,
                files=files,
                auth=auth,
                timeout=timeout,
                allow_redirects=allow_redirects,
                proxies=proxies,
                hooks=hooks,
                stream=stream,
                verify=verify,
                cert=cert,
                json=json,
            )
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.prepare_url(url, None)
        prepared.prepare_headers(
            merge_setting(headers, self.headers, dict_class=CaseInsensitiveDict)
        )
        prepared.prepare_body(data, None)
        prepared.prepare_auth(None, str(url))  # only credentials written into the URL
        settings: dict[str, Any] = {
            "stream": bool(merge_setting(stream, self.stream)),
            "timeout": timeout,
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
            "proxies": merge_setting(proxies, self.proxies),
        }
        start = time.perf_counter()
        response = self.get_adapter(url=str(url)).send(prepared, **settings)
        response.elapsed = timedelta(seconds=time.perf_counter() - start)
        if allow_redirects and response.is_redirect:
            # As Session.send does it; each hop is a full Session.send.
            prepared._cookies = RequestsCookieJar()  # the jar resolve_redirects carries along
            history = [response, *self.resolve_redirects(response, prepared, **settings)]
            response = history.pop()
            response.history = history
        if not settings["stream"]:
            response.content  # noqa: B018 - reads the body, which frees the connection for reuse
        return response
