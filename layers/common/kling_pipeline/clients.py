"""Clients built once per container and handed to the domain code as arguments."""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING

import boto3
import urllib3
from botocore.config import Config

from .settings import Settings, load_settings
from .wavespeed import WaveSpeedClient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
#: A batch's records read the key from several threads at once; on a cold start they would all
#: miss the cache and each call Secrets Manager (and build its client) in parallel.
_API_KEY_LOCK = threading.Lock()


@cache
def s3() -> S3Client:
    return boto3.client("s3", config=_CONFIG)


@cache
def sqs() -> SQSClient:
    return boto3.client("sqs", config=_CONFIG)


@cache
def sns() -> SNSClient:
    return boto3.client("sns", config=_CONFIG)


@cache
def dynamodb() -> DynamoDBClient:
    return boto3.client("dynamodb", config=_CONFIG)


@cache
def stepfunctions() -> SFNClient:
    return boto3.client("stepfunctions", config=_CONFIG)


@cache
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(maxsize=16)


def api_key(settings: Settings) -> str:
    """The WaveSpeed key from Secrets Manager, cached by Powertools for five minutes."""
    if settings.api_key_override:
        return settings.api_key_override
    from aws_lambda_powertools.utilities import parameters

    with _API_KEY_LOCK:
        value = parameters.get_secret(settings.api_key_secret, max_age=300)
    return value if isinstance(value, str) else value.decode()


@cache
def wavespeed() -> WaveSpeedClient:
    settings = load_settings()
    return WaveSpeedClient(
        settings.api_base,
        lambda: api_key(settings),
        http=http(),
        timeout_s=settings.http_timeout_s,
        submit_timeout_s=settings.submit_timeout_s,
    )


def reset() -> None:
    """Forgets every cached client and the settings (the local runner starts fresh with it)."""
    for factory in (s3, sqs, sns, dynamodb, stepfunctions, http, wavespeed, load_settings):
        factory.cache_clear()
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # type: ignore[no-untyped-call]
