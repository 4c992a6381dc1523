"""The service goes away, or refuses our credentials: the daemon stays up, says why, keeps
queueing, and recovers by itself — and no secret ever shows, at any log level, in status, in
an error or in the state database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from conftest import s3_client
from emulators import free_port, start_moto
from harness import Setup, folder_engine, running_daemon, syncd, wait_for

#: Planted in the config; must never appear anywhere syncd writes.
SECRET = "PLANTEDsecret" + uuid.uuid4().hex
KEY_ID = "AKIAPLANTED" + uuid.uuid4().hex[:9].upper()


def test_an_outage_is_reported_and_recovered_from(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    endpoint = f"http://127.0.0.1:{port}"
    setup = Setup(
        tmp_path,
        "s3://outage-bucket/docs/",
        options={"endpoint_url": endpoint},
        extra={"retry": {"attempts": 2, "max_seconds": 2}},
    )
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "before.txt").write_bytes(b"written before the outage ended")
    with running_daemon(setup) as daemon:
        pair = wait_for(lambda: (p := daemon.pair_status())["state"] == "error" and p, timeout=20)
        assert "cannot list" in pair["last_error"]
        # Changes keep queueing meanwhile.
        (setup.local / "during.txt").write_bytes(b"written during the outage")

        server = start_moto(port=port)
        try:
            client = s3_client(server.endpoint_url)
            client.create_bucket(Bucket="outage-bucket")

            def keys() -> set[str]:
                answer = client.list_objects_v2(Bucket="outage-bucket", Prefix="docs/")
                return {o["Key"] for o in answer.get("Contents", [])}

            wait_for(lambda: keys() == {"docs/before.txt", "docs/during.txt"}, timeout=30)
            pair = daemon.wait_idle(timeout=30)
            assert pair["last_error"] is None
            assert pair["failed"] == 0
            body = client.get_object(Bucket="outage-bucket", Key="docs/during.txt")["Body"]
            assert body.read() == b"written during the outage"
            assert daemon.terminate() == 0
        finally:
            server.stop()


def test_retry_compares_a_pair_in_error_again_at_once(tmp_path: Path) -> None:
    """`syncd retry` requeued failed paths only: a pair in `error` because its remote could
    not be listed waited for its next poll (here ten minutes away) after the service was
    back. It is compared again at once, and `retry` says so."""
    port = free_port()
    setup = Setup(
        tmp_path,
        "s3://retry-bucket/docs/",
        options={"endpoint_url": f"http://127.0.0.1:{port}"},
        extra={"retry": {"attempts": 2, "max_seconds": 2}},
        pair_extra={"poll_interval": 600},
    )
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "waiting.txt").write_bytes(b"waits for the service")
    with running_daemon(setup) as daemon:
        wait_for(lambda: daemon.pair_status()["state"] == "error", timeout=20)
        server = start_moto(port=port)
        try:
            client = s3_client(server.endpoint_url)
            client.create_bucket(Bucket="retry-bucket")
            result = syncd("retry", "-c", setup.config)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [
                "requeued 0 failed operations",
                "comparing pair docs again (it was in error)",
            ]
            pair = daemon.wait_idle(timeout=30)
            assert pair["last_error"] is None
            body = client.get_object(Bucket="retry-bucket", Key="docs/waiting.txt")["Body"]
            assert body.read() == b"waits for the service"
        finally:
            server.stop()


def test_rejected_credentials_keep_the_daemon_up_and_print_no_secret(tmp_path: Path) -> None:
    server = start_moto(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # moto checks keys now
    try:
        options = {
            "endpoint_url": server.endpoint_url,
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
        }
        setup = Setup(
            tmp_path,
            "s3://locked-bucket/docs/",
            options=options,
            extra={"log": {"level": "debug", "format": "json"}},
        )
        (tmp_path / "local").mkdir()
        (tmp_path / "local" / "a.txt").write_bytes(b"cannot go up")
        with running_daemon(setup) as daemon:
            pair = wait_for(lambda: (p := daemon.pair_status())["state"] == "error" and p)
            assert "access denied" in pair["last_error"].lower()
            status = syncd("status", "--json", "-c", setup.config)
            human = syncd("status", "-c", setup.config)
            assert daemon.proc.poll() is None  # still up
            assert daemon.terminate() == 0
            logs = daemon.logs()
        once = syncd("-vv", "once", "-c", setup.config)
        check = syncd("check", "-c", setup.config)
        assert once.returncode != 0 and check.returncode != 0
        assert "access denied" in (once.stdout + once.stderr).lower()

        everything = {
            "daemon log": logs,
            "status --json": status.stdout + status.stderr,
            "status": human.stdout + human.stderr,
            "once -vv": once.stdout + once.stderr,
            "check": check.stdout + check.stderr,
        }
        state_files = list(setup.state_db.parent.glob("state.db*"))
        assert state_files
        for path in state_files:
            everything[path.name] = path.read_bytes().decode("latin-1")
        for where, text in everything.items():
            assert SECRET not in text, f"the secret access key shows in {where}"
            assert SECRET[:16] not in text, f"part of the secret shows in {where}"
        assert json.loads(status.stdout)["pairs"][0]["state"] == "error"
    finally:
        server.stop()


def test_no_provider_prints_its_secrets(tmp_path: Path) -> None:
    """Azure connection strings and SAS tokens, a GCS credentials file's contents, a password in
    an endpoint URL: none shows in logs at debug level, in status, in errors or in the state
    DB, after runs that fail."""
    import base64

    port = free_port()  # nobody listens: every call fails
    account_key = base64.b64encode(b"PLANTEDazure" + uuid.uuid4().bytes).decode()
    sas = "sv=2024-01-01&sig=PLANTEDsas" + uuid.uuid4().hex
    private_key = "PLANTEDgcskey" + uuid.uuid4().hex
    credentials = tmp_path / "gcs-key.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "PLANTEDkeyid" + uuid.uuid4().hex,
                "private_key": f"-----BEGIN PRIVATE KEY-----\n{private_key}\n-----END",
                "client_email": "syncd@p.iam.gserviceaccount.com",
                "token_uri": f"http://127.0.0.1:{port}/token",
            }
        )
    )
    url_password = "PLANTEDurl" + uuid.uuid4().hex
    planted = [account_key, sas.split("sig=")[1], private_key, url_password]
    config = {
        "state": f"sqlite:///{tmp_path / 'state' / 'state.db'}",
        "socket": str(tmp_path / "run" / "syncd.sock"),
        "log": {"level": "debug", "format": "json"},
        "retry": {"attempts": 1, "max_seconds": 1},
        "pairs": [
            {
                "name": "az-key",
                "local": str(tmp_path / "a"),
                "remote": "az://box/docs/",
                "options": {
                    "connection_string": (
                        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                        f"AccountKey={account_key};"
                        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
                    )
                },
            },
            {
                "name": "az-sas",
                "local": str(tmp_path / "b"),
                "remote": "az://box/sas/",  # the same account as az-key: another prefix
                "options": {
                    "account_url": f"http://127.0.0.1:{port}/devstoreaccount1",
                    "sas_token": sas,
                },
            },
            {
                "name": "az-sas-url",  # the SAS in the account URL itself
                "local": str(tmp_path / "e"),
                "remote": "az://box/other/",
                "options": {"account_url": f"http://127.0.0.1:{port}/devstoreaccount1?{sas}"},
            },
            {
                "name": "gcs-file",
                "local": str(tmp_path / "c"),
                "remote": "gs://box/docs/",
                "options": {"credentials_file": str(credentials), "project": "p"},
            },
            {
                "name": "s3-url",  # a password in the endpoint's user info, quoted by botocore
                "local": str(tmp_path / "d"),
                "remote": "s3://box/docs/",
                "options": {
                    "endpoint_url": f"http://me:{url_password}@127.0.0.1:{port}",
                    "access_key_id": "a",
                    "secret_access_key": "b",
                    "region": "us-east-1",
                },
            },
        ],
    }
    for name in ("a", "b", "c", "d", "e"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_bytes(b"x")
    path = tmp_path / "syncd.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    env = {"STORAGE_EMULATOR_HOST": "", "AZURE_STORAGE_CONNECTION_STRING": ""}
    once = syncd("-vv", "once", "-c", path, env=env)
    check = syncd("check", "-c", path, env=env)
    assert once.returncode != 0 and check.returncode != 0
    assert check.stdout.count("FAIL") == 5, check.stdout
    texts = {"once": once.stdout + once.stderr, "check": check.stdout + check.stderr}
    for db in (tmp_path / "state").glob("state.db*"):
        texts[db.name] = db.read_bytes().decode("latin-1")
    for where, text in texts.items():
        for secret in planted:
            assert secret not in text, f"a planted secret shows in {where}"


def test_check_tells_a_remote_that_cannot_be_set_up_from_one_that_does_not_answer(
    tmp_path: Path,
) -> None:
    """An unknown profile is a config error (exit 2, as `once` says); a remote that does not
    answer is a failure (exit 1); both are named, one line per pair."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens
    unreachable = Setup(tmp_path / "a", "s3://quiet-bucket/", options={"endpoint_url": endpoint})
    unreachable.write()
    result = syncd("check", "-c", unreachable.config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("FAIL\tdocs\ts3://quiet-bucket/\t")

    env = {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": ""}
    unknown = Setup(
        tmp_path / "b",
        "s3://quiet-bucket/",
        options={"endpoint_url": endpoint, "profile": "no-such-profile"},
    )
    unknown.write()
    result = syncd("check", "-c", unknown.config, env=env)
    once = syncd("once", "-c", unknown.config, env=env)
    assert result.returncode == once.returncode == 2, result.stdout + once.stderr
    assert "no-such-profile" in result.stdout


def test_a_pair_is_in_error_while_its_listing_is_retried(tmp_path: Path) -> None:
    """A stalled service makes each try wait out a timeout, and the retries last minutes: the
    pair shows `error` with the reason from the first retried failure, not after the last,
    and the error clears by itself once the listing succeeds."""
    from syncd.providers.errors import Transient

    with folder_engine(tmp_path) as engine:
        syncer = engine.syncers["p"]
        real_list = syncer.provider.list
        seen: list[str | None] = []

        def stalled() -> Any:
            seen.append(syncer.stats.fault)
            if len(seen) < 3:
                raise Transient("Read timeout on endpoint URL")
            return real_list()

        syncer.provider.list = stalled  # type: ignore[method-assign]
        assert syncer.list_remote() == {}
        fault = f"cannot list file://{tmp_path / 'remote'}: Read timeout on endpoint URL (retrying)"
        assert seen == [None, fault, fault]  # in error while retried
        assert syncer.stats.fault is None and syncer.stats.last_error is None


def test_once_says_each_retry_of_a_listing_that_fails(tmp_path: Path) -> None:
    """`syncd once` on a remote that does not answer retried its listing for minutes (a read
    timeout per try) in silence, then printed one line: each retry is said as it happens."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens
    setup = Setup(
        tmp_path,
        "s3://quiet-bucket/",
        options={"endpoint_url": endpoint},
        extra={"retry": {"attempts": 3, "max_seconds": 1}},
    )
    setup.write()
    once = syncd("once", "-c", setup.config)
    assert once.returncode == 1, once.stdout + once.stderr
    retried = [line for line in once.stderr.splitlines() if "listing failed; retrying" in line]
    assert len(retried) == 2, once.stderr  # three tries: two retries
    assert "docs: error: cannot list s3://quiet-bucket/" in once.stdout
