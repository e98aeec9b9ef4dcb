#!/usr/bin/env python3
"""Expand a SAM template into plain CloudFormation, offline, so cfn-lint can check what
CloudFormation will really receive (cfn-lint alone validates SAM resources only loosely).

    .venv/bin/python scripts/sam_transform.py template.yaml out.json \
        [--region us-east-1] [--parameter-overrides Key=Value ...]

Order matches CloudFormation's: AWS::LanguageExtensions first, then AWS::Serverless.
Of the language extensions this resolves Fn::Length (the only one the template uses),
over literal lists, Fn::Split, Fn::Sub and Ref of parameters (template defaults, or the
overrides given), and prints each resolved value. If the input declared
AWS::LanguageExtensions, the output keeps that transform so cfn-lint still checks any
other language-extension function in it.

No AWS calls: managed-policy names are resolved from a small built-in table and the
region comes from --region.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

LANGUAGE_EXTENSIONS = "AWS::LanguageExtensions"
SERVERLESS = "AWS::Serverless-2016-10-31"


class Unresolvable(Exception):
    pass


class OfflineManagedPolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader (which calls IAM ListPolicies)."""

    NAMES = [
        "AWSLambdaBasicExecutionRole",
        "AWSLambdaSQSQueueExecutionRole",
        "AWSLambdaKinesisExecutionRole",
        "AWSLambdaDynamoDBExecutionRole",
        "AWSLambdaVPCAccessExecutionRole",
        "AWSLambdaRole",
        "AWSXrayWriteOnlyAccess",
        "AWSXRayDaemonWriteAccess",
        "CloudWatchLambdaInsightsExecutionRolePolicy",
    ]
    SERVICE_ROLE = {n for n in NAMES if n.startswith("AWSLambda") and n != "AWSLambdaRole"}

    def __init__(self, partition: str) -> None:
        self.partition = partition

    def load(self) -> dict[str, str]:
        def arn(name: str) -> str:
            path = "service-role/" if name in self.SERVICE_ROLE else ""
            return f"arn:{self.partition}:iam::aws:policy/{path}{name}"

        return {name: arn(name) for name in self.NAMES}


