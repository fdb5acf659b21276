"""Blobs in an S3 bucket (boto3): ``blobs/<sha256>`` objects.

A blob is uploaded in parts (multipart, 8 MiB each, one part in memory at a time) and
hashed as it goes; the upload is completed (the object appears, whole) only once every
byte has arrived and hashed to the digest, and aborted otherwise, so a bucket never holds
a partial or wrong blob under a digest. A blob smaller than a part is one ``PutObject``,
sent after the check. A bucket that refuses (missing, full, unreachable) is a clear
error naming the bucket and S3's code, with any multipart upload aborted.
Credentials come from boto3's usual sources (``AWS_ACCESS_KEY_ID`` … or a profile).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from confide.storage.backend import (
    CHUNK,
    BackendUnavailableError,
    BlobNotFoundError,
    ByteRange,
    CheckedStream,
    StorageFullError,
    check_digest,
    rechunk,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART = 8 << 20  # bytes per part (S3's minimum is 5 MiB, but for the last)
PREFIX = "blobs/"
# What S3-compatible servers answer when a bucket or its disks are full.
_FULL_CODES = frozenset(
    {"QuotaExceeded", "InsufficientStorage", "XMinioStorageFull", "StorageFull", "EntityTooLarge"}
)
_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Backend:
    """The S3 :class:`~confide.storage.backend.Backend`. ``client``: a boto3 S3 client
    (tests); by default one for ``endpoint_url`` (None: AWS)."""

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        *,
        client: S3Client | None = None,
        part_size: int = PART,
    ) -> None:
        self.bucket = bucket
        self.part_size = part_size
        self.client: S3Client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=10,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    def key(self, digest: str) -> str:
        return PREFIX + check_digest(digest)

    def put(
        self,
        digest: str,
        size: int,
        chunks: Iterable[bytes],
        before_publish: Callable[[], None] | None = None,
    ) -> None:
        key = self.key(digest)
        checked = CheckedStream(digest, size, chunks)
        if size < self.part_size:
            data = b"".join(checked)
            checked.verify()
            if before_publish is not None:
                before_publish()
            with self._failures(f"cannot store blob {digest}"):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
            return
        with self._failures(f"cannot store blob {digest}"):
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = upload["UploadId"]
        completed = False
        try:
            parts = []
            for number, part in enumerate(rechunk(checked, self.part_size), start=1):
                with self._failures(f"cannot store blob {digest}"):
                    sent = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part,
                    )
                parts.append({"PartNumber": number, "ETag": sent["ETag"]})
            checked.verify()
            if before_publish is not None:
                before_publish()
            with self._failures(f"cannot store blob {digest}"):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
            completed = True
        finally:
            if not completed:
                with contextlib.suppress(BotoCoreError, ClientError):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )

    def read(self, digest: str, byte_range: ByteRange | None = None) -> Iterator[bytes]:
        extra: dict[str, Any] = {}
        if byte_range is not None:
            extra["Range"] = f"bytes={byte_range.start}-{byte_range.end}"
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.key(digest), **extra)
        except ClientError as exc:
            if _code(exc) in _MISSING_KEY:
                raise BlobNotFoundError(f"no blob {digest}") from None
            raise self._failure(exc, f"cannot read blob {digest}") from None
        except BotoCoreError as exc:
            raise self._failure(exc, f"cannot read blob {digest}") from None
        return _body_chunks(found["Body"])

    def size(self, digest: str) -> int | None:
        try:
            found = self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as exc:
            if _code(exc) in _MISSING_KEY:
                return None
            raise self._failure(exc, f"cannot read blob {digest}") from None
        except BotoCoreError as exc:
            raise self._failure(exc, f"cannot read blob {digest}") from None
        return int(found["ContentLength"])

    def delete(self, digest: str) -> None:
        with self._failures(f"cannot delete blob {digest}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._failure(exc, what) from None

    def _failure(self, exc: BotoCoreError | ClientError, what: str) -> Exception:
        if isinstance(exc, ClientError):
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _FULL_CODES or status == 507:
                return StorageFullError(f"{what}: bucket {self.bucket} is full ({code})")
            if code == "NoSuchBucket":
                return BackendUnavailableError(f"{what}: bucket {self.bucket} does not exist")
            return BackendUnavailableError(f"{what}: bucket {self.bucket} answered {code}")
        return BackendUnavailableError(
            f"{what}: bucket {self.bucket} cannot be reached ({type(exc).__name__})"
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "?"))


def _body_chunks(body: Any) -> Iterator[bytes]:
    """An object's streamed body in pieces of :data:`CHUNK` (closed at the end)."""
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()
