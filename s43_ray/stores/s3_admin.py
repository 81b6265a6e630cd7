"""Bucket configuration over boto3: the :class:`~s43_ray.stores.base.BucketAdmin` of an S3
store (lifecycle rules, default encryption, bucket creation). An operator's identity needs
these permissions; the pipeline's does not (docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from ..config import StoreConfig
from ..errors import InputError, NotSupported, S43Error
from .s3 import client_for, error_code, translate
from .s3_errors import MALFORMED, NO_ENCRYPTION, NO_LIFECYCLE, NOT_IMPLEMENTED

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


class S3BucketAdmin:
    """Bucket settings through the config's client (its endpoint, credentials, retries)."""

    def __init__(self, cfg: StoreConfig, client: S3Client | None = None) -> None:
        self.cfg = cfg
        self._client = client or client_for(cfg)

    @property
    def endpoint(self) -> str:
        return self.cfg.display_endpoint

    def _error(self, exc: Exception, op: str, bucket: str) -> S43Error:
        if isinstance(exc, ClientError) and error_code(exc) in NOT_IMPLEMENTED:
            return NotSupported(f"{op} s3://{bucket} at {self.endpoint}")
        return translate(exc, op=op, target=f"s3://{bucket}", endpoint=self.endpoint)

    def lifecycle_rules(self, bucket: str) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules; [] when it has none."""
        try:
            resp = self._client.get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as exc:
            if error_code(exc) in NO_LIFECYCLE:
                return []
            raise self._error(exc, "GET LIFECYCLE", bucket) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "GET LIFECYCLE", bucket) from exc
        return [dict(r) for r in resp.get("Rules", [])]

    def put_lifecycle_rules(self, bucket: str, rules: list[dict[str, Any]]) -> None:
        """Replace the bucket's lifecycle rules. Rules the store refuses as malformed are
        :class:`InputError` (exit 2); an action it does not implement is :class:`NotSupported`."""
        try:
            self._client.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": rules})  # type: ignore[typeddict-item]
        except ParamValidationError as exc:
            raise InputError(f"lifecycle rules for s3://{bucket} refused before sending: "
                             f"{exc}; expected rules in S3's lifecycle format") from exc
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and error_code(exc) in MALFORMED:
                raise InputError(f"PUT LIFECYCLE s3://{bucket} at {self.endpoint}: the store "
                                 f"refused the rules ({error_code(exc)}: "
                                 f"{exc.response.get('Error', {}).get('Message', '')}); "
                                 "expected rules this store supports") from exc
            raise self._error(exc, "PUT LIFECYCLE", bucket) from exc

    def default_encryption(self, bucket: str) -> str | None:
        """The algorithm of the bucket's default encryption (``AES256``, ``aws:kms``), or None
        when none is set."""
        try:
            resp = self._client.get_bucket_encryption(Bucket=bucket)
        except ClientError as exc:
            if error_code(exc) in NO_ENCRYPTION:
                return None
            raise self._error(exc, "GET ENCRYPTION", bucket) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "GET ENCRYPTION", bucket) from exc
        # Scaleway answers {"ServerSideEncryptionConfiguration": {}} once SSE-ONE is disabled.
        for rule in resp.get("ServerSideEncryptionConfiguration", {}).get("Rules", []):
            algorithm = rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
            if algorithm:
                return str(algorithm)
        return None

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists (the embedded server and tests)."""
        try:
            self._client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if error_code(exc) in _EXISTS:
                return
            raise self._error(exc, "CREATE BUCKET", bucket) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "CREATE BUCKET", bucket) from exc