def parameter_values(template: dict[str, Any], overrides: dict[str, str], region: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in (template.get("Parameters") or {}).items():
        if name in overrides:
            values[name] = overrides[name]
        elif isinstance(spec, dict) and "Default" in spec:
            values[name] = spec["Default"]
        if name in values and isinstance(spec, dict) and spec.get("Type") == "CommaDelimitedList":
            v = values[name]
            values[name] = v if isinstance(v, list) else [s.strip() for s in str(v).split(",")]
    values.update(
        {
            "AWS::Region": region,
            "AWS::AccountId": "123456789012",
            "AWS::StackName": "sam-transform-check",
            "AWS::Partition": partition_of(region),
            "AWS::URLSuffix": "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com",
        }
    )
    return values


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def evaluate(node: Any, params: dict[str, Any], where: str) -> Any:
    """Evaluate the intrinsics Fn::Length may contain, as far as they are static."""
    if isinstance(node, (str, int, float, bool)):
        return node
    if isinstance(node, list):
        return [evaluate(v, params, where) for v in node]
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Ref":
            if arg in params:
                return params[arg]
            raise Unresolvable(f"{where}: Ref {arg} has no value (no Default and no override)")
        if fn == "Fn::Split":
            delim, source = arg
            return str(evaluate(source, params, where)).split(delim)
        if fn == "Fn::Join":
            delim, items = arg
            return delim.join(str(v) for v in evaluate(items, params, where))
        if fn == "Fn::Select":
            index, items = arg
            return evaluate(items, params, where)[int(evaluate(index, params, where))]
        if fn == "Fn::Length":
            items = evaluate(arg, params, where)
            if not isinstance(items, list):
                raise Unresolvable(f"{where}: Fn::Length of a non-list ({items!r})")
            return len(items)
        if fn == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            scope = dict(params)
            scope.update({k: evaluate(v, params, where) for k, v in local.items()})

            def sub(m: re.Match[str]) -> str:
                name = m.group(1)
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                if name not in scope:
                    raise Unresolvable(f"{where}: Fn::Sub ${{{name}}} has no value (no Default, no override)")
                v = scope[name]
                return ",".join(v) if isinstance(v, list) else str(v)

            return re.sub(r"\$\{([^}]+)\}", sub, text)
    raise Unresolvable(f"{where}: cannot resolve {json.dumps(node)[:120]} statically")


def resolve_lengths(node: Any, params: dict[str, Any], path: str, found: list[str]) -> Any:
    if isinstance(node, dict):
        if len(node) == 1 and "Fn::Length" in node:
            value = evaluate(node, params, path)
            found.append(f"{path} = {value}")
            return value
        return {k: resolve_lengths(v, params, f"{path}.{k}", found) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_lengths(v, params, f"{path}[{i}]", found) for i, v in enumerate(node)]
    return node


# Local artifact paths (CodeUri: .) are what `sam build`/`sam package` upload; stand in an S3 URI
# for them, as `sam validate` does. Property -> resource types that carry it.
LOCAL_ARTIFACTS = {
    "CodeUri": ("AWS::Serverless::Function",),
    "ContentUri": ("AWS::Serverless::LayerVersion",),
    "DefinitionUri": ("AWS::Serverless::Api", "AWS::Serverless::HttpApi", "AWS::Serverless::StateMachine"),
}


def stub_local_artifacts(template: dict[str, Any]) -> None:
    sections = [r for r in (template.get("Resources") or {}).values() if isinstance(r, dict)]
    globals_ = template.get("Globals") or {}
    for prop, types in LOCAL_ARTIFACTS.items():
        props = [r.get("Properties") or {} for r in sections if r.get("Type") in types]
        props += [g for g in globals_.values() if isinstance(g, dict)]
        for p in props:
            value = p.get(prop)
            if isinstance(value, str) and not value.startswith("s3://"):
                p[prop] = "s3://sam-transform-placeholder/artifact.zip"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("template")
    ap.add_argument("output")
    ap.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    ap.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    # samtranslator looks up partition/region through boto3; keep it offline and deterministic.
    os.environ["AWS_DEFAULT_REGION"] = args.region
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    with open(args.template, encoding="utf-8") as f:
        template = yaml_parse(f.read())

    overrides = {}
    for item in args.parameter_overrides:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--parameter-overrides expects KEY=VALUE, got {item!r}")
        overrides[key] = value
    params = parameter_values(template, overrides, args.region)

    declared = template.get("Transform", [])
    declared = declared if isinstance(declared, list) else [declared]
    if SERVERLESS not in declared:
        print(f"sam_transform: {args.template} does not declare {SERVERLESS}", file=sys.stderr)
        return 2

    if LANGUAGE_EXTENSIONS in declared:
        found: list[str] = []
        try:
            template = resolve_lengths(template, params, "Template", found)
        except Unresolvable as e:
            print(f"sam_transform: AWS::LanguageExtensions: {e}", file=sys.stderr)
            return 1
        for line in found:
            print(f"sam_transform: Fn::Length {line.removeprefix('Template.')}", file=sys.stderr)
        template["Transform"] = [t for t in declared if t != LANGUAGE_EXTENSIONS]

    stub_local_artifacts(template)
    sam_params = {k: v for k, v in params.items() if not k.startswith("AWS::")}
    try:
        output = transform(template, sam_params, OfflineManagedPolicyLoader(partition_of(args.region)))
    except InvalidDocumentException as e:
        print(f"sam_transform: SAM transform failed with {len(e.causes)} error(s):", file=sys.stderr)
        for cause in e.causes:
            print(f"  - {cause.message}", file=sys.stderr)
        return 1

    if LANGUAGE_EXTENSIONS in declared:
        output["Transform"] = LANGUAGE_EXTENSIONS  # let cfn-lint check any remaining extension use

    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(output, f, indent=2, sort_keys=False)
        f.write("\n")
    resources = output.get("Resources", {})
    print(f"sam_transform: wrote {args.output} ({len(resources)} resources)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
