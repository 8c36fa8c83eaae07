"""What leaves a local run: `--out` copies, and the CloudFormation stack `--serve` publishes."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from .cfn import Template, TemplateError
from .provision import REGION

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def export(
    s3: S3Client, bucket: str, notifications: list[dict[str, Any]], out_dir: Path
) -> list[Path]:
    """Copies every object of the bucket under its key and writes notifications.jsonl."""
    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            target = out_dir / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            with target.open("wb") as handle:
                shutil.copyfileobj(body, handle, 1024 * 1024)
            written.append(target)
    lines = "".join(json.dumps(note) + "\n" for note in notifications)
    (out_dir / "notifications.jsonl").write_text(lines)
    return written


def stack_outputs(template: Template) -> dict[str, str]:
    """The template's Outputs as a stack would have them: conditional ones only when their
    condition holds, each resolved to the local resources."""
    outputs: dict[str, str] = {}
    for key, spec in template.body.get("Outputs", {}).items():
        if "Condition" in spec and not template.condition(spec["Condition"]):
            continue
        with contextlib.suppress(TemplateError):  # outputs of resources not emulated locally
            outputs[key] = str(template.resolve(spec["Value"]))
    return outputs


def publish_stack(template: Template, name: str) -> dict[str, str]:
    """A CloudFormation stack whose Outputs are the template's, resolved to the local
    resources, so tools that look a stack up by name (the CLI) find this pipeline."""
    outputs = stack_outputs(template)
    body = {
        "Resources": {"Marker": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=name, TemplateBody=json.dumps(body)
    )
    return outputs
