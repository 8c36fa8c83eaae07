"""Every notification this tier's pipelines publish is held to the public notification schema;
the copy tests' videos bucket in moto S3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from tests.schemas import check_published_notifications

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: The bucket the copy tests store videos in.
VIDEOS_BUCKET = "videos-bucket"


@pytest.fixture(autouse=True)
def published_notifications() -> Iterator[list[dict[str, Any]]]:
    """The notifications published during the test, each checked against the schema."""
    yield from check_published_notifications()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[S3Client]:
    """One moto S3 per module with the videos bucket (starting moto per test is the slow part)."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.setenv(name, "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=VIDEOS_BUCKET)
        yield client


@pytest.fixture
def s3(moto_s3: S3Client) -> Iterator[S3Client]:
    """The videos bucket, emptied of objects and multipart uploads after each test."""
    yield moto_s3
    for upload in moto_s3.list_multipart_uploads(Bucket=VIDEOS_BUCKET).get("Uploads", []):
        moto_s3.abort_multipart_upload(
            Bucket=VIDEOS_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    for item in moto_s3.list_objects_v2(Bucket=VIDEOS_BUCKET).get("Contents", []):
        moto_s3.delete_object(Bucket=VIDEOS_BUCKET, Key=item["Key"])
