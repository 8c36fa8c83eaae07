"""template.yaml as deployed: data kept, least privilege, per-stack names, heard alarms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kling_local.cfn import Template

FUNCTIONS = ("SubmitFunction", "PollFunction", "FinalizeFunction")
XRAY_WRITE = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


class _Placeholders(dict[str, dict[str, Any]]):
    """Attributes of resources that do not exist here: `<Resource>.<Attribute>`."""

    def __missing__(self, resource: str) -> dict[str, Any]:
        names = ("Arn", "QueueName", "QueueUrl", "FunctionUrl")
        attrs = {name: f"{resource}.{name}" for name in names}
        self[resource] = attrs
        return attrs


def _template(stack: str = "kling-pipeline", **parameters: str) -> Template:
    template = Template.load(overrides=parameters)
    template.refs["AWS::StackName"] = stack
    template.refs.update({name: f"ref:{name}" for name in template.resources})
    template.attrs = _Placeholders()
    return template


def _statements(template: Template, logical_id: str) -> list[dict[str, Any]]:
    """The resolved policy statements of a role, or of a SAM state machine's inline policies."""
    props = template.resources[logical_id]["Properties"]
    documents = (
        [policy["PolicyDocument"] for policy in props["Policies"]]
        if logical_id.endswith("Role")
        else [policy for policy in props["Policies"] if "Statement" in policy]
    )
    found: list[dict[str, Any]] = []
    for document in documents:
        found += [s for s in template.resolve(document["Statement"]) if s is not None]
    return found


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        action = statement["Action"]
        found |= {action} if isinstance(action, str) else set(action)
    return found


def _roles(template: Template) -> list[str]:
    return [template.resources[f]["Properties"]["Role"]["Fn::GetAtt"][0] for f in FUNCTIONS]


@pytest.mark.parametrize("logical_id", ["PromptsBucket", "VideosBucket", "JobsTable"])
def test_data_is_retained_when_the_stack_is_deleted_or_replaced(logical_id: str) -> None:
    # Given a resource holding users' files, paid videos or the payment ledger
    spec = Template.load().resources[logical_id]

    # Then neither a stack delete nor a replacement removes it
    assert spec["DeletionPolicy"] == "Retain"
    assert spec["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize(("tracing", "granted"), [("false", False), ("true", True)])
def test_xray_access_follows_enable_tracing_when_rendered(tracing: str, granted: bool) -> None:
    # Given the template rendered with tracing off or on
    template = _template(EnableTracing=tracing)

    # When the functions' roles and the state machine's policies are read
    principals = [*_roles(template), "JobStateMachine"]

    # Then each may write traces exactly when tracing is on
    for principal in principals:
        assert (_actions(_statements(template, principal)) >= XRAY_WRITE) is granted, principal


def test_function_roles_hold_no_unused_actions_when_rendered() -> None:
    # Given the rendered function roles
    template = _template()
    roles = {role: _statements(template, role) for role in _roles(template)}

    # Then none may create log groups (they are created by the stack), the dead-letter queue's
    # visibility is never changed, and no managed policy (AWS's bring CreateLogGroup, or X-Ray
    # whatever EnableTracing says) is attached
    for role, statements in roles.items():
        assert "logs:CreateLogGroup" not in _actions(statements), role
        assert "ManagedPolicyArns" not in template.resources[role]["Properties"], role
        for statement in statements:
            if "sqs:ChangeMessageVisibility" in _actions([statement]):
                assert "JobDeadLetterQueue" not in json.dumps(statement["Resource"]), role


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_logs_to_a_group_created_before_it_when_deployed(function: str) -> None:
    # Given a function and the log group it names
    template = Template.load()
    logging = template.resources[function]["Properties"]["LoggingConfig"]
    group = logging["LogGroup"]["Ref"]
    group_spec = template.resources[group]

    # Then the group is the stack's own, and its name does not wait for the function to exist
    assert group_spec["Type"] == "AWS::Logs::LogGroup"
    assert function not in json.dumps(group_spec["Properties"]["LogGroupName"])


def test_names_differ_per_stack_when_two_stacks_share_an_account() -> None:
    # Given the template rendered for two stacks in one account
    rendered = []
    for stack in ("kling-pipeline-dev", "kling-pipeline-prod"):
        template = _template(stack)
        rendered.append(
            {
                "secret": template.resolve(
                    template.resources["ApiKeySecret"]["Properties"]["Name"]
                ),
                "layer": template.resolve(
                    template.resources["CommonLayer"]["Properties"]["LayerName"]
                ),
                "service": template.function_environment("SubmitFunction")[
                    "POWERTOOLS_SERVICE_NAME"
                ],
                "dashboard": template.resolve(
                    template.resources["OperationsDashboard"]["Properties"]["DashboardName"]
                ),
            }
        )
        body = template.resolve(
            template.resources["OperationsDashboard"]["Properties"]["DashboardBody"]
        )
        service_dimensions = {
            line[3]
            for widget in json.loads(body)["widgets"]
            for line in widget["properties"]["metrics"]
            if line[0] == "KlingPipeline"
        }

        # Then the dashboard reads the stack's own metrics service
        assert service_dimensions == {stack}

    # Then no name is shared between the two stacks
    dev, prod = rendered
    assert all(dev[key] != prod[key] for key in dev), (dev, prod)


def test_secret_name_is_the_given_one_when_a_name_is_set() -> None:
    # Given an explicit secret name
    template = _template(ApiKeySecretName="team/wavespeed")

    # Then the stack creates exactly that secret
    name = template.resources["ApiKeySecret"]["Properties"]["Name"]
    assert template.resolve(name) == "team/wavespeed"


@pytest.mark.parametrize(("email", "warned"), [("", True), ("ops@example.com", False)])
def test_unheard_alarms_are_an_output_when_no_address_is_given(email: str, warned: bool) -> None:
    # Given the template rendered with or without an alarm e-mail address
    template = _template(NotificationEmail=email)

    # When the stack outputs and subscriptions are decided
    output = template.body["Outputs"]["AlarmsReachNobody"]
    subscription = template.resources["AlarmEmailSubscription"]

    # Then exactly one of the two exists: a subscriber, or a warning that nobody listens
    assert template.condition(output["Condition"]) is warned
    assert template.condition(subscription["Condition"]) is not warned
