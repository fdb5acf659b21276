"""HTTP routes for secrets: requester secrets, app developer secrets, dataset keys and
result-encryption keys (thin over :class:`confide.sms.secrets.SecretStore`).

Every write goes through :meth:`SecretHandlers.write_secret`: the body is refused with 413
before it is all read, the request must be signed, the signer must be who may write that
secret (the requester; the app's or dataset's owner per the registry), the signed query
holds ``update`` and the release policy, and the value is stored in the same transaction
as the request's nonce. A refusal after the signature uses the nonce up
(``signed_request``), so the request cannot be replayed later, when it would succeed (say,
once the app is registered).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confide.crypto.result_key import check_public_key, result_key_sha256
from confide.errors import SecretError
from confide.sms.http_common import SmsHandlers
from confide.sms.registry import AppRecord, DatasetRecord
from confide.sms.release_policy import ReleasePolicy
from confide.sms.secrets import (
    DEFAULT_POLICY,
    MAX_VALUE_BYTES,
    SecretNotFoundError,
    SecretRef,
    result_key_ref,
)
from confide.web.bodies import path_address, read_body
from confide.web.problems import HttpProblemError

WriterCheck = Callable[[str], SecretRef]  # the signer's address -> the secret it may write


class SecretHandlers:
    def __init__(self, base: SmsHandlers) -> None:
        self.base = base
        self.sms = base.sms

    def routes(self) -> list[Route]:
        return [
            Route(
                "/v1/requesters/{address}/secrets/{name}",
                self.requester_secret,
                methods=["PUT", "HEAD"],
            ),
            Route("/v1/requesters/{address}/result-key", self.result_key, methods=["GET", "PUT"]),
            Route("/v1/apps/{app}/secret", self.app_secret, methods=["PUT", "HEAD"]),
            Route("/v1/datasets/{dataset}/key", self.dataset_key, methods=["PUT", "HEAD"]),
        ]

    async def requester_secret(self, request: Request) -> Response:
        owner = path_address(request.path_params["address"])
        ref = SecretRef(owner, "requester", request.path_params["name"])
        ref.check()  # a SecretError: 400
        if request.method == "HEAD":
            return _existence(await self.exists(ref))

        def writer(signer: str) -> SecretRef:
            if signer != owner:
                raise HttpProblemError(
                    403, "Forbidden", "only the owner may write a requester secret"
                )
            return ref

        version, policy = await self.write_secret(request, writer)
        body = {"name": ref.name, "version": version, "policy": policy.to_json()}
        return JSONResponse(body, status_code=201)

    async def exists(self, ref: SecretRef) -> bool:
        """A HEAD check: a secret this sms has seen exist is answered on the event loop
        (it still exists: nothing deletes one); any other is read from the database, in
        one statement with the checks that arrived with it (confide.sms.batching)."""
        ref.check()  # one bad reference must not fail the batch it would join
        return self.sms.secrets.known(ref) or await self.base.existence.get(ref)

    async def app_secret(self, request: Request) -> Response:
        """The app developer secret (index 1): written by the app's owner only, who names
        the app measurements that may receive it."""
        address = path_address(request.path_params["app"])
        record = await self.base.look_up(self.sms.registry.app, address)
        return await self.owned_secret(request, "app", address, record)

    async def dataset_key(self, request: Request) -> Response:
        """A dataset's key: written by the dataset's owner only, who names the apps (by
        measurement) and may restrict requesters and workerpools."""
        address = path_address(request.path_params["dataset"])
        record = await self.base.look_up(self.sms.registry.dataset, address)
        return await self.owned_secret(request, "dataset", address, record)

    async def owned_secret(
        self, request: Request, kind: str, address: str, record: AppRecord | DatasetRecord | None
    ) -> Response:
        """An app's or a dataset's secret: HEAD is public; PUT only by its owner per the
        registry (404 when the registry does not know it)."""
        name, what = ("1", "secret") if kind == "app" else ("key", "key")
        ref = None if record is None else SecretRef(record.owner, kind, name, subject=address)
        if request.method == "HEAD":
            return _existence(ref is not None and await self.exists(ref))

        def writer(signer: str) -> SecretRef:
            if record is None or ref is None:
                raise HttpProblemError(404, "Not Found", f"{kind} {address} is not registered")
            if signer != record.owner:
                raise HttpProblemError(
                    403, "Forbidden", f"only the {kind}'s owner {record.owner} may write its {what}"
                )
            return ref

        version, policy = await self.write_secret(request, writer, restrictable=True)
        body = {kind: address, "version": version, "policy": policy.to_json()}
        return JSONResponse(body, status_code=201)

    async def result_key(self, request: Request) -> Response:
        """A requester's result-encryption public key: public to read, every push a new
        version; task orders pin its SHA-256."""
        owner = path_address(request.path_params["address"])
        ref = result_key_ref(owner)
        if request.method != "PUT":
            try:  # a public key: nothing to withhold
                stored = await self.base.blocking(self.sms.secrets.release, ref)
            except SecretNotFoundError:
                raise HttpProblemError(
                    404, "Not Found", f"requester {owner} has no result-encryption key"
                ) from None
            key = stored.value
            body = {
                "address": owner,
                "public_key": key.hex(),
                "sha256": result_key_sha256(key),
                "version": stored.version,
            }
            return JSONResponse(body)
        digests: list[str] = []

        def writer(signer: str) -> SecretRef:
            if signer != owner:
                raise HttpProblemError(
                    403, "Forbidden", f"only {owner} may write its result-encryption key"
                )
            return ref

        def check(value: bytes) -> None:
            digests.append(result_key_sha256(check_public_key(value)))

        version, _ = await self.write_secret(request, writer, versioned=True, check=check)
        written = {"address": owner, "sha256": digests[0], "version": version}
        return JSONResponse(written, status_code=201)

    def kept_policy(self, ref: SecretRef, update: bool | None) -> ReleasePolicy:
        """The policy of a push that gives none: an update keeps the current version's
        (authenticated with its value), so rotating a restricted dataset key never widens
        who may receive it; a new secret gets the default."""
        if update is not True:
            return DEFAULT_POLICY
        try:
            return self.sms.secrets.release(ref).policy
        except SecretNotFoundError:
            return DEFAULT_POLICY  # the write answers 404

    async def write_secret(
        self,
        request: Request,
        writer: WriterCheck,
        *,
        restrictable: bool = False,
        versioned: bool = False,
        check: Callable[[bytes], None] | None = None,
    ) -> tuple[int, ReleasePolicy]:
        """Every signed secret write; returns the version stored and its policy.

        ``writer`` names the secret the signer may write (or raises 403/404);
        ``restrictable``: the policy may name apps, requesters and workerpools (dataset
        keys); ``versioned``: no options, every push adds a version (result keys);
        ``check`` refuses a malformed value.
        """
        body = await read_body(request, MAX_VALUE_BYTES)
        return await self.base.blocking(
            self._write_secret,
            request,
            body,
            writer,
            restrictable=restrictable,
            versioned=versioned,
            check=check,
        )

    def _write_secret(
        self,
        request: Request,
        body: bytes,
        writer: WriterCheck,
        *,
        restrictable: bool,
        versioned: bool,
        check: Callable[[bytes], None] | None,
    ) -> tuple[int, ReleasePolicy]:
        base = self.base
        with base.signed_request(request, body) as signed:
            ref = writer(signed.address)
            update, given = _write_options(request, restrictable=restrictable, versioned=versioned)
            if check is not None:
                check(body)
            policy = given if given is not None else self.kept_policy(ref, update)
            if ref.kind == "app" and (policy.apps is None or policy.any_app):
                raise SecretError(
                    "an app developer secret must name the app measurement(s) that may "
                    "receive it (app=<typed measurement>; CLI: --app-measurement, by default "
                    "the one in the app record its owner signed): the registry is not "
                    "trusted to choose the code that gets it"
                )
            if ref.kind == "dataset" and policy.apps is None and not policy.any_app:
                raise SecretError(
                    "a dataset key must name the app measurement(s) that may receive it "
                    "(app=<typed measurement>; CLI: --app-measurement), or say any-app=true "
                    "(CLI: --any-app) to release it to any app: the registry is not trusted "
                    "to choose the code that gets it"
                )
            with self.sms.engine.begin() as connection:
                signed.record_in(connection)
                version = self.sms.secrets.put_in(
                    connection, ref, body, update=update, now=base.now(), policy=policy
                )
        self.sms.secrets.committed(ref)  # a HEAD check of it is answered from memory
        base.maybe_prune()
        return version, policy


def _existence(found: bool) -> Response:
    """A public existence check: 200 or 404, no body, never a value."""
    return Response(status_code=200 if found else 404, headers={"content-length": "0"})


def _write_options(
    request: Request, *, restrictable: bool, versioned: bool
) -> tuple[bool | None, ReleasePolicy | None]:
    """A push's signed query: ``update`` (true or false) and the release policy
    (:meth:`ReleasePolicy.from_query`; None when no option is given); a ``versioned``
    push takes none."""
    items = request.query_params.multi_items()
    if versioned:
        if items:
            raise SecretError(
                f"this push takes no options (got {items[0][0]!r}): every push adds a version"
            )
        return None, DEFAULT_POLICY
    flags = [value for key, value in items if key == "update"]
    if len(flags) > 1 or (flags and flags[0] not in ("true", "false")):
        raise SecretError("update must be given once, as true or false")
    options = [(key, value) for key, value in items if key != "update"]
    policy = ReleasePolicy.from_query(options, restrictable=restrictable) if options else None
    return flags == ["true"], policy
