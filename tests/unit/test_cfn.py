"""The template evaluator: each intrinsic as CloudFormation evaluates it, or a loud refusal."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from kling_local.cfn import Template, Unresolvable, UnsupportedIntrinsic

PARAMETERS = """
Parameters:
  Name: {Type: String, Default: fox}
  Count: {Type: Number, Default: 2}
  Hosts: {Type: CommaDelimitedList, Default: "a.example, b.example,c.example"}
  Flag: {Type: String, Default: "true", AllowedValues: ["true", "false"]}
Mappings:
  Sizes:
    small: {Seconds: 5, Names: [five, cinq]}
Resources:
  Queue: {Type: AWS::SQS::Queue}
"""


def template(text: str = "", **overrides: Any) -> Template:
    """A template of the parameters above plus `text`, its Queue provisioned."""
    loaded = Template.from_text(PARAMETERS + text, overrides)
    loaded.refs["Queue"] = "https://sqs/queue"
    loaded.attrs["Queue"] = {"Arn": "arn:aws:sqs:us-east-1:123456789012:queue", "A.B": "dotted"}
    return loaded


def value(text: str, **overrides: Any) -> Any:
    """The evaluated `Value:` of a template holding `Value: <text>`."""
    t = template("Value: " + text, **overrides)
    return t.resolve(t.body["Value"])


# ------------------------------------------------------------------------------ references


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("!Ref Name", "fox"),
        ("!Ref Count", "2"),  # Ref of a Number parameter is a string, as in CloudFormation
        ("!Ref Hosts", ["a.example", "b.example", "c.example"]),
        ("!Ref AWS::Region", "us-east-1"),
        ("!Ref AWS::AccountId", "123456789012"),
        ("!Ref AWS::Partition", "aws"),
        ("!Ref AWS::StackName", "kling-local"),
        ("!Ref Queue", "https://sqs/queue"),
        ("{Ref: Name}", "fox"),
        ("!GetAtt Queue.Arn", "arn:aws:sqs:us-east-1:123456789012:queue"),
        ("!GetAtt [Queue, Arn]", "arn:aws:sqs:us-east-1:123456789012:queue"),
        ("{'Fn::GetAtt': Queue.Arn}", "arn:aws:sqs:us-east-1:123456789012:queue"),
        ("!GetAtt Queue.A.B", "dotted"),  # the attribute is everything after the first dot
        ("!FindInMap [Sizes, small, Seconds]", 5),
        ("!FindInMap [Sizes, !Select [0, [small]], Names]", ["five", "cinq"]),
    ],
)
def test_reference_resolves_to_its_value_when_the_name_is_known(
    expression: str, expected: Any
) -> None:
    assert value(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "!Ref Missing",
        "!Ref AWS::NotificationARNs",
        "!GetAtt Queue.QueueName",
        "!GetAtt Missing.Arn",
        "!FindInMap [Sizes, large, Seconds]",
        "!Sub ${Missing}",
        "!If [NoSuchCondition, a, b]",
    ],
)
def test_reference_raises_when_nothing_provides_it(expression: str) -> None:
    with pytest.raises(Unresolvable):
        value(expression)


def test_parameter_override_replaces_the_default_when_given() -> None:
    # Given overrides as sam deploy takes them: strings, a list as comma-separated text
    t = template(Name="owl", Count="7", Hosts="x.example,y.example")

    # Then Ref returns them, normalised like the defaults
    assert t.resolve({"Ref": "Name"}) == "owl"
    assert t.resolve({"Ref": "Count"}) == "7"
    assert t.resolve({"Ref": "Hosts"}) == ["x.example", "y.example"]


def test_load_raises_when_an_override_names_no_parameter() -> None:
    with pytest.raises(Unresolvable, match="Nmae"):
        template(Nmae="owl")


# ------------------------------------------------------------------------------ strings and lists


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("!Sub 'a ${Name} b'", "a fox b"),
        (
            "!Sub '${AWS::Region}/${Queue}/${Queue.Arn}'",
            "us-east-1/https://sqs/queue/arn:aws:sqs:us-east-1:123456789012:queue",
        ),
        ("!Sub ['${x}-${Name}', {x: !Ref Count}]", "2-fox"),
        ("!Sub ['${Name}', {Name: shadowed}]", "shadowed"),
        ("!Sub 'keep ${!Literal} as is'", "keep ${Literal} as is"),
        ("!Join ['-', [a, !Ref Name, !Ref Count]]", "a-fox-2"),
        ("!Join [',', !Ref Hosts]", "a.example,b.example,c.example"),
        ("!Join ['', []]", ""),
        ("!Join ['+', [a, !Ref AWS::NoValue, b]]", "a+b"),
        ("!Select [1, !Ref Hosts]", "b.example"),
        ("!Select ['0', [x, y]]", "x"),
        ("!Split [',', 'a,b,,c']", ["a", "b", "", "c"]),
        ("!Split ['.', !Select [0, !Ref Hosts]]", ["a", "example"]),
        ("!Select [2, !Split ['/', !Sub 'x/${Name}/z']]", "z"),
        ("!Join [':', !Split ['.', !GetAtt Queue.A.B]]", "dotted"),
    ],
)
def test_string_function_evaluates_like_cloudformation_when_arguments_are_valid(
    expression: str, expected: Any
) -> None:
    assert value(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "!Select [3, [a, b, c]]",
        "!Select [-1, [a, b]]",
        "!Select [0, notalist]",
        "!Join ['-', notalist]",
        "!Join ['-', [[nested]]]",
        "!Split [',', [a, b]]",
        "!Split ['', abc]",
        "!Sub [a, b, c]",
        "!Sub '${Hosts}'",
        "!GetAtt [Queue]",
        "!Equals [a]",
        "!Not [!Equals [a, a], !Equals [b, b]]",
        "!And [!Equals [a, a]]",
        "!Or [a, b]",
        "!If [Flag, a]",
        "!Base64 abc",
        "!GetAZs ''",
        "!ImportValue other-stack-output",
        "!Cidr [10.0.0.0/16, 2, 8]",
        "{'Fn::Unknown': x}",
        "{Ref: Name, Other: x}",
    ],
)
def test_intrinsic_raises_when_unknown_or_malformed(expression: str) -> None:
    with pytest.raises(UnsupportedIntrinsic):
        value(expression)


def test_no_value_removes_the_property_when_an_if_chooses_it() -> None:
    # Given properties whose value is AWS::NoValue on one branch
    t = template(
        "Conditions: {Keep: !Equals [1, 1], Drop: !Equals [1, 2]}\n"
        "Value: {kept: !If [Keep, here, !Ref AWS::NoValue], gone: !If [Drop, x, !Ref AWS::NoValue],"
        " list: [a, !If [Drop, b, !Ref AWS::NoValue], c]}"
    )

    # Then the chosen NoValue removes the key, and the list item
    assert t.resolve(t.body["Value"]) == {"kept": "here", "list": ["a", "c"]}


# ------------------------------------------------------------------------------ conditions

BOOLS = [True, False]


def equals(truth: bool) -> str:
    return "!Equals [1, 1]" if truth else "!Equals [1, 2]"


@pytest.mark.parametrize(
    "truths", [t for n in (2, 3, 4) for t in itertools.product(BOOLS, repeat=n)]
)
def test_and_or_follow_their_operands_when_conditions_vary(truths: tuple[bool, ...]) -> None:
    # Given every combination of true and false operands
    operands = ", ".join(equals(truth) for truth in truths)

    # Then And is all of them, Or any of them, Not the negation of each
    assert value(f"!And [{operands}]") is all(truths)
    assert value(f"!Or [{operands}]") is any(truths)
    assert [value(f"!Not [{equals(truth)}]") for truth in truths] == [not t for t in truths]


@pytest.mark.parametrize(("a", "b", "c"), list(itertools.product(BOOLS, repeat=3)))
def test_nested_conditions_follow_their_operands_when_conditions_vary(
    a: bool, b: bool, c: bool
) -> None:
    # Given named conditions used through Condition references and Fn::If
    t = template(
        "Conditions:\n"
        f"  A: {equals(a)}\n"
        f"  B: {equals(b)}\n"
        f"  C: {equals(c)}\n"
        "  AOrB: !Or [!Condition A, !Condition B]\n"
        "  Mixed: !Not [!And [!Condition AOrB, !Or [!Condition C, !Not [!Condition A]]]]\n"
        "Value: !If [Mixed, first, !If [AOrB, !Join ['', [or, !Ref Name]], neither]]\n"
    )

    # Then each evaluates as the Python expression of the same shape
    mixed = not ((a or b) and (c or not a))
    assert t.condition("AOrB") is (a or b)
    assert t.condition("Mixed") is mixed
    expected = "first" if mixed else ("orfox" if a or b else "neither")
    assert t.resolve(t.body["Value"]) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("!Equals [!Ref Name, fox]", True),
        ("!Equals [!Ref Name, Fox]", False),
        ("!Equals [!Ref Count, 2]", True),  # Ref gives "2"; CloudFormation compares as strings
        ("!Equals [!Ref Flag, true]", True),  # YAML's true is the string "true"
        ("!Equals ['', !Select [0, ['']]]", True),
        ("!Equals [!Join [',', !Ref Hosts], 'a.example,b.example,c.example']", True),
    ],
)
def test_equals_compares_values_as_strings_when_types_differ(
    expression: str, expected: bool
) -> None:
    assert value(expression) is expected


def test_condition_raises_when_conditions_refer_to_each_other() -> None:
    t = template("Conditions: {A: !Not [!Condition B], B: !Not [!Condition A]}")
    with pytest.raises(UnsupportedIntrinsic, match="each other"):
        t.condition("A")


def test_condition_raises_when_it_is_not_a_condition_function() -> None:
    t = template("Conditions: {A: !Ref Name}")
    with pytest.raises(UnsupportedIntrinsic):
        t.condition("A")


def test_resources_follow_their_condition_when_it_is_false() -> None:
    # Given a resource that exists only with a name other than the default
    text = (
        "Conditions: {Custom: !Not [!Equals [!Ref Name, fox]]}\n"
        "Resources:\n"
        "  Queue: {Type: AWS::SQS::Queue}\n"
        "  Extra: {Type: AWS::SQS::Queue, Condition: Custom}\n"
    )

    # Then it is declared only when the condition holds
    assert sorted(template(text).of_type("AWS::SQS::Queue")) == ["Queue"]
    assert sorted(template(text, Name="owl").of_type("AWS::SQS::Queue")) == ["Extra", "Queue"]


def test_globals_merge_into_properties_when_the_resource_is_a_function() -> None:
    # Given Globals with a map, a list and a scalar, and a function overriding some of them
    t = template(
        "Globals:\n"
        "  Function:\n"
        "    Timeout: 3\n"
        "    Layers: [!Ref Name]\n"
        "    Environment: {Variables: {A: !Ref Count, B: global}}\n"
        "Resources:\n"
        "  Fn:\n"
        "    Type: AWS::Serverless::Function\n"
        "    Properties:\n"
        "      Timeout: 9\n"
        "      Layers: [own]\n"
        "      Environment: {Variables: {B: own, C: !Sub '${Name}!'}}\n"
    )

    # Then maps merge (the function wins), lists append and scalars are replaced
    assert t.properties("Fn")["Timeout"] == 9
    assert t.properties("Fn")["Layers"] == ["fox", "own"]
    assert t.function_environment("Fn") == {"A": "2", "B": "own", "C": "fox!"}
